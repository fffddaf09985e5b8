//! Who may do what on `bucketfs serve`.
//!
//! Every request must be signed with the server's key (s3s verifies the
//! signature before this runs), except reads of buckets the operator made
//! public with `--public-read BUCKET`: there, unsigned GetObject, HeadObject,
//! ListObjects(V2), HeadBucket and GetBucketLocation are allowed, as on an S3
//! bucket with a public-read policy. Nothing else is ever anonymous: writes,
//! deletes, multipart operations and listings of uploads still need a
//! signature, and a request that carries a *wrong* signature is refused by
//! s3s before it gets here, public bucket or not.

use std::collections::HashSet;

use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;
use s3s::{s3_error, S3Result};

/// Operations an anonymous client may run on a public bucket.
const ANONYMOUS_READS: [&str; 6] =
    ["GetObject", "HeadObject", "ListObjects", "ListObjectsV2", "HeadBucket", "GetBucketLocation"];

#[derive(Clone)]
pub struct PublicReadAccess {
    public: HashSet<String>,
}

impl PublicReadAccess {
    pub fn new(public: impl IntoIterator<Item = String>) -> Self {
        PublicReadAccess { public: public.into_iter().collect() }
    }

    /// Whether an unsigned request for `op` on `path` may run.
    pub fn allows_anonymous(&self, op: &str, path: &S3Path) -> bool {
        let bucket = match path {
            S3Path::Bucket { bucket } | S3Path::Object { bucket, .. } => bucket,
            S3Path::Root => return false,
        };
        self.public.contains(&**bucket) && ANONYMOUS_READS.contains(&op)
    }
}

#[async_trait::async_trait]
impl S3Access for PublicReadAccess {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_some() || self.allows_anonymous(cx.s3_op().name(), cx.s3_path()) {
            return Ok(());
        }
        Err(s3_error!(AccessDenied, "Signature is required"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(bucket: &str) -> S3Path {
        S3Path::Object { bucket: bucket.into(), key: "k".into() }
    }

    #[test]
    fn only_reads_of_public_buckets_are_anonymous() {
        let a = PublicReadAccess::new(["pub".to_string()]);
        assert!(a.allows_anonymous("GetObject", &obj("pub")));
        assert!(a.allows_anonymous("ListObjectsV2", &S3Path::Bucket { bucket: "pub".into() }));
        for op in ["PutObject", "DeleteObject", "CreateMultipartUpload", "ListMultipartUploads", "CopyObject"]
        {
            assert!(!a.allows_anonymous(op, &obj("pub")), "{op}");
        }
        assert!(!a.allows_anonymous("GetObject", &obj("private")));
        assert!(!a.allows_anonymous("ListBuckets", &S3Path::Root));
    }
}
