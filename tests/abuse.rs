//! The abuse suite: the `ftpfront` binary under attack from loopback peers (127.0.0.0/8,
//! many source addresses) while an honest client on another address downloads 50 MiB
//! through it. Each case owns one attack: thousands of idle or refused connections, huge
//! command lines, random bytes, TLS junk and silent TLS peers, a TLS client that never
//! reads (the regression test of the unbounded TLS close), a connect/close storm, FTP
//! bounce through PORT/EPRT, and passive port theft. Every case checks that the honest
//! download is intact (SHA-256) and finishes within 3x its unloaded time (measured first,
//! in the same case), what the attacker got, the binary's descriptors and memory where the
//! attack could grow them, and that the session, transfer and passive gauges return to 0.
//!
//! The cases measure time and process figures, so they run one at a time ([`SERIAL`]).

mod common;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use common::ftp_client::{connect_from, FtpClient};
use common::harness::{
    free_port_block, loopback, sample_bytes, sha256, TestBackend, PASSWORD, USER,
};
use common::metrics::{metric, try_http_get_at};
use common::process::{cpu_seconds, fd_count, rss_kib, run_binary, BinaryProxy};
use common::tls::{garbage_on_fresh_connection, not_a_client_hello, TestPki};
use futures::StreamExt;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// One case at a time: each measures timing, CPU and memory of its own binary, which a
/// second case on the same two cores would disturb.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The honest client's file on the backend.
const BIG: &str = "big.bin";
const BIG_LEN: usize = 50 << 20;
/// The honest client's address; attackers use others (see [`many`]).
const HONEST: u8 = 2;
/// The gauges that must return to 0 after every case.
const GAUGES: [&str; 4] = [
    "ftpfront_sessions_active",
    "ftpfront_transfers_active",
    "ftpfront_passive_ports_in_use",
    "ftpfront_passive_reservations_active",
];
/// How long the binary may take to release what an attack held once it is over.
const SETTLE: Duration = Duration::from_secs(10);

/// The honest file's bytes and SHA-256, made once for the whole file of tests.
fn big_file() -> &'static (Vec<u8>, String) {
    static FILE: OnceLock<(Vec<u8>, String)> = OnceLock::new();
    FILE.get_or_init(|| {
        let bytes = sample_bytes(BIG_LEN, 50);
        let sha = sha256(&bytes);
        (bytes, sha)
    })
}

/// Attacker address `index` of block `block`: 127.block.x.y, 250 addresses per x.
fn many(block: u8, index: usize) -> IpAddr {
    let hi = u8::try_from(index / 250).expect("address index");
    let lo = (index % 250) as u8 + 1;
    IpAddr::V4(Ipv4Addr::new(127, block, hi, lo))
}

/// The test process holds thousands of connections: its soft descriptor limit must allow
/// them (the binary raises its own at start).
fn raise_nofile(needed: u64) {
    let limit = ftpfront::limits::raise_fd_limit().expect("raise RLIMIT_NOFILE");
    assert!(
        limit >= needed,
        "RLIMIT_NOFILE is {limit}, the case needs {needed}: raise the hard limit"
    );
}

// ---------------------------------------------------------------------------
// The binary under attack
// ---------------------------------------------------------------------------

/// What a case changes in the binary's configuration.
#[derive(Default)]
struct Setup<'a> {
    /// Lines of the `[limits]` section.
    limits: &'a str,
    /// Client TLS (`optional`, so AUTH TLS works) plus an implicit FTPS listener.
    tls: Option<&'a TestPki>,
}

/// The `ftpfront` binary in front of an embedded backend holding [`BIG`].
struct Target {
    proxy: BinaryProxy,
    pid: u32,
    /// The metrics listener, on a fixed port so that a plain GET can scrape it.
    metrics: SocketAddr,
    implicit: Option<SocketAddr>,
    _backend: TestBackend,
    _dir: tempfile::TempDir,
}

