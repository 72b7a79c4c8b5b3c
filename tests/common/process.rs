//! The `ftpfront` binary as a process: `ftpfront run` on a config file, `ftpfront demo`,
//! signals to it, and its figures from `/proc` (CPU time, resident memory, open file
//! descriptors) for the tests that bound what an attacker costs the binary.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::net::TcpStream;

use super::harness::free_port_block;

/// CPU seconds (user + system) the process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / per_second
}

/// Resident memory of the process, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// How many file descriptors the process holds open now.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/PID/fd")
        .count()
}

/// Waits (up to 5 s) until something accepts TCP connections on `addr`: a program that
/// was just started. The caller's own checks report a program that never listens.
pub async fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The binary the process-level tests run: `FTP_TESTS_FTPFRONT_BINARY` (scripts/test.sh
/// points it at the release build it has just made from the same tree, so figures such as
/// CPU per MiB are the product's), else the debug build of this `cargo test`.
pub fn ftpfront_binary() -> PathBuf {
    std::env::var_os("FTP_TESTS_FTPFRONT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ftpfront")))
}

/// The `ftpfront` binary itself, running a config written to a directory.
pub struct BinaryProxy {
    pub child: tokio::process::Child,
    /// Its stderr (the log).
    pub log: PathBuf,
    pub control: SocketAddr,
}

/// A test that fails with the binary running shows the end of its log: the log lives in
/// the test's temporary directory, which is gone once the test ends.
impl Drop for BinaryProxy {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(60)..];
        eprintln!(
            "--- last {} lines of {} ---\n{}",
            tail.len(),
            self.log.display(),
            tail.join("\n")
        );
    }
}

/// Writes `config` to `dir/ftpfront.toml`, starts `ftpfront run` on it (log in
/// `dir/ftpfront.log`, `RUST_LOG` cleared so the config's filter applies) and waits until
/// `control_port` accepts.
pub async fn run_binary(dir: &Path, control_port: u16, config: &str) -> BinaryProxy {
    let log = dir.join("ftpfront.log");
    let file = std::fs::File::create(&log).expect("log file");
    run_binary_logging_to(dir, control_port, config, file.into(), log).await
}

/// As [`run_binary`], with the log (stderr) going to `stderr`; `log` names where it ends up,
/// for the tail a failing test prints.
pub async fn run_binary_logging_to(
    dir: &Path,
    control_port: u16,
    config: &str,
    stderr: Stdio,
    log: PathBuf,
) -> BinaryProxy {
    let config_path = dir.join("ftpfront.toml");
    std::fs::write(&config_path, config).expect("write config");
    let child = tokio::process::Command::new(ftpfront_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start ftpfront");
    let control = SocketAddr::from(([127, 0, 0, 1], control_port));
    wait_until_listening(control).await;
    BinaryProxy {
        child,
        log,
        control,
    }
}

/// A running `ftpfront demo`.
pub struct Demo {
    pub child: tokio::process::Child,
    pub control: SocketAddr,
}

/// Starts `ftpfront demo` on fresh ports (control, four passive, metrics), `RUST_LOG`
/// cleared, its output to `stdout` and `stderr`, and waits until it listens. It is the debug
/// build of this `cargo test`: the production build (`FTP_TESTS_FTPFRONT_BINARY`) has no demo.
pub async fn spawn_demo(stdout: Stdio, stderr: Stdio) -> Demo {
    let control = free_port_block(1);
    let passive = free_port_block(4);
    let metrics = free_port_block(1);
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ftpfront"))
        .args([
            "demo",
            "--port",
            &control.to_string(),
            "--passive-ports",
            &format!("{passive}-{}", passive + 3),
            "--metrics-port",
            &metrics.to_string(),
        ])
        .env_remove("RUST_LOG")
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true)
        .spawn()
        .expect("start demo");
    let control = SocketAddr::from(([127, 0, 0, 1], control));
    wait_until_listening(control).await;
    Demo { child, control }
}

/// Sends `signal` (SIGHUP, SIGTERM...) to our own child, which must still run.
pub fn signal(child: &tokio::process::Child, signal: libc::c_int) {
    let pid = child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) has no memory preconditions; the pid is our own child's.
    let sent = unsafe { libc::kill(pid, signal) };
    assert_eq!(sent, 0, "kill: {}", std::io::Error::last_os_error());
}
