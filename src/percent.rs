//! Percent-encoding of URL pieces, the one place that does it (issue 16).
//!
//! A leaf module on the `percent-encoding` crate, so that the HTTP backends
//! (object names in GCS and Azure URLs, S3's `x-amz-copy-source`) and the
//! gateway (object paths of requests) agree on one encoding and one strict
//! decoding instead of each carrying its own loop.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986 unreserved characters (`A-Z a-z 0-9 - _ . ~`).
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// Percent-encodes everything but RFC 3986 unreserved characters.
pub fn encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Like [`encode`] but keeps `/` (object paths in URLs, S3 copy sources).
pub fn encode_path(s: &str) -> String {
    s.split('/').map(encode).collect::<Vec<_>>().join("/")
}

/// Decodes `%XX` escapes; `None` for a `%` not followed by two hex digits or a
/// result that is not UTF-8. The crate passes a malformed `%` through as text,
/// which would let `%zz` and `%2` name a different object than the client
/// signed, so such input is refused here instead.
pub fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let well_formed = b
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == b'%')
        .all(|(i, _)| b.get(i + 1..i + 3).is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)));
    if !well_formed {
        return None;
    }
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_all_but_unreserved() {
        assert_eq!(encode("a/b c+é"), "a%2Fb%20c%2B%C3%A9");
        assert_eq!(encode("AZaz09-_.~"), "AZaz09-_.~");
        assert_eq!(encode_path("a/b c"), "a/b%20c");
        assert_eq!(encode_path("/a//b%"), "/a//b%25");
    }

    #[test]
    fn decodes_strictly() {
        assert_eq!(decode("a%2Fb%20c").as_deref(), Some("a/b c"));
        assert_eq!(decode("%C3%A9%c3%a9").as_deref(), Some("éé"));
        assert_eq!(decode("plain+text").as_deref(), Some("plain+text"));
        for bad in ["%zz", "%2", "a%", "%+f", "%ff", "%C3"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    #[test]
    fn decode_inverts_encode() {
        for s in ["", "a b/c", "é%2F&=?#", "\u{1F600} x"] {
            assert_eq!(decode(&encode(s)).as_deref(), Some(s));
            assert_eq!(decode(&encode_path(s)).as_deref(), Some(s));
        }
    }
}
