//! Writes, reads and truncation of a [`StreamingUpload`] away from its end.
//!
//! See "Writes that are not at the end" in the parent module: these work only
//! where the upload holds the bytes concerned (the part being buffered, the
//! retained parts, and for writes the parts it can read back) and report
//! [`Rewrite::Refused`]/`false`/`None` otherwise, changing nothing, so that the
//! caller can fall back without having lost a byte.

use std::ops::Range;

use bytes::Bytes;
use tracing::Instrument;

use super::{RetainedPart, StreamingUpload, TARGET, ZEROS};
use crate::backend::{BackendError, BackendResult, CompletedPart};
use crate::memory::Reservation;

/// What [`StreamingUpload::write_at`] did with a write. (An `Err` beside these
/// means the upload itself failed: its bytes are lost.)
#[derive(Debug)]
pub enum Rewrite {
    Written,
    /// Nothing changed: the write would change uploaded bytes that are neither
    /// held nor readable back (or no memory to hold them), or leave a gap of more
    /// than one part after the end.
    Refused,
    /// Nothing changed: reading an uploaded part back failed. The upload goes on
    /// intact, so the write may be tried again.
    ReadBackFailed(BackendError),
}

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

    /// Writes `data` at `offset` (see [`Rewrite`]).
    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> BackendResult<Rewrite> {
        let end = offset + data.len() as u64;
        if offset > self.len {
            if offset - self.len > self.next_part_size()? {
                return Ok(Rewrite::Refused);
            }
            self.fill_zeros(offset).await?;
        }
        // the bytes that land before the part being buffered must all be in retained parts
        if offset < self.handed_off {
            let before = end.min(self.handed_off);
            if !self.holds(offset..before) {
                match self.read_back(offset..before).await? {
                    Rewrite::Written => {}
                    refused => return Ok(refused),
                }
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
        Ok(Rewrite::Written)
    }

    /// Reads the uploaded parts of `range` that are not held back from the backend
    /// and keeps them as retained parts (see the parent module). `Written` when
    /// every byte of `range` is held afterwards; changes nothing otherwise.
    async fn read_back(&mut self, range: Range<u64>) -> BackendResult<Rewrite> {
        if !self.read_back || !self.params.backend.capabilities().readable_upload_parts {
            return Ok(Rewrite::Refused);
        }
        let Some(upload_id) = self.upload_id.clone() else { return Ok(Rewrite::Refused) };
        // a part's ETag is known once its upload has ended, and an upload still
        // running could land after the patched copy and undo it
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        let mut fetched: Vec<RetainedPart> = Vec::new();
        // one at a time: making room may let go of a part of `range` that was held
        while let Some((part, start)) = self.part_not_held(&range, &fetched) {
            let Some(reservation) = self.reserve_for_read_back(part.size).await? else {
                tracing::debug!(target: TARGET, key = %self.key, part = part.part_number,
                    "no memory to read an uploaded part back");
                return Ok(Rewrite::Refused);
            };
            let span = tracing::debug_span!(target: TARGET, "read_part", key = %self.key, part_number = part.part_number, size = part.size);
            let data =
                match self.params.backend.read_part(&self.key, &upload_id, &part).instrument(span).await {
                    Ok(data) if data.len() as u64 == part.size => data,
                    Ok(data) => {
                        return Ok(Rewrite::ReadBackFailed(BackendError::io(format!(
                            "{}: part {} read back as {} bytes, {} were uploaded",
                            self.key,
                            part.part_number,
                            data.len(),
                            part.size
                        ))))
                    }
                    Err(e) => return Ok(Rewrite::ReadBackFailed(e)),
                };
            tracing::debug!(target: TARGET, key = %self.key, part = part.part_number, "uploaded part read back to be rewritten");
            let number = part.part_number;
            fetched.push(RetainedPart { number, start, data, _reservation: reservation, patched: false });
        }
        for part in fetched {
            let at = self.retained.partition_point(|p| p.number < part.number);
            self.retained.insert(at, part);
        }
        Ok(if self.holds(range) { Rewrite::Written } else { Rewrite::Refused })
    }

    /// The first uploaded part overlapping `range` that is neither retained nor in
    /// `fetched`, with the offset of its first byte (after every part upload has ended).
    fn part_not_held(&self, range: &Range<u64>, fetched: &[RetainedPart]) -> Option<(CompletedPart, u64)> {
        let mut parts: Vec<&CompletedPart> = self.completed.iter().collect();
        parts.sort_by_key(|p| p.part_number);
        let mut start = 0;
        for part in parts {
            let end = start + part.size;
            let held = self.retained.iter().chain(fetched).any(|p| p.number == part.part_number);
            if start < range.end && range.start < end && !held {
                return Some((part.clone(), start));
            }
            start = end;
        }
        None
    }

    /// Memory for a part read back, now or not at all (waiting could wait for this
    /// upload's own parts). When the budget is short, this upload's patched parts
    /// are sent now and let go, with the other parts it keeps (not part 1): they can
    /// be read back again.
    async fn reserve_for_read_back(&mut self, size: u64) -> BackendResult<Option<Reservation>> {
        if let Some(r) = self.params.memory.try_reserve(size) {
            return Ok(Some(r));
        }
        self.resend_patched_parts().await?;
        let first = self.retain_first;
        self.retained.retain(|p| first && p.number == 1);
        Ok(self.params.memory.try_reserve(size))
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
