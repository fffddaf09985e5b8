//! Multipart uploads of a [`Store`]: each lives in the set of its final key,
//! in the pool chosen when it was created (pools.rs finds it again by id), so
//! parts and completion never move data between pools.

use std::io::Read;
use std::time::Duration;

use super::{Store, StoreResult};
use crate::object::{CompletedPart, MultipartUploadInfo, ObjectMeta, PutOptions};

impl Store {
    // ----- multipart uploads: in the set of the final key, in the pool chosen at create -----

    pub fn create_multipart_upload(&self, bucket: &str, key: &str, opts: &PutOptions) -> StoreResult<String> {
        let pool = self.write_pool(bucket, key, None)?;
        self.pool_set(pool, key).create_multipart_upload(bucket, key, opts)
    }

    pub fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        reader: &mut dyn Read,
    ) -> StoreResult<CompletedPart> {
        self.pool_set(self.upload_pool(bucket, key, upload_id), key).put_part(
            bucket,
            key,
            upload_id,
            part_number,
            reader,
        )
    }

    pub fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<Vec<CompletedPart>> {
        self.pool_set(self.upload_pool(bucket, key, upload_id), key).list_parts(bucket, key, upload_id)
    }

    /// Reads an uploaded part back, from the pool holding the upload.
    pub fn read_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &CompletedPart,
    ) -> StoreResult<Vec<u8>> {
        self.pool_set(self.upload_pool(bucket, key, upload_id), key).read_part(bucket, key, upload_id, part)
    }

    pub fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> StoreResult<ObjectMeta> {
        let _route = self.route_lock(bucket, key);
        let pool = self.upload_pool(bucket, key, upload_id);
        let meta = self.pool_set(pool, key).complete_multipart_upload(bucket, key, upload_id, parts)?;
        // The key may have been written to another pool while the upload ran
        // (its pool was chosen at create time): that copy is older, drop it.
        for p in (0..self.pools.len()).filter(|&p| p != pool) {
            if let Err(e) = self.pool_set(p, key).delete_object(bucket, key) {
                tracing::warn!(bucket, key, pool = p + 1, error = %e, "could not remove an older copy from another pool");
            }
        }
        Ok(meta)
    }

    pub fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<()> {
        self.pool_set(self.upload_pool(bucket, key, upload_id), key)
            .abort_multipart_upload(bucket, key, upload_id)
    }

    /// In-progress uploads whose key starts with `prefix`, ordered by key then id.
    pub fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> StoreResult<Vec<MultipartUploadInfo>> {
        let mut out = Vec::new();
        for s in &self.sets {
            out.extend(s.list_multipart_uploads(bucket, prefix)?);
        }
        out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(out)
    }

    /// Aborts every upload under `prefix`; returns how many.
    pub fn abort_uploads_under(&self, bucket: &str, prefix: &str) -> StoreResult<usize> {
        self.sets.iter().try_fold(0, |n, s| Ok(n + s.abort_uploads_under(bucket, prefix)?))
    }

    /// Aborts uploads initiated more than `older_than` ago; returns how many.
    pub fn expire_uploads(&self, bucket: &str, older_than: Duration) -> StoreResult<usize> {
        self.sets.iter().try_fold(0, |n, s| Ok(n + s.expire_uploads(bucket, older_than)?))
    }
}
