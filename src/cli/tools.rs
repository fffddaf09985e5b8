//! Small subcommands: `mb`, `heal`, `stats`.

use anyhow::{anyhow, Context, Result};

use super::args::{DrivesArg, HealArgs, MbArgs, StatsArgs};
use crate::store::{parse_drive_spec, Store, StoreConfig};

fn open_store(d: &DrivesArg) -> Result<std::sync::Arc<Store>> {
    let spec =
        d.drives.as_deref().ok_or_else(|| anyhow!("--drives SPEC (or BUCKETFS_DRIVES) is required"))?;
    let drives = parse_drive_spec(spec).map_err(|e| anyhow!("{e}"))?;
    Store::open(StoreConfig { drives, parity: d.parity }).map_err(|e| anyhow!("{e}"))
}

pub fn make_bucket(a: MbArgs) -> Result<()> {
    let store = open_store(&a.drives)?;
    let name = a.bucket.strip_prefix("local://").unwrap_or(&a.bucket).trim_end_matches('/');
    if a.exist_ok && store.bucket_exists(name).map_err(|e| anyhow!("{e}"))? {
        println!("bucket {name} exists");
        return Ok(());
    }
    store.make_bucket(name).map_err(|e| anyhow!("{e}"))?;
    println!("created bucket {name}");
    Ok(())
}

pub fn heal(a: HealArgs) -> Result<()> {
    super::init_logging(false, false);
    if a.status {
        return heal_status(&a.drives);
    }
    let store = open_store(&a.drives)?;
    let bucket = a.bucket.as_deref().map(|b| b.strip_prefix("local://").unwrap_or(b).trim_end_matches('/'));
    let summary = store.heal(bucket, a.deep).map_err(|e| anyhow!("{e}"))?;
    println!("{summary}");
    Ok(())
}

/// Prints the background heal progress recorded on the drives (no lock taken:
/// the store is usually open in a running mount or serve).
fn heal_status(d: &DrivesArg) -> Result<()> {
    let spec =
        d.drives.as_deref().ok_or_else(|| anyhow!("--drives SPEC (or BUCKETFS_DRIVES) is required"))?;
    let drives = parse_drive_spec(spec).map_err(|e| anyhow!("{e}"))?;
    let found = crate::store::monitor::read_heal_status(&drives);
    if found.is_empty() {
        println!("no replaced drive has been healed on these {} drives", drives.len());
    }
    for (drive, st) in found {
        println!(
            "{}: {} ({} objects scanned, {} healed, {} failed, {} bytes rewritten; started {}, updated {})",
            drive.display(),
            st.state,
            st.objects_scanned,
            st.objects_healed,
            st.objects_failed,
            st.bytes,
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.started_unix)),
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(st.updated_unix)),
        );
    }
    Ok(())
}

/// Reads the counters from the mount root's `user.bucketfs.stats` attribute.
pub fn stats(a: StatsArgs) -> Result<()> {
    let path = std::ffi::CString::new(a.mountpoint.as_os_str().as_encoded_bytes()).context("mountpoint")?;
    let name = c"user.bucketfs.stats";
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return Err(anyhow!("{} is not a live bucketfs mount ({err})", a.mountpoint.display()));
    }
    buf.truncate(n as usize);
    print!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}
