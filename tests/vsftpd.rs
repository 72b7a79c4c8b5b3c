//! ftpfront in front of a real vsftpd on loopback, driven by the `curl` and `lftp` programs
//! and by the harness's raw client.
//!
//! vsftpd is configured with a WRONG passive address ([`WRONG_PASV_ADDRESS`]), as a backend
//! behind a second NAT would be. Through the proxy, listing, downloads and uploads work and
//! every 227/229 reply names the proxy's public address and a port of its passive range; the
//! same client straight to vsftpd fails (the control case). Further scenarios: ABOR in the
//! middle of a download, active mode towards vsftpd, REST resume, and lftp.
//!
//! Skipped with a printed reason (failed under `FTP_TESTS_REQUIRE_EXTERNAL=1`) when curl,
//! lftp, vsftpd or root is missing: `sudo scripts/test.sh` installs them.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::vsftpd::{Vsftpd, VsftpdOptions, WRONG_PASV_ADDRESS};
use ftpfront::config::{Config, DataMode, PortRange, PumpMode};
use ftpfront::server::RunningProxy;
use tokio::io::AsyncReadExt;

const FILE_SIZE: usize = 5 * 1024 * 1024;
/// Large enough that the download is still running when the client sends ABOR.
const ABOR_FILE_SIZE: usize = 64 * 1024 * 1024;
const PASSIVE_RANGE_LEN: u16 = 10;
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(90);
const README: &[u8] = b"hello from vsftpd\n";

/// A finished run of curl or lftp.
struct Run {
    output: Output,
    /// The program and its arguments, for failure messages.
    command: String,
}

impl Run {
    fn success(&self) -> bool {
        self.output.status.success()
    }

