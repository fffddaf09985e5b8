//! Writes, reads and truncation of a [`StreamingUpload`] away from its end.
//!
//! See "Writes that are not at the end" in the parent module: these work only
//! where the upload still holds the bytes concerned (the part being buffered,
//! the retained first part) and report `false`/`None` otherwise, changing
//! nothing, so that the caller can fall back without having lost a byte.

use std::ops::Range;

use bytes::Bytes;
use tracing::Instrument;

use super::{StreamingUpload, TARGET, ZEROS};
use crate::backend::BackendResult;

impl StreamingUpload {
    /// Bytes `range` of what has been written, when this upload still holds them
    /// all (a read past the end is clipped, as a file read is).
    pub fn read_at(&self, range: Range<u64>) -> Option<Bytes> {
        let range = range.start.min(self.len)..range.end.min(self.len);
        if range.start >= self.handed_off {
            let at = (range.start - self.handed_off) as usize..(range.end - self.handed_off) as usize;
            return Some(Bytes::copy_from_slice(&self.buffer[at]));
        }
        let first = self.first_part.as_ref()?;
        (range.end <= first.data.len() as u64)
            .then(|| first.data.slice(range.start as usize..range.end as usize))
    }

    /// Writes `data` at `offset`. Returns `false`, having changed nothing, when that
    /// would change bytes already uploaded and not retained, or leave a gap of more
    /// than one part after the end.
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> BackendResult<bool> {
        let end = offset + data.len() as u64;
        if offset > self.len {
            if offset - self.len > self.next_part_size()? {
                return Ok(false);
            }
            self.fill_zeros(offset).await?;
        }
        // the bytes that land before the part being buffered must all be in the retained first part
        if offset < self.handed_off {
            let before = end.min(self.handed_off);
            match &self.first_part {
                Some(first) if before <= first.data.len() as u64 => {}
                _ => return Ok(false),
            }
            self.patch_first_part(offset, &data[..(before - offset) as usize]);
        }
        // then the bytes within the buffer, then those past the end
        let from = offset.max(self.handed_off);
        let overlap_end = end.min(self.len);
        if from < overlap_end {
            let at = (from - self.handed_off) as usize;
            let src = &data[(from - offset) as usize..(overlap_end - offset) as usize];
            self.buffer[at..at + src.len()].copy_from_slice(src);
        }
        if end > self.len {
            let tail_from = self.len.max(offset);
            self.write(&data[(tail_from - offset) as usize..]).await?;
        }
        Ok(true)
    }

    /// Sets the length to `size`. Returns `false`, having changed nothing, when
    /// that would cut bytes already handed off (or grow by more than one part).
    pub async fn truncate(&mut self, size: u64) -> BackendResult<bool> {
        if size < self.handed_off {
            return Ok(false);
        }
        if size > self.len {
            if size - self.len > self.next_part_size()? {
                return Ok(false);
            }
            self.fill_zeros(size).await?;
        } else {
            self.buffer.truncate((size - self.handed_off) as usize);
            self.len = size;
        }
        Ok(true)
    }

    /// Appends zeros up to `offset`.
    async fn fill_zeros(&mut self, offset: u64) -> BackendResult<()> {
        while self.len < offset {
            let n = (offset - self.len).min(ZEROS.len() as u64) as usize;
            self.write(&ZEROS[..n]).await?;
        }
        Ok(())
    }

    fn patch_first_part(&mut self, offset: u64, data: &[u8]) {
        let Some(first) = self.first_part.as_mut() else { return };
        // the part's own upload may still hold the bytes: copy rather than change them under it
        let mut bytes = std::mem::take(&mut first.data).try_into_mut().unwrap_or_else(|b| b.as_ref().into());
        bytes[offset as usize..offset as usize + data.len()].copy_from_slice(data);
        first.data = bytes.freeze();
        first.patched = true;
    }

    /// Sends a patched first part again under part number 1 (after every part
    /// upload has ended, so the older copy cannot land after it).
    pub(super) async fn resend_patched_first_part(&mut self) -> BackendResult<()> {
        let Some(first) = self.first_part.as_mut().filter(|f| f.patched) else { return Ok(()) };
        let Some(upload_id) = self.upload_id.clone() else { return Ok(()) };
        let data = first.data.clone();
        let span = tracing::debug_span!(target: TARGET, "upload_part", key = %self.key, part_number = 1, size = data.len(), resend = true);
        let part = self.params.backend.upload_part(&self.key, &upload_id, 1, data).instrument(span).await?;
        first.patched = false;
        self.completed.retain(|p| p.part_number != 1);
        self.completed.push(part);
        Ok(())
    }
}
