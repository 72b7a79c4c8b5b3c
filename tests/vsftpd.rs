//! ftpfront in front of a real vsftpd on loopback, driven by the `curl` program.
//!
//! vsftpd is configured with a WRONG passive address ([`WRONG_PASV_ADDRESS`]), as a backend
//! behind a second NAT would be. Through the proxy, listing, downloads and uploads work and
//! every 227/229 reply names the proxy's public address and a port of its passive range; the
//! same client straight to vsftpd fails (the control case).
//!
//! Skipped with a printed reason (failed under `FTP_TESTS_REQUIRE_EXTERNAL=1`) when curl,
//! vsftpd or root is missing: `sudo scripts/test.sh` installs them.

mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use common::external::require_program;
use common::vsftpd::{Vsftpd, VsftpdOptions, WRONG_PASV_ADDRESS};
use sha2::{Digest, Sha256};

const FILE_SIZE: usize = 5 * 1024 * 1024;
const PASSIVE_RANGE_LEN: u16 = 10;
const CURL_TIMEOUT: Duration = Duration::from_secs(90);

/// Deterministic, incompressible-looking test data (xorshift64).
fn test_data(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A passive range below the kernel's ephemeral ports (32768+), different for each test of
/// this process (and, through the pid, likely for concurrent test processes), whose ports
/// are all free right now.
fn passive_range() -> (u16, u16) {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 1000) as u16 * PASSIVE_RANGE_LEN;
    for _ in 0..200 {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let start = 20_000 + (base - 20_000 + slot * PASSIVE_RANGE_LEN) % 12_000;
        let end = start + PASSIVE_RANGE_LEN - 1;
        let all_free = (start..=end).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok());
        if all_free {
            return (start, end);
        }
    }
    panic!("no free passive port range below 32000");
}

struct Proxy {
    running: ftpfront::server::RunningProxy,
    passive: (u16, u16),
}

impl Proxy {
    async fn start(backend: SocketAddr) -> Proxy {
        let passive = passive_range();
        let toml = format!(
            r#"
[listen]
control = "127.0.0.1:0"

[passive]
ports = "{}-{}"
public_address = "127.0.0.1"
bind = "127.0.0.1"

[[backends]]
name = "vsftpd"
address = "{backend}"

[routing]
default = "vsftpd"

[metrics]
listen = "127.0.0.1:0"
"#,
            passive.0, passive.1
        );
        let config = ftpfront::config::Config::from_toml_str(&toml)
            .unwrap_or_else(|e| panic!("test config rejected: {e:?}\n{toml}"));
        let running = ftpfront::server::start(config)
            .await
            .unwrap_or_else(|e| panic!("proxy did not start: {e:?}"));
        Proxy { running, passive }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "ftp://{}/{}",
            self.running.control_addr,
            path.trim_start_matches('/')
        )
    }

    async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(10), self.running.shutdown())
            .await
            .expect("proxy shutdown took more than 10 s");
    }
}

struct CurlRun {
    status: ExitStatus,
    stdout: Vec<u8>,
    /// curl's -v trace and errors.
    stderr: String,
}

impl CurlRun {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Passive replies (227/229) that curl received, without the "< " prefix.
    fn passive_replies(&self) -> Vec<String> {
        self.stderr
            .lines()
            .filter_map(|l| l.strip_prefix("< "))
            .filter(|l| l.starts_with("227") || l.starts_with("229"))
            .map(|l| l.trim().to_string())
            .collect()
    }
}

