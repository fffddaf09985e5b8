//! How big each part of a multipart upload is.
//!
//! Object stores cap both the number of parts (S3: 10,000) and the size of one
//! part (S3: 5 GiB), and require every part but the last to be at least a
//! minimum (S3: 5 MiB). A fixed part size therefore forces a choice between
//! small buffers and large files: 10,000 parts of 8 MiB stop at 78 GiB. Like
//! goofys, we let the part size grow with the part number, but instead of
//! hard-coded tiers the plan doubles the part size every `double_every` parts
//! and picks the *largest* `double_every` (the slowest growth, so the smallest
//! buffers for as long as possible) for which `max_parts` parts still add up to
//! the largest object we aim for: 5 TiB (S3's object limit), or less when the
//! backend's `max_parts * max_part_size` cannot reach it.
//!
//! With S3's limits and a 5 MiB first part this gives parts 1..=~950 of 5 MiB,
//! then 10 MiB, and so on up to 5 GiB; with the default 8 MiB first part the
//! first tier is longer still. Part sizes only depend on the part number, so the
//! streaming writer and the spool uploader cut a file identically.

use crate::backend::Capabilities;

/// The largest object the plan tries to make reachable (S3's limit).
pub const TARGET_OBJECT_SIZE: u64 = 5 * 1024 * 1024 * 1024 * 1024;

/// Part size as a function of the (1-based) part number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSizePlan {
    first: u64,
    max: u64,
    max_parts: u32,
    double_every: u32,
}

impl PartSizePlan {
    /// A plan starting at `initial` (clamped to the backend's part size limits).
    pub fn new(initial: u64, caps: &Capabilities) -> Self {
        let min = caps.min_part_size.max(1);
        let max = caps.max_part_size.max(min);
        let max_parts = caps.max_parts.max(1);
        let first = initial.clamp(min, max);
        let target = TARGET_OBJECT_SIZE.min(max.saturating_mul(max_parts as u64));
        // capacity(d) does not increase with d: binary search the largest d reaching the target.
        let (mut lo, mut hi) = (1u32, max_parts);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if capacity(first, max, max_parts, mid) >= target {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        PartSizePlan { first, max, max_parts, double_every: lo }
    }

    /// Size of part `part_number` (1-based); 0 past the backend's part limit.
    pub fn part_size(&self, part_number: u32) -> u64 {
        if part_number == 0 || part_number > self.max_parts {
            return 0;
        }
        let tier = (part_number - 1) / self.double_every;
        if tier >= 63 {
            return self.max;
        }
        self.first.saturating_mul(1u64 << tier).min(self.max)
    }

    /// Size of the first part: files up to this size are stored with a single `put`.
    pub fn first_part_size(&self) -> u64 {
        self.first
    }

    pub fn max_parts(&self) -> u32 {
        self.max_parts
    }

    /// Number of consecutive parts sharing a size before it doubles.
    pub fn double_every(&self) -> u32 {
        self.double_every
    }

    /// Largest object this plan can store in `max_parts` parts.
    pub fn max_object_size(&self) -> u64 {
        capacity(self.first, self.max, self.max_parts, self.double_every)
    }
}

/// Total bytes of `max_parts` parts when the size doubles every `double_every` parts.
fn capacity(first: u64, max: u64, max_parts: u32, double_every: u32) -> u64 {
    let mut total = 0u64;
    let mut remaining = max_parts as u64;
    let mut size = first;
    while remaining > 0 {
        if size >= max {
            return total.saturating_add(remaining.saturating_mul(max));
        }
        let n = remaining.min(double_every as u64);
        total = total.saturating_add(n.saturating_mul(size));
        remaining -= n;
        size = size.saturating_mul(2).min(max);
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;
    const GIB: u64 = 1024 * MIB;

    fn caps(min: u64, max: u64, parts: u32) -> Capabilities {
        Capabilities {
            name: "test",
            multi_range: crate::backend::MultiRangeMode::ParallelSingles,
            parallel_multipart: true,
            min_part_size: min,
            max_part_size: max,
            max_parts: parts,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: false,
            list_attrs: false,
            readable_upload_parts: false,
        }
    }

    /// Sums the sizes part by part, independently of `capacity`.
    fn sum_parts(plan: &PartSizePlan) -> u64 {
        (1..=plan.max_parts()).map(|n| plan.part_size(n)).sum()
    }

    #[test]
    fn s3_limits_reach_5_tib_within_10000_parts() {
        let plan = PartSizePlan::new(5 * MIB, &caps(5 * MIB, 5 * GIB, 10_000));
        assert_eq!(plan.part_size(1), 5 * MIB);
        let total = sum_parts(&plan);
        assert!(total >= TARGET_OBJECT_SIZE, "only {total} bytes reachable");
        assert_eq!(total, plan.max_object_size());
        // growth is as slow as possible: one step slower would miss the target
        let slower = PartSizePlan { double_every: plan.double_every() + 1, ..plan };
        assert!(sum_parts(&slower) < TARGET_OBJECT_SIZE);
        let mut prev = 0;
        for n in 1..=10_000 {
            let s = plan.part_size(n);
            assert!(s >= prev && (5 * MIB..=5 * GIB).contains(&s), "part {n}: {s}");
            prev = s;
        }
        assert_eq!(plan.part_size(10_001), 0);
    }

    #[test]
    fn default_part_size_keeps_small_parts_long() {
        let plan = PartSizePlan::new(8 * MIB, &caps(5 * MIB, 5 * GIB, 10_000));
        assert_eq!(plan.part_size(1), 8 * MIB);
        assert!(sum_parts(&plan) >= TARGET_OBJECT_SIZE);
        // a 1 GiB file needs only first-size parts
        assert!(plan.double_every() as u64 * 8 * MIB >= GIB);
    }

    #[test]
    fn initial_size_is_clamped_to_backend_limits() {
        let c = caps(5 * MIB, 5 * GIB, 10_000);
        assert_eq!(PartSizePlan::new(1024, &c).part_size(1), 5 * MIB);
        assert_eq!(PartSizePlan::new(100 * GIB, &c).part_size(1), 5 * GIB);
        assert_eq!(PartSizePlan::new(0, &caps(0, 0, 0)).part_size(1), 1);
    }

    #[test]
    fn small_backend_limits_use_what_is_reachable() {
        // 100 parts of at most 64 MiB can never reach 5 TiB: grow as fast as allowed.
        let plan = PartSizePlan::new(MIB, &caps(MIB, 64 * MIB, 100));
        assert_eq!(plan.double_every(), 1);
        assert_eq!(plan.part_size(1), MIB);
        assert_eq!(sum_parts(&plan), 127 * MIB + 93 * 64 * MIB);
        // starting at the maximum reaches the backend's true limit
        let plan = PartSizePlan::new(64 * MIB, &caps(MIB, 64 * MIB, 100));
        assert_eq!(sum_parts(&plan), 100 * 64 * MIB);
    }
}