    fn stdout(&self) -> &[u8] {
        &self.output.stdout
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// curl's -v trace and errors, or lftp's errors.
    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Passive replies (227/229) that curl received, without the "< " prefix.
    fn passive_replies(&self) -> Vec<String> {
        self.stderr()
            .lines()
            .filter_map(|l| l.strip_prefix("< "))
            .filter(|l| l.starts_with("227") || l.starts_with("229"))
            .map(|l| l.trim().to_string())
            .collect()
    }
}

/// Runs `program` with `args` and a timeout; never hangs the test.
async fn run(program: &Path, args: &[&str]) -> Run {
    let command = format!("{} {args:?}", program.display());
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(PROGRAM_TIMEOUT, child)
        .await
        .unwrap_or_else(|_| panic!("{command} still running after {PROGRAM_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    Run { output, command }
}

fn failure_context(run: &Run, server: &Vsftpd) -> String {
    format!(
        "{}: {}\n--- stdout (tail) ---\n{}\n--- stderr ---\n{}\n--- vsftpd log (tail) ---\n{}",
        run.command,
        run.output.status,
        tail(&run.stdout_text(), 20),
        run.stderr(),
        tail(&server.log(), 40)
    )
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Same length and SHA-256 (a mismatch shows digests, not megabytes).
fn assert_same_bytes(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: size");
    assert_eq!(sha256(got), sha256(want), "{what}: SHA-256");
}

/// vsftpd (anonymous, wrong pasv_address, writable `upload` dir) serving `big.bin` (see
/// [`Fixture::data`]) and `readme.txt`, with ftpfront in front of it, and the external
/// program a scenario drives.
struct Fixture {
    /// The program named to [`Fixture::start`] (curl or lftp), when one was.
    program: Option<PathBuf>,
    server: Vsftpd,
    /// The contents of `big.bin`.
    data: Vec<u8>,
    proxy: RunningProxy,
    /// The proxy's passive range.
    range: PortRange,
}

impl Fixture {
    /// `None`: skipped (the program, vsftpd or root is missing). `tune` changes the proxy
    /// config (the harness's, with the backend named `vsftpd` and passive sockets on
    /// loopback only) before the proxy starts.
    async fn start(
        program: Option<&str>,
        seed: u32,
        big_len: usize,
        tune: impl FnOnce(&mut Config),
    ) -> Option<Fixture> {
        let program = match program {
            Some(name) => Some(require_program(name)?),
            None => None,
        };
        let data = sample_bytes(big_len, seed);
        let files = vec![
            ("big.bin".to_string(), data.clone()),
            ("readme.txt".to_string(), README.to_vec()),
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
        let mut config = proxy_config(server.addr, PASSIVE_RANGE_LEN);
        config.backends[0].name = "vsftpd".into();
        config.passive.bind = loopback(1);
        tune(&mut config);
        let range = config.passive.ports;
        let proxy = start_proxy(config).await;
        Some(Fixture {
            program,
            server,
            data,
            proxy,
            range,
        })
    }

    /// curl with a [`FILE_SIZE`] `big.bin` and the default proxy config.
    async fn curl(seed: u32) -> Option<Fixture> {
        Fixture::start(Some("curl"), seed, FILE_SIZE, |_| {}).await
    }

    fn program(&self) -> &Path {
        self.program
            .as_deref()
            .expect("fixture started with a program")
    }

    /// `ftp://` URL of `path` through the proxy (anonymous login).
    fn url(&self, path: &str) -> String {
        format!(
            "ftp://{}/{}",
            self.proxy.control_addr,
            path.trim_start_matches('/')
        )
    }

    /// curl, silent but with errors, plus `args`.
    async fn curl_run(&self, args: &[&str]) -> Run {
        let common = ["-sS", "--connect-timeout", "10", "--max-time", "60"];
        run(self.program(), &[&common[..], args].concat()).await
    }

    /// Panics with the program's output and vsftpd's log tail unless `run` succeeded.
    fn assert_success(&self, run: &Run, what: &str) {
        assert!(
            run.success(),
            "{what} failed: {}",
            failure_context(run, &self.server)
        );
    }

    /// curl `-v` with `args` (ending with the URL), in PASV mode trusting the 227 address
    /// (`pasv`) or with curl's default EPSV. Every passive reply it saw must name the proxy's
    /// range, never vsftpd's own address.
    async fn curl_passive(&self, pasv: bool, args: &[&str], what: &str) -> Run {
        let mode: &[&str] = if pasv {
            &["-v", "--disable-epsv", "--no-ftp-skip-pasv-ip"]
        } else {
            &["-v"]
        };
        let run = self.curl_run(&[mode, args].concat()).await;
        self.assert_success(&run, what);
        let code = if pasv { "227" } else { "229" };
        assert_passive_in_range(&run, self.range, code, what);
        run
    }

    /// [`Fixture::curl_passive`] that must write exactly `want` to stdout.
    async fn download(&self, pasv: bool, args: &[&str], want: &[u8], what: &str) -> Run {
        let get = self.curl_passive(pasv, args, what).await;
        assert_same_bytes(get.stdout(), want, what);
        get
    }

    /// curl `-T` of a fresh [`FILE_SIZE`] file to `upload/name` (see
    /// [`Fixture::curl_passive`]); vsftpd must have stored exactly those bytes.
    async fn upload(&self, pasv: bool, name: &str, seed: u32, what: &str) {
        let (local, data) = upload_source(FILE_SIZE, seed);
        let target = self.url(&format!("upload/{name}"));
        self.curl_passive(pasv, &["-T", utf8(local.path()), &target], what)
            .await;
        // curl exits after the 226, which the proxy holds until the data is through, and
        // vsftpd answers 226 only after it has written the file.
        self.assert_uploaded(name, &data, what);
    }

    /// The file `name` that vsftpd stored in its upload directory is `want`.
    fn assert_uploaded(&self, name: &str, want: &[u8], what: &str) {
        let stored = read_file(&self.server.upload_dir.join(name));
        assert_same_bytes(&stored, want, what);
    }

    /// A failure message with vsftpd's log tail.
    fn with_log(&self, what: &str) -> String {
        format!(
            "{what}\n--- vsftpd log (tail) ---\n{}",
            tail(&self.server.log(), 40)
        )
    }

    async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(10), self.proxy.shutdown())
            .await
            .expect("proxy shutdown took more than 10 s");
    }
}

fn assert_no_wrong_address(run: &Run, what: &str) {
    let wrong_dotted = WRONG_PASV_ADDRESS.to_string();
    let wrong_commas = wrong_dotted.replace('.', ",");
    for needle in [&wrong_dotted, &wrong_commas] {
        assert!(
            !run.stderr().contains(needle.as_str()) && !run.stdout_text().contains(needle.as_str()),
            "{what}: vsftpd's own passive address {needle} reached the client:\n{}",
            run.stderr()
        );
    }
}

/// Every `code` reply (227 or 229) that curl saw names a port of the proxy's range (and a
/// 227 names 127.0.0.1); at least one was seen; vsftpd's own address appears nowhere.
fn assert_passive_in_range(run: &Run, range: PortRange, code: &str, what: &str) {
    assert_no_wrong_address(run, what);
    let replies: Vec<String> = run
        .passive_replies()
        .into_iter()
        .filter(|r| r.starts_with(code))
        .collect();
    assert!(
        !replies.is_empty(),
        "{what}: no {code} reply seen:\n{}",
        run.stderr()
    );
    for reply in replies {
        let port = if code == "227" {
            let announced = parse_227(&reply);
            assert_eq!(
                announced.ip(),
                loopback(1),
                "{what}: 227 names {announced}: {reply:?}"
            );
            announced.port()
        } else {
            parse_229(&reply).unwrap_or_else(|| panic!("{what}: unparsable {code}: {reply:?}"))
        };
        assert!(
            range.contains(port),
            "{what}: {code} port {port} outside {range}: {reply:?}"
        );
    }
}

/// A raw client logged in to vsftpd through the proxy as `anonymous`, in binary mode.
async fn anonymous_client(proxy: SocketAddr) -> FtpClient {
    let mut client = FtpClient::connect(loopback(1), proxy).await;
    let mut reply = client.cmd("USER anonymous").await;
    if reply.code == 331 {
        reply = client.cmd("PASS guest@").await;
    }
    assert_eq!(reply.code, 230, "anonymous login: {reply:?}");
    let reply = client.cmd("TYPE I").await;
    assert_eq!(reply.code, 200, "TYPE I: {reply:?}");
    client
}

/// A local file of `len` pseudo-random bytes to upload, and its contents.
fn upload_source(len: usize, seed: u32) -> (tempfile::NamedTempFile, Vec<u8>) {
    let data = sample_bytes(len, seed);
    let local = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(local.path(), &data).expect("write upload source");
    (local, data)
}

fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// (b) The control case: the same client straight to vsftpd fails, because vsftpd's 227
/// names its (wrong) configured address. This proves that (a) passes thanks to the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_to_vsftpd_fails_with_wrong_pasv_address() {
    let Some(f) = Fixture::curl(2).await else {
        return;
    };
    let args = ["--disable-epsv", "--no-ftp-skip-pasv-ip", "-v"];
    let list = f
        .curl_run(&[&args[..], &[&f.server.url("")]].concat())
        .await;
    assert!(
        !list.success(),
        "direct LIST unexpectedly worked: {}",
        failure_context(&list, &f.server)
    );
    let wrong = WRONG_PASV_ADDRESS.to_string().replace('.', ",");
    assert!(
        list.passive_replies().iter().any(|r| r.contains(&wrong)),
        "vsftpd's 227 should name {wrong}:\n{}",
        list.stderr()
    );
}

/// (a) PASV with the 227 address honoured: list and download through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pasv_list_and_download_through_proxy() {
    let Some(f) = Fixture::curl(1).await else {
        return;
    };
    let list = f.curl_passive(true, &[&f.url("")], "LIST").await;
    let listing = list.stdout_text();
    assert!(
        listing.contains("big.bin") && listing.contains("readme.txt"),
        "listing lacks the files:\n{listing}"
    );
    f.download(true, &[&f.url("big.bin")], &f.data, "RETR")
        .await;

    f.shutdown().await;
}

/// (c) Upload 5 MiB through the proxy (PASV); the bytes on vsftpd's disk match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_through_proxy() {
    let Some(f) = Fixture::curl(3).await else {
        return;
    };
    f.upload(true, "up.bin", 33, "STOR").await;
    f.shutdown().await;
}

