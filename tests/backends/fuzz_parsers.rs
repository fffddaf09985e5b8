//! Seeded, bounded fuzzing of the parsers of untrusted input that live in modules this
//! file can only call through their public APIs (issue 14): the S3 client's
//! `multipart/byteranges` parser (server answers), the multipart-upload handles of
//! `bucketfs upload` (text users paste between machines), and object key and bucket
//! name validation of the embedded store (keys from S3 clients of `bucketfs serve`),
//! and the S3 client's XML parser of ListParts / CompleteMultipartUpload answers.
//! Each test runs a fixed number of cases from a fixed seed, so it is deterministic and
//! takes well under a second; a failure prints the case to replay.
//!
//! The gateway's Range parser, the fstab `-o` translator, SOURCE and bucket-name rules,
//! parts files and mountinfo are fuzzed by unit tests next to them (src/gateway,
//! src/cli). Not reachable from here: the FUSE name check (`fs::inode` is private).

use std::ops::Range;

use bucketfs::backend::s3::multirange::{
    assemble, boundary_of, parse_byteranges, parse_content_range, MultiRangeError, Part,
};
use bucketfs::backend::s3::xml::{parse_complete, parse_list_parts};
use bucketfs::store::paths::{
    components_to_relpath, escape_component, key_to_relpath, split_prefix, unescape_component,
    validate_bucket, validate_prefix, MAX_COMPONENT_LEN, MAX_KEY_LEN,
};
use bucketfs::upload::contract::{PartHandle, PathHandle, UploadHandle};
use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Numbers a parser of byte positions should survive.
fn edge_number(rng: &mut StdRng, near: u64) -> u64 {
    match rng.gen_range(0..8) {
        0 => 0,
        1 => near,
        2 => near.saturating_sub(1),
        3 => near.saturating_add(1),
        4 => u64::MAX,
        5 => u64::MAX - 1,
        6 => i64::MAX as u64,
        _ => rng.gen_range(0..=near.max(1)),
    }
}

/// A well-formed `multipart/byteranges` body for `ranges` of `data`, in one of the
/// shapes servers send (CRLF or bare LF, a preamble, transport padding, extra headers).
fn byteranges_body(rng: &mut StdRng, data: &[u8], ranges: &[Range<usize>], boundary: &str) -> Vec<u8> {
    let eol: &[u8] = if rng.gen_bool(0.8) { b"\r\n" } else { b"\n" };
    let mut b = Vec::new();
    if rng.gen_bool(0.3) {
        b.extend_from_slice(b"preamble, ignored");
        b.extend_from_slice(eol);
    }
    for r in ranges {
        b.extend_from_slice(format!("--{boundary}").as_bytes());
        if rng.gen_bool(0.2) {
            b.extend_from_slice(b" \t");
        }
        b.extend_from_slice(eol);
        if rng.gen_bool(0.5) {
            b.extend_from_slice(b"Content-Type: application/octet-stream");
            b.extend_from_slice(eol);
        }
        let name = ["Content-Range", "content-range", "CONTENT-RANGE"][rng.gen_range(0..3)];
        let total = if rng.gen_bool(0.8) { data.len().to_string() } else { "*".into() };
        b.extend_from_slice(format!("{name}: bytes {}-{}/{total}", r.start, r.end - 1).as_bytes());
        b.extend_from_slice(eol);
        b.extend_from_slice(eol);
        b.extend_from_slice(&data[r.clone()]);
        b.extend_from_slice(eol);
    }
    b.extend_from_slice(format!("--{boundary}--").as_bytes());
    b.extend_from_slice(eol);
    b
}

