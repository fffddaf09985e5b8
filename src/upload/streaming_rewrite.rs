//! Writes, reads and truncation of a [`StreamingUpload`] away from its end.
//!
//! See "Writes that are not at the end" in the parent module: these work only
//! where the upload still holds the bytes concerned (the part being buffered,
//! the retained parts) and report `false`/`None` otherwise, changing nothing,
//! so that the caller can fall back without having lost a byte.

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
        if let Some(p) = self.retained_at(range.start).filter(|p| range.end <= p.end()) {
            return Some(p.data.slice((range.start - p.start) as usize..(range.end - p.start) as usize));
        }
        // across parts: every byte must still be held
        let mut out = Vec::with_capacity((range.end - range.start) as usize);
        let mut at = range.start;
        while at < range.end {
            if at >= self.handed_off {
                out.extend_from_slice(
                    &self.buffer[(at - self.handed_off) as usize..(range.end - self.handed_off) as usize],
                );
                break;
            }
            let p = self.retained_at(at)?;
            let end = range.end.min(p.end());
            out.extend_from_slice(&p.data[(at - p.start) as usize..(end - p.start) as usize]);
            at = end;
        }
        Some(out.into())
    }

    /// The retained part holding byte `offset`.
    fn retained_at(&self, offset: u64) -> Option<&super::RetainedPart> {
        self.retained.iter().find(|p| p.start <= offset && offset < p.end())
    }

    /// Whether every byte of `range` (all before `handed_off`) is in a retained part.
    fn holds(&self, range: Range<u64>) -> bool {
        let mut at = range.start;
        while at < range.end {
            match self.retained_at(at) {
                Some(p) => at = p.end(),
                None => return false,
            }
        }
        true
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
        // the bytes that land before the part being buffered must all be in retained parts
        if offset < self.handed_off {
            let before = end.min(self.handed_off);
            if !self.holds(offset..before) {
                return Ok(false);
            }
            self.patch_retained(offset, &data[..(before - offset) as usize]);
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

    /// Copies `data` into the retained parts it covers (all of it is held: see `holds`).
    fn patch_retained(&mut self, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        for part in self.retained.iter_mut().filter(|p| p.start < end && offset < p.end()) {
            let (from, to) = (offset.max(part.start), end.min(part.end()));
            // the part's own upload may still hold the bytes: copy rather than change them under it
            let mut bytes =
                std::mem::take(&mut part.data).try_into_mut().unwrap_or_else(|b| b.as_ref().into());
            bytes[(from - part.start) as usize..(to - part.start) as usize]
                .copy_from_slice(&data[(from - offset) as usize..(to - offset) as usize]);
            part.data = bytes.freeze();
            part.patched = true;
        }
    }

    /// Sends the patched retained parts again under their part numbers (after every
    /// part upload has ended, so that an older copy cannot land after them).
    pub(super) async fn resend_patched_parts(&mut self) -> BackendResult<()> {
        let Some(upload_id) = self.upload_id.clone() else { return Ok(()) };
        for i in 0..self.retained.len() {
            let part = &self.retained[i];
            if !part.patched {
                continue;
            }
            let (number, data) = (part.number, part.data.clone());
            let span = tracing::debug_span!(target: TARGET, "upload_part", key = %self.key, part_number = number, size = data.len(), resend = true);
            let sent =
                self.params.backend.upload_part(&self.key, &upload_id, number, data).instrument(span).await?;
            self.retained[i].patched = false;
            self.completed.retain(|p| p.part_number != number);
            self.completed.push(sent);
        }
        Ok(())
    }
}
