//! A proxy in front of an embedded libunftp backend for the integration tests: its test
//! user and files, a config for it, and small helpers (ports, sample bytes, curl).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use ftpfront::config::Config;
use ftpfront::demo::{start_embedded_backend, EmbeddedBackend, StaticUsers};
use ftpfront::server::{self, RunningProxy};
use sha2::{Digest, Sha256};

use super::metrics::http_get;

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

/// Deterministic pseudo-random bytes (xorshift), so checksums are stable.
pub fn sample_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Ports below Linux's ephemeral range (32768+), distinct per test and per process.
pub fn free_port_block(len: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 60) as u16 * 200;
    loop {
        let offset = NEXT.fetch_add(len, Ordering::SeqCst);
        let start = 20000 + (base - 20000 + offset) % 12000;
        let all_free =
            (start..start + len).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok());
        if all_free {
            return start;
        }
    }
}

/// An embedded FTP backend with a user and a few files.
pub struct TestBackend {
    pub server: EmbeddedBackend,
    pub root: tempfile::TempDir,
}

impl TestBackend {
    pub async fn start() -> TestBackend {
        // Generous: libunftp answers 425 to PASV when its own range runs out.
        TestBackend::with_passive_ports(60).await
    }

    /// A backend whose own passive range has `ports` ports. libunftp picks a port at random
    /// and gives up after 9 taken ones, so concurrent transfers need many times as many.
    pub async fn with_passive_ports(ports: u16) -> TestBackend {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("hello.txt"), b"hello through the proxy\n").expect("write");
        std::fs::create_dir_all(root.path().join("upload")).expect("mkdir");
        let users = StaticUsers(HashMap::from([(USER.to_string(), PASSWORD.to_string())]));
        let first = free_port_block(ports);
        let server = start_embedded_backend(root.path(), users, first..=first + ports - 1)
            .await
            .expect("embedded backend");
        TestBackend { server, root }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Writes a file of `len` pseudo-random bytes and returns its SHA-256.
    pub fn put_file(&self, name: &str, len: usize, seed: u32) -> String {
        let bytes = sample_bytes(len, seed);
        std::fs::write(self.path(name), &bytes).expect("write sample");
        sha256(&bytes)
    }
}

/// A proxy config in front of `backend` with a fresh passive range of `ports` ports; tests
/// change fields of the returned value for their scenario.
pub fn proxy_config(backend: SocketAddr, ports: u16) -> Config {
    let start = free_port_block(ports);
    let end = start + ports - 1;
    let text = format!(
        r#"
[listen]
control = "127.0.0.1:0"

[passive]
ports = "{start}-{end}"
public_address = "127.0.0.1"

[[backends]]
name = "main"
address = "{backend}"
connect_timeout = "3s"

[metrics]
listen = "127.0.0.1:0"

[limits]
data_accept_timeout = "5s"
"#
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
}

pub async fn start_proxy(config: Config) -> RunningProxy {
    server::start(config).await.expect("proxy starts")
}

/// Polls `/readyz` until it answers `status` (the health probe runs in the background).
pub async fn wait_for_readyz(proxy: &RunningProxy, status: u16) -> bool {
    let expected = format!("HTTP/1.1 {status}");
    for _ in 0..100 {
        if http_get(proxy, "/readyz").await.starts_with(&expected) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

pub fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Runs curl with a timeout so a hanging transfer fails the test instead of CI.
pub async fn run_curl(curl: &Path, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(curl)
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("curl finished")
        .expect("curl runs")
}

/// A program run that must have succeeded; its stderr in the panic.
pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Polls `check` every 20 ms until it holds or `limit` has passed; whether it held.
pub async fn poll<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