/// Well-formed bodies parse back to exactly the parts sent, and `assemble` hands each
/// requested range its bytes.
#[test]
fn byteranges_bodies_round_trip() {
    let mut rng = StdRng::seed_from_u64(0xb17e);
    for case in 0..2_000 {
        let len = rng.gen_range(1..4096);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let mut ranges: Vec<Range<usize>> = (0..rng.gen_range(1..6))
            .map(|_| {
                let a = rng.gen_range(0..len);
                a..rng.gen_range(a + 1..=len)
            })
            .collect();
        ranges.sort_by_key(|r| r.start);
        let boundary: String = (0..rng.gen_range(1..70)).map(|_| rng.gen_range('0'..='z')).collect();
        let boundary = boundary.replace(['\\', '"', ';'], "x");
        let body = Bytes::from(byteranges_body(&mut rng, &data, &ranges, &boundary));
        let ct = format!("multipart/byteranges; boundary=\"{boundary}\"");
        assert_eq!(boundary_of(&ct).as_deref(), Some(boundary.as_str()), "case {case}");
        let parts = parse_byteranges(&body, &boundary)
            .unwrap_or_else(|e| panic!("case {case}: {e} for {:?}", String::from_utf8_lossy(&body)));
        assert_eq!(parts.len(), ranges.len(), "case {case}");
        for (p, r) in parts.iter().zip(&ranges) {
            assert_eq!((p.start, &p.data[..]), (r.start as u64, &data[r.clone()]), "case {case}");
        }
        let wanted: Vec<Range<u64>> = ranges.iter().map(|r| r.start as u64..r.end as u64).collect();
        for (got, r) in assemble(&wanted, &parts, Some(len as u64)).iter().zip(&ranges) {
            assert_eq!(got.as_deref(), Some(&data[r.clone()]), "case {case}");
        }
    }
}

/// Bodies cut, altered or padded anywhere, and Content-Range values at the edges of
/// u64: never a panic; whatever parses is consistent (each part's length is its range's,
/// its bytes a slice of the body), and `assemble` over it never panics either.
#[test]
fn byteranges_bodies_mutated() {
    let mut rng = StdRng::seed_from_u64(0xbad_b0d7);
    const JUNK: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"--",
        b"--B",
        b"--B--",
        b"\r\n\r\n",
        b":",
        b"Content-Range: bytes 0-0/1\r\n",
        b"Content-Range: bytes 5-2/10",
        b"Content-Range: bytes 0-18446744073709551614/18446744073709551615",
        b"\xff\xfe",
        b"\0",
    ];
    for case in 0..5_000 {
        let len = rng.gen_range(1..512);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        let a = rng.gen_range(0..len);
        let ranges: Vec<Range<usize>> = std::iter::once(a..rng.gen_range(a + 1..=len)).collect();
        let mut body = byteranges_body(&mut rng, &data, &ranges, "B");
        for _ in 0..rng.gen_range(1..4) {
            match rng.gen_range(0..5) {
                0 => body.truncate(rng.gen_range(0..=body.len())),
                1 if !body.is_empty() => {
                    let at = rng.gen_range(0..body.len());
                    body[at] = rng.gen();
                }
                2 => {
                    let at = rng.gen_range(0..=body.len());
                    let junk = JUNK[rng.gen_range(0..JUNK.len())];
                    body.splice(at..at, junk.iter().copied());
                }
                3 => {
                    // a Content-Range with extreme numbers, with a total or without
                    let (s, e) = (edge_number(&mut rng, len as u64), edge_number(&mut rng, len as u64));
                    let t = edge_number(&mut rng, len as u64);
                    let t = if rng.gen_bool(0.3) { "*".to_string() } else { t.to_string() };
                    let line = format!("--B\r\nContent-Range: bytes {s}-{e}/{t}\r\n\r\n");
                    let at = rng.gen_range(0..=body.len());
                    body.splice(at..at, line.bytes());
                }
                _ => {}
            }
        }
        let body = Bytes::from(body);
        match parse_byteranges(&body, "B") {
            Ok(parts) => {
                for p in parts.iter().filter(|p| !p.data.is_empty()) {
                    let start = (p.data.as_ptr() as usize).checked_sub(body.as_ptr() as usize);
                    assert!(
                        start.is_some_and(|s| s + p.data.len() <= body.len()),
                        "case {case}: part outside the body"
                    );
                    assert!(p.total.is_none_or(|t| p.start + p.data.len() as u64 <= t), "case {case}: {p:?}");
                }
                let asked: Vec<Range<u64>> = (0..3)
                    .map(|_| {
                        let a = edge_number(&mut rng, len as u64);
                        a..a.saturating_add(rng.gen_range(0..64))
                    })
                    .collect();
                let _ = assemble(&asked, &parts, None);
                let _ = assemble(&asked, &parts, Some(len as u64));
            }
            Err(MultiRangeError::Malformed(_) | MultiRangeError::BadContentRange(_)) => {}
            Err(e) => panic!("case {case}: unexpected error {e}"),
        }
    }
}