impl Target {
    async fn start(setup: Setup<'_>) -> Target {
        let backend = TestBackend::start().await;
        std::fs::write(backend.path(BIG), &big_file().0).expect("write the honest file");
        let dir = tempfile::tempdir().expect("tempdir");
        let control = free_port_block(1);
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port_block(1)));
        let implicit = setup
            .tls
            .map(|_| SocketAddr::from(([127, 0, 0, 1], free_port_block(1))));
        let config = config_text(control, metrics, implicit, backend.server.addr, &setup);
        let proxy = run_binary(dir.path(), control, &config).await;
        let pid = proxy.child.id().expect("pid");
        let target = Target {
            proxy,
            pid,
            metrics,
            implicit,
            _backend: backend,
            _dir: dir,
        };
        // Also waits for the metrics listener; the implicit one is bound before control.
        target.scrape().await;
        target
    }

    fn control(&self) -> SocketAddr {
        self.proxy.control
    }

    fn implicit(&self) -> SocketAddr {
        self.implicit.expect("implicit FTPS listener configured")
    }

    /// `/metrics`, retried for a few seconds while the listener comes up.
    async fn scrape(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match try_http_get_at(self.metrics, "/metrics", "").await {
                Ok(text) if text.starts_with("HTTP/1.1 200") => return text,
                other if Instant::now() >= deadline => {
                    panic!("metrics at {} not answering: {other:?}", self.metrics)
                }
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.scrape().await, name, labels)
    }

    /// Polls until `name` equals `want` (within [`SETTLE`]); the last value seen otherwise.
    async fn wait_for(&self, name: &str, labels: &[(&str, &str)], want: f64) -> f64 {
        let deadline = Instant::now() + SETTLE;
        loop {
            let value = self.metric(name, labels).await;
            if value == want || Instant::now() >= deadline {
                return value;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// After every case: no session, transfer or passive reservation is left (polled).
    async fn assert_released(&self, case: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let text = self.scrape().await;
            let held: Vec<String> = GAUGES
                .iter()
                .map(|gauge| (gauge, metric(&text, gauge, &[])))
                .filter(|(_, value)| *value != 0.0)
                .map(|(gauge, value)| format!("{gauge} = {value}"))
                .collect();
            if held.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: still held {SETTLE:?} after the attack: {held:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The binary has not exited (a crash would also fail the next request, less clearly).
    fn assert_running(&mut self, case: &str) {
        let status = self.proxy.child.try_wait().expect("try_wait");
        assert!(status.is_none(), "{case}: ftpfront exited: {status:?}");
    }
}

fn config_text(
    control: u16,
    metrics: SocketAddr,
    implicit: Option<SocketAddr>,
    backend: SocketAddr,
    setup: &Setup<'_>,
) -> String {
    let ports = free_port_block(4);
    let implicit = implicit
        .map(|addr| format!("implicit_tls = \"{addr}\""))
        .unwrap_or_default();
    let tls = setup
        .tls
        .map(|pki| {
            format!(
                "[tls]\nmode = \"optional\"\ncert = {:?}\nkey = {:?}\n",
                pki.server_cert, pki.server_key
            )
        })
        .unwrap_or_default();
    // The health probe is a connection of the binary's own: hourly, it cannot blur the
    // descriptor counts the cases compare.
    format!(
        r#"
[listen]
control = "127.0.0.1:{control}"
{implicit}

[passive]
ports = "{ports}-{last}"
public_address = "127.0.0.1"

[[backends]]
name = "main"
address = "{backend}"
connect_timeout = "3s"

[metrics]
listen = "{metrics}"

[health]
probe_interval = "1h"

[log]
format = "text"
filter = "info"

[limits]
{limits}

{tls}
"#,
        last = ports + 3,
        limits = setup.limits,
    )
}

// ---------------------------------------------------------------------------
// The honest client
// ---------------------------------------------------------------------------

/// Logs in from `source`, downloads [`BIG`] and checks its SHA-256; returns the time from
/// connect to the final 226 (the hash, slow in a debug test build, is not timed).
async fn honest_download_from(source: IpAddr, control: SocketAddr) -> Duration {
    let started = Instant::now();
    let mut client = FtpClient::login(source, control).await;
    let data = client.pasv().await.expect("honest PASV");
    let (bytes, reply) = client.retr(BIG, data).await;
    let took = started.elapsed();
    assert_eq!(reply.code, 226, "honest download: {}", reply.text);
    assert_eq!(client.cmd("QUIT").await.code, 221, "honest QUIT");
    assert_eq!(sha256(&bytes), big_file().1, "honest download corrupted");
    took
}

async fn honest_download(target: &Target) -> Duration {
    honest_download_from(loopback(HONEST), target.control()).await
}

/// The honest download during an attack: within 3x its unloaded time, or unloaded + 3 s
/// where that is more (two noisy shared cores make sub-second times jitter: CI once saw
/// 2.9 s against 0.6 s unloaded in a case that takes 0.35 s on a quiet machine).
fn assert_unharmed(case: &str, unloaded: Duration, loaded: Duration) {
    let limit = (unloaded * 3).max(unloaded + Duration::from_secs(3));
    println!("{case}: honest 50 MiB download {loaded:.2?} under attack, {unloaded:.2?} unloaded");
    assert!(
        loaded <= limit,
        "{case}: the honest download took {loaded:?} under attack, {unloaded:?} unloaded \
         (limit {limit:?})"
    );
}

/// Runs `attack` as a separate attacking program would run: on its own thread with a
/// single-threaded runtime, so that it takes at most one core and never the test's tokio
/// workers, which run the in-process backend and the honest client. Once the attack
/// signals that it is under way, the honest client downloads; returns the attack's
/// result after checking that download.
async fn while_attacked<T, F>(
    target: &Target,
    case: &str,
    unloaded: Duration,
    attack: impl FnOnce(Arc<Notify>) -> F,
) -> T
where
    T: Send + 'static,
    F: Future<Output = T> + Send + 'static,
{
    let under_way = Arc::new(Notify::new());
    let attack = attack(under_way.clone());
    let attacker = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("attacker runtime")
            .block_on(attack)
    });
    tokio::time::timeout(Duration::from_secs(30), under_way.notified())
        .await
        .unwrap_or_else(|_| panic!("{case}: the attack never got under way"));
    let loaded = honest_download(target).await;
    assert_unharmed(case, unloaded, loaded);
    let joined = tokio::task::spawn_blocking(move || attacker.join());
    joined
        .await
        .expect("join task")
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

// ---------------------------------------------------------------------------
// Raw attacker connections
// ---------------------------------------------------------------------------

type Conn = BufReader<TcpStream>;

/// How a wait for a line ended other than with a line.
#[derive(Debug, PartialEq)]
enum NoLine {
    Closed,
    TimedOut,
}

async fn dial(source: IpAddr, target: SocketAddr) -> Conn {
    let stream = connect_from(source, target)
        .await
        .unwrap_or_else(|e| panic!("connect from {source} to {target}: {e}"));
    BufReader::new(stream)
}

/// The next line the peer sends, CRLF included.
async fn line<R: AsyncBufRead + Unpin>(conn: &mut R, within: Duration) -> Result<String, NoLine> {
    let mut text = String::new();
    match tokio::time::timeout(within, conn.read_line(&mut text)).await {
        Err(_) => Err(NoLine::TimedOut),
        Ok(Ok(0)) | Ok(Err(_)) => Err(NoLine::Closed),
        Ok(Ok(_)) => Ok(text),
    }
}

/// The code of the next reply, reading through multi-line replies.
async fn reply_code<R: AsyncBufRead + Unpin>(conn: &mut R) -> u16 {
    let within = Duration::from_secs(20);
    let first = line(conn, within).await.expect("a reply");
    let code: u16 = first[..3]
        .parse()
        .unwrap_or_else(|_| panic!("reply {first:?}"));
    if first.as_bytes().get(3) == Some(&b'-') {
        let last = format!("{code} ");
        while !line(conn, within).await.expect("reply").starts_with(&last) {}
    }
    code
}

/// A connection from `source` that got the 220 greeting.
async fn greeted(source: IpAddr, target: SocketAddr) -> Conn {
    let mut conn = dial(source, target).await;
    let greeting = line(&mut conn, Duration::from_secs(20)).await;
    assert!(
        greeting.as_ref().is_ok_and(|g| g.starts_with("220 ")),
        "greeting for {source}: {greeting:?}"
    );
    conn
}

/// `count` greeted connections, connection `i` from `source(i)`, opened 128 at a time.
async fn open_greeted(
    count: usize,
    source: impl Fn(usize) -> IpAddr,
    target: SocketAddr,
) -> Vec<Conn> {
    futures::stream::iter((0..count).map(|i| greeted(source(i), target)))
        .buffer_unordered(128)
        .collect()
        .await
}

/// True when the peer ends the connection (EOF or reset) within `within`; anything it
/// sends first is read and dropped.
async fn closed_within<R: tokio::io::AsyncRead + Unpin>(conn: &mut R, within: Duration) -> bool {
    let drain = async {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(1..) = conn.read(&mut buf).await {}
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

/// Closes like a killed process: RST instead of FIN.
fn reset(stream: TcpStream) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
}

/// Descriptors of the binary at rest, net of its passive listeners (bound on first use,
/// closed 60 s later, so their number may differ between two quiet moments).
/// The descriptor count once it stopped moving: the scrapes just made (and the honest
/// client's connections) close on the proxy's side a moment after the client's, and a
/// baseline taken while one is still open made "the connections are held" miss by one.
async fn settled_fd_count(pid: u32) -> usize {
    let mut last = fd_count(pid);
    let mut steady = 0;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = fd_count(pid);
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        if steady >= 3 {
            break;
        }
    }
    last
}

struct FdBaseline {
    fds: usize,
    listeners: f64,
}

impl FdBaseline {
    async fn take(target: &Target) -> FdBaseline {
        target.assert_released("before the attack").await;
        let listeners = target.metric("ftpfront_passive_listeners_open", &[]).await;
        FdBaseline {
            fds: settled_fd_count(target.pid).await,
            listeners,
        }
    }

    /// Polls until the binary holds no more descriptors than at the baseline.
    async fn assert_restored(&self, target: &Target, case: &str) {
        let deadline = Instant::now() + SETTLE;
        loop {
            let listeners = target.metric("ftpfront_passive_listeners_open", &[]).await;
            let allowed = (self.fds as f64 - self.listeners + listeners) as usize;
            let fds = fd_count(target.pid);
            if fds <= allowed {
                println!("{case}: {fds} descriptors after the attack (baseline {allowed})");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{case}: the binary holds {fds} descriptors {SETTLE:?} after the attack, \
                 {allowed} before"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Thousands of idle connections
// ---------------------------------------------------------------------------

/// 2,000 idle control connections, 10 from each of 200 addresses (under the per-IP limit
/// of 64; `max_sessions` is 10,000): all are admitted and held, the honest client is
/// unharmed, and once they close the sessions and the descriptors are released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_idle_connections_from_many_addresses() {
    let _serial = SERIAL.lock().await;
    let case = "2,000 idle connections";
    const HELD: usize = 2000;
    raise_nofile(HELD as u64 + 1000);
    let target = Target::start(Setup::default()).await;
    let unloaded = honest_download(&target).await;
    let baseline = FdBaseline::take(&target).await;
    let rss_before = rss_kib(target.pid);

    let held = open_greeted(HELD, |i| many(1, i / 10), target.control()).await;
    let active = target
        .wait_for("ftpfront_sessions_active", &[], HELD as f64)
        .await;
    assert_eq!(active, HELD as f64, "{case}: sessions held");
    let fds = fd_count(target.pid);
    assert!(
        fds >= baseline.fds + HELD,
        "{case}: {fds} descriptors, baseline {}: the connections are not held",
        baseline.fds
    );
    let grown = rss_kib(target.pid).saturating_sub(rss_before);
    println!(
        "{case}: RSS +{grown} KiB ({} KiB per session), {fds} descriptors",
        grown / HELD as u64
    );
    assert!(grown < 64 * 1024, "{case}: RSS grew by {grown} KiB");

    let loaded = honest_download(&target).await;
    assert_unharmed(case, unloaded, loaded);
    drop(held);
    baseline.assert_restored(&target, case).await;
    target.assert_released(case).await;
}

// ---------------------------------------------------------------------------
// 2. Thousands of connections from one address
// ---------------------------------------------------------------------------

/// 2,000 connections from one address: the first 64 (`limits.max_sessions_per_ip`,
/// default) are admitted, every further one gets `421` at once and is closed, counted as
/// rejected; the honest client on another address is unharmed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_connections_from_one_address_get_421_beyond_the_limit() {
    let _serial = SERIAL.lock().await;
    let case = "2,000 connections from one address";
    const PER_IP: usize = 64;
    const TOTAL: usize = 2000;
    raise_nofile(TOTAL as u64 + 1000);
    let target = Target::start(Setup::default()).await;
    let unloaded = honest_download(&target).await;
    let source = many(2, 0);
    let admitted = open_greeted(PER_IP, |_| source, target.control()).await;
    let rejected = [("result", "rejected")];
    let rejected_before = target.metric("ftpfront_sessions_total", &rejected).await;

    let control = target.control();
    let refusals = while_attacked(&target, case, unloaded, move |under_way| async move {
        under_way.notify_one();
        futures::stream::iter((PER_IP..TOTAL).map(|_| refused(source, control)))
            .buffer_unordered(128)
            .collect::<Vec<_>>()
            .await
    })
    .await;

    let mut latencies: Vec<Duration> = refusals
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("{case}: {e}")))
        .collect();
    latencies.sort();
    let (median, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!(
        "{case}: {} refused, 421 after {median:.1?} median, {max:.1?} max",
        latencies.len()
    );
    assert!(max < Duration::from_secs(2), "{case}: a 421 took {max:?}");
    let want = rejected_before + (TOTAL - PER_IP) as f64;
    let counted = target
        .wait_for("ftpfront_sessions_total", &rejected, want)
        .await;
    assert_eq!(
        counted, want,
        "{case}: sessions_total{{result=\"rejected\"}}"
    );
    drop(admitted);
    target.assert_released(case).await;
}

/// A connection beyond the per-IP limit: `421` (the time from connect to it), then close.
async fn refused(source: IpAddr, target: SocketAddr) -> Result<Duration, String> {
    let started = Instant::now();
    let mut conn = dial(source, target).await;
    let reply = line(&mut conn, Duration::from_secs(10)).await;
    let took = started.elapsed();
    match reply {
        Ok(text) if text.starts_with("421 ") => {}
        other => return Err(format!("beyond the limit: expected 421, got {other:?}")),
    }
    if !closed_within(&mut conn, Duration::from_secs(5)).await {
        return Err("the connection stays open after 421".into());
    }
    Ok(took)
}

// ---------------------------------------------------------------------------
// 3. Megabyte command lines
// ---------------------------------------------------------------------------

/// 1 MiB command lines (`limits.max_line_length` is 4096): without CRLF the `500` comes
/// at once, before any line end; with CRLF one `500`; either way the session goes on
/// (NOOP answered) and 16 such connections at once cost bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn megabyte_command_lines_get_500_and_cost_bounded_memory() {
    let _serial = SERIAL.lock().await;
    let case = "1 MiB command lines";
    const HOGS: usize = 16;
    let target = Target::start(Setup::default()).await;
    let unloaded = honest_download(&target).await;
    let rss_before = rss_kib(target.pid);
    let too_long = [("side", "client"), ("kind", "line_too_long")];
    let errors_before = target
        .metric("ftpfront_protocol_errors_total", &too_long)
        .await;

    let control = target.control();
    let hogs = while_attacked(&target, case, unloaded, move |under_way| async move {
        let mut hogs = Vec::new();
        for i in 0..HOGS {
            let hog = megabyte_line(many(3, i), control, false).await;
            // Leaves the attacker's runtime, which ends with the attack.
            hogs.push(hog.into_inner().into_std().expect("into_std"));
            under_way.notify_one();
        }
        hogs
    })
    .await;
    let hogs = hogs
        .into_iter()
        .map(|hog| BufReader::new(TcpStream::from_std(hog).expect("from_std")));
    let grown = rss_kib(target.pid).saturating_sub(rss_before);
    println!("{case}: RSS +{grown} KiB with {HOGS} x 1 MiB lines held open");
    assert!(grown < 8 * 1024, "{case}: RSS grew by {grown} KiB");

    let ended = megabyte_line(many(3, 100), control, true).await;
    // The hogs' lines end now; the CRLF-ended line needs no more.
    let ends = std::iter::repeat(&b"\r\nNOOP\r\n"[..]).take(HOGS);
    for (i, (mut conn, end)) in hogs
        .chain([ended])
        .zip(ends.chain([&b"NOOP\r\n"[..]]))
        .enumerate()
    {
        conn.get_mut().write_all(end).await.expect("NOOP");
        let reply = line(&mut conn, Duration::from_secs(10)).await;
        assert!(
            reply.as_ref().is_ok_and(|r| r.starts_with("200 ")),
            "{case}: NOOP after long line {i}: {reply:?}"
        );
    }
    let want = errors_before + HOGS as f64 + 1.0;
    let errors = target
        .wait_for("ftpfront_protocol_errors_total", &too_long, want)
        .await;
    assert_eq!(errors, want, "{case}: line_too_long counted once per line");
    target.assert_released(case).await;
}

/// Sends a 1 MiB line from `source` (ended by CRLF or not) and expects `500` for it.
async fn megabyte_line(source: IpAddr, target: SocketAddr, crlf: bool) -> Conn {
    let mut conn = greeted(source, target).await;
    let mut bytes = vec![b'A'; 1 << 20];
    if crlf {
        bytes.extend_from_slice(b"\r\n");
    }
    conn.get_mut().write_all(&bytes).await.expect("send 1 MiB");
    let reply = line(&mut conn, Duration::from_secs(10)).await;
    assert!(
        reply.as_ref().is_ok_and(|r| r.starts_with("500 ")),
        "1 MiB line (CRLF: {crlf}): expected 500, got {reply:?}"
    );
    conn
}

// ---------------------------------------------------------------------------
// 4. Random bytes
// ---------------------------------------------------------------------------

/// Seeded random bytes: 4 x 2 MiB on the control port, each line of noise refused with a
/// 5xx reply, no crash (QUIT still works after them), memory bounded; and 8 x 1 MiB on
/// the implicit FTPS port (one behind a plausible TLS record header), each a failed
/// handshake, closed at once. A real TLS client still gets its greeting afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_bytes_on_the_control_and_implicit_tls_ports() {
    let _serial = SERIAL.lock().await;
    let case = "random bytes";
    let pki = TestPki::generate();
    let target = Target::start(Setup {
        tls: Some(&pki),
        ..Setup::default()
    })
    .await;
    let unloaded = honest_download(&target).await;
    let failed = [("side", "client"), ("result", "error")];
    let failed_before = target
        .metric("ftpfront_tls_handshakes_total", &failed)
        .await;
    let rss_before = rss_kib(target.pid);

    let (control, implicit) = (target.control(), target.implicit());
    let codes = while_attacked(&target, case, unloaded, move |under_way| async move {
        let noise = (1..=4u32).map(|seed| random_on_control(many(4, seed as usize), control, seed));
        let noise = futures::future::join_all(noise);
        under_way.notify_one();
        let junk = (0..8u32).map(|i| random_on_implicit(many(4, 10 + i as usize), implicit, i));
        let (codes, closed) = tokio::join!(noise, futures::future::join_all(junk));
        for (i, closed) in closed.into_iter().enumerate() {
            assert!(
                closed,
                "random bytes {i} on the implicit port: not closed within 5 s"
            );
        }
        codes
    })
    .await;
    for (seed, codes) in codes.iter().enumerate() {
        let errors = codes.iter().filter(|&&c| c >= 500).count();
        println!(
            "{case}: control connection {seed}: {} replies, {errors} 5xx",
            codes.len()
        );
        assert_eq!(
            codes.last(),
            Some(&221),
            "{case}: QUIT after the noise: {codes:?}"
        );
        // Seeded noise holds no valid command: everything before QUIT is refused.
        assert_eq!(
            errors,
            codes.len() - 1,
            "{case}: noise not refused with 5xx: {codes:?}"
        );
    }
    let grown = rss_kib(target.pid).saturating_sub(rss_before);
    println!("{case}: RSS +{grown} KiB");
    assert!(grown < 16 * 1024, "{case}: RSS grew by {grown} KiB");
    let want = failed_before + 8.0;
    let counted = target
        .wait_for("ftpfront_tls_handshakes_total", &failed, want)
        .await;
    assert_eq!(counted, want, "{case}: failed client handshakes");
    tls_client_greeted(implicit, &pki).await;
    target.assert_released(case).await;
}

/// 2 MiB of `sample_bytes(_, seed)` then QUIT on the control port, replies read meanwhile;
/// the code of every final reply line, in order.
async fn random_on_control(source: IpAddr, target: SocketAddr, seed: u32) -> Vec<u16> {
    let conn = greeted(source, target).await;
    let (read, mut write) = conn.into_inner().into_split();
    let writer = tokio::spawn(async move {
        let noise = sample_bytes(2 << 20, seed);
        // The proxy may end the session on some noise: then the rest is not sent.
        let _ = write.write_all(&noise).await;
        let _ = write.write_all(b"\r\nQUIT\r\n").await;
        write
    });
    let mut read = BufReader::new(read);
    let mut codes = Vec::new();
    while let Ok(text) = line(&mut read, Duration::from_secs(30)).await {
        let code = text.get(..3).and_then(|c| c.parse::<u16>().ok());
        let code = code.unwrap_or_else(|| panic!("not a reply line: {text:?}"));
        if text.as_bytes().get(3) == Some(&b' ') {
            codes.push(code);
        }
    }
    drop(writer.await.expect("noise writer"));
    codes
}

/// 1 MiB of noise on the implicit FTPS port (the first connection's behind a TLS
/// handshake record header); true when the proxy closes within 5 s.
async fn random_on_implicit(source: IpAddr, target: SocketAddr, index: u32) -> bool {
    let mut stream = connect_from(source, target).await.expect("connect");
    let mut noise = sample_bytes(1 << 20, 100 + index);
    if index == 0 {
        noise[..5].copy_from_slice(&[0x16, 0x03, 0x01, 0x02, 0x00]);
    }
    // The proxy closes as soon as it sees garbage: a failed write is that close.
    let _ = stream.write_all(&noise).await;
    closed_within(&mut stream, Duration::from_secs(5)).await
}

/// A real implicit FTPS client gets `220` and `221`.
async fn tls_client_greeted(implicit: SocketAddr, pki: &TestPki) {
    let (mut client, greeting) = FtpClient::implicit(implicit, pki).await;
    assert_eq!(greeting.code, 220, "TLS greeting: {greeting:?}");
    client.expect("QUIT", 221).await;
}

// ---------------------------------------------------------------------------
// 5. TLS junk and silent peers
// ---------------------------------------------------------------------------

/// On the implicit FTPS port, 50 peers sending junk instead of a ClientHello are closed
/// at once (within 2 s), and 50 silent peers (connect, send nothing) within the TLS
/// handshake timeout (`ftpfront::tls::HANDSHAKE_TIMEOUT`, 15 s, not configurable) plus
/// 3 s; meanwhile they hold sessions, and the honest client and a real TLS client are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_junk_and_silent_peers_on_the_implicit_port_are_closed_in_bounded_time() {
    let _serial = SERIAL.lock().await;
    let case = "TLS junk and silent peers";
    const PEERS: usize = 50;
    let pki = TestPki::generate();
    let target = Target::start(Setup {
        tls: Some(&pki),
        ..Setup::default()
    })
    .await;
    let unloaded = honest_download(&target).await;
    let failed = [("side", "client"), ("result", "error")];
    let failed_before = target
        .metric("ftpfront_tls_handshakes_total", &failed)
        .await;
    let implicit = target.implicit();

    let silent_bound = ftpfront::tls::HANDSHAKE_TIMEOUT + Duration::from_secs(3);
    let silent: Vec<_> = (0..PEERS)
        .map(|i| tokio::spawn(silent_peer(many(5, i), implicit, silent_bound)))
        .collect();
    let held = target
        .wait_for("ftpfront_sessions_active", &[], PEERS as f64)
        .await;
    assert_eq!(held, PEERS as f64, "{case}: silent peers hold sessions");
    let hello = not_a_client_hello();
    let junk = futures::future::join_all(
        (0..PEERS).map(|_| garbage_on_fresh_connection(implicit, &hello, Duration::from_secs(2))),
    );
    let (junk, loaded) = tokio::join!(junk, honest_download(&target));
    assert_unharmed(case, unloaded, loaded);
    let open = junk.iter().filter(|closed| !**closed).count();
    assert_eq!(open, 0, "{case}: {open} junk peers not closed within 2 s");
    tls_client_greeted(implicit, &pki).await;

    let mut slowest = Duration::ZERO;
    for peer in silent {
        let took = peer.await.expect("silent peer task");
        let took = took
            .unwrap_or_else(|| panic!("{case}: a silent peer still open after {silent_bound:?}"));
        slowest = slowest.max(took);
    }
    println!("{case}: silent peers closed after {slowest:.1?} at most");
    let want = failed_before + 2.0 * PEERS as f64;
    let counted = target
        .wait_for("ftpfront_tls_handshakes_total", &failed, want)
        .await;
    assert_eq!(counted, want, "{case}: failed client handshakes");
    target.assert_released(case).await;
}

/// Connects and sends nothing; how long until the proxy closed, `None` past `bound`.
async fn silent_peer(source: IpAddr, target: SocketAddr, bound: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut stream = connect_from(source, target).await.expect("connect");
    closed_within(&mut stream, bound)
        .await
        .then(|| started.elapsed())
}

// ---------------------------------------------------------------------------
// 6. A TLS client that never reads
// ---------------------------------------------------------------------------

/// The regression test of "a TLS control session whose client stops reading never ended
/// (closing the TLS stream had no timeout)". Two TLS clients pipeline HELP forever and
/// never read: one after AUTH TLS without logging in, one on the implicit port logged in.
/// With `idle_timeout = 3s` (also the reply write timeout) each session must end within
/// 3 s + 2 s (QUIT to the backend) + 5 s (the bounded TLS close) + 10 s slack of the moment
/// the proxy blocks writing to it (its CPU goes quiet: a debug build takes seconds to
/// answer what it had read first), its TCP connection must close, and its per-IP slot
/// (`max_sessions_per_ip = 1`: a second connection gets 421 while the first lives) must
/// be free again (220). The honest client downloads while both sessions are stuck.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_that_never_reads_is_ended_and_frees_its_slot() {
    let _serial = SERIAL.lock().await;
    let case = "TLS client that never reads";
    let pki = TestPki::generate();
    let target = Target::start(Setup {
        limits: "idle_timeout = \"3s\"\nmax_sessions_per_ip = 1",
        tls: Some(&pki),
    })
    .await;
    let unloaded = honest_download(&target).await;
    // Write timeout (idle_timeout, 3 s) + QUIT to the backend (2 s) + the close bound (5 s),
    // and slack for a loaded CI machine (one run there took over 13 s; ~8 s is usual).
    let bound = Duration::from_secs(3 + 2 + 5 + 10);

    let explicit_source = many(6, 1);
    let implicit_source = many(6, 2);
    let explicit = tls_explicit(explicit_source, target.control(), &pki).await;
    let implicit = tls_implicit_logged_in(implicit_source, target.implicit(), &pki).await;
    let writers = [never_reading(explicit), never_reading(implicit)];
    // Each slot is probed as soon as its writer stalls: the session's write timeout runs
    // from the moment the proxy blocked on it, so on a loaded machine a probe after the
    // other session's stall and the quiet wait could come after the session has ended.
    for (source, writer) in [explicit_source, implicit_source].iter().zip(&writers) {
        writer.wait_until_stalled(*source).await;
        let first = slot_probe(*source, target.control()).await;
        assert_eq!(
            first,
            Some(false),
            "{case}: {source}'s slot is not held by its session"
        );
    }
    // The proxy may still be answering commands it had read; the write timeout starts
    // when it blocks, and then it has nothing to do.
    let blocked = quiet_since(target.pid).await;
    // The stuck sessions must not harm anybody else meanwhile.
    let loaded = honest_download(&target).await;
    assert_unharmed(case, unloaded, loaded);

    for (source, writer) in [explicit_source, implicit_source].into_iter().zip(writers) {
        let freed = wait_for_slot(source, target.control(), blocked, bound).await;
        let took = freed.unwrap_or_else(|| {
            panic!(
                "{case}: {source}'s session still holds its per-IP slot {bound:?} after \
                 the proxy blocked writing to it"
            )
        });
        println!("{case}: {source}'s slot free {took:.1?} after the proxy blocked");
        let closed = tokio::time::timeout(Duration::from_secs(5), writer.task).await;
        assert!(
            closed.is_ok(),
            "{case}: {source}'s TCP connection still open"
        );
    }
    target.assert_released(case).await;
}

