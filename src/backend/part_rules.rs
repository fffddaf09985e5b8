//! Checks every multipart backend applies the same way, so the errors a user
//! sees do not depend on the backend: part numbers and sizes against the
//! backend's limits, and the part list of a completion (not empty, no number
//! twice, in part-number order whatever order it was given in).

use super::{BackendError, BackendResult, CompletedPart};

/// Part `part_number` of `size` bytes is within `1..=max_number` and at most `max_size` bytes.
pub fn check_part(part_number: u32, size: u64, max_number: u32, max_size: u64) -> BackendResult<()> {
    if part_number == 0 || part_number > max_number {
        return Err(BackendError::invalid_argument(format!(
            "part number {part_number} outside 1..={max_number}"
        )));
    }
    if size > max_size {
        return Err(BackendError::invalid_argument(format!(
            "part {part_number} of {size} bytes exceeds the {} MiB limit",
            max_size >> 20
        )));
    }
    Ok(())
}

/// The parts named by a completion of `key`, sorted by part number.
pub fn sorted_parts(key: &str, parts: &[CompletedPart]) -> BackendResult<Vec<CompletedPart>> {
    if parts.is_empty() {
        return Err(BackendError::invalid_argument(format!("complete {key:?}: no parts")));
    }
    let mut sorted = parts.to_vec();
    sorted.sort_by_key(|p| p.part_number);
    if sorted.windows(2).any(|w| w[0].part_number == w[1].part_number) {
        return Err(BackendError::invalid_argument(format!("complete {key:?}: a part is named twice")));
    }
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u32) -> CompletedPart {
        CompletedPart { part_number: n, etag: format!("e{n}"), size: 1 }
    }

    #[test]
    fn limits() {
        assert!(check_part(1, 5, 10, 5).is_ok());
        assert!(check_part(0, 1, 10, 5).is_err());
        assert!(check_part(11, 1, 10, 5).is_err());
        assert!(check_part(3, 6, 10, 5).is_err());
    }

    #[test]
    fn completion_lists() {
        let got = sorted_parts("k", &[part(3), part(1), part(2)]).unwrap();
        assert_eq!(got.iter().map(|p| p.part_number).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(sorted_parts("k", &[]).is_err());
        assert!(sorted_parts("k", &[part(2), part(1), part(2)]).is_err());
    }
}
