//! The marker of a multipart upload on backends whose stores have no upload
//! objects of their own (GCS, Azure): one small hidden object per upload,
//! written at `create_multipart`, that makes uploads findable (`list_multipart`)
//! and endable (`abort`) from any process. Its body keeps what S3 keeps with an
//! upload: the destination key, and the content type, user metadata and write
//! conditions given at creation, applied at completion. Where the marker lives
//! and how it is hidden from listings is each backend's business.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{BackendError, BackendResult, PutOptions};
use crate::object::ErrorKind;

#[derive(Serialize, Deserialize, Default)]
pub struct UploadMarker {
    pub key: String,
    content_type: Option<String>,
    user_metadata: BTreeMap<String, String>,
    if_none_match_any: bool,
    if_match: Option<String>,
}

impl UploadMarker {
    pub fn new(key: &str, opts: &PutOptions) -> Self {
        UploadMarker {
            key: key.to_owned(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
            if_none_match_any: opts.if_none_match_any,
            if_match: opts.if_match.clone(),
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// The marker of upload `id` from what reading it gave, checked to be for `key`:
    /// a missing marker or one for another key is `NoSuchUpload`.
    pub fn from_read(id: &str, key: &str, read: BackendResult<Bytes>) -> BackendResult<Self> {
        let data = match read {
            Ok(d) => d,
            Err(BackendError { kind: ErrorKind::NotFound, .. }) => {
                return Err(BackendError::no_such_upload(id))
            }
            Err(e) => return Err(e),
        };
        let m: UploadMarker = serde_json::from_slice(&data).map_err(|e| {
            BackendError::corrupt(format!("upload {id}: unreadable marker: {e}")).with_source(e)
        })?;
        if m.key != key {
            return Err(BackendError::no_such_upload(format!("upload {id} is not for key {key:?}")));
        }
        Ok(m)
    }

    /// The options the completed object is written with.
    pub fn put_options(&self) -> PutOptions {
        PutOptions {
            content_type: self.content_type.clone(),
            user_metadata: self.user_metadata.clone(),
            if_none_match_any: self.if_none_match_any,
            if_match: self.if_match.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_key_check() {
        let opts = PutOptions {
            content_type: Some("text/plain".into()),
            if_none_match_any: true,
            ..Default::default()
        };
        let bytes = UploadMarker::new("a/b", &opts).to_bytes();
        let m = UploadMarker::from_read("id1", "a/b", Ok(bytes.clone())).unwrap();
        assert_eq!(m.put_options().content_type.as_deref(), Some("text/plain"));
        assert!(m.put_options().if_none_match_any);
        assert!(matches!(
            UploadMarker::from_read("id1", "other", Ok(bytes)),
            Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })
        ));
        let gone = UploadMarker::from_read("id1", "a/b", Err(BackendError::not_found("x")));
        assert!(matches!(gone, Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })));
        let junk = UploadMarker::from_read("id1", "a/b", Ok(Bytes::from_static(b"{")));
        assert!(matches!(junk, Err(BackendError { kind: ErrorKind::Corrupt, .. })));
    }
}