/// Both `data.pump` modes move a 24 MiB download and a 5 MiB upload byte for byte (the
/// copy through a buffer that grows while vsftpd or curl is ahead; splice through a pipe).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_pumps_move_every_byte_both_ways() {
    for (seed, mode) in [(41, PumpMode::Copy), (42, PumpMode::Splice)] {
        let tune = |config: &mut Config| config.data.pump = mode;
        let Some(f) = Fixture::start(Some("curl"), seed, 24 << 20, tune).await else {
            return;
        };
        let what = format!("{mode:?} RETR");
        f.download(false, &[&f.url("big.bin")], &f.data, &what)
            .await;
        f.upload(
            false,
            &format!("{mode:?}.bin"),
            seed,
            &format!("{mode:?} STOR"),
        )
        .await;
        f.shutdown().await;
    }
}

/// (d) curl's default: EPSV. The 229 port is inside the proxy's range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_download_through_proxy() {
    let Some(f) = Fixture::curl(4).await else {
        return;
    };
    f.download(false, &[&f.url("big.bin")], &f.data, "EPSV RETR")
        .await;
    f.shutdown().await;
}

/// (e) `/metrics` counts the bytes of a proxied download for the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_proxied_download() {
    let Some(f) = Fixture::curl(5).await else {
        return;
    };
    f.download(false, &[&f.url("big.bin")], &f.data, "RETR")
        .await;

    let text = scrape(&f.proxy).await;
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

    f.shutdown().await;
}

