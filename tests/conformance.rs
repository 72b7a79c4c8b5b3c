//! Conformance (issue 11, "Transparent to clients"): every scenario runs twice, straight
//! against a real server (vsftpd, pure-ftpd, proftpd: `tests/common/servers.rs`) and through
//! ftpfront in front of that same server, and the two results must be equal: reply codes,
//! reply texts of the replies the backend produced (ftpfront relays them), listings, bytes.
//! The only allowed differences are ftpfront's own replies: the greeting (220), the
//! address in 227/229, and what the transparency rule of DESIGN.md lets it answer itself
//! (compared by code only here: PASV, EPSV, FEAT, QUIT, STAT/SYST/NOOP/REIN before login).
//!
//! Clients: the raw client of `tests/common/harness.rs` for exact replies, and lftp, curl,
//! Python's ftplib and wget for what real programs see. A missing program or server is a
//! skip (a failure under `FTP_TESTS_REQUIRE_EXTERNAL=1`). Where a scenario expects a
//! difference, it names it, and the README's "Differences from a direct connection" lists
//! it with its reason.
//!
//! A scenario over several backends collects every backend's difference before it fails,
//! so one run names all of them.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::TcpStream;

use common::external::{ftp_client_script, require_program};
use common::ftp_client::*;
use common::harness::*;
use common::servers::{start_async, FtpServer, ServerKind, ServerOptions};
use common::tcp_queues;
use ftpfront::server::RunningProxy;

/// A server and ftpfront in front of it.
struct Pair {
    server: FtpServer,
    proxy: RunningProxy,
    /// ftpfront's passive ports.
    proxy_ports: RangeInclusive<u16>,
}

impl Pair {
    async fn start(kind: ServerKind, opts: ServerOptions) -> Option<Pair> {
        let server = start_async(kind, opts).await?;
        let mut config = proxy_config(server.addr, 8);
        config.backends[0].name = kind.name().into();
        let proxy_ports = config.passive.ports.start..=config.passive.ports.end;
        let proxy = start_proxy(config).await;
        Some(Pair {
            server,
            proxy,
            proxy_ports,
        })
    }

    /// Runs `scenario` straight against the server and through ftpfront at the same time
    /// (different client addresses); returns (direct, proxied).
    async fn both<T>(&self, scenario: impl AsyncFn(SocketAddr, IpAddr) -> T) -> (T, T) {
        tokio::join!(
            scenario(self.server.addr, loopback(10)),
            scenario(self.proxy.control_addr, loopback(11)),
        )
    }

    /// The same, one after the other (for scenarios about the server's own limits).
    async fn one_then_other<T>(&self, scenario: impl AsyncFn(SocketAddr, IpAddr) -> T) -> (T, T) {
        let direct = scenario(self.server.addr, loopback(10)).await;
        let proxied = scenario(self.proxy.control_addr, loopback(11)).await;
        (direct, proxied)
    }
}

/// Differences found so far, one entry per backend and scenario; fails at the end.
#[derive(Default)]
struct Differences(Vec<String>);

impl Differences {
    /// Compares two transcripts entry by entry; records the entries that differ. Both are
    /// printed whole (the test harness shows them when the test fails).
    fn compare<T: AsRef<str>>(&mut self, what: &str, direct: &[T], proxied: &[T]) {
        let whole = |t: &[T]| {
            let entries: Vec<_> = t.iter().map(|e| e.as_ref().replace('\n', "\\n")).collect();
            entries.join(" | ")
        };
        eprintln!(
            "{what}\n  direct:  {}\n  proxied: {}",
            whole(direct),
            whole(proxied)
        );
        let blank = "<nothing>";
        let len = direct.len().max(proxied.len());
        for i in 0..len {
            let d = direct.get(i).map_or(blank, AsRef::as_ref);
            let p = proxied.get(i).map_or(blank, AsRef::as_ref);
            if d != p {
                self.0
                    .push(format!("{what} [{i}]:\n  direct:  {d:?}\n  proxied: {p:?}"));
            }
        }
    }

    fn assert_none(self) {
        assert!(
            self.0.is_empty(),
            "through ftpfront differs:\n{}",
            self.0.join("\n")
        );
    }
}

/// A reply as compared: its whole text (every line, CRLF as `\n`), or how the wait ended.
/// A reset and a FIN both count as `<closed>`: the client sees the session end either way.
fn render(awaited: Awaited) -> String {
    match awaited {
        Awaited::Reply(reply) => normalise(reply.text.trim_end()),
        // A reply that is not UTF-8 (a server echoing the Telnet bytes it did not
        // understand): the raw client read and dropped it.
        Awaited::Closed(why) if why.to_ascii_lowercase().contains("utf-8") => {
            "<reply not UTF-8>".into()
        }
        Awaited::Closed(_) => "<closed>".into(),
        Awaited::TimedOut => "<no reply>".into(),
    }
}

/// Only the code (for replies ftpfront answers itself).
fn render_code(awaited: Awaited) -> String {
    match awaited {
        Awaited::Reply(reply) => reply.code.to_string(),
        other => render(other),
    }
}