/// Runs curl (silent but with errors, plus `args`) with a timeout; never hangs the test.
async fn curl(program: &Path, args: &[&str]) -> CurlRun {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(["-sS", "--connect-timeout", "10", "--max-time", "60"])
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(CURL_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("curl {args:?} still running after {CURL_TIMEOUT:?}"))
        .expect("run curl");
    CurlRun {
        status: out.status,
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Parses `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)`.
fn parse_227(reply: &str) -> Option<([u8; 4], u16)> {
    let inner = reply.split('(').nth(1)?.split(')').next()?;
    let nums: Vec<u16> = inner
        .split(',')
        .map(|n| n.trim().parse().ok())
        .collect::<Option<_>>()?;
    if nums.len() != 6 || nums.iter().any(|&n| n > 255) {
        return None;
    }
    let ip = [nums[0] as u8, nums[1] as u8, nums[2] as u8, nums[3] as u8];
    Some((ip, nums[4] * 256 + nums[5]))
}

/// Parses `229 Entering Extended Passive Mode (|||port|)`.
fn parse_229(reply: &str) -> Option<u16> {
    let inner = reply.split('(').nth(1)?.split(')').next()?;
    let fields: Vec<&str> = inner.split('|').collect();
    if fields.len() != 5 || !fields[1].is_empty() || !fields[2].is_empty() {
        return None;
    }
    fields[3].parse().ok()
}

fn assert_no_wrong_address(run: &CurlRun, what: &str) {
    let wrong_dotted = WRONG_PASV_ADDRESS.to_string();
    let wrong_commas = wrong_dotted.replace('.', ",");
    for needle in [&wrong_dotted, &wrong_commas] {
        assert!(
            !run.stderr.contains(needle.as_str()) && !run.stdout_text().contains(needle.as_str()),
            "{what}: vsftpd's own passive address {needle} reached the client:\n{}",
            run.stderr
        );
    }
}

/// Every 227 names 127.0.0.1 and a port of the proxy's range; at least one was seen.
fn assert_227_in_range(run: &CurlRun, range: (u16, u16), what: &str) {
    let replies = run.passive_replies();
    let pasv: Vec<&String> = replies.iter().filter(|r| r.starts_with("227")).collect();
    assert!(
        !pasv.is_empty(),
        "{what}: no 227 reply seen:\n{}",
        run.stderr
    );
    for reply in pasv {
        let (ip, port) =
            parse_227(reply).unwrap_or_else(|| panic!("{what}: unparsable 227: {reply:?}"));
        assert_eq!(ip, [127, 0, 0, 1], "{what}: 227 names {ip:?}: {reply:?}");
        assert!(
            (range.0..=range.1).contains(&port),
            "{what}: 227 port {port} outside {}-{}: {reply:?}",
            range.0,
            range.1
        );
    }
}

fn failure_context(run: &CurlRun, server: &Vsftpd) -> String {
    format!(
        "curl: {}\n--- curl stderr ---\n{}\n--- vsftpd log (tail) ---\n{}",
        run.status,
        run.stderr,
        tail(&server.log(), 40)
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// curl, vsftpd (anonymous, wrong pasv_address) with `big.bin` and a writable `upload` dir.
/// `None`: skipped.
async fn setup(seed: u64) -> Option<(PathBuf, Vsftpd, Vec<u8>)> {
    let curl = require_program("curl")?;
    let data = test_data(FILE_SIZE, seed);
    let files = vec![
        ("big.bin".to_string(), data.clone()),
        ("readme.txt".to_string(), b"hello from vsftpd\n".to_vec()),
    ];
    let server = tokio::task::spawn_blocking(move || {
        Vsftpd::start(VsftpdOptions {
            pasv_address: Some(WRONG_PASV_ADDRESS.into()),
            writable: true,
            files,
            ..Default::default()
        })
    })
    .await
    .expect("vsftpd start task")?;
    Some((curl, server, data))
}

/// (a) PASV with the 227 address honoured: list and download through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_list_and_download_through_proxy() {
    let Some((curl_bin, server, data)) = setup(1).await else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;
    let pasv = ["--disable-epsv", "--no-ftp-skip-pasv-ip", "-v"];

    let list = curl(&curl_bin, &[&pasv[..], &[&proxy.url("")]].concat()).await;
    assert!(
        list.status.success(),
        "LIST through the proxy failed: {}",
        failure_context(&list, &server)
    );
    let listing = list.stdout_text();
    assert!(
        listing.contains("big.bin") && listing.contains("readme.txt"),
        "listing lacks the files:\n{listing}"
    );
    assert_227_in_range(&list, proxy.passive, "LIST");
    assert_no_wrong_address(&list, "LIST");

    let get = curl(&curl_bin, &[&pasv[..], &[&proxy.url("big.bin")]].concat()).await;
    assert!(
        get.status.success(),
        "RETR through the proxy failed: {}",
        failure_context(&get, &server)
    );
    assert_eq!(get.stdout.len(), data.len(), "downloaded size");
    assert_eq!(sha256(&get.stdout), sha256(&data), "downloaded SHA-256");
    assert_227_in_range(&get, proxy.passive, "RETR");
    assert_no_wrong_address(&get, "RETR");

    proxy.shutdown().await;
}

/// (b) The control case: the same client straight to vsftpd fails, because vsftpd's 227
/// names its (wrong) configured address. This proves that (a) passes thanks to the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_vsftpd_fails_with_wrong_pasv_address() {
    let Some((curl_bin, server, _data)) = setup(2).await else {
        return;
    };
    let list = curl(
        &curl_bin,
        &[
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            "-v",
            &server.url(""),
        ],
    )
    .await;
    assert!(
        !list.status.success(),
        "direct LIST unexpectedly worked: {}",
        failure_context(&list, &server)
    );
    let wrong = WRONG_PASV_ADDRESS.to_string().replace('.', ",");
    assert!(
        list.passive_replies().iter().any(|r| r.contains(&wrong)),
        "vsftpd's 227 should name {wrong}:\n{}",
        list.stderr
    );
}

/// (c) Upload 5 MiB through the proxy (PASV); the bytes on vsftpd's disk match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_through_proxy() {
    let Some((curl_bin, server, _)) = setup(3).await else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;
    let data = test_data(FILE_SIZE, 33);
    let local = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(local.path(), &data).expect("write upload source");
    let local_path = local.path().to_str().expect("utf-8 temp path");

    let put = curl(
        &curl_bin,
        &[
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            "-v",
            "-T",
            local_path,
            &proxy.url("upload/up.bin"),
        ],
    )
    .await;
    assert!(
        put.status.success(),
        "STOR through the proxy failed: {}",
        failure_context(&put, &server)
    );
    assert_227_in_range(&put, proxy.passive, "STOR");
    assert_no_wrong_address(&put, "STOR");
    // curl exits after the 226, which the proxy holds until the data is through, and
    // vsftpd answers 226 only after it has written the file.
    let stored = std::fs::read(server.upload_dir.join("up.bin")).expect("uploaded file on disk");
    assert_eq!(stored.len(), data.len(), "uploaded size");
    assert_eq!(sha256(&stored), sha256(&data), "uploaded SHA-256");

    proxy.shutdown().await;
}

/// (d) curl's default: EPSV. The 229 port is inside the proxy's range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_download_through_proxy() {
    let Some((curl_bin, server, data)) = setup(4).await else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;

    let get = curl(&curl_bin, &["-v", &proxy.url("big.bin")]).await;
    assert!(
        get.status.success(),
        "EPSV RETR through the proxy failed: {}",
        failure_context(&get, &server)
    );
    assert_eq!(sha256(&get.stdout), sha256(&data), "downloaded SHA-256");
    let replies = get.passive_replies();
    let epsv: Vec<&String> = replies.iter().filter(|r| r.starts_with("229")).collect();
    assert!(!epsv.is_empty(), "no 229 reply seen:\n{}", get.stderr);
    for reply in epsv {
        let port = parse_229(reply).unwrap_or_else(|| panic!("unparsable 229: {reply:?}"));
        assert!(
            (proxy.passive.0..=proxy.passive.1).contains(&port),
            "229 port {port} outside {:?}: {reply:?}",
            proxy.passive
        );
    }
    assert_no_wrong_address(&get, "EPSV RETR");

    proxy.shutdown().await;
}