/// (f) ABOR in the middle of a 64 MiB download: 426 then 226, and the session goes on (PWD,
/// then another PASV download, intact). This is vsftpd's real ABOR behaviour behind the
/// proxy, which resynchronises with a PWD marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_mid_download_then_session_continues() {
    let Some(f) = Fixture::start(None, 6, ABOR_FILE_SIZE, |_| {}).await else {
        return;
    };
    let mut client = anonymous_client(f.proxy.control_addr).await;

    let data_addr = client.pasv().await.expect("PASV");
    let mut data = connect_from(client.source, data_addr)
        .await
        .expect("data connect");
    client.send("RETR big.bin").await;
    let start = client.reply().await;
    assert!(
        start.code == 150 || start.code == 125,
        "{}",
        f.with_log(&format!("RETR start: {start:?}"))
    );
    let mut received = vec![0u8; 1024 * 1024];
    tokio::time::timeout(Duration::from_secs(20), data.read_exact(&mut received))
        .await
        .expect("first MiB within 20 s")
        .expect("read the first MiB");
    assert_eq!(received, f.data[..received.len()], "the first MiB");

    client.send("ABOR").await;
    let aborted = client.reply().await;
    let what = format!("first reply to ABOR: {aborted:?}");
    assert_eq!(aborted.code, 426, "{}", f.with_log(&what));
    let done = client.reply().await;
    let what = format!("second reply to ABOR: {done:?}");
    // vsftpd's own reply is relayed: 225 "No transfer to ABOR." (the transfer already
    // ended with 426), as a client connected to it directly gets.
    assert!(
        done.code == 225 || done.code == 226,
        "{}",
        f.with_log(&what)
    );
    drop(data);

    let pwd = client.cmd("PWD").await;
    let what = format!("PWD after ABOR: {pwd:?}");
    assert_eq!(pwd.code, 257, "{}", f.with_log(&what));
    let data_addr = client.pasv().await.expect("PASV after ABOR");
    let (bytes, last) = client.retr("readme.txt", data_addr).await;
    let what = format!("RETR after ABOR: {last:?}");
    assert_eq!(last.code, 226, "{}", f.with_log(&what));
    assert_eq!(bytes, README, "readme.txt after ABOR");
    assert_eq!(client.cmd("QUIT").await.code, 221);

    f.shutdown().await;
}

/// (g) Active mode towards vsftpd (PORT/EPRT from ftpfront; vsftpd has `port_enable=YES`
/// and `connect_from_port_20=NO`), the client in passive mode: a 5 MiB download and upload
/// through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_mode_towards_vsftpd() {
    let active = |config: &mut Config| config.backends[0].data_mode = DataMode::Active;
    let Some(f) = Fixture::start(Some("curl"), 7, FILE_SIZE, active).await else {
        return;
    };
    let big = f.url("big.bin");
    f.download(false, &[&big], &f.data, "RETR, active towards vsftpd")
        .await;
    f.upload(false, "active.bin", 77, "STOR, active towards vsftpd")
        .await;

    // vsftpd saw PORT or EPRT, never PASV or EPSV: the backend leg really was active.
    let backend_log = f.server.log();
    let commands: Vec<&str> = backend_log
        .lines()
        .filter(|l| l.contains("FTP command"))
        .collect();
    let saw = |verb: &str| commands.iter().any(|l| l.contains(&format!("\"{verb}")));
    assert!(
        saw("PORT") || saw("EPRT"),
        "vsftpd got no PORT/EPRT:\n{}",
        tail(&backend_log, 40)
    );
    assert!(
        !saw("PASV") && !saw("EPSV"),
        "vsftpd got PASV/EPSV in active mode:\n{}",
        tail(&backend_log, 40)
    );

    f.shutdown().await;
}

