//! The command-line edge: argument parsing, subcommands, logging, exit codes.
//! `anyhow` is used here and nowhere below.

pub mod args;
pub mod backend;
pub mod cp;
pub mod daemon;
pub mod fstab;
pub mod guard_fs;
pub mod mount;
pub mod mountinfo;
pub mod source;
pub mod tools;
pub mod upload_cmd;

use std::collections::HashSet;
use std::ffi::OsString;

use clap::{CommandFactory, Parser};
use tracing_subscriber::EnvFilter;

use args::{Cli, Command};

/// Long flag names (and aliases) of the mount command, for `-o` translation.
fn known_long_flags() -> HashSet<String> {
    let cmd = Cli::command();
    let mut set = HashSet::new();
    for a in cmd.get_arguments() {
        if let Some(l) = a.get_long() {
            set.insert(l.to_string());
        }
        for al in a.get_all_aliases().unwrap_or_default() {
            set.insert(al.to_string());
        }
    }
    set
}

/// Logging goes to stderr; RUST_LOG overrides the default of warnings only. Colour
/// codes only with `colour` (a terminal that stays one: a daemon's stderr becomes its
/// `--log-file`, and escape codes there are noise).
pub fn init_logging(debug_fuse: bool, debug_s3: bool, colour: bool) {
    let mut filter =
        std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,aws_config=error,aws_smithy_runtime=error".into());
    if debug_fuse {
        filter.push_str(",bucketfs::fs=debug");
    }
    if debug_s3 {
        filter.push_str(
            ",bucketfs::backend=debug,bucketfs::store=debug,bucketfs::read=debug,bucketfs::upload=debug",
        );
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(true)
        .try_init();
}

/// Whether stderr is a terminal (colour codes are for people, not files).
pub fn stderr_is_terminal() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

pub fn main() -> i32 {
    // mount(8) runs us with a reset PATH, and some helpers (fusermount3) are looked up on it.
    if std::env::var_os("PATH").map(|p| p.is_empty()).unwrap_or(true) {
        std::env::set_var("PATH", "/usr/local/bin:/usr/local/sbin:/usr/bin:/usr/sbin:/bin:/sbin");
    }
    let argv: Vec<OsString> = std::env::args_os().collect();
    let argv = match fstab::expand_mount_options(argv, &known_long_flags()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bucketfs: {e}");
            return 2;
        }
    };
    let cli = match Cli::try_parse_from(argv) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { 2 } else { 0 };
        }
    };
    let result = match cli.command {
        Some(Command::Mb(a)) => tools::make_bucket(a),
        Some(Command::Heal(a)) => tools::heal(a),
        Some(Command::Stats(a)) => tools::stats(a),
        Some(Command::Du(a)) => tools::du(a),
        Some(Command::Serve(a)) => {
            crate::gateway::init_logging();
            crate::gateway::run(crate::gateway::ServeConfig {
                drives: crate::store::drives::join_pool_specs(&a.drives.drives),
                parity: a.drives.parity,
                address: a.address,
                access_log: a.access_log,
                public_read: a.public_read,
                scanner_speed: a.scanner_speed,
                metrics_address: a.metrics_address,
            })
            // Display only: each ServeError message already says its cause, and the
            // `{:#}` below would print the source chain after it a second time
            // ("cannot listen on ...: Address in use (os error 98): Address in use ...").
            .map_err(|e| anyhow::Error::msg(e.to_string()))
        }
        Some(Command::Cp(a)) => {
            init_logging(false, false, stderr_is_terminal());
            cp::run(a)
        }
        Some(Command::Upload(a)) => {
            init_logging(false, false, stderr_is_terminal());
            upload_cmd::upload(a)
        }
        Some(Command::Uploads(a)) => {
            init_logging(false, false, stderr_is_terminal());
            upload_cmd::uploads(a)
        }
        None => mount::run(cli.mount),
    };
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("bucketfs: {e:#}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        let argv = args.iter().map(OsString::from).collect();
        let argv = fstab::expand_mount_options(argv, &known_long_flags()).unwrap();
        Cli::try_parse_from(argv).unwrap()
    }

    #[test]
    fn multi_range_flags_work_on_the_command_line_and_inside_fstab_options() {
        let off = parse(&["bucketfs", "s3://b", "/mnt"]).mount;
        assert!(!off.enable_multi_range, "off by default");
        assert_eq!((off.multi_range_batch_size, off.multi_range_threshold), (5, 1 << 20));

        let flags = parse(&[
            "bucketfs",
            "--enable-multi-range",
            "--multi-range-batch-size",
            "8",
            "--multi-range-threshold=4M",
            "s3://b",
            "/mnt",
        ])
        .mount;
        assert!(flags.enable_multi_range);
        assert_eq!((flags.multi_range_batch_size, flags.multi_range_threshold), (8, 4 << 20));

        // as mount.fuse3 passes an fstab line's options, in both spellings
        for opts in [
            "rw,--enable-multi-range,--multi-range-batch-size=3,--multi-range-threshold=256K,dev,suid",
            "rw,enable_multi_range,multi_range_batch_size=3,multi-range-threshold=256K,dev,suid",
        ] {
            let m = parse(&["bucketfs", "s3://b", "/mnt", "-o", opts]).mount;
            assert!(m.enable_multi_range, "{opts}");
            assert_eq!((m.multi_range_batch_size, m.multi_range_threshold), (3, 256 << 10), "{opts}");
        }
    }

    #[test]
    fn write_timeout_defaults_to_a_minute_and_is_set_on_the_command_line_or_in_fstab() {
        use std::time::Duration;
        assert_eq!(parse(&["bucketfs", "s3://b", "/mnt"]).mount.write_timeout, Duration::from_secs(60));
        let flag = parse(&["bucketfs", "--write-timeout", "5m", "s3://b", "/mnt"]).mount;
        assert_eq!(flag.write_timeout, Duration::from_secs(300));
        let fstab = parse(&["bucketfs", "s3://b", "/mnt", "-o", "rw,write_timeout=0"]).mount;
        assert_eq!(fstab.write_timeout, Duration::ZERO, "0: no retries beyond the backend's own");
    }
}