type TlsConn = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

/// The TLS handshake as the client, on a connection from a chosen source address.
async fn tls_handshake(tcp: TcpStream, pki: &TestPki) -> TlsConn {
    let connector = tokio_rustls::TlsConnector::from(pki.client_config());
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let tls = tokio::time::timeout(Duration::from_secs(20), connector.connect(name, tcp))
        .await
        .expect("TLS handshake in time")
        .expect("TLS handshake");
    BufReader::new(tls)
}

/// Plain connect, AUTH TLS (234), handshake; not logged in.
async fn tls_explicit(source: IpAddr, control: SocketAddr, pki: &TestPki) -> TlsConn {
    let mut conn = BufReader::new(dial_small_window(source, control).await);
    assert_eq!(reply_code(&mut conn).await, 220, "greeting");
    conn.get_mut()
        .write_all(b"AUTH TLS\r\n")
        .await
        .expect("AUTH");
    assert_eq!(reply_code(&mut conn).await, 234, "AUTH TLS");
    assert!(conn.buffer().is_empty(), "bytes before the TLS handshake");
    tls_handshake(conn.into_inner(), pki).await
}

/// Implicit FTPS from `source`, greeted and logged in.
async fn tls_implicit_logged_in(source: IpAddr, implicit: SocketAddr, pki: &TestPki) -> TlsConn {
    let tcp = dial_small_window(source, implicit).await;
    let mut conn = tls_handshake(tcp, pki).await;
    assert_eq!(reply_code(&mut conn).await, 220, "implicit greeting");
    for (command, code) in [
        (format!("USER {USER}"), 331),
        (format!("PASS {PASSWORD}"), 230),
    ] {
        let line = format!("{command}\r\n");
        conn.get_mut()
            .write_all(line.as_bytes())
            .await
            .expect("send");
        assert_eq!(reply_code(&mut conn).await, code, "implicit login");
    }
    conn
}

