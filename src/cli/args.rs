//! Command-line arguments.
//!
//! Flag names follow goofys where the two overlap (`--file-mode`, `--stat-cache-ttl`,
//! `--debug_fuse`, ...) so existing fstab lines and scripts carry over; each also has a
//! dash-only spelling. Sizes accept `K`/`M`/`G`/`T` suffixes (binary units), durations
//! accept `ms`/`s`/`m`/`h` suffixes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

pub use super::backend::BackendArgs;

#[derive(Parser, Debug)]
#[command(
    name = "bucketfs",
    version,
    about = "Mount an object-storage bucket (S3, GCS, Azure, or the embedded erasure-coded store) as a directory",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "SOURCE is bucket[:prefix], s3://bucket[/prefix], gs://bucket[/prefix], \
wasb://container[/prefix], abfs://filesystem[/prefix] (Azure Data Lake Storage Gen2) or local://bucket[/prefix] \
(embedded store, needs --drives).\n\
Mount options may also be given as -o opt[,opt...] (fstab style)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub mount: MountArgs,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a bucket in the embedded store.
    Mb(MbArgs),
    /// Rebuild missing or corrupt shards and metadata of the embedded store.
    Heal(HealArgs),
    /// Print the counters of a live mount.
    Stats(StatsArgs),
    /// Per-bucket usage of the embedded store (objects, versions, bytes), as the data scanner counts it.
    Du(DuArgs),
    /// Serve the embedded store over the S3 API (credentials: BUCKETFS_ACCESS_KEY, BUCKETFS_SECRET_KEY).
    Serve(ServeArgs),
    /// Copy a local file to a bucket URL or back: parallel parts, progress, resumable.
    Cp(super::cp::CpArgs),
    /// Multipart uploads by hand: start, put-part, complete, abort (parts may come from several machines).
    Upload(super::upload_cmd::UploadArgs),
    /// Find (list) and clean up (abort) pending multipart uploads under a URL.
    Uploads(super::upload_cmd::UploadsArgs),
}

#[derive(Args, Debug)]
pub struct DrivesArg {
    /// Drive directories of the embedded store: `/d1,/d2,...` or `/data/d{1...6}`.
    /// Repeat the flag for server pools (`--drives '/a{1...8}' --drives '/b{1...16}'`,
    /// in the order the pools were added); in BUCKETFS_DRIVES separate them with `;`.
    #[arg(long, env = "BUCKETFS_DRIVES", value_name = "SPEC", action = clap::ArgAction::Append)]
    pub drives: Vec<String>,
    /// Parity shards per object (default by erasure set size: 1:0, 2-3:1, 4-5:2, 6-7:3, 8+:4).
    #[arg(long)]
    pub parity: Option<usize>,
}

#[derive(Args, Debug)]
pub struct MbArgs {
    #[command(flatten)]
    pub drives: DrivesArg,
    /// Bucket name, optionally as local://bucket.
    pub bucket: String,
    /// Succeed if the bucket already exists.
    #[arg(long = "exist-ok")]
    pub exist_ok: bool,
}

#[derive(Args, Debug)]
pub struct HealArgs {
    #[command(flatten)]
    pub drives: DrivesArg,
    /// Verify every shard's checksums, not only presence and metadata.
    #[arg(long)]
    pub deep: bool,
    /// Only show the progress of background heals of replaced drives (reads
    /// each drive's heal-status.json; works while a mount or serve holds the drives).
    #[arg(long, conflicts_with_all = ["deep", "bucket"])]
    pub status: bool,
    /// Only this bucket (default: all).
    pub bucket: Option<String>,
}

#[derive(Args, Debug)]
pub struct DuArgs {
    #[command(flatten)]
    pub drives: DrivesArg,
    /// Only this bucket, as BUCKET or local://BUCKET (default: all).
    pub bucket: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// A live mount: print its counters. Without it, `--drives` (or
    /// BUCKETFS_DRIVES) names an embedded store whose drive states, replaced-drive
    /// heals, scanner passes and usage are printed (no lock taken: works while a
    /// mount or `bucketfs serve` owns the drives).
    pub mountpoint: Option<PathBuf>,
    #[command(flatten)]
    pub drives: DrivesArg,
}

