//! The `abfs://` backend (Azure Data Lake Storage Gen2) against the local DFS
//! test server of `cloud_support::dfs`, which records every request: data
//! round trips, real directories, one-request renames of files and of a
//! directory of 1,000 files, ENOTEMPTY from the server, uploads invisible until
//! completed, a failed flush reported, and the headers of every credential kind.

use std::collections::BTreeMap;

use bucketfs::backend::abfs::AbfsBackend;
use bucketfs::backend::azure::config::{AzureConfig, AzureRequest};
use bucketfs::backend::*;
use bytes::Bytes;

use crate::cloud_support::{self, dfs::DfsServer};
use crate::s3_support::pattern;

const MIB: usize = 1024 * 1024;

fn is(e: &BackendResult<impl std::fmt::Debug>, kind: ErrorKind) -> bool {
    matches!(e, Err(BackendError { kind: k, .. }) if *k == kind)
}

async fn ls(b: &AbfsBackend, prefix: &str) -> ListPage {
    let req = ListRequest { prefix: prefix.into(), delimiter: Some("/".into()), ..Default::default() };
    b.list(&req).await.unwrap()
}

#[tokio::test]
async fn data_round_trips_with_metadata_and_real_directories() {
    let s = DfsServer::start();
    let b = cloud_support::abfs_filesystem(&s, "fs").await;
    b.check_bucket().await.unwrap();
    let opts = PutOptions {
        content_type: Some("text/x-abfs".into()),
        user_metadata: BTreeMap::from([("bucketfs-mode".into(), "100640".into())]),
        ..Default::default()
    };
    for (i, size) in [0, 1, 4 * MIB + 3].into_iter().enumerate() {
        let key = format!("d/sub/f{i}");
        let data = Bytes::from(pattern(size, i as u64));
        b.put(&key, data.clone(), &opts).await.unwrap();
        assert_eq!(s.content(&format!("fs/{key}")).unwrap().len(), size);
        let m = b.head(&key).await.unwrap();
        assert_eq!((m.size, m.content_type.as_deref()), (size as u64, Some("text/x-abfs")));
        assert_eq!(m.user_metadata.get("bucketfs-mode").map(String::as_str), Some("100640"));
        let all = b.get_range(&key, None, &GetOptions::default()).await.unwrap();
        assert!(all.data == data, "size {size}");
        if size > 10 {
            let part = b.get_range(&key, Some(3..10), &GetOptions { if_match: Some(m.etag.clone()) }).await;
            assert_eq!(&part.unwrap().data[..], &data[3..10]);
            let stale = b.get_range(&key, Some(3..10), &GetOptions { if_match: Some("0xOLD".into()) }).await;
            assert!(is(&stale, ErrorKind::PreconditionFailed), "{stale:?}");
        }
    }
    // parents were made real directories by the writes
    assert_eq!(s.kind("fs/d/sub"), Some(true));
    let page = ls(&b, "d/").await;
    assert_eq!(page.common_prefixes, ["d/sub/"]);
    assert!(page.objects.is_empty());
    // a directory is never taken for a file; its marker key is the directory
    assert!(is(&b.head("d/sub").await, ErrorKind::NotFound));
    assert_eq!(b.head("d/sub/").await.unwrap().size, 0);
    // mkdir: a marker key creates the directory, no object
    b.put("empty/", Bytes::new(), &PutOptions::default()).await.unwrap();
    assert_eq!(s.kind("fs/empty"), Some(true));
    assert_eq!(ls(&b, "").await.common_prefixes, ["d/", "empty/"]);
    // a prefix ending inside a name lists its directory and filters
    let keys: Vec<_> = ls(&b, "d/sub/f1").await.objects.into_iter().map(|o| o.key).collect();
    assert_eq!(keys, ["d/sub/f1"]);
    // a missing directory lists empty, like a prefix without keys
    assert!(ls(&b, "nope/").await.objects.is_empty());
    // a server-side copy streams through a hidden file; in place it rewrites properties
    b.copy("d/sub/f2", "c/copy", None).await.unwrap();
    assert_eq!(s.content("fs/c/copy").unwrap(), pattern(4 * MIB + 3, 2));
    let relabel = PutOptions { content_type: Some("a/b".into()), ..Default::default() };
    let m = b.copy("c/copy", "c/copy", Some(&relabel)).await.unwrap();
    assert_eq!((m.content_type.as_deref(), m.user_metadata.len()), (Some("a/b"), 0));
    assert!(s.paths("fs").iter().all(|p| !p.starts_with("fs/.bucketfs-multipart/")), "{:?}", s.paths("fs"));
}

