//! Where the test tools are, found the way `scripts/test-servers.sh` finds them, so a
//! tool the installer just put in place is found whatever the Python: pyenv (whose
//! shims appear only after `pyenv rehash`), Debian's (`pip --user` puts scripts in
//! `~/.local/bin`, often not on PATH), or a virtualenv.
//!
//! Order: the console-script directories of the tests' Python (`$PYTHON`, else
//! `python3`; its install scheme, then its user scheme), npm's global bin directory,
//! then PATH. The first that holds an executable `name` wins; if none does, the bare
//! name is returned, so the caller's "not installed" message names the tool.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The Python the tests and the installer use (`$PYTHON`, else `python3`).
pub fn python() -> String {
    std::env::var("PYTHON").ok().filter(|p| !p.is_empty()).unwrap_or_else(|| "python3".into())
}

/// What `sysconfig` says about the scripts directories of [`python`], computed once.
fn script_dirs() -> &'static [PathBuf] {
    static DIRS: OnceLock<Vec<PathBuf>> = OnceLock::new();
    DIRS.get_or_init(|| {
        const PROGRAM: &str = r#"
import os, sysconfig
print(sysconfig.get_path("scripts"))
try:
    print(sysconfig.get_path("scripts", sysconfig.get_preferred_scheme("user")))
except Exception:
    print(sysconfig.get_path("scripts", os.name + "_user"))
"#;
        let mut dirs: Vec<PathBuf> = Command::new(python())
            .args(["-c", PROGRAM])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).lines().map(PathBuf::from).collect())
            .unwrap_or_default();
        // npm's global bin (Azurite), when npm is there
        if let Ok(o) = Command::new("npm").args(["prefix", "-g"]).output() {
            let prefix = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if o.status.success() && !prefix.is_empty() {
                dirs.push(Path::new(&prefix).join("bin"));
            }
        }
        dirs.retain(|d| d.is_absolute());
        dirs
    })
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

/// Absolute path of the test tool `name` (`weed`, `rclone`, `aws`, `azurite-blob`), or
/// `name` itself when it is nowhere (so spawning it fails with the name in the error).
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    script_dirs()
        .iter()
        .cloned()
        .chain(std::env::split_paths(&path))
        .map(|d| d.join(name))
        .find(|p| executable(p))
        .unwrap_or_else(|| PathBuf::from(name))
}