#[derive(Args, Debug)]
pub struct ServeArgs {
    #[command(flatten)]
    pub drives: DrivesArg,
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub address: String,
    /// Append one line per HTTP request (method, path, status, Range, length; never signatures) to FILE.
    #[arg(long = "access-log", value_name = "FILE")]
    pub access_log: Option<PathBuf>,
    /// Let unsigned clients read (GET, HEAD, list) BUCKET; repeat for more buckets. Default: none.
    #[arg(long = "public-read", value_name = "BUCKET")]
    pub public_read: Vec<String>,
    /// Pace of the embedded store's background scanner (heal, garbage, usage):
    /// gentle (10% duty, default), fast (50%), max, off, or a percentage 1-100.
    #[arg(long = "scanner-speed", value_name = "SPEED", default_value = "gentle")]
    pub scanner_speed: crate::store::scanner::ScannerSpeed,
    /// Serve Prometheus metrics (requests, bytes, latency, drives, heals, scanner,
    /// usage) at http://HOST:PORT/metrics, unauthenticated: bind it to a private
    /// address. Default: off.
    #[arg(long = "metrics-address", value_name = "HOST:PORT")]
    pub metrics_address: Option<String>,
}

#[derive(Args, Debug, Clone)]
pub struct MountArgs {
    /// What to mount (see below).
    #[arg(required = true)]
    pub source: Option<String>,
    /// Existing directory to mount on.
    #[arg(required = true)]
    pub mountpoint: Option<PathBuf>,

    /// Stay in the foreground (default: daemonize once the mount is live).
    #[arg(short = 'f', long)]
    pub foreground: bool,
    /// Mount options, fstab style: -o allow_other,--file-mode=0666,ro
    #[arg(short = 'o', value_name = "OPTS")]
    pub options: Vec<String>,

    #[command(flatten)]
    pub backend: BackendArgs,

    // --- ownership and permissions ---
    #[arg(long, help = "Owner of all files (default: the mounting user)")]
    pub uid: Option<u32>,
    #[arg(long, help = "Group of all files (default: the mounting user's group)")]
    pub gid: Option<u32>,
    #[arg(long = "file-mode", alias = "file_mode", value_parser = parse_mode, default_value = "0644")]
    pub file_mode: u16,
    #[arg(long = "dir-mode", alias = "dir_mode", value_parser = parse_mode, default_value = "0755")]
    pub dir_mode: u16,
    #[arg(
        long = "enable-perms",
        alias = "enable_perms",
        help = "New files and directories record their creator's uid/gid and mode (chmod/chown/utimes are stored either way)"
    )]
    pub enable_perms: bool,
    #[arg(
        long = "allow-other",
        alias = "allow_other",
        help = "Let users other than the mounter access the mount"
    )]
    pub allow_other: bool,
    #[arg(long = "read-only", alias = "read_only", visible_alias = "ro")]
    pub read_only: bool,
    #[arg(
        long = "allow-stacking",
        alias = "allow_stacking",
        help = "Mount even if MOUNTPOINT is already a mount point (hides what is mounted there)"
    )]
    pub allow_stacking: bool,

    // --- caching and memory ---
    #[arg(long = "stat-cache-ttl", alias = "stat_cache_ttl", value_parser = parse_duration, default_value = "1m")]
    pub stat_cache_ttl: Duration,
    #[arg(long = "type-cache-ttl", alias = "type_cache_ttl", value_parser = parse_duration, default_value = "1m")]
    pub type_cache_ttl: Duration,
    #[arg(long = "memory-limit", alias = "memory_limit", value_parser = parse_size, default_value = "1G",
          help = "Upper bound on write buffers and read-ahead; the daemon's RSS stays within it plus about 64 MiB")]
    pub memory_limit: u64,
    #[arg(long = "part-size", alias = "part_size", value_parser = parse_size, default_value = "8M",
          help = "First multipart part size (grows for large files)")]
    pub part_size: u64,
    #[arg(long = "read-ahead", alias = "read_ahead", value_parser = parse_size, default_value = "64M",
          help = "Largest sequential read-ahead window per file")]
    pub read_ahead: u64,
    #[arg(long = "write-timeout", alias = "write_timeout", value_parser = parse_duration, default_value = "1m",
          help = "How long a write keeps retrying while the storage service is unavailable (the application waits); 0 = fail at once")]
    pub write_timeout: Duration,
    #[arg(long = "stale-upload-age", alias = "stale_upload_age", value_parser = parse_duration, default_value = "24h",
          help = "At mount, abort multipart uploads under the mount older than this (left by crashed writers); 0 = never")]
    pub stale_upload_age: Duration,
    #[arg(
        long = "cache-dir",
        alias = "cache_dir",
        help = "Where random writes are spooled (default: $TMPDIR/bucketfs-spool)"
    )]
    pub cache_dir: Option<PathBuf>,

    // --- multi-range reads (wired by the sparse-read work) ---
    #[arg(long = "enable-multi-range", alias = "enable_multi_range")]
    pub enable_multi_range: bool,
    #[arg(long = "multi-range-batch-size", alias = "multi_range_batch_size", default_value = "5")]
    pub multi_range_batch_size: usize,
    #[arg(long = "multi-range-threshold", alias = "multi_range_threshold", value_parser = parse_size, default_value = "1M")]
    pub multi_range_threshold: u64,

    // --- logging ---
    #[arg(long = "debug_fuse", alias = "debug-fuse", help = "Log every FUSE operation")]
    pub debug_fuse: bool,
    #[arg(long = "debug_s3", alias = "debug-s3", help = "Log every backend request")]
    pub debug_s3: bool,
    #[arg(
        long = "log-file",
        alias = "log_file",
        help = "Where a daemonized mount writes its log (default: discarded)"
    )]
    pub log_file: Option<PathBuf>,
}