/// (h) REST through the proxy: `curl -C offset` gets exactly the file's tail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_resume_through_proxy() {
    let Some(f) = Fixture::curl(8).await else {
        return;
    };
    let offset = 1_234_567;
    let args = ["-C", &offset.to_string(), &f.url("big.bin")];
    let what = "REST + RETR through the proxy: the file's tail";
    let get = f.download(false, &args, &f.data[offset..], what).await;
    assert!(
        get.stderr().contains(&format!("REST {offset}")),
        "curl sent no REST {offset}:\n{}",
        get.stderr()
    );

    f.shutdown().await;
}

/// (i) lftp through the proxy, passive: listing, download and upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_list_get_put_through_proxy() {
    let Some(f) = Fixture::start(Some("lftp"), 9, FILE_SIZE, |_| {}).await else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out.bin");
    let (local, up) = upload_source(FILE_SIZE, 99);
    let script = format!(
        "set cmd:fail-exit yes; set ftp:passive-mode on; set net:max-retries 1; \
         set net:timeout 10; ls; get big.bin -o {}; put {} -o upload/x.bin; bye",
        utf8(&out),
        utf8(local.path())
    );
    let target = format!("ftp://127.0.0.1:{}", f.proxy.control_addr.port());
    let lftp = run(f.program(), &["-e", &script, "-u", "anonymous,", &target]).await;
    f.assert_success(&lftp, "lftp through the proxy");

    let listing = lftp.stdout_text();
    assert!(
        listing.contains("big.bin") && listing.contains("readme.txt"),
        "lftp listing lacks the files:\n{}",
        failure_context(&lftp, &f.server)
    );
    assert_same_bytes(&read_file(&out), &f.data, "lftp get");
    f.assert_uploaded("x.bin", &up, "lftp put");

    f.shutdown().await;
}

#[test]
fn parsers() {
    assert_eq!(
        parse_227("227 Entering Passive Mode (127,0,0,1,78,133)."),
        "127.0.0.1:20101".parse::<SocketAddr>().unwrap()
    );
    assert!(
        std::panic::catch_unwind(|| parse_227("227 Entering Passive Mode (1,2,3)")).is_err(),
        "a 227 with three numbers is rejected"
    );
    assert_eq!(
        parse_229("229 Entering Extended Passive Mode (|||20101|)"),
        Some(20101)
    );
    assert_eq!(
        parse_229("229 Entering Extended Passive Mode (|1|x|5|)"),
        None
    );
}

/// `use_control_address = false` trusts the address in the backend's 227: vsftpd's wrong
/// one is unreachable, so the transfer fails with 425, which does not name it (the default, `true`, is what every
/// other test here relies on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusting_the_backends_227_address_fails_with_a_wrong_one() {
    let Some(f) = Fixture::start(None, 9, 4096, |config| {
        config.backends[0].use_control_address = false;
    })
    .await
    else {
        return;
    };
    let mut client = anonymous_client(f.proxy.control_addr).await;
    let data_addr = client.pasv().await.expect("PASV");
    let _data = connect_from(loopback(1), data_addr)
        .await
        .expect("data connect");
    let reply = client.cmd("RETR big.bin").await;
    assert_eq!(reply.code, 425, "{reply:?}");
    // The backend's private address is an internal: the log names it, the client not.
    assert!(
        !reply.text.contains(&WRONG_PASV_ADDRESS.to_string()),
        "{reply:?}"
    );
    assert_eq!(client.cmd("PWD").await.code, 257, "the session survives");
    f.shutdown().await;
}