/// `Content-Range` values: no panic; what parses is an exclusive, non-empty range inside
/// the total when one is given.
#[test]
fn content_range_values() {
    let mut rng = StdRng::seed_from_u64(0xc0a7);
    const PIECES: &[&str] =
        &["bytes", " ", "-", "/", "*", "0", "1", "99", "+1", "18446744073709551615", "é", "\t"];
    for case in 0..20_000 {
        let v = if rng.gen_bool(0.5) {
            (0..rng.gen_range(0..10)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect::<String>()
        } else {
            let near = rng.gen_range(0..1u64 << 40);
            let (s, e, t) =
                (edge_number(&mut rng, near), edge_number(&mut rng, near), edge_number(&mut rng, near));
            let total = if rng.gen_bool(0.2) { "*".to_string() } else { t.to_string() };
            format!("bytes {s}-{e}/{total}")
        };
        if let Ok((start, end, total)) = parse_content_range(&v) {
            assert!(start < end, "case {case}: {v:?}");
            assert!(total.is_none_or(|t| end <= t), "case {case}: {v:?}");
        }
    }
    for ct in [
        "multipart/byteranges",
        "multipart/byteranges; boundary=",
        "text/plain; boundary=x",
        "multipart/byteranges;;=;boundary",
    ] {
        assert_eq!(boundary_of(ct), None, "{ct}");
    }
}

/// Found by `content_range_values`: `bytes 0-18446744073709551615/*` computed `last + 1`
/// on a u64 in `parse_content_range`: a panic in the dev profile, a wrapped `0` end in
/// release. A server's answer must not crash the client.
#[test]
fn content_range_ending_at_u64_max_with_unknown_total_is_refused() {
    assert!(parse_content_range("bytes 0-18446744073709551615/*").is_err());
    let body =
        Bytes::from_static(b"--B\r\nContent-Range: bytes 5-18446744073709551615/*\r\n\r\nx\r\n--B--\r\n");
    assert!(parse_byteranges(&body, "B").is_err());
}

fn random_text(rng: &mut StdRng, max: usize) -> String {
    (0..rng.gen_range(0..=max))
        .map(|_| match rng.gen_range(0..4) {
            0 => rng.gen_range('\0'..='\u{7f}'),
            1 => rng.gen_range('\u{80}'..='\u{3ff}'),
            _ => rng.gen_range('a'..='z'),
        })
        .collect()
}

/// The handles of `bucketfs upload`: every handle survives its text form, and text cut,
/// altered or made up never panics the parsers; a wrong kind of handle is refused.
#[test]
fn upload_handles() {
    let mut rng = StdRng::seed_from_u64(0x4a4d1e);
    for case in 0..5_000 {
        let up = UploadHandle {
            bucket_url: format!("s3://{}", random_text(&mut rng, 10)),
            key: random_text(&mut rng, 30),
            upload_id: random_text(&mut rng, 20),
        };
        let part = PartHandle {
            upload_id: up.upload_id.clone(),
            part_number: rng.gen(),
            etag: random_text(&mut rng, 40),
            size: rng.gen(),
        };
        let path = PathHandle { key: up.key.clone(), etag: part.etag.clone(), size: rng.gen() };
        match UploadHandle::parse(&up.to_text()) {
            Ok(h) => assert_eq!(h, up, "case {case}"),
            // empty key or upload id: refused by design
            Err(_) => assert!(up.key.is_empty() || up.upload_id.is_empty(), "case {case}: {up:?}"),
        }
        assert_eq!(PartHandle::parse(&format!("  {}\n", part.to_text())).unwrap(), part, "case {case}");
        assert_eq!(PathHandle::parse(&path.to_text()).unwrap(), path, "case {case}");
        // one kind of handle is never taken for another
        assert!(UploadHandle::parse(&part.to_text()).is_err());
        assert!(PartHandle::parse(&path.to_text()).is_err());
        assert!(PathHandle::parse(&up.to_text()).is_err());

        let mut text = [up.to_text(), part.to_text(), path.to_text()][rng.gen_range(0..3)].clone();
        match rng.gen_range(0..4) {
            0 => text.truncate(rng.gen_range(0..=text.len())),
            1 if !text.is_empty() => {
                let at = rng.gen_range(0..text.len());
                if text.is_char_boundary(at) && text.is_char_boundary(at + 1) {
                    text.replace_range(at..at + 1, &random_text(&mut rng, 2));
                }
            }
            2 => text = format!("bfs-part:{}", hex_of(&random_text(&mut rng, 60))),
            _ => text = random_text(&mut rng, 80),
        }
        let _ = UploadHandle::parse(&text);
        let _ = PartHandle::parse(&text);
        let _ = PathHandle::parse(&text);
    }
}

fn hex_of(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Object keys of the embedded store (what S3 clients send `bucketfs serve`): no panic;
/// an accepted key maps to a relative path inside the bucket directory, component by
/// component, and each component maps back to the key's; the refused ones break a rule.
#[test]
fn object_keys_and_bucket_names() {
    let mut rng = StdRng::seed_from_u64(0x6e75);
    const PIECES: &[&str] =
        &["a", "/", "//", ".", "..", "%", "%25", "%meta", "%d.", "\0", "é", "\u{202e}", "\\", " ", "-", "x"];
    for case in 0..20_000 {
        let mut key: String =
            (0..rng.gen_range(0..12)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
        match rng.gen_range(0..20) {
            0 => key.push_str(&"k".repeat(rng.gen_range(200..300))),
            1 => key = "a/".repeat(rng.gen_range(500..520)),
            _ => {}
        }
        match key_to_relpath(&key) {
            Ok(p) => {
                assert!(p.is_relative(), "case {case}: {key:?} -> {p:?}");
                let comps: Vec<&str> = key.split('/').collect();
                let names: Vec<String> = p.iter().map(|c| c.to_string_lossy().into_owned()).collect();
                assert_eq!(names.len(), comps.len(), "case {case}: {key:?} -> {p:?}");
                for (n, c) in names.iter().zip(&comps) {
                    assert!(n != "." && n != ".." && n.len() <= MAX_COMPONENT_LEN, "case {case}: {n:?}");
                    assert_eq!(unescape_component(n).as_deref(), Some(*c), "case {case}: {key:?}");
                }
                assert_eq!(components_to_relpath(&comps), Some(p), "case {case}");
            }
            Err(_) => {
                let bad = key.is_empty()
                    || key.len() > MAX_KEY_LEN
                    || key.contains('\0')
                    || key.starts_with('/')
                    || key
                        .split('/')
                        .any(|c| c == "." || c == ".." || escape_component(c).len() > MAX_COMPONENT_LEN);
                assert!(bad, "case {case}: {key:?} refused without breaking a rule");
            }
        }
        let _ = validate_prefix(&key);
        let (dirs, last) = split_prefix(&key);
        assert!(!last.contains('/') && dirs.iter().all(|d| !d.contains('/')), "case {case}");

        let name: String = key.chars().filter(|c| *c != '/').take(70).collect();
        if validate_bucket(&name).is_ok() {
            assert!((3..=63).contains(&name.len()), "case {case}: {name:?}");
            assert!(name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-'));
        }
    }
}

/// Bodies whose parts say one thing and carry another are refused, not believed.
#[test]
fn byteranges_parts_must_match_their_content_range() {
    let long = Bytes::from_static(b"--B\r\nContent-Range: bytes 0-1/10\r\n\r\nabc\r\n--B--\r\n");
    assert!(parse_byteranges(&long, "B").is_err());
    let short = Bytes::from_static(b"--B\r\nContent-Range: bytes 0-9/10\r\n\r\nabc\r\n--B--\r\n");
    assert!(parse_byteranges(&short, "B").is_err());
    let disagree = Bytes::from_static(
        b"--B\r\nContent-Range: bytes 0-0/10\r\n\r\na\r\n--B\r\nContent-Range: bytes 1-1/11\r\n\r\nb\r\n--B--\r\n",
    );
    assert!(parse_byteranges(&disagree, "B").is_err());
    let ok: Vec<Part> = parse_byteranges(
        &Bytes::from_static(b"--B\r\nContent-Range: bytes 2-3/10\r\n\r\ncd\r\n--B--\r\n"),
        "B",
    )
    .unwrap();
    assert_eq!((ok[0].start, &ok[0].data[..], ok[0].total), (2, &b"cd"[..], Some(10)));
}

/// Text that XML must escape, and text that looks like markup.
fn xml_text(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &["a", "&", "<", ">", "\"", "'", "é", " ", "</Part>", "<Part>", "%2F", "]]>"];
    (0..rng.gen_range(0..6)).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&#34;")
}

/// ListParts answers: well-formed ones give back exactly the parts written, whatever
/// the key and ETags contain; truncated or mutated ones give an answer or an error,
/// never a panic.
#[test]
fn list_parts_answers() {
    let mut rng = StdRng::seed_from_u64(16);
    for case in 0..3_000 {
        let key = xml_text(&mut rng);
        let parts: Vec<(u32, String, u64)> = (0..rng.gen_range(0..5))
            .map(|i| (i + 1, xml_text(&mut rng).replace('"', ""), edge_number(&mut rng, 1 << 20)))
            .collect();
        let mut body = format!(
            "<?xml version=\"1.0\"?><ListPartsResponse><Key>{}</Key><IsTruncated>false</IsTruncated>",
            xml_escape(&key)
        );
        for (n, etag, size) in &parts {
            body.push_str(&format!(
                "<Part><PartNumber>{n}</PartNumber><ETag>&quot;{}&quot;</ETag><Size>{size}</Size></Part>",
                xml_escape(etag)
            ));
        }
        body.push_str("</ListPartsResponse>");
        let page = parse_list_parts(&body).unwrap_or_else(|e| panic!("case {case}: {e}\n{body}"));
        assert_eq!(page.key, key, "case {case}");
        let got: Vec<_> =
            page.parts.iter().map(|p| (p.part_number, p.etag.trim().to_owned(), p.size)).collect();
        let want: Vec<_> = parts.iter().map(|(n, e, s)| (*n, e.trim().to_owned(), *s)).collect();
        assert_eq!(got, want, "case {case}");

        let cut = rng.gen_range(0..body.len());
        if body.is_char_boundary(cut) {
            assert!(parse_list_parts(&body[..cut]).is_err(), "case {case}: truncated at {cut} parsed");
        }
        let mut bytes = body.into_bytes();
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] = b"<>&;/\"x0"[rng.gen_range(0..7)];
        }
        let mutated = String::from_utf8_lossy(&bytes);
        let _ = parse_list_parts(&mutated);
        let _ = parse_complete(&mutated);
    }
}
