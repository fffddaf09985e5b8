//! Part-level S3 operations of the gateway: `UploadPartCopy` (a part of a
//! multipart upload copied server-side from an existing object, what `aws s3
//! cp s3://… s3://…` does for large objects) and `GET`/`HEAD ?partNumber=N`
//! (one part of a multipart object, what parallel downloaders use).
//!
//! Part numbers in reads are ordinal positions in the completed object (1 is
//! the first part), as in S3 and MinIO; a plain PUT is one part.

use std::ops::Range;

use s3s::dto::*;
use s3s::{s3_error, S3Result};

use super::body;
use super::s3::{call, segments_stream, Gateway, Seg};

/// Parses `x-amz-copy-source-range: bytes=first-last` (both inclusive, both required,
/// as S3 demands) against the source size.
pub(super) fn parse_copy_range(spec: &str, size: u64) -> S3Result<Range<u64>> {
    let bad =
        || s3_error!(InvalidArgument, "x-amz-copy-source-range must be bytes=first-last within the source");
    let (a, b) = spec.strip_prefix("bytes=").and_then(|r| r.split_once('-')).ok_or_else(bad)?;
    let (first, last): (u64, u64) =
        (a.trim().parse().map_err(|_| bad())?, b.trim().parse().map_err(|_| bad())?);
    if first > last || last >= size {
        return Err(bad());
    }
    Ok(first..last + 1)
}

/// The byte range of ordinal part `n` of an object uploaded in parts of `sizes`.
pub(super) fn part_range(sizes: &[u64], n: i32) -> S3Result<Range<u64>> {
    let idx = usize::try_from(n).ok().filter(|&i| i >= 1 && i <= sizes.len()).ok_or_else(|| {
        // S3's answer (416 InvalidPartNumber); s3s has no variant for it.
        let mut e = s3s::S3Error::with_message(
            s3s::S3ErrorCode::Custom("InvalidPartNumber".into()),
            format!("the object has {} part(s); partNumber {n} is out of range", sizes.len()),
        );
        e.set_status_code(hyper::StatusCode::RANGE_NOT_SATISFIABLE);
        e
    })?;
    let start: u64 = sizes[..idx - 1].iter().sum();
    Ok(start..start + sizes[idx - 1])
}

impl Gateway {
    /// `UploadPartCopy`: streams the source (pinned to the ETag seen now) into a part.
    pub(super) async fn part_copy(&self, i: UploadPartCopyInput) -> S3Result<UploadPartCopyOutput> {
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        let n = u32::try_from(i.part_number).map_err(|_| s3_error!(InvalidArgument, "bad part number"))?;
        let (sb, sk) = (src_bucket.to_string(), src_key.to_string());
        let src = {
            let (sb, sk) = (sb.clone(), sk.clone());
            call(&self.store, move |s| s.head_object(&sb, &sk)).await?
        };
        if let Some(ETagCondition::ETag(want)) = &i.copy_source_if_match {
            if src.etag != want.value() {
                return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-match"));
            }
        }
        let range = match &i.copy_source_range {
            Some(spec) => parse_copy_range(spec, src.size)?,
            None => 0..src.size,
        };
        let blob = segments_stream(self.store.clone(), sb, sk, src.etag.clone(), vec![Seg::Range(range)]);
        let mut r = body::reader(Some(blob));
        let (b, k, id) = (i.bucket, i.key, i.upload_id);
        let p = call(&self.store, move |s| s.put_part(&b, &k, &id, n, &mut r)).await?;
        Ok(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                e_tag: Some(ETag::Strong(p.etag)),
                last_modified: Some(Timestamp::from(std::time::SystemTime::now())),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_ranges() {
        assert_eq!(parse_copy_range("bytes=0-9", 10).unwrap(), 0..10);
        assert_eq!(parse_copy_range("bytes=5-5", 10).unwrap(), 5..6);
        for bad in ["bytes=0-10", "bytes=5-4", "bytes=-5", "bytes=3-", "0-4", "bytes=a-b"] {
            assert!(parse_copy_range(bad, 10).is_err(), "{bad}");
        }
    }

    #[test]
    fn part_ranges_are_ordinal() {
        let sizes = [5, 5, 2];
        assert_eq!(part_range(&sizes, 1).unwrap(), 0..5);
        assert_eq!(part_range(&sizes, 3).unwrap(), 10..12);
        assert!(part_range(&sizes, 0).is_err());
        assert!(part_range(&sizes, 4).is_err());
        assert_eq!(part_range(&[7], 1).unwrap(), 0..7);
    }
}
