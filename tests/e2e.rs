//! The acceptance test of issue 3: `tests/e2e/run.sh` builds a dual-NAT network out of
//! network namespaces (two client LANs behind MASQUERADE routers, an edge router that
//! forwards only port 21 and the passive range, a DMZ with ftpfront, a backend LAN) and
//! drives vsftpd, pure-ftpd and proftpd through ftpfront with curl, lftp and Python ftplib;
//! then FTPS (issue 4): explicit and implicit FTPS from both client NATs through ftpfront to
//! the plain vsftpd and to an FTPS vsftpd, with certificates from a test CA made by openssl,
//! and the control case (FTPS straight to the FTPS vsftpd through the NATs cannot list).
//!
//! It needs root and those programs (`scripts/install-test-deps.sh` installs them); without
//! them it prints `SKIPPED: needs ...` and passes, unless `FTP_TESTS_REQUIRE_EXTERNAL=1`.
//! The harness's output (one line per check, then the result matrix) streams to the
//! terminal as it runs. Run the harness alone with `sudo bash tests/e2e/run.sh`.

mod common;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::external::{external_available, find_program, is_root};

/// The harness takes about 3 minutes; this only stops a hang from blocking CI forever.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(12 * 60);
/// After SIGTERM, the harness tears its network down (trap) before this runs out.
const TEARDOWN_GRACE: Duration = Duration::from_secs(60);

/// A program on FTP_TESTS_EXTRA_PATH or PATH, or in the package extracted by
/// scripts/install-test-deps.sh (`<prefix>/<package>/usr/sbin`).
fn locate(name: &str, package: Option<&str>) -> Option<PathBuf> {
    find_program(name).or_else(|| {
        let prefix =
            std::env::var("FTP_TESTS_PREFIX").unwrap_or_else(|_| "/opt/ftpfront-test".into());
        [
            package.map(|p| Path::new(&prefix).join(p).join("usr/sbin").join(name)),
            Some(Path::new("/usr/sbin").join(name)),
        ]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
    })
}

fn signal_group(child: &Child, signal: &str) {
    let _ = Command::new("kill")
        .args([signal, "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the harness") {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dual_nat_network_with_real_servers_and_clients() {
    if !external_available(
        is_root(),
        "root (network namespaces, iptables, a system user for the FTP logins)",
    ) {
        return;
    }
    let programs = [
        ("ip", None),
        ("iptables", None),
        ("curl", None),
        ("lftp", None),
        ("python3", None),
        ("openssl", None),
        ("vsftpd", None),
        ("pure-ftpd", Some("pure-ftpd")),
        ("proftpd", Some("proftpd-core")),
    ];
    let missing: Vec<&str> = programs
        .iter()
        .filter(|(name, package)| locate(name, *package).is_none())
        .map(|(name, _)| *name)
        .collect();
    if !external_available(
        missing.is_empty(),
        &format!("the programs {}", missing.join(", ")),
    ) {
        return;
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let started = Instant::now();
    // Output is inherited, so it streams; the harness runs in its own process group so a
    // timeout can stop it together with every client and server it started.
    let mut harness = Command::new("bash")
        .arg(root.join("tests/e2e/run.sh"))
        .current_dir(root)
        .env("FTPFRONT_BIN", env!("CARGO_BIN_EXE_ftpfront"))
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start bash tests/e2e/run.sh");

    let Some(status) = wait_with_timeout(&mut harness, OVERALL_TIMEOUT) else {
        signal_group(&harness, "-TERM");
        if wait_with_timeout(&mut harness, TEARDOWN_GRACE).is_none() {
            signal_group(&harness, "-KILL");
            let _ = harness.wait();
        }
        panic!(
            "tests/e2e/run.sh did not finish within {OVERALL_TIMEOUT:?}; stopped it (its \
             output above shows the last check that ran)"
        );
    };
    assert!(
        status.success(),
        "tests/e2e/run.sh failed ({status}) after {:?}: the matrix above shows which checks \
         failed, with their logs and ftpfront's log",
        started.elapsed()
    );
}