/// A connection with a small fixed receive buffer: without it the kernel lets the buffer
/// grow to `tcp_rmem`'s maximum (32 MiB here), so a client that stops reading would
/// stall the proxy's writes only after megabytes of replies, late and at a speed that
/// depends on the build; with it the proxy's writes stall at once.
async fn dial_small_window(source: IpAddr, target: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(16 * 1024).expect("SO_RCVBUF");
    socket.bind(SocketAddr::new(source, 0)).expect("bind");
    socket.connect(target).await.expect("connect")
}

/// A client that pipelines HELP forever and never reads.
struct NeverReading {
    /// Ends when the proxy closes the connection (a write fails); holds it open until then.
    task: tokio::task::JoinHandle<()>,
    /// When a write last went through: the proxy stops taking commands once its own
    /// writes to us block, so this is when its write timeout started.
    last_write: Arc<std::sync::Mutex<Instant>>,
}

fn never_reading(conn: TlsConn) -> NeverReading {
    let mut stream = conn.into_inner();
    let last_write = Arc::new(std::sync::Mutex::new(Instant::now()));
    let progress = last_write.clone();
    let task = tokio::spawn(async move {
        let burst = b"HELP\r\n".repeat(4096);
        while stream.write_all(&burst).await.is_ok() {
            *progress.lock().expect("progress") = Instant::now();
        }
    });
    NeverReading { task, last_write }
}

