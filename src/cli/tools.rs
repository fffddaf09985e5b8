//! Small subcommands: `mb`, `heal`, `stats`, `du`.

use anyhow::{anyhow, Context, Result};

use super::args::{DrivesArg, DuArgs, HealArgs, MbArgs, StatsArgs};
use crate::store::{parse_pool_specs, Store};

/// The pools `--drives` (repeated, or `;`-separated) names.
fn pool_list(d: &DrivesArg) -> Result<Vec<Vec<std::path::PathBuf>>> {
    if d.drives.is_empty() {
        return Err(anyhow!("--drives SPEC (or BUCKETFS_DRIVES) is required"));
    }
    parse_pool_specs(&d.drives).map_err(|e| anyhow!("{e}"))
}

fn open_store(d: &DrivesArg) -> Result<std::sync::Arc<Store>> {
    Store::open_pools(pool_list(d)?, d.parity).map_err(|e| anyhow!("{e}"))
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
    super::init_logging(false, false, super::stderr_is_terminal());
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
    let drives = drive_list(d)?;
    let lines = heal_lines(&drives);
    if lines.is_empty() {
        println!("no replaced drive has been healed on these {} drives", drives.len());
    }
    for l in lines {
        println!("{l}");
    }
    Ok(())
}

/// Every pool's drives, pool after pool.
fn drive_list(d: &DrivesArg) -> Result<Vec<std::path::PathBuf>> {
    Ok(pool_list(d)?.concat())
}

fn http_date(unix: u64) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
}

/// One line per drive with a recorded heal of a replaced drive.
fn heal_lines(drives: &[std::path::PathBuf]) -> Vec<String> {
    crate::store::monitor::read_heal_status(drives)
        .into_iter()
        .map(|(drive, st)| {
            format!(
                "{}: {} ({} objects scanned, {} healed, {} failed, {} bytes rewritten; started {}, updated {})",
                drive.display(),
                st.state,
                st.objects_scanned,
                st.objects_healed,
                st.objects_failed,
                st.bytes,
                http_date(st.started_unix),
                http_date(st.updated_unix),
            )
        })
        .collect()
}

/// `bucketfs stats --drives SPEC`: what the files on the drives say about the
/// store (drive states, heals, the scanner's last pass per set, usage), read
/// without locks so that it works beside the process that owns the drives.
fn store_stats(d: &DrivesArg) -> Result<()> {
    use crate::store::drives::read_format;
    let pools = pool_list(d)?;
    let drives = pools.concat();
    let heals = crate::store::monitor::read_heal_status(&drives);
    // Each pool's sets as its drives' format.json records them.
    let sets: Option<Vec<usize>> = pools
        .iter()
        .map(|p| p.iter().find_map(|d| read_format(d).ok().flatten()).map(|f| f.layout().len()))
        .collect();
    match sets {
        Some(s) if s.len() == 1 => println!("drives: {} in {} erasure set(s)", drives.len(), s[0]),
        Some(s) => {
            println!("drives: {} in {} server pools", drives.len(), s.len());
            for (i, (p, n)) in pools.iter().zip(&s).enumerate() {
                println!(
                    "  pool {}: {} drives in {n} erasure set(s), from {}",
                    i + 1,
                    p.len(),
                    p[0].display()
                );
            }
        }
        None => println!("drives: {} (not all pools formatted yet)", drives.len()),
    }
    for p in &drives {
        let state = match read_format(p) {
            Ok(Some(_)) if heals.iter().any(|(h, st)| h == p && st.state == "healing") => {
                "healing".to_string()
            }
            Ok(Some(_)) => "online".to_string(),
            Ok(None) => "offline (no format.json: missing, or a replacement not adopted yet)".to_string(),
            Err(e) => format!("offline ({e})"),
        };
        println!("  {}: {state}", p.display());
    }
    let heal = heal_lines(&drives);
    if !heal.is_empty() {
        println!("heals of replaced drives:");
        for l in heal {
            println!("  {l}");
        }
    }
    let recs = crate::store::scanner::read_usage(&drives);
    if recs.is_empty() {
        println!("scanner: no pass recorded yet");
    }
    let mut usage: std::collections::BTreeMap<String, crate::store::scanner::BucketUsage> =
        Default::default();
    for r in &recs {
        let first = r.set.first().map(|p| p.display().to_string()).unwrap_or_default();
        match &r.last_pass {
            Some(p) => println!(
                "scanner, set of {} drives from {first}: last pass finished {} after {} s: {} objects, {} healed, \
                 {} failed, {} deep-checked, {} stale temp entries removed, {} uploads expired; \
                 {} passes since its process started",
                r.set.len(),
                http_date(p.finished_unix),
                p.finished_unix.saturating_sub(p.started_unix),
                p.objects,
                p.healed,
                p.failed,
                p.deep_checked,
                p.stale_tmp_removed,
                p.uploads_expired,
                p.passes_since_start,
            ),
            None => println!(
                "scanner, set of {} drives from {first}: usage counted {}",
                r.set.len(),
                http_date(r.updated_unix)
            ),
        }
        for (b, u) in &r.buckets {
            let t = usage.entry(b.clone()).or_default();
            t.objects += u.objects;
            t.bytes += u.bytes;
            t.versions += u.versions;
        }
    }
    if !recs.is_empty() {
        println!("usage (as the scanner last counted):");
        for (b, u) in &usage {
            println!("  {b}: {} objects, {} versions, {} bytes", u.objects, u.versions, u.bytes);
        }
    }
    Ok(())
}

