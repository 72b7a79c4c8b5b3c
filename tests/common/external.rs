//! Skipping (or failing) tests that need programs or privileges outside the Rust toolchain.

use std::path::PathBuf;

/// Name of the variable that turns every skip into a failure (set by `.ci/run`).
pub const REQUIRE_EXTERNAL_VAR: &str = "FTP_TESTS_REQUIRE_EXTERNAL";

fn external_required() -> bool {
    std::env::var(REQUIRE_EXTERNAL_VAR).is_ok_and(|v| v == "1")
}

/// Returns true when the test may go on. When `available` is false the test is skipped with
/// `reason` printed, unless `FTP_TESTS_REQUIRE_EXTERNAL=1`, where it panics instead so that CI
/// never passes by skipping.
pub fn external_available(available: bool, reason: &str) -> bool {
    if available {
        return true;
    }
    if external_required() {
        panic!("{REQUIRE_EXTERNAL_VAR}=1 but this test needs: {reason}");
    }
    eprintln!("SKIPPED: needs {reason} (run the README's test command to install it)");
    false
}

/// Finds a program on PATH or in the extra directories where the test setup extracts packages.
pub fn find_program(name: &str) -> Option<PathBuf> {
    let extra = std::env::var("FTP_TESTS_EXTRA_PATH").unwrap_or_default();
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&extra)
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Convenience: the program's path, or a skip (see [`external_available`]).
pub fn require_program(name: &str) -> Option<PathBuf> {
    let found = find_program(name);
    if external_available(found.is_some(), &format!("the `{name}` program")) {
        found
    } else {
        None
    }
}

/// The tests' one Python ftplib client (its forms: `ops`, `ftplib-checks`, `conformance`).
pub fn ftp_client_script() -> &'static str {
    concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/ftp_client.py")
}

/// True when running as root (needed for network namespaces).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}