impl NeverReading {
    fn stalled_for(&self) -> Duration {
        self.last_write.lock().expect("last write").elapsed()
    }

    /// Waits until the proxy has taken no command for 500 ms (its replies fill our
    /// receive buffer, so it blocks writing them and stops reading).
    async fn wait_until_stalled(&self, source: IpAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.stalled_for() < Duration::from_millis(500) {
            assert!(
                Instant::now() < deadline,
                "{source}: the proxy takes commands for 30 s without their replies read"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A control connection from `source`: `Some(true)` on 220 (the slot was free; it quits
/// again), `Some(false)` on 421, `None` on anything else.
async fn slot_probe(source: IpAddr, control: SocketAddr) -> Option<bool> {
    let mut conn = dial(source, control).await;
    let reply = line(&mut conn, Duration::from_secs(5)).await.ok()?;
    if reply.starts_with("220 ") {
        conn.get_mut().write_all(b"QUIT\r\n").await.ok()?;
        let _ = line(&mut conn, Duration::from_secs(5)).await;
        return Some(true);
    }
    reply.starts_with("421 ").then_some(false)
}

/// Probes `source`'s slot every 200 ms until it is free (the time since `since`), or
/// `None` once `bound` has passed since then.
async fn wait_for_slot(
    source: IpAddr,
    control: SocketAddr,
    since: Instant,
    bound: Duration,
) -> Option<Duration> {
    loop {
        if slot_probe(source, control).await == Some(true) {
            return Some(since.elapsed());
        }
        if since.elapsed() >= bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the process uses (almost) no CPU for 300 ms; returns when that quiet
/// window began.
async fn quiet_since(pid: u32) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (start, cpu) = (Instant::now(), cpu_seconds(pid));
        tokio::time::sleep(Duration::from_millis(300)).await;
        if cpu_seconds(pid) - cpu < 0.03 {
            return start;
        }
        assert!(Instant::now() < deadline, "ftpfront stays busy for 30 s");
    }
}

// ---------------------------------------------------------------------------
// 7. A connect/close storm
// ---------------------------------------------------------------------------

/// 10,000 connections opened and closed 64 at a time from 640 addresses, a third closed
/// before the greeting, a third after it with FIN, a third after it with RST: every one
/// becomes a session that ends (`sessions_total` grows by exactly 10,000), the binary
/// stays up, its descriptors return to the baseline and its memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rapid_connect_close() {
    let _serial = SERIAL.lock().await;
    let case = "10,000 connect/close";
    const TOTAL: usize = 10_000;
    const WORKERS: usize = 64;
    let mut target = Target::start(Setup::default()).await;
    let unloaded = honest_download(&target).await;
    let baseline = FdBaseline::take(&target).await;
    let ended_before = sessions_ended(&target).await;
    let (rss_before, cpu_before) = (rss_kib(target.pid), cpu_seconds(target.pid));
    let started = Instant::now();

    let control = target.control();
    let greeted = while_attacked(&target, case, unloaded, move |under_way| async move {
        under_way.notify_one();
        let workers = (0..WORKERS).map(|w| tokio::spawn(storm_worker(w, WORKERS, TOTAL, control)));
        let mut greeted = 0;
        for worker in futures::future::join_all(workers).await {
            greeted += worker.expect("storm worker");
        }
        greeted
    })
    .await;
    let took = started.elapsed();
    let cpu = cpu_seconds(target.pid) - cpu_before;
    let grown = rss_kib(target.pid).saturating_sub(rss_before);
    println!("{case}: {took:.1?}, {cpu:.2} s of CPU, RSS +{grown} KiB");
    assert_eq!(
        greeted,
        TOTAL - TOTAL.div_ceil(3),
        "{case}: greetings of those that waited"
    );
    target.assert_running(case);
    assert!(grown < 16 * 1024, "{case}: RSS grew by {grown} KiB");
    // One more session: the honest download during the storm.
    let want = ended_before + TOTAL as f64 + 1.0;
    let mut ended = ended_before;
    let deadline = Instant::now() + SETTLE;
    while ended != want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        ended = sessions_ended(&target).await;
    }
    assert_eq!(ended, want, "{case}: sessions ended (every result)");
    baseline.assert_restored(&target, case).await;
    target.assert_released(case).await;
}

/// `sessions_total` over every result.
async fn sessions_ended(target: &Target) -> f64 {
    let text = target.scrape().await;
    ["ok", "rejected", "error"]
        .iter()
        .map(|result| metric(&text, "ftpfront_sessions_total", &[("result", result)]))
        .sum()
}

/// Connections `worker`, `worker + workers`, ... of `total`, one after the other, each
/// from one of the worker's 10 addresses; returns how many got 220 (those that waited).
async fn storm_worker(worker: usize, workers: usize, total: usize, control: SocketAddr) -> usize {
    let mut greeted = 0;
    for i in (worker..total).step_by(workers) {
        let source = many(7, worker * 10 + i % 10);
        let mut conn = dial(source, control).await;
        if i % 3 == 0 {
            continue; // closed before the greeting
        }
        let greeting = line(&mut conn, Duration::from_secs(10)).await;
        assert!(
            greeting.as_ref().is_ok_and(|g| g.starts_with("220 ")),
            "storm connection {i} from {source}: {greeting:?}"
        );
        greeted += 1;
        if i % 3 == 2 {
            reset(conn.into_inner());
        }
    }
    greeted
}

// ---------------------------------------------------------------------------
// 8. FTP bounce
// ---------------------------------------------------------------------------

/// PORT and EPRT naming another host, a privileged port of the client's own address, the
/// IPv4-mapped IPv6 form of both, and `::1` are refused under both policies that forbid
/// bounce (`limits.client_active_mode`: `same_ip`, the default, 501; `deny`, 502); a
/// RETR after each gets no data connection (425), and no listener at a target ever sees
/// a connection. A PORT to the client's own address and a high port is the control:
/// followed under `same_ip`, refused under `deny`. The README lists no metric for
/// refused PORT/EPRT; `commands_total` counts every one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_and_eprt_bounces_are_refused_and_connect_nowhere() {
    let _serial = SERIAL.lock().await;
    for (policy, code) in [("same_ip", 501), ("deny", 502)] {
        let case = format!("FTP bounce, client_active_mode = {policy}");
        let limits = format!("client_active_mode = \"{policy}\"");
        let target = Target::start(Setup {
            limits: &limits,
            ..Setup::default()
        })
        .await;
        let unloaded = honest_download(&target).await;
        let counted_before = active_commands(&target).await;
        let control = target.control();
        let sent = while_attacked(&target, &case, unloaded, move |under_way| async move {
            under_way.notify_one();
            bounce_attempts(control, code).await
        })
        .await;
        let counted = active_commands(&target).await - counted_before;
        assert_eq!(counted, sent as f64, "{case}: PORT/EPRT in commands_total");
        target.assert_released(&case).await;
    }
}

/// `commands_total` of PORT and EPRT.
async fn active_commands(target: &Target) -> f64 {
    let text = target.scrape().await;
    ["port", "eprt"]
        .iter()
        .map(|verb| metric(&text, "ftpfront_commands_total", &[("command", verb)]))
        .sum()
}

/// Logs in from 127.8.0.1 and tries every bounce form, each answered `code`; then the
/// same-address control. Returns how many PORT/EPRT were sent.
async fn bounce_attempts(control: SocketAddr, code: u16) -> usize {
    let source = many(8, 0);
    let IpAddr::V4(own) = source else {
        unreachable!("IPv4 source")
    };
    let other = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let v6 = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("bind ::1");
    let low = privileged_listener(source);
    let (other_port, v6_port) = (port_of(&other), port_of(&v6));
    let low_port = low.as_ref().map_or(21, port_of);
    let mut attempts = vec![
        port_line(Ipv4Addr::LOCALHOST, other_port),
        format!("EPRT |1|127.0.0.1|{other_port}|"),
        format!("EPRT |2|::ffff:127.0.0.1|{other_port}|"),
        format!("EPRT |2|::1|{v6_port}|"),
        port_line(own, low_port),
        format!("EPRT |1|{own}|{low_port}|"),
        format!("EPRT |2|::ffff:{own}|{low_port}|"),
    ];
    let mut client = FtpClient::login(source, control).await;
    for attempt in &attempts {
        let reply = client.cmd(attempt).await;
        assert_eq!(reply.code, code, "{attempt}: {reply:?}");
        let retr = client.cmd("RETR hello.txt").await;
        assert_eq!(retr.code, 425, "RETR after the refused {attempt}: {retr:?}");
    }
    for (listener, what) in [(&other, "another host"), (&v6, "::1")] {
        assert_never_connected(listener, what).await;
    }
    if let Some(low) = &low {
        assert_never_connected(low, "a privileged port").await;
    }
    let own_listener = tokio::net::TcpListener::bind((own, 0)).await.expect("bind");
    let own_port = port_line(own, port_of(&own_listener));
    if code == 501 {
        let (bytes, reply) = client
            .retr_active(&own_port, "hello.txt", &own_listener)
            .await;
        assert_eq!(reply.code, 226, "the control PORT: {reply:?}");
        assert_eq!(
            bytes, b"hello through the proxy\n",
            "the control PORT's data"
        );
    } else {
        assert_eq!(client.cmd(&own_port).await.code, code, "PORT under deny");
        assert_never_connected(&own_listener, "the client's own port under deny").await;
    }
    attempts.push(own_port);
    assert_eq!(client.cmd("QUIT").await.code, 221);
    attempts.len()
}

fn port_line(ip: Ipv4Addr, port: u16) -> String {
    let [a, b, c, d] = ip.octets();
    format!("PORT {a},{b},{c},{d},{},{}", port >> 8, port & 0xff)
}

fn port_of(listener: &tokio::net::TcpListener) -> u16 {
    listener.local_addr().expect("local addr").port()
}

/// A listener on a port below 1024 of `ip` (tests run as root in CI); `None` where the
/// process may not bind one, the refusal is still checked then.
fn privileged_listener(ip: IpAddr) -> Option<tokio::net::TcpListener> {
    (900..1024).find_map(|port| {
        let listener = std::net::TcpListener::bind((ip, port)).ok()?;
        listener.set_nonblocking(true).ok()?;
        tokio::net::TcpListener::from_std(listener).ok()
    })
}

/// Nothing connected to `listener`: a bounce would have by the time RETR was answered,
/// and it gets another half second.
async fn assert_never_connected(listener: &tokio::net::TcpListener, what: &str) {
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    if let Ok(Ok((_, peer))) = accepted {
        panic!("bounce: ftpfront connected to {what} (from {peer})");
    }
}

// ---------------------------------------------------------------------------
// 9. Passive port theft
// ---------------------------------------------------------------------------

/// Client A gets a 227; a stranger on address B connects to that port first, five times:
/// each connection is dropped without a byte (counted as `foreign_ip`), and A's download
/// through the same port is complete (SHA-256) and as fast as unloaded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_connecting_first_to_a_passive_port_gets_nothing() {
    let _serial = SERIAL.lock().await;
    let case = "passive port theft";
    const THIEVES: usize = 5;
    let target = Target::start(Setup::default()).await;
    let unloaded = honest_download(&target).await;
    let foreign = [("reason", "foreign_ip")];
    let foreign_before = target
        .metric("ftpfront_data_connections_rejected_total", &foreign)
        .await;

    let started = Instant::now();
    let mut victim = FtpClient::login(loopback(HONEST), target.control()).await;
    let data = victim.pasv().await.expect("victim PASV");
    let mut thieves = Vec::new();
    for i in 0..THIEVES {
        thieves.push(
            connect_from(many(9, i), data)
                .await
                .expect("thief connects"),
        );
    }
    // The theft attempts are refused before the victim's own connection exists.
    let want = foreign_before + THIEVES as f64;
    let counted = target
        .wait_for("ftpfront_data_connections_rejected_total", &foreign, want)
        .await;
    assert_eq!(counted, want, "{case}: foreign_ip rejections");
    let (bytes, reply) = victim.retr(BIG, data).await;
    let loaded = started.elapsed();
    assert_eq!(reply.code, 226, "{case}: victim's download: {reply:?}");
    assert_eq!(
        sha256(&bytes),
        big_file().1,
        "{case}: victim's download corrupted"
    );
    assert_unharmed(case, unloaded, loaded);
    for (i, mut thief) in thieves.into_iter().enumerate() {
        let mut stolen = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(5), thief.read_to_end(&mut stolen));
        let ended = read.await.is_ok();
        assert!(
            stolen.is_empty(),
            "{case}: thief {i} received {} bytes",
            stolen.len()
        );
        assert!(ended, "{case}: thief {i}'s connection left open");
    }
    assert_eq!(victim.cmd("QUIT").await.code, 221);
    target.assert_released(case).await;
}