/// Replaces what a server measures afresh each time: pure-ftpd's 226 ends with a line
/// such as "226 0.000 seconds (measured here), 330.60 Mbytes per second", the transfer's
/// duration and speed, different in every run.
fn normalise(text: &str) -> String {
    text.lines()
        .map(|line| match line.find(" seconds (measured here)") {
            Some(_) => format!("{} <duration and speed>", &line[..3]),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `command => reply` (the whole reply).
async fn exchange(client: &mut FtpClient, command: &str) -> String {
    client.send(command).await;
    let reply = client.reply_within(Duration::from_secs(10)).await;
    format!("{command} => {}", render(reply))
}

/// `command => code`.
async fn exchange_code(client: &mut FtpClient, command: &str) -> String {
    client.send(command).await;
    let reply = client.reply_within(Duration::from_secs(10)).await;
    format!("{command} => {}", render_code(reply))
}

/// `command => code` for each of `commands`, in turn.
async fn exchange_codes(client: &mut FtpClient, commands: &[&str]) -> Vec<String> {
    let mut seen = Vec::new();
    for command in commands {
        seen.push(exchange_code(client, command).await);
    }
    seen
}

/// Every reply that arrives until none has for `quiet`.
async fn replies_until_quiet(client: &mut FtpClient, quiet: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        match client.reply_within(quiet).await {
            Awaited::TimedOut => return seen,
            closed @ Awaited::Closed(_) => {
                seen.push(render(closed));
                return seen;
            }
            reply => seen.push(render(reply)),
        }
    }
}

/// The backends of the scenarios over several: `FTP_TESTS_CONFORMANCE_BACKENDS` (names,
/// comma-separated, e.g. `proftpd`) to run some of them while fixing, else all three.
fn backends() -> Vec<ServerKind> {
    let chosen = std::env::var("FTP_TESTS_CONFORMANCE_BACKENDS").unwrap_or_default();
    ServerKind::ALL
        .into_iter()
        .filter(|kind| chosen.is_empty() || chosen.split(',').any(|name| name == kind.name()))
        .collect()
}

async fn start_pair(kind: ServerKind) -> Option<Pair> {
    Pair::start(kind, ServerOptions::default()).await
}

/// Runs `scenario` on every backend, straight and through ftpfront at once, and fails
/// with every difference found (a backend that cannot be started skips the test).
async fn compare_on_each_backend(scenario: impl AsyncFn(&Pair, SocketAddr, IpAddr) -> Vec<String>) {
    compare_on(backends(), scenario).await
}

/// [`compare_on_each_backend`] on `kinds` only.
async fn compare_on(
    kinds: Vec<ServerKind>,
    scenario: impl AsyncFn(&Pair, SocketAddr, IpAddr) -> Vec<String>,
) {
    let mut diffs = Differences::default();
    for kind in kinds {
        // A server that cannot start is a skip (a failure where programs are required);
        // the differences found on the others still count.
        let Some(pair) = start_pair(kind).await else {
            continue;
        };
        let (direct, proxied) = pair
            .both(async |addr, source| scenario(&pair, addr, source).await)
            .await;
        diffs.compare(kind.name(), &direct, &proxied);
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}

/// Times a scenario asks again after pure-ftpd's 425 to PASV (see [`passive`]).
const PASV_ATTEMPTS: usize = 5;

/// The address ftpfront or the server announced for PASV, asking again as a client would
/// after pure-ftpd's 425 "Unable to identify the local data socket: Address already in
/// use" (any other refusal fails the scenario): pure-ftpd binds a random port of its range
/// with SO_REUSEADDR, and `listen` then fails when another session's socket is on it, on
/// either path (CI saw it once with 10 sessions in 40 ports). The PASV is the scenario's
/// setup, not what it compares.
async fn passive(client: &mut FtpClient) -> SocketAddr {
    let mut refusals = Vec::new();
    for _ in 0..PASV_ATTEMPTS {
        match client.pasv().await {
            Ok(addr) => return addr,
            Err(reply) if reply.code == 425 && reply.text.contains("Address already in use") => {
                refusals.push(reply)
            }
            Err(reply) => panic!("PASV: {reply:?}"),
        }
    }
    panic!("PASV refused {PASV_ATTEMPTS} times: {refusals:?}")
}

// ---------------------------------------------------------------------------------------
// 1. HELP

/// HELP, HELP RETR and HELP of an unknown command after login: relayed, so equal texts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_is_the_backends() {
    compare_on_each_backend(async |pair, addr, source| {
        let mut client = pair.server.login(addr, source).await;
        let mut seen = Vec::new();
        for command in ["HELP", "HELP RETR", "HELP BOGUS"] {
            seen.push(exchange(&mut client, command).await);
        }
        seen
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 2. FEAT and UTF8

/// The features of a FEAT reply, one per line, trimmed (the 211 first and last lines out).
fn features(reply: &str) -> std::collections::BTreeSet<String> {
    reply
        .lines()
        .filter(|line| line.starts_with(' '))
        .map(|line| line.trim().to_ascii_uppercase())
        .collect()
}

/// FEAT and OPTS UTF8 ON after login, at `addr`.
async fn feat_and_utf8(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> (String, String) {
    let mut client = server.login(addr, source).await;
    let feat = client.cmd("FEAT").await.text;
    let opts = exchange_code(&mut client, "OPTS UTF8 ON").await;
    (feat, opts)
}

/// vsftpd without `utf8_filesystem` does not announce UTF8 (its file names are bytes):
/// ftpfront must not announce it in front of it either. Through ftpfront FEAT may name
/// ftpfront's own HOST besides the backend's features; nothing else may differ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feat_has_no_utf8_when_the_backend_has_none() {
    let Some(pair) = start_pair(ServerKind::Vsftpd).await else {
        return;
    };
    let ((direct_feat, direct_opts), (proxied_feat, proxied_opts)) = pair
        .both(async |addr, source| feat_and_utf8(&pair.server, addr, source).await)
        .await;
    let direct = features(&direct_feat);
    let mut proxied = features(&proxied_feat);
    assert!(
        !direct.contains("UTF8"),
        "this vsftpd announces UTF8: {direct_feat}"
    );
    proxied.remove("HOST");
    let mut diffs = Differences::default();
    let (direct, proxied): (Vec<_>, Vec<_>) =
        (direct.into_iter().collect(), proxied.into_iter().collect());
    diffs.compare("FEAT features", &direct, &proxied);
    diffs.compare("OPTS UTF8 ON", &[direct_opts], &[proxied_opts]);
    diffs.assert_none();
    pair.proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 3. Failed logins

/// USER anonymous / PASS with a banned address, eight times: every reply code, and where the
/// session ended.
async fn eight_failed_logins(addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = vec![format!("greeting {}", render_code(greeting))];
    for _ in 0..8 {
        for command in ["USER anonymous", "PASS bad@"] {
            let line = exchange_code(&mut client, command).await;
            let closed = line.ends_with("<closed>");
            seen.push(line);
            if closed {
                return seen;
            }
        }
    }
    seen
}

/// vsftpd (`max_login_fails` 3, its default) closes the connection after the third wrong
/// password; through ftpfront the client must see the same codes and the same end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_end_the_session_where_the_backend_does() {
    let banned = tempfile::NamedTempFile::new().expect("banned list");
    std::fs::write(banned.path(), "bad@\n").expect("write banned list");
    let opts = ServerOptions {
        extra: vec![
            "no_anon_password=NO".into(),
            "deny_email_enable=YES".into(),
            format!("banned_email_file={}", banned.path().display()),
        ],
        ..Default::default()
    };
    let Some(pair) = Pair::start(ServerKind::Vsftpd, opts).await else {
        return;
    };
    let (direct, proxied) = pair.both(eight_failed_logins).await;
    assert!(
        direct.last().is_some_and(|l| l.ends_with("<closed>")) && direct.len() == 8,
        "vsftpd closes after the third failure (the fourth USER finds it closed): {direct:?}"
    );
    let mut diffs = Differences::default();
    diffs.compare("vsftpd", &direct, &proxied);
    diffs.assert_none();
    pair.proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 4. A full backend

/// What a client sees from a full server: the first reply other than a 220 greeting (which
/// through ftpfront is ftpfront's own), through USER and PASS, then whether it closed.
async fn refused_client(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = Vec::new();
    match greeting {
        Awaited::Reply(reply) if reply.code == 220 => {}
        // Where the refusal comes differs by design (README, "Differences from a direct
        // connection"): a server refuses in its greeting, ftpfront greets before it has
        // chosen a backend and relays the refusal at USER. Compared: the refusal itself.
        other => seen.push(format!("refused => {}", render(other))),
    }
    if seen.is_empty() {
        let user = format!("USER {}", server.user);
        let pass = format!("PASS {}", server.password);
        for command in [user, pass] {
            let line = exchange(&mut client, &command).await;
            let done = !line.contains("=> 331");
            let line = match line.split_once(" => ") {
                Some((_, reply)) if done && reply.starts_with("421") => {
                    format!("refused => {reply}")
                }
                _ => line,
            };
            seen.push(line.replace(server.password, "****"));
            if done {
                break;
            }
        }
    }
    seen.push(render(client.reply_within(Duration::from_secs(2)).await));
    seen
}

/// A session logged in straight to a server limited to one client. The connection that
/// checked the server was up may still count for a moment (pure-ftpd's child ends after
/// the close): until it is gone the server greets with 421, so this tries again.
async fn hold_the_only_slot(server: &FtpServer) -> FtpClient {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (mut client, greeting) = FtpClient::connect_unchecked(loopback(20), server.addr).await;
        match greeting {
            Awaited::Reply(reply) if reply.code == 220 => {
                if client.cmd(&format!("USER {}", server.user)).await.code == 331 {
                    let pass = client.cmd(&format!("PASS {}", server.password)).await;
                    assert_eq!(pass.code, 230, "{} login: {pass:?}", server.kind.name());
                }
                return client;
            }
            other => assert!(
                tokio::time::Instant::now() < deadline,
                "{} never freed its only slot: {other:?}",
                server.kind.name()
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each server limited to one client, one connection held open straight to it: the second
/// client's refusal (code and the server's own text) must reach a client through ftpfront
/// as it is, not as ftpfront's "backend NAME is unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backend_refusal_is_relayed() {
    let mut diffs = Differences::default();
    for kind in backends() {
        let opts = ServerOptions {
            max_clients: Some(1),
            ..Default::default()
        };
        let Some(pair) = Pair::start(kind, opts).await else {
            return;
        };
        let holder = hold_the_only_slot(&pair.server).await;
        let (direct, proxied) = pair
            .one_then_other(async |addr, source| {
                let seen = refused_client(&pair.server, addr, source).await;
                // Let the server count the refused session's end before the next one.
                tokio::time::sleep(Duration::from_millis(300)).await;
                seen
            })
            .await;
        drop(holder);
        diffs.compare(kind.name(), &direct, &proxied);
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}

// ---------------------------------------------------------------------------------------
// 5. Pipelined commands during a download

const BIG: &str = "big.bin";

/// The replies to the commands pipelined after RETR (NOOP, PWD, NOOP), by code in
/// arrival order: the transcript without the transfer's own 150 and 226.
fn pipelined_replies(transcript: &[String]) -> Vec<String> {
    transcript
        .iter()
        .skip(2)
        .filter(|entry| !entry.starts_with("150") && !entry.starts_with("226"))
        .filter(|entry| !entry.ends_with(" bytes"))
        .map(|entry| entry.chars().take(3).collect())
        .collect()
}

/// A sparse file of `len` bytes in the server's root (zeros: its content does not matter).
fn sparse_file(server: &FtpServer, name: &str, len: u64) {
    let file = std::fs::File::create(server.root.join(name)).expect("create");
    file.set_len(len).expect("set_len");
}

/// RETR of 8 MiB, then NOOP, PWD, NOOP in one write right after the 150: every reply in
/// arrival order, and the bytes received.
async fn pipelined_during_retr(
    server: &FtpServer,
    addr: SocketAddr,
    source: IpAddr,
) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let mut client = server.login(addr, source).await;
    let mut seen = vec![exchange(&mut client, "TYPE I").await];
    let data_addr = passive(&mut client).await;
    let mut data = connect_from(source, data_addr).await.expect("data connect");
    seen.push(exchange(&mut client, &format!("RETR {BIG}")).await);
    client.send_bytes(b"NOOP\r\nPWD\r\nNOOP\r\n").await;
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.expect("read data");
    // Closed at once, as clients do: proftpd waits for it (TimeoutLinger) before its 226.
    drop(data);
    seen.push(format!("{} bytes", bytes.len()));
    for _ in 0..4 {
        seen.push(render(client.reply_within(Duration::from_secs(10)).await));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_commands_during_a_download_keep_their_order() {
    let mut diffs = Differences::default();
    for kind in backends() {
        let Some(pair) = start_pair(kind).await else {
            return;
        };
        sparse_file(&pair.server, BIG, 8 << 20);
        let (direct, proxied) = pair
            .both(async |addr, source| pipelined_during_retr(&pair.server, addr, source).await)
            .await;
        if kind == ServerKind::PureFtpd {
            // pure-ftpd reads commands during a transfer and answers them out of step
            // itself (`500 Unknown command`, then nothing): no direct result to match.
            pair.proxy.shutdown().await;
            continue;
        }
        // ftpfront answers NOOP at once during a transfer (item 1 of the issue: keepalives
        // must not wait for a long transfer), where vsftpd and proftpd answer after their
        // 226: compared is the order of the replies to the pipelined commands themselves.
        let (direct, proxied) = (pipelined_replies(&direct), pipelined_replies(&proxied));
        diffs.compare(kind.name(), &direct, &proxied);
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}

// ---------------------------------------------------------------------------------------
// 6. ABOR variants

/// Byte strings sent in order, the `true` ones as urgent data (see `FtpClient::send_parts`).
type Parts = &'static [(&'static [u8], bool)];

/// How each variant is sent.
const ABOR_VARIANTS: [(&str, Parts); 5] = [
    ("ABOR", &[(b"ABOR\r\n", false)]),
    ("abor", &[(b"abor\r\n", false)]),
    (
        "IAC IP IAC DM(urgent) ABOR",
        &[
            (b"\xff\xf4\xff", false),
            (b"\xf2", true),
            (b"ABOR\r\n", false),
        ],
    ),
    (
        "bare IP(urgent) ABOR",
        &[(b"\xf4", true), (b"ABOR\r\n", false)],
    ),
    (
        "IP IAC DM(urgent) abor",
        &[(b"\xf4\xff", false), (b"\xf2", true), (b"abor\r\n", false)],
    ),
];

/// A download the client does not read (it stalls once the socket buffers are full), the
/// ABOR variant, the replies within a second, then the client closes the data connection
/// (as clients do after ABOR), the replies after that, then NOOP and its reply. Waiting
/// for quiet windows makes the split between the phases deterministic: each server
/// answers within milliseconds or not until the data connection is gone.
///
/// The ABOR goes out once no data connection of the server (`data_ports`, both paths) has
/// moved a byte for 0.6 s: pure-ftpd reads its control connection only after a
/// chunk it writes is through, so its answer depends on whether anything still drains.
async fn abort_download(
    server: &FtpServer,
    data_ports: &[RangeInclusive<u16>],
    addr: SocketAddr,
    source: IpAddr,
    parts: &[(&[u8], bool)],
) -> Vec<String> {
    use tokio::io::AsyncReadExt;
    let quiet = Duration::from_millis(1000);
    let mut client = server.login(addr, source).await;
    assert_eq!(client.cmd("TYPE I").await.code, 200);
    let data_addr = passive(&mut client).await;
    let mut data = connect_from(source, data_addr).await.expect("data connect");
    let mut seen = vec![exchange(&mut client, &format!("RETR {BIG}")).await];
    let mut first = vec![0u8; 64 * 1024];
    data.read_exact(&mut first).await.expect("data flows");
    let own_port = data.local_addr().expect("data socket address").port();
    let (still, limit) = (Duration::from_millis(600), Duration::from_secs(20));
    tcp_queues::wait_until_still(data_ports, own_port, still, limit).await;
    client.send_parts(parts);
    seen.push("-- sent".into());
    seen.extend(replies_until_quiet(&mut client, quiet).await);
    drop(data);
    seen.push("-- data closed".into());
    seen.extend(replies_until_quiet(&mut client, quiet).await);
    seen.push(exchange(&mut client, "NOOP").await);
    seen
}

/// The variants at once on one server, each on its own session; by variant name.
async fn abort_variants(
    server: &FtpServer,
    data_ports: &[RangeInclusive<u16>],
    addr: SocketAddr,
    source: IpAddr,
) -> Vec<(String, Vec<String>)> {
    let runs = ABOR_VARIANTS.iter().map(|(name, parts)| async move {
        let transcript = abort_download(server, data_ports, addr, source, parts).await;
        (name.to_string(), transcript)
    });
    futures::future::join_all(runs).await
}

/// The variant whose direct transcript a variant through ftpfront must equal. A line that
/// starts with a bare IP byte is ABOR to ftpfront (issue 11 item 7), which passes it on in
/// the RFC 959 form; vsftpd and proftpd answer such a line directly with 500 (a deliberate
/// difference, in the README), pure-ftpd as to the RFC 959 form. (ftplib's form, the line as
/// urgent data, is another deliberate difference: `tests/ftplib.rs`.)
fn direct_counterpart(variant: &str) -> &str {
    match variant {
        "bare IP(urgent) ABOR" | "IP IAC DM(urgent) abor" => "IAC IP IAC DM(urgent) ABOR",
        other => other,
    }
}

/// Passive ports of the server in the ABOR test: both paths' 10 sessions at once, and
/// room, so that pure-ftpd's random picks of a port seldom meet (see `passive`).
const ABOR_DATA_PORTS: u16 = 100;

/// The server's passive ports (so that its data connections can be watched), and for
/// vsftpd async ABOR (without it, vsftpd does not read its control connection during a
/// transfer).
fn abor_test_options(kind: ServerKind, ports: &RangeInclusive<u16>) -> Vec<String> {
    let (min, max) = (ports.start(), ports.end());
    match kind {
        ServerKind::Vsftpd => vec![
            "async_abor_enable=YES".into(),
            format!("pasv_min_port={min}"),
            format!("pasv_max_port={max}"),
        ],
        ServerKind::PureFtpd => vec!["-p".into(), format!("{min}:{max}")],
        ServerKind::Proftpd => vec![format!("PassivePorts {min} {max}")],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_variants_during_a_download() {
    let mut diffs = Differences::default();
    for kind in backends() {
        let server_ports = free_port_block(ABOR_DATA_PORTS);
        let server_ports = server_ports..=server_ports + ABOR_DATA_PORTS - 1;
        let opts = ServerOptions {
            extra: abor_test_options(kind, &server_ports),
            ..Default::default()
        };
        let Some(pair) = Pair::start(kind, opts).await else {
            return;
        };
        sparse_file(&pair.server, BIG, 1 << 30);
        let data_ports = [server_ports, pair.proxy_ports.clone()];
        let (direct, proxied) = pair
            .both(async |addr, source| {
                abort_variants(&pair.server, &data_ports, addr, source).await
            })
            .await;
        let direct: std::collections::HashMap<_, _> = direct.into_iter().collect();
        for (name, proxied) in proxied {
            let expected = &direct[direct_counterpart(&name)];
            diffs.compare(&format!("{} {name}", kind.name()), expected, &proxied);
        }
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}

// ---------------------------------------------------------------------------------------
// 7. Stray arguments

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_arguments_get_the_backends_codes() {
    compare_on_each_backend(async |pair, addr, source| {
        let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
        let mut seen = vec!["before login".to_string()];
        for command in ["NOOP", "NOOP x", "PASV x", "FEAT x"] {
            seen.push(exchange_code(&mut client, command).await);
        }
        drop(client);
        let mut client = pair.server.login(addr, source).await;
        seen.push("after login".to_string());
        let commands = [
            "NOOP x", "PASV x", "FEAT x", "SYST x", "PWD x", "REST abc", "REST -5", "REST 10",
        ];
        for command in commands {
            seen.push(exchange_code(&mut client, command).await);
        }
        seen
    })
    .await;
}

/// USER and PASS again after a login: every server here refuses to change the user
/// without REIN (vsftpd: 530 "Can't change from guest user.", 230 "Already logged in.").
/// ftpfront opened a new backend connection for each USER and logged in afresh there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_and_pass_after_a_login_get_the_backends_replies() {
    compare_on_each_backend(async |pair, addr, source| {
        let server = &pair.server;
        let mut client = server.login(addr, source).await;
        let again = [
            format!("USER {}", server.user),
            format!("PASS {}", server.password),
            "USER somebody".to_string(),
            "PASS other".to_string(),
            "PWD".to_string(),
        ];
        let mut seen = Vec::new();
        for command in &again {
            seen.push(exchange(&mut client, command).await);
        }
        seen
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8. Less common commands

/// STAT and SYST before login (codes: ftpfront answers them itself there).
async fn before_login(addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    exchange_codes(&mut client, &["STAT", "SYST"]).await
}

/// After login every one of these is relayed: whole replies. The directory made and removed
/// is named after the run (two runs share the server), and that name is replaced by `DIR` in
/// what is compared.
async fn after_login(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let mut client = server.login(addr, source).await;
    let dir = format!("upload/conf-{}", source.to_string().replace('.', "-"));
    let commands = [
        "SYST".to_string(),
        "CLNT conformance".into(),
        "LANG".into(),
        "SITE HELP".into(),
        "XPWD".into(),
        format!("XMKD {dir}"),
        format!("XCWD {dir}"),
        "XPWD".into(),
        "XCUP".into(),
        "XCUP".into(),
        format!("XRMD {dir}"),
        "ALLO 1000".into(),
        "MODE S".into(),
        "STRU F".into(),
        "MODE Z".into(),
        "ACCT nobody".into(),
        "SMNT /".into(),
    ];
    let mut seen = Vec::new();
    for command in &commands {
        seen.push(exchange(&mut client, command).await.replace(&dir, "DIR"));
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn less_common_commands_get_the_backends_replies() {
    let mut diffs = Differences::default();
    for kind in backends() {
        let Some(pair) = start_pair(kind).await else {
            return;
        };
        let (direct, proxied) = pair.both(before_login).await;
        diffs.compare(&format!("{} before login", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, source| after_login(&pair.server, addr, source).await)
            .await;
        diffs.compare(&format!("{} after login", kind.name()), &direct, &proxied);
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}

/// HELP and ACCT before login, as the default backend answers them (vsftpd: 530 to both,
/// pure-ftpd: its SITE list and 202, proftpd: its command list and 503): whole replies
/// for HELP and ACCT, the code for HELP of a command.
async fn help_and_acct_before_login(addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = vec![exchange(&mut client, "HELP").await];
    seen.push(exchange_code(&mut client, "HELP RETR").await);
    seen.push(exchange(&mut client, "ACCT nobody").await);
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_and_acct_before_login_are_the_backends() {
    compare_on_each_backend(async |_pair, addr, source| {
        help_and_acct_before_login(addr, source).await
    })
    .await;
}

/// OPTS UTF8 before login, as the default backend answers it: vsftpd takes `ON` only
/// ("Always in UTF8 mode."), pure-ftpd refuses every form (504), proftpd takes `ON` and
/// `OFF`. ftpfront said 200 to every form: a client then took pure-ftpd for a UTF-8 server.
async fn utf8_before_login(addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = Vec::new();
    for command in ["OPTS UTF8 ON", "OPTS UTF8 OFF", "OPTS UTF8", "OPTS utf8 on"] {
        seen.push(exchange(&mut client, command).await);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opts_utf8_before_login_is_the_backends() {
    compare_on_each_backend(async |_pair, addr, source| utf8_before_login(addr, source).await)
        .await;
}

/// SYST, NOOP and `FEAT X` before login, after another session of the same client logged
/// in and asked FEAT (the feature cache then holds that session's features: what it
/// learnt of the backend before login must not be lost with them).
async fn before_login_after_a_feat(
    server: &FtpServer,
    addr: SocketAddr,
    source: IpAddr,
) -> Vec<String> {
    let mut logged_in = server.login(addr, source).await;
    let feat = logged_in.cmd("FEAT").await;
    assert!(
        feat.code == 211 || feat.code == 500,
        "FEAT after login: {feat:?}"
    );
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    exchange_codes(&mut client, &["SYST", "NOOP", "FEAT X"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_before_login_stay_the_backends_after_a_feat_after_login() {
    compare_on_each_backend(async |pair, addr, source| {
        before_login_after_a_feat(&pair.server, addr, source).await
    })
    .await;
}

/// EPSV with a network protocol number, after login: codes only (ftpfront answers EPSV
/// itself). RFC 2428 answers a protocol the server does not support with 522.
async fn epsv_protocols(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let mut client = server.login(addr, source).await;
    exchange_codes(&mut client, &["EPSV 2", "EPSV 3", "EPSV 99", "EPSV 1"]).await
}

/// Compared with vsftpd and proftpd, which follow RFC 2428 here; pure-ftpd takes any
/// argument (`EPSV 3` gets 229), which the README lists under the differences.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn epsv_with_an_unsupported_protocol_gets_522() {
    let strict = [ServerKind::Vsftpd, ServerKind::Proftpd];
    let kinds = backends().into_iter().filter(|kind| strict.contains(kind));
    compare_on(kinds.collect(), async |pair, addr, source| {
        epsv_protocols(&pair.server, addr, source).await
    })
    .await;
}

/// REIN before and after login, and what the session is after it: codes only (STAT's
/// text names the client's address, which differs between the two paths).
async fn rein_session(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = vec![exchange_code(&mut client, "REIN").await];
    let mut client = server.login(addr, source).await;
    seen.extend(exchange_codes(&mut client, &["REIN", "PWD", "STAT", "REIN"]).await);
    seen
}

/// No server here implements REIN (RFC 959 leaves it optional): through ftpfront it is
/// refused as it is directly, and the client stays logged in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rein_gets_the_backends_reply() {
    compare_on_each_backend(async |pair, addr, source| {
        rein_session(&pair.server, addr, source).await
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 8b. File commands: APPE, STOU, SIZE, MDTM, MLST, MLSD, STAT of a path, RNFR/RNTO, DELE

/// An upload over a fresh PASV: the start reply, then the final reply (the start reply
/// alone when the command was refused).
async fn raw_upload(client: &mut FtpClient, command: &str, bytes: &[u8]) -> Vec<String> {
    use tokio::io::AsyncWriteExt;
    let (start, data) = start_transfer(client, command).await;
    let Some(mut data) = data else {
        return vec![start];
    };
    data.write_all(bytes).await.expect("write data");
    data.shutdown().await.expect("close data");
    drop(data);
    let end = render(client.reply_within(Duration::from_secs(10)).await);
    vec![start, end]
}

/// A name listing over a fresh PASV, sorted, STOU's made-up name replaced: the start
/// reply, the names, the final reply.
async fn listing(client: &mut FtpClient, command: &str, stou_name: Option<&str>) -> Vec<String> {
    let (start, data) = start_transfer(client, command).await;
    let Some(data) = data else {
        return vec![start];
    };
    let (bytes, end) = finish_download(client, data).await;
    let mut names: Vec<String> = String::from_utf8_lossy(&bytes)
        .lines()
        .map(|name| run_independent(name, stou_name))
        .collect();
    names.sort();
    vec![start, names.join(","), end]
}

/// Facts and names that differ between two runs of one scenario on one server whatever the
/// path: the inode (MLST's `unique`), and the name STOU made up.
fn run_independent(text: &str, stou_name: Option<&str>) -> String {
    let mut text = text.to_string();
    while let Some(at) = text.to_ascii_lowercase().find("unique=") {
        let end = text[at..].find(';').map_or(text.len(), |e| at + e + 1);
        text.replace_range(at..end, "");
    }
    match stou_name {
        Some(name) if !name.is_empty() => text.replace(name, "STOU-NAME"),
        _ => text,
    }
}

/// Gives every file in `dir` one fixed modification time, so that MDTM, MLST and listings
/// of the two runs agree.
fn fix_times(dir: &Path) {
    let when = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    for entry in std::fs::read_dir(dir).expect("read run directory") {
        let path = entry.expect("entry").path();
        let file = std::fs::File::options().write(true).open(&path);
        file.and_then(|f| f.set_modified(when))
            .unwrap_or_else(|e| panic!("set time of {path:?}: {e}"));
    }
}

/// The names in `dir` other than `known`.
fn other_names(dir: &Path, known: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("run directory")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| !known.contains(&name.as_str()))
        .collect()
}

/// What the file commands of a session make of a fresh directory of its own, whole
/// replies (the directory's name replaced by `DIR`).
async fn file_commands(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let mut client = server.login(addr, source).await;
    let dir = format!("upload/files-{}", source.to_string().replace('.', "-"));
    let mut seen = vec![exchange(&mut client, &format!("MKD {dir}")).await];
    seen.push(exchange(&mut client, &format!("CWD {dir}")).await);
    seen.push(exchange(&mut client, "TYPE I").await);
    seen.extend(raw_upload(&mut client, "STOR a.txt", b"hello\n").await);
    seen.extend(raw_upload(&mut client, "APPE a.txt", b"world\n").await);
    seen.extend(raw_upload(&mut client, "APPE new.txt", b"appended\n").await);
    let stou = raw_upload(&mut client, "STOU", b"unique\n").await;
    let on_disk = server.root.join(&dir);
    let made = other_names(&on_disk, &["a.txt", "new.txt"]);
    seen.push(format!("STOU made {} file(s)", made.len()));
    let stou_name = made.first().map(String::as_str);
    seen.extend(stou.iter().map(|s| run_independent(s, stou_name)));
    fix_times(&on_disk);
    for command in [
        "SIZE a.txt",
        "MDTM a.txt",
        "MLST a.txt",
        "STAT a.txt",
        "SIZE none",
    ] {
        let reply = exchange(&mut client, command).await;
        seen.push(run_independent(&reply, stou_name));
    }
    seen.extend(raw_download(&mut client, "RETR a.txt").await);
    seen.extend(listing(&mut client, "NLST", stou_name).await);
    let mlsd = raw_download(&mut client, "MLSD").await;
    // The listing's `.` entry has the directory's time: the start and end replies only.
    seen.push(mlsd.first().cloned().unwrap_or_default());
    seen.push(mlsd.last().cloned().unwrap_or_default());
    for command in [
        "RNFR a.txt",
        "RNTO b.txt",
        "RNFR none",
        "RNTO c.txt",
        "DELE b.txt",
        "DELE b.txt",
        "DELE new.txt",
        "CDUP",
    ] {
        seen.push(exchange(&mut client, command).await);
    }
    for name in other_names(&on_disk, &[]) {
        let _ = std::fs::remove_file(on_disk.join(name));
    }
    seen.push(exchange(&mut client, &format!("RMD {dir}")).await);
    seen.iter().map(|s| s.replace(&dir, "DIR")).collect()
}

/// Files made, appended to, renamed, listed and deleted: the same replies, names and bytes
/// through ftpfront as directly (vsftpd's refused APPE for its anonymous user included).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_commands_get_the_backends_replies() {
    compare_on_each_backend(async |pair, addr, source| {
        file_commands(&pair.server, addr, source).await
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// 9. Mirroring 1,000 files with lftp

const TREE_DIRS: usize = 20;
const FILES_PER_DIR: usize = 50;

/// `dir/dNN/fNNN.txt`, small files of different lengths.
fn make_tree(dir: &Path) {
    for d in 0..TREE_DIRS {
        let sub = dir.join(format!("d{d:02}"));
        std::fs::create_dir_all(&sub).expect("mkdir");
        for f in 0..FILES_PER_DIR {
            let n = d * FILES_PER_DIR + f;
            std::fs::write(
                sub.join(format!("f{f:03}.txt")),
                sample_bytes(n % 700 + 1, n as u32),
            )
            .expect("write");
        }
    }
}

/// Every file under `dir` (relative path, contents), sorted.
fn tree_contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        for entry in std::fs::read_dir(&next).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("under dir").to_path_buf();
                files.push((rel, read_file(&path)));
            }
        }
    }
    files.sort();
    files
}

/// Runs lftp's `commands` after connecting to `addr` as the server's user.
async fn lftp(
    lftp: &Path,
    server: &FtpServer,
    addr: SocketAddr,
    commands: &str,
) -> std::process::Output {
    let script = format!(
        "set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 20; \
         set ftp:passive-mode on; open -u {},{} ftp://{addr}; {commands}; bye",
        server.user, server.password
    );
    let run = tokio::process::Command::new(lftp)
        .args(["-c", &script])
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("lftp finished in time")
        .expect("lftp runs")
}

/// `mirror --parallel=4` of the tree down, then `mirror -R --parallel=4` of it up into
/// `upload/NAME`; every file of both copies compared with the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_mirrors_a_thousand_files_both_ways() {
    let Some(lftp_bin) = require_program("lftp") else {
        return;
    };
    let Some(pair) = start_pair(ServerKind::Vsftpd).await else {
        return;
    };
    make_tree(&pair.server.root.join("tree"));
    let original = tree_contents(&pair.server.root.join("tree"));
    assert_eq!(original.len(), TREE_DIRS * FILES_PER_DIR);
    let local = tempfile::tempdir().expect("tempdir");
    for (name, addr) in [
        ("direct", pair.server.addr),
        ("proxied", pair.proxy.control_addr),
    ] {
        let down = local.path().join(name);
        let started = std::time::Instant::now();
        let get = format!("mirror --parallel=4 --no-perms tree {}", down.display());
        assert_ok(
            &lftp(&lftp_bin, &pair.server, addr, &get).await,
            &format!("{name} mirror"),
        );
        assert!(
            tree_contents(&down) == original,
            "{name}: the mirrored tree differs"
        );
        let put = format!(
            "mirror -R --parallel=4 --no-perms {} upload/{name}",
            down.display()
        );
        assert_ok(
            &lftp(&lftp_bin, &pair.server, addr, &put).await,
            &format!("{name} mirror -R"),
        );
        let uploaded = tree_contents(&pair.server.root.join("upload").join(name));
        assert!(uploaded == original, "{name}: the uploaded tree differs");
        eprintln!("{name}: mirror both ways in {:?}", started.elapsed());
    }
    pair.proxy.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 10. What already passes: login, LIST, RETR, STOR, REST, TYPE A

/// `data.bin` (64 KiB + 5), `text.txt` (LF line ends) and a `list` directory of three files
/// that no scenario changes (its listing, times included, is the same in both runs).
fn put_fixtures(server: &FtpServer) -> Vec<u8> {
    let data = sample_bytes(64 * 1024 + 5, 7);
    std::fs::write(server.root.join("data.bin"), &data).expect("write");
    std::fs::write(server.root.join("text.txt"), "one\ntwo\nthree\n").expect("write");
    std::fs::create_dir_all(server.root.join("list")).expect("mkdir");
    for name in ["a.txt", "b.bin", "c.dat"] {
        std::fs::write(server.root.join("list").join(name), name).expect("write");
    }
    data
}

/// Whether an `exchange` transcript is a transfer's start (150 or 125).
fn is_start(exchanged: &str) -> bool {
    exchanged.contains("=> 150") || exchanged.contains("=> 125")
}

/// PASV, the data connection, then `command`: the start reply, and the data connection
/// when the transfer started. When the command was refused, `None`: vsftpd then keeps the
/// data connection open, ftpfront closes it, and nothing comes on it either way.
async fn start_transfer(client: &mut FtpClient, command: &str) -> (String, Option<TcpStream>) {
    let data_addr = passive(client).await;
    let data = connect_from(client.source, data_addr)
        .await
        .expect("data connect");
    let start = exchange(client, command).await;
    let started = is_start(&start).then_some(data);
    (start, started)
}

/// A download's bytes to the end, then its final reply.
async fn finish_download(client: &mut FtpClient, mut data: TcpStream) -> (Vec<u8>, String) {
    use tokio::io::AsyncReadExt;
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.expect("read data");
    // Closed at once, as clients do: proftpd waits for it (TimeoutLinger) before its 226.
    drop(data);
    let end = render(client.reply_within(Duration::from_secs(10)).await);
    (bytes, end)
}

/// A RETR or LIST over a fresh PASV: the start reply, the bytes, the final reply; the
/// start reply alone when the command was refused.
async fn raw_download(client: &mut FtpClient, command: &str) -> Vec<String> {
    let (start, data) = start_transfer(client, command).await;
    let Some(data) = data else {
        return vec![start];
    };
    let (bytes, end) = finish_download(client, data).await;
    vec![
        start,
        format!("{} bytes {}", bytes.len(), sha256(&bytes)),
        end,
    ]
}

/// The raw client's session: whole replies (350 and 227 by code: ftpfront's own).
async fn raw_session(server: &FtpServer, addr: SocketAddr, source: IpAddr) -> Vec<String> {
    let (mut client, _greeting) = FtpClient::connect_unchecked(source, addr).await;
    let mut seen = vec![exchange(&mut client, &format!("USER {}", server.user)).await];
    if seen[0].contains("=> 331") {
        seen.push(exchange(&mut client, &format!("PASS {}", server.password)).await);
    }
    seen.push(exchange(&mut client, "TYPE I").await);
    seen.extend(raw_download(&mut client, "LIST list").await);
    seen.extend(raw_download(&mut client, "RETR data.bin").await);
    seen.push(exchange_code(&mut client, "REST 1000").await);
    seen.extend(raw_download(&mut client, "RETR data.bin").await);
    let name = format!("upload/raw-{}", source.to_string().replace('.', "-"));
    let data_addr = passive(&mut client).await;
    let stored = client
        .stor(&name, data_addr, &sample_bytes(200_000, 3))
        .await;
    seen.push(format!(
        "STOR => {}",
        normalise(stored.text.trim_end()).replace(&name, "NAME")
    ));
    let on_disk = read_file(&server.root.join(&name));
    seen.push(format!(
        "stored {}",
        sha256(&on_disk) == sha256(&sample_bytes(200_000, 3))
    ));
    seen.push(exchange(&mut client, "TYPE A").await);
    seen.extend(raw_download(&mut client, "RETR text.txt").await);
    // QUIT is ftpfront's own (DESIGN.md's transparency rule): its code only.
    seen.push(exchange_code(&mut client, "QUIT").await);
    seen
}

/// curl: listing, download, upload (checked on disk), resumed download, ASCII download.
async fn curl_session(
    curl: &Path,
    server: &FtpServer,
    addr: SocketAddr,
    name: &str,
) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = |file: &str| dir.path().join(file).display().to_string();
    let mut seen = Vec::new();
    let listing = run_curl(curl, &[&server.url(addr, "list/")]).await;
    assert_ok(&listing, "curl LIST");
    seen.push(String::from_utf8_lossy(&listing.stdout).into_owned());
    assert_ok(
        &run_curl(
            curl,
            &["-o", &out("data.bin"), &server.url(addr, "data.bin")],
        )
        .await,
        "curl RETR",
    );
    seen.push(sha256(&read_file(Path::new(&out("data.bin")))));
    let upload = dir.path().join("up.bin");
    std::fs::write(&upload, sample_bytes(300_000, 9)).expect("write");
    let target = server.url(addr, &format!("upload/curl-{name}"));
    assert_ok(
        &run_curl(curl, &["-T", &upload.display().to_string(), &target]).await,
        "curl STOR",
    );
    let stored = read_file(&server.root.join(format!("upload/curl-{name}")));
    seen.push(format!("stored {}", stored == sample_bytes(300_000, 9)));
    std::fs::write(
        out("part.bin"),
        &read_file(Path::new(&out("data.bin")))[..1000],
    )
    .expect("write");
    assert_ok(
        &run_curl(
            curl,
            &[
                "-C",
                "-",
                "-o",
                &out("part.bin"),
                &server.url(addr, "data.bin"),
            ],
        )
        .await,
        "curl resume",
    );
    seen.push(sha256(&read_file(Path::new(&out("part.bin")))));
    let ascii = run_curl(curl, &[&server.url(addr, "text.txt;type=a")]).await;
    assert_ok(&ascii, "curl TYPE A");
    seen.push(format!("{:?}", String::from_utf8_lossy(&ascii.stdout)));
    seen
}

/// Python's ftplib (tests/clients/ftp_client.py conformance): what it printed.
async fn ftplib_session(
    python: &Path,
    server: &FtpServer,
    addr: SocketAddr,
    name: &str,
) -> Vec<String> {
    let run = tokio::process::Command::new(python)
        .args([ftp_client_script(), "conformance"])
        .args([
            &addr.ip().to_string(),
            &addr.port().to_string(),
            server.user,
            server.password,
            name,
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("ftplib finished")
        .expect("python runs");
    assert_ok(&output, "ftplib session");
    normalise(&String::from_utf8_lossy(&output.stdout))
        .lines()
        .map(str::to_string)
        .collect()
}

/// lftp: listing, download, upload, resumed download (`get -c`).
async fn lftp_session(
    lftp_bin: &Path,
    server: &FtpServer,
    addr: SocketAddr,
    name: &str,
) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = |file: &str| dir.path().join(file);
    std::fs::write(local("up.bin"), sample_bytes(100_000, 11)).expect("write");
    std::fs::write(local("part.bin"), &sample_bytes(64 * 1024 + 5, 7)[..1000]).expect("write");
    let commands = format!(
        "cls -l list; get data.bin -o {}; put {} -o upload/lftp-{name}; get -c data.bin -o {}",
        local("data.bin").display(),
        local("up.bin").display(),
        local("part.bin").display(),
    );
    let output = lftp(lftp_bin, server, addr, &commands).await;
    assert_ok(&output, "lftp session");
    let stored = read_file(&server.root.join(format!("upload/lftp-{name}")));
    vec![
        String::from_utf8_lossy(&output.stdout).into_owned(),
        sha256(&read_file(&local("data.bin"))),
        format!("stored {}", stored == sample_bytes(100_000, 11)),
        sha256(&read_file(&local("part.bin"))),
    ]
}

/// wget: download, and a resumed download (`-c`).
async fn wget_session(wget: &Path, server: &FtpServer, addr: SocketAddr) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let whole = dir.path().join("data.bin");
    let part = dir.path().join("part.bin");
    std::fs::write(&part, &sample_bytes(64 * 1024 + 5, 7)[..1000]).expect("write");
    let mut seen = Vec::new();
    for (file, extra) in [(&whole, None), (&part, Some("-c"))] {
        let mut command = tokio::process::Command::new(wget);
        command
            .args(["-q", "--tries=1", "--timeout=20", "-O"])
            .arg(file);
        command
            .args(extra)
            .arg(server.url(addr, "data.bin"))
            .kill_on_drop(true);
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("wget finished")
            .expect("wget runs");
        assert_ok(&output, "wget");
        seen.push(sha256(&read_file(file)));
    }
    seen
}

/// rclone (Go's FTP client: EPSV, MLSD where the server has it, several connections):
/// a listing, an upload, a download, a ranged read (REST), a rename and a purge, every
/// connection from `source`.
async fn rclone_session(
    rclone: &Path,
    server: &FtpServer,
    addr: SocketAddr,
    source: IpAddr,
) -> Vec<String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let up = dir.path().join("up.bin");
    let down = dir.path().join("data.bin");
    std::fs::write(&up, sample_bytes(300_000, 13)).expect("write");
    let pass = rclone_output(rclone, &["obscure", server.password]).await;
    let remote = format!(
        ":ftp,host={},port={},user={},pass={}:",
        addr.ip(),
        addr.port(),
        server.user,
        pass.trim()
    );
    let at = |path: &str| format!("{remote}{path}");
    let folder = format!("upload/rclone-{}", run_name(source));
    let bind = source.to_string();
    let session = |args: Vec<String>| {
        let mut all = vec!["--bind".to_string(), bind.clone()];
        all.extend(["--transfers", "1", "--checkers", "1", "--retries", "1"].map(String::from));
        all.extend(["--low-level-retries", "1"].map(String::from));
        all.extend(args);
        all
    };
    let mut seen = Vec::new();
    let listing = session(vec![
        "lsf".into(),
        "--format".into(),
        "sp".into(),
        at("list"),
    ]);
    seen.push(rclone_run(rclone, &listing).await);
    let copy_up = vec![
        "copyto".into(),
        up.display().to_string(),
        at(&format!("{folder}/up.bin")),
    ];
    seen.push(rclone_run(rclone, &session(copy_up)).await);
    let stored = read_file(&server.root.join(format!("{folder}/up.bin")));
    seen.push(format!("stored {}", stored == sample_bytes(300_000, 13)));
    let copy_down = vec!["copyto".into(), at("data.bin"), down.display().to_string()];
    seen.push(rclone_run(rclone, &session(copy_down)).await);
    seen.push(sha256(&read_file(&down)));
    let range = ["cat", "--offset", "1000", "--count", "5000"].map(String::from);
    let mut ranged = range.to_vec();
    ranged.push(at("data.bin"));
    seen.push(sha256(
        rclone_run(rclone, &session(ranged)).await.as_bytes(),
    ));
    let rename = vec![
        "moveto".into(),
        at(&format!("{folder}/up.bin")),
        at(&format!("{folder}/moved.bin")),
    ];
    seen.push(rclone_run(rclone, &session(rename)).await);
    let moved = vec!["lsf".into(), at(&folder)];
    seen.push(rclone_run(rclone, &session(moved)).await);
    seen.push(rclone_run(rclone, &session(vec!["purge".into(), at(&folder)])).await);
    seen.push(format!("purged {}", !server.root.join(&folder).exists()));
    seen
}

/// One rclone run: its standard output, or where it failed, its exit status and last
/// message (without its time stamp): servers refuse some steps (vsftpd: no renames by
/// anonymous users), the same way on both paths.
async fn rclone_run(rclone: &Path, args: &[String]) -> String {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let output = rclone_command(rclone, &args).await;
    if output.status.success() {
        return String::from_utf8_lossy(&output.stdout).into_owned();
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    let message = last.splitn(3, ' ').nth(2).unwrap_or(last);
    format!("{}: {message}", output.status)
}

/// rclone's output for a step that must succeed (`obscure`).
async fn rclone_output(rclone: &Path, args: &[&str]) -> String {
    let output = rclone_command(rclone, args).await;
    assert_ok(&output, &format!("rclone {args:?}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

async fn rclone_command(rclone: &Path, args: &[&str]) -> std::process::Output {
    let mut command = tokio::process::Command::new(rclone);
    command
        .args([
            "--config",
            "/dev/null",
            "--contimeout",
            "10s",
            "--timeout",
            "20s",
        ])
        .args(args)
        .kill_on_drop(true);
    tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("rclone finished")
        .expect("rclone runs")
}

/// The source address's last byte, to name a run's uploads.
fn run_name(source: IpAddr) -> String {
    source.to_string().replace('.', "-")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_sessions_are_the_same_through_ftpfront() {
    let programs = ["lftp", "curl", "python3", "wget", "rclone"].map(require_program);
    let [Some(lftp_bin), Some(curl), Some(python), Some(wget), Some(rclone)] = programs else {
        return;
    };
    let mut diffs = Differences::default();
    for kind in backends() {
        let Some(pair) = start_pair(kind).await else {
            return;
        };
        let data = put_fixtures(&pair.server);
        let server = &pair.server;
        let (direct, proxied) = pair
            .both(async |addr, source| raw_session(server, addr, source).await)
            .await;
        assert!(
            direct
                .iter()
                .any(|l| l.starts_with(&format!("{} bytes", data.len()))),
            "{direct:?}"
        );
        diffs.compare(&format!("{} raw", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, source| curl_session(&curl, server, addr, &run_name(source)).await)
            .await;
        diffs.compare(&format!("{} curl", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, source| {
                ftplib_session(&python, server, addr, &run_name(source)).await
            })
            .await;
        diffs.compare(&format!("{} ftplib", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, source| {
                lftp_session(&lftp_bin, server, addr, &run_name(source)).await
            })
            .await;
        diffs.compare(&format!("{} lftp", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, _| wget_session(&wget, server, addr).await)
            .await;
        diffs.compare(&format!("{} wget", kind.name()), &direct, &proxied);
        let (direct, proxied) = pair
            .both(async |addr, source| rclone_session(&rclone, server, addr, source).await)
            .await;
        diffs.compare(&format!("{} rclone", kind.name()), &direct, &proxied);
        pair.proxy.shutdown().await;
    }
    diffs.assert_none();
}