#[tokio::test]
async fn a_directory_of_1000_files_renames_with_one_request() {
    let s = DfsServer::start();
    let b = cloud_support::abfs_filesystem(&s, "fs").await;
    for i in 0..1000 {
        b.put(&format!("big/f{i:04}"), Bytes::from(format!("file {i}")), &PutOptions::default())
            .await
            .unwrap();
    }
    s.clear_requests();
    b.rename("big/", "moved/").await.unwrap();
    let reqs = s.requests();
    assert_eq!(reqs.len(), 1, "{reqs:?}");
    assert_eq!((reqs[0].method.as_str(), reqs[0].path.as_str()), ("PUT", "fs/moved"));
    assert_eq!(reqs[0].h("x-ms-rename-source"), Some("/fs/big"));
    assert_eq!(s.kind("fs/big"), None);
    assert_eq!(s.content("fs/moved/f0999").unwrap(), b"file 999");
    // and the listing pages through all of them with continuation tokens
    let mut keys = Vec::new();
    let mut req = ListRequest {
        prefix: "moved/".into(),
        delimiter: Some("/".into()),
        continuation: None,
        max_keys: 300,
    };
    loop {
        let page = b.list(&req).await.unwrap();
        keys.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    assert_eq!(keys.len(), 1000);
    assert_eq!(keys[999], "moved/f0999");
    // a file rename is one request too, onto a new parent the rename creates
    s.clear_requests();
    b.rename("moved/f0000", "elsewhere/new").await.unwrap();
    let renames = s.requests().iter().filter(|r| r.h("x-ms-rename-source").is_some()).count();
    assert_eq!(renames, 2, "refused for the missing parent, then sent again: {:?}", s.requests());
    assert_eq!(s.content("fs/elsewhere/new").unwrap(), b"file 0");
}

#[tokio::test]
async fn removing_a_non_empty_directory_is_enotempty_from_the_server() {
    let s = DfsServer::start();
    let b = cloud_support::abfs_filesystem(&s, "fs").await;
    b.put("d/", Bytes::new(), &PutOptions::default()).await.unwrap();
    b.put("d/f", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap();
    let e = b.delete("d/").await;
    assert!(is(&e, ErrorKind::DirectoryNotEmpty), "{e:?}");
    assert_eq!(e.unwrap_err().kind.errno(), libc::ENOTEMPTY);
    let del = s.requests().into_iter().rfind(|r| r.method == "DELETE").unwrap();
    assert_eq!(del.q("recursive"), Some("false"));
    assert_eq!(s.kind("fs/d/f"), Some(false));
    b.delete("d/f").await.unwrap();
    b.delete("d/").await.unwrap();
    assert_eq!(s.kind("fs/d"), None);
    b.delete("d/").await.unwrap(); // a missing path deletes fine, as on object stores
}

#[tokio::test]
async fn uploads_are_invisible_until_completed_and_a_failed_flush_is_an_error() {
    let s = DfsServer::start();
    let b = cloud_support::abfs_filesystem(&s, "fs").await;
    b.put("up/", Bytes::new(), &PutOptions::default()).await.unwrap();
    let opts = PutOptions {
        user_metadata: BTreeMap::from([("bucketfs-mode".into(), "100600".into())]),
        if_none_match_any: true,
        ..Default::default()
    };
    let id = b.create_multipart("up/big", &opts).await.unwrap();
    let chunks = [pattern(4 * MIB, 1), pattern(4 * MIB, 2), pattern(MIB + 5, 3)];
    let mut parts = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        parts.push(b.upload_part("up/big", &id, i as u32 + 1, Bytes::from(c.clone())).await.unwrap());
    }
    let wrong = b.upload_part("up/big", &id, 7, Bytes::from_static(b"x")).await;
    assert!(is(&wrong, ErrorKind::InvalidArgument), "parts go in order: {wrong:?}");
    assert!(is(&b.head("up/big").await, ErrorKind::NotFound), "not visible before completion");
    let listed =
        b.list(&ListRequest { prefix: "".into(), delimiter: None, ..Default::default() }).await.unwrap();
    assert!(listed.objects.iter().all(|o| !o.key.contains("multipart")), "{:?}", listed.objects);
    assert_eq!(b.list_multipart("up/").await.unwrap().len(), 1);
    s.clear_requests();
    let m = b.complete_multipart("up/big", &id, &parts).await.unwrap();
    assert_eq!(m.size, (9 * MIB + 5) as u64);
    assert_eq!(m.user_metadata.get("bucketfs-mode").map(String::as_str), Some("100600"));
    assert!(!m.user_metadata.keys().any(|k| k.contains("upload")), "{:?}", m.user_metadata);
    let renames: Vec<_> = s.requests().into_iter().filter(|r| r.h("x-ms-rename-source").is_some()).collect();
    assert_eq!(renames.len(), 1);
    assert_eq!(renames[0].h("if-none-match"), Some("*"), "the write condition rides on the rename");
    assert_eq!(s.content("fs/up/big").unwrap(), chunks.concat());
    assert!(b.list_multipart("").await.unwrap().is_empty());

    // a second upload to the same key under If-None-Match fails and leaves nothing behind
    let id = b.create_multipart("up/big", &opts).await.unwrap();
    let p = b.upload_part("up/big", &id, 1, Bytes::from_static(b"again")).await.unwrap();
    let e = b.complete_multipart("up/big", &id, &[p]).await;
    assert!(is(&e, ErrorKind::PreconditionFailed), "{e:?}");
    assert_eq!(s.content("fs/up/big").unwrap().len(), 9 * MIB + 5);

    // a refused flush is an error of the write, and the destination stays as it was
    b.put("up/small", Bytes::from_static(b"old"), &PutOptions::default()).await.unwrap();
    s.fail_next_flush();
    let e = b.put("up/small", Bytes::from_static(b"new"), &PutOptions::default()).await;
    assert!(e.is_err(), "{e:?}");
    assert_eq!(s.content("fs/up/small").unwrap(), b"old", "a put is written aside: the old content stays");
    let id = b.create_multipart("up/other", &PutOptions::default()).await.unwrap();
    let p = b.upload_part("up/other", &id, 1, Bytes::from_static(b"abc")).await.unwrap();
    s.fail_next_flush();
    assert!(b.complete_multipart("up/other", &id, &[p]).await.is_err());
    assert!(is(&b.head("up/other").await, ErrorKind::NotFound));
    b.abort_multipart("up/other", &id).await.unwrap();
    assert!(b.list_multipart("").await.unwrap().is_empty());
}

/// Backend for `fs` with whatever credentials the environment holds now.
fn backend_from_env(s: &DfsServer) -> AbfsBackend {
    let req = AzureRequest {
        container: "fs".into(),
        account: Some("acct".into()),
        endpoint: Some(s.endpoint.clone()),
        anonymous: false,
        dfs: true,
    };
    AbfsBackend::new(AzureConfig::resolve(&req).unwrap()).unwrap()
}

fn clear_azure_env() {
    for (k, _) in std::env::vars() {
        if k.starts_with("AZURE_") || k == "BUCKETFS_AZURE_AUTH" {
            std::env::remove_var(k);
        }
    }
}

/// Key, SAS token, connection string (key and SAS) and an Entra ID token from the
/// Azure CLI each put their own authorization on every request, the rename's
/// source included.
#[tokio::test]
async fn every_credential_kind_signs_its_own_way() {
    let s = DfsServer::start();
    cloud_support::abfs_filesystem(&s, "fs").await;
    let (az_dir, _calls) = crate::azure_entra::fake_az(true);
    let key = cloud_support::AZ_KEY;
    let kinds: [(&str, &str, String); 5] = [
        ("key", "AZURE_STORAGE_KEY", key.to_owned()),
        ("sas", "AZURE_STORAGE_SAS_TOKEN", "?sv=2021-12-02&sig=SASSIG".to_owned()),
        ("conn-key", "AZURE_STORAGE_CONNECTION_STRING", format!("AccountName=acct;AccountKey={key}")),
        (
            "conn-sas",
            "AZURE_STORAGE_CONNECTION_STRING",
            "AccountName=acct;SharedAccessSignature=sv=1&sig=CSSIG".into(),
        ),
        ("cli", "PATH", format!("{}:/usr/bin:/bin", az_dir.path().display())),
    ];
    for (name, var, value) in kinds {
        clear_azure_env();
        std::env::set_var(var, &value);
        let b = backend_from_env(&s);
        s.clear_requests();
        b.check_bucket().await.unwrap();
        b.put(&format!("{name}/f"), Bytes::from_static(b"data"), &PutOptions::default()).await.unwrap();
        b.rename(&format!("{name}/f"), &format!("{name}/g")).await.unwrap();
        let reqs = s.requests();
        // list; create, append, flush aside and rename into place (refused once for the
        // missing parent, which is then created); the rename
        assert_eq!(reqs.len(), 8, "{name}: {reqs:?}");
        for r in &reqs {
            assert!(r.h("x-ms-date").is_some() && r.h("x-ms-version").is_some(), "{name}: {r:?}");
            let auth = r.h("authorization");
            match name {
                "key" | "conn-key" => {
                    let sig = auth.and_then(|a| a.strip_prefix("SharedKey acct:"));
                    assert_eq!(sig.map(str::len), Some(44), "{name}: a base64 HMAC-SHA256: {r:?}");
                }
                "sas" => assert!(auth.is_none() && r.q("sig") == Some("SASSIG"), "{name}: {r:?}"),
                "conn-sas" => assert!(auth.is_none() && r.q("sig") == Some("CSSIG"), "{name}: {r:?}"),
                _ => {
                    assert_eq!(auth, Some(format!("Bearer {}", crate::azure_entra::TOKEN).as_str()), "{r:?}")
                }
            }
        }
        let source = reqs[7].h("x-ms-rename-source").unwrap();
        assert!(source.starts_with(&format!("/fs/{name}/f")), "{source}");
        // a SAS is the rename source's authorization too
        assert_eq!(source.contains("sig="), name.contains("sas"), "{name}: {source}");
        assert_eq!(s.content(&format!("fs/{name}/g")).unwrap(), b"data");
    }
}

/// `--enable-perms`' mode becomes the path's POSIX permissions (setAccessControl)
/// on every write that carries it, and only then; properties keep the record.
#[tokio::test]
async fn enable_perms_mode_sets_the_path_permissions() {
    let s = DfsServer::start();
    let b = cloud_support::abfs_filesystem(&s, "fs").await;
    let with_mode = |m: &str| PutOptions {
        user_metadata: BTreeMap::from([("bucketfs-mode".into(), m.into())]),
        ..Default::default()
    };
    b.put("plain", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap();
    assert!(!s.requests().iter().any(|r| r.q("action") == Some("setAccessControl")), "no mode, no ACL call");
    b.put("f", Bytes::from_static(b"x"), &with_mode("100640")).await.unwrap();
    assert_eq!(s.access("fs/f").unwrap().0, "0640");
    // chmod: metadata rewritten in place
    let m = b.copy("f", "f", Some(&with_mode("100600"))).await.unwrap();
    assert_eq!(s.access("fs/f").unwrap().0, "0600");
    assert_eq!(
        m.user_metadata.get("bucketfs-mode").map(String::as_str),
        Some("100600"),
        "read back from properties"
    );
    // mkdir with a mode, and a multipart upload
    b.put("d/", Bytes::new(), &with_mode("40750")).await.unwrap();
    assert_eq!(s.access("fs/d").unwrap().0, "0750");
    let id = b.create_multipart("d/big", &with_mode("100604")).await.unwrap();
    let p = b.upload_part("d/big", &id, 1, Bytes::from_static(b"abc")).await.unwrap();
    b.complete_multipart("d/big", &id, &[p]).await.unwrap();
    assert_eq!(s.access("fs/d/big").unwrap().0, "0604");
}