/// (e) `/metrics` counts the bytes of a proxied download for the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_proxied_download() {
    let Some((curl_bin, server, data)) = setup(5).await else {
        return;
    };
    let proxy = Proxy::start(server.addr).await;
    let get = curl(&curl_bin, &["-v", &proxy.url("big.bin")]).await;
    assert!(
        get.status.success(),
        "RETR through the proxy failed: {}",
        failure_context(&get, &server)
    );
    assert_eq!(sha256(&get.stdout), sha256(&data), "downloaded SHA-256");

    let metrics_addr = proxy
        .running
        .metrics_addr
        .expect("[metrics] listen was configured, but RunningProxy.metrics_addr is None");
    let url = format!("http://{metrics_addr}/metrics");
    let scrape = curl(&curl_bin, &["-f", &url]).await;
    assert!(
        scrape.status.success(),
        "GET {url}: {}\n{}",
        scrape.status,
        scrape.stderr
    );
    let text = scrape.stdout_text();
    let counted: f64 = text
        .lines()
        .filter(|l| l.starts_with("ftpfront_transfer_bytes_total{"))
        .filter(|l| l.contains(r#"backend="vsftpd""#) && l.contains(r#"direction="download""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        counted >= FILE_SIZE as f64,
        "ftpfront_transfer_bytes_total{{backend=\"vsftpd\",direction=\"download\"}} is {counted}, \
         expected >= {FILE_SIZE}:\n{}",
        text.lines()
            .filter(|l| l.starts_with("ftpfront_transfer"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    proxy.shutdown().await;
}

#[test]
fn parsers() {
    assert_eq!(
        parse_227("227 Entering Passive Mode (127,0,0,1,78,133)."),
        Some(([127, 0, 0, 1], 20101))
    );
    assert_eq!(parse_227("227 Entering Passive Mode (1,2,3)"), None);
    assert_eq!(
        parse_229("229 Entering Extended Passive Mode (|||20101|)"),
        Some(20101)
    );
    assert_eq!(
        parse_229("229 Entering Extended Passive Mode (|1|x|5|)"),
        None
    );
}