/// Reads the counters from the mount root's `user.bucketfs.stats` attribute.
pub fn stats(a: StatsArgs) -> Result<()> {
    let Some(mountpoint) = a.mountpoint else {
        if a.drives.drives.is_empty() {
            return Err(anyhow!(
                "give MOUNTPOINT (a live mount's counters) or --drives SPEC (an embedded store's drives, heals, scanner and usage)"
            ));
        }
        return store_stats(&a.drives);
    };
    let path = std::ffi::CString::new(mountpoint.as_os_str().as_encoded_bytes()).context("mountpoint")?;
    let name = c"user.bucketfs.stats";
    let mut buf = vec![0u8; 64 * 1024];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe { libc::getxattr(path.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        let err = std::io::Error::last_os_error();
        return Err(anyhow!("{} is not a live bucketfs mount ({err})", mountpoint.display()));
    }
    buf.truncate(n as usize);
    print!("{}", String::from_utf8_lossy(&buf));
    Ok(())
}

/// Prints per-bucket usage. With the drives free, one scanner pass at full
/// speed counts it now (exact); while a mount or serve holds them, the usage
/// its background scanner last recorded on the drives is shown, with its age.
pub fn du(a: DuArgs) -> Result<()> {
    use std::collections::BTreeMap;

    use crate::store::scanner::{read_usage, BucketUsage};
    super::init_logging(false, false, super::stderr_is_terminal());
    let pools = pool_list(&a.drives)?;
    let drives = pools.concat();
    let only = a.bucket.as_deref().map(|b| b.strip_prefix("local://").unwrap_or(b).trim_end_matches('/'));
    let (usage, note): (BTreeMap<String, BucketUsage>, String) = match Store::open_pools(
        pools,
        a.drives.parity,
    ) {
        Ok(store) => {
            let rep = store.scan(1.0).map_err(|e| anyhow!("{e}"))?;
            let mut usage = rep.usage;
            for b in store.list_buckets().map_err(|e| anyhow!("{e}"))? {
                usage.entry(b).or_default();
            }
            store.close();
            (usage, "counted by a scanner pass just now".into())
        }
        Err(crate::store::StoreError::Locked { .. }) => {
            let recs = read_usage(&drives);
            let Some(oldest) = recs.iter().map(|r| r.updated_unix).min() else {
                return Err(anyhow!(
                        "the drives are in use by a running mount or serve, and its scanner has not recorded usage yet \
                         (it does after its first background pass, 10 minutes after start, unless --scanner-speed off)"
                    ));
            };
            let mut usage: BTreeMap<String, BucketUsage> = BTreeMap::new();
            for r in recs {
                for (b, u) in r.buckets {
                    let t = usage.entry(b).or_default();
                    t.objects += u.objects;
                    t.versions += u.versions;
                    t.bytes += u.bytes;
                }
            }
            let age = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH + std::time::Duration::from_secs(oldest))
                .map(|d| d.as_secs())
                .unwrap_or(0);
            (usage, format!("recorded by the running process's scanner, up to {age} s ago"))
        }
        Err(e) => return Err(anyhow!("{e}")),
    };
    if let Some(b) = only {
        if !usage.contains_key(b) {
            return Err(anyhow!("no bucket {b} in the store (or in its recorded usage)"));
        }
    }
    println!("{:<32} {:>12} {:>12} {:>16}", "BUCKET", "OBJECTS", "VERSIONS", "BYTES");
    for (b, u) in usage.iter().filter(|(b, _)| only.is_none_or(|o| o == b.as_str())) {
        println!("{:<32} {:>12} {:>12} {:>16}", b, u.objects, u.versions, u.bytes);
    }
    println!("({note})");
    Ok(())
}