/// Parses `1024`, `64K`, `8M`, `1G`, `2T` (binary units; `KiB`/`MB`-style suffixes accepted too).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("invalid size {s:?} (examples: 4096, 64K, 8M, 1G)"))?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => return Err(format!("invalid size unit in {s:?} (use K, M, G or T)")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses `0`, `30s`, `500ms`, `1m`, `2h`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("invalid duration {s:?} (examples: 0, 500ms, 30s, 1m)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s, m or h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

/// Parses an octal permission mode like `0644` or `644`.
pub fn parse_mode(s: &str) -> Result<u16, String> {
    let m = u16::from_str_radix(s.trim().trim_start_matches("0o"), 8)
        .map_err(|_| format!("invalid mode {s:?} (octal, e.g. 0644)"))?;
    if m > 0o7777 {
        return Err(format!("invalid mode {s:?}: larger than 07777"));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Server pools reach the store from repeated `--drives`, from several
    /// `drives=` fstab options, and from one value with `;` between pools.
    #[test]
    fn drives_flag_repeats_for_pools() {
        use clap::{CommandFactory, Parser};
        let known: std::collections::HashSet<String> =
            Cli::command().get_arguments().filter_map(|a| a.get_long().map(String::from)).collect();
        let pools = |argv: &[&str]| {
            let argv = argv.iter().map(std::ffi::OsString::from).collect();
            let argv = super::super::fstab::expand_mount_options(argv, &known).unwrap();
            let cli = Cli::try_parse_from(argv).unwrap();
            crate::store::parse_pool_specs(&cli.mount.backend.drives).unwrap()
        };
        let fstab = pools(&["bucketfs", "local://b", "/m", "-o", "rw,drives=/a{1...4},drives=/b{1...2},dev"]);
        assert_eq!(fstab.iter().map(Vec::len).collect::<Vec<_>>(), [4, 2]);
        let flags = pools(&["bucketfs", "local://b", "/m", "--drives", "/a{1...4}", "--drives", "/b{1...2}"]);
        assert_eq!(flags, fstab);
        assert_eq!(pools(&["bucketfs", "local://b", "/m", "-o", "drives=/a{1...4};/b{1...2}"]), fstab);
        let serve =
            Cli::try_parse_from(["bucketfs", "serve", "--drives", "/a{1...4}", "--drives", "/b1"]).unwrap();
        let Some(Command::Serve(s)) = serve.command else { panic!("not serve") };
        assert_eq!(s.drives.drives, ["/a{1...4}", "/b1"]);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999T").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1d").is_err());
    }

    #[test]
    fn modes() {
        assert_eq!(parse_mode("0644"), Ok(0o644));
        assert_eq!(parse_mode("755"), Ok(0o755));
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("77777").is_err());
    }
}
