//! Transparency: a client cannot tell ftpfront from the server behind it. Each scenario
//! runs twice, straight against a real server and through ftpfront, and the results must
//! be equal (reply codes, and texts of relayed replies).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::fake_backend::{Behaviour, FakeBackend};
use common::ftp_client::*;
use common::harness::*;
use common::vsftpd::{Vsftpd, VsftpdOptions};
use ftpfront::server::RunningProxy;

/// vsftpd's `idle_session_timeout` in the keepalive scenarios (its default is 300 s).
const BACKEND_IDLE: Duration = Duration::from_secs(4);

async fn vsftpd(extra: &[&str]) -> Option<Vsftpd> {
    let extra: Vec<String> = extra.iter().map(|line| line.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Vsftpd::start(VsftpdOptions {
            extra_config: extra,
            ..Default::default()
        })
    })
    .await
    .expect("vsftpd start task")
}

async fn proxy_for(server: &Vsftpd) -> RunningProxy {
    let mut config = proxy_config(server.addr, 4);
    config.backends[0].name = "vsftpd".into();
    start_proxy(config).await
}

/// A raw client logged in anonymously at `addr` (vsftpd or ftpfront).
async fn anonymous(addr: SocketAddr, source: u8) -> FtpClient {
    let mut client = FtpClient::connect(loopback(source), addr).await;
    // The test vsftpd asks no password of anonymous users (230 at once).
    if client.cmd("USER anonymous").await.code == 331 {
        assert_eq!(client.cmd("PASS guest@").await.code, 230);
    }
    client
}

/// Sends `command` every second for twice the backend's idle timeout, then PWD; returns
/// every reply code, or where the session ended.
async fn keep_busy_with(addr: SocketAddr, source: u8, command: &str) -> Vec<String> {
    let mut client = anonymous(addr, source).await;
    let mut seen = Vec::new();
    let rounds = 2 * BACKEND_IDLE.as_secs();
    for _ in 0..rounds {
        tokio::time::sleep(Duration::from_secs(1)).await;
        client.send(command).await;
        match client.reply_within(Duration::from_secs(5)).await {
            Awaited::Reply(reply) if reply.code != 421 => {
                seen.push(format!("{command} {}", reply.code))
            }
            other => {
                seen.push(format!("{command} ended: {other:?}"));
                return seen;
            }
        }
    }
    seen.push(format!("PWD {}", client.cmd("PWD").await.code));
    seen
}

/// NOOP every second keeps a vsftpd session with a short idle timeout alive; so must it
/// through ftpfront (it answered NOOP itself, vsftpd heard nothing and said 421). The same
/// for PASV, which ftpfront answers itself: the backend must hear the client is active.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_commands_keep_the_backend_session_alive() {
    let idle = format!("idle_session_timeout={}", BACKEND_IDLE.as_secs());
    let Some(server) = vsftpd(&[&idle]).await else {
        return;
    };
    let proxy = proxy_for(&server).await;
    for command in ["NOOP", "PASV"] {
        let (direct, proxied) = tokio::join!(
            keep_busy_with(server.addr, 10, command),
            keep_busy_with(proxy.control_addr, 11, command),
        );
        assert!(
            direct.last().is_some_and(|last| last == "PWD 257"),
            "{command} direct: {direct:?}"
        );
        assert_eq!(proxied, direct, "{command} through ftpfront differs");
    }
    proxy.shutdown().await;
}

/// The reply to USER when the backend cannot take the session, and whether the
/// connection closed after it.
async fn user_refused(proxy: &RunningProxy) -> RawReply {
    let mut client = FtpClient::connect(loopback(12), proxy.control_addr).await;
    let reply = client.cmd("USER alice").await;
    assert!(
        matches!(
            client.reply_within(Duration::from_secs(5)).await,
            Awaited::Closed(_)
        ),
        "the session goes on after {reply:?}"
    );
    reply
}

/// A backend at its connection limit says so (`421 Too many connected users`): the client
/// must read the backend's own reply, not "backend `main` is unreachable".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backends_own_refusal_is_relayed() {
    let fake = FakeBackend::start(Behaviour::Busy421).await;
    let proxy = start_proxy(proxy_config(fake.addr, 2)).await;
    let reply = user_refused(&proxy).await;
    assert_eq!(reply.code, 421);
    assert_eq!(reply.text, "421 Too many connected users\r\n");
    proxy.shutdown().await;
}

/// A backend that implements REIN (RFC 959: 220, then it waits for a new USER): its 220
/// is relayed, the client is logged out, and its next login is routed afresh, on a new
/// backend connection with nothing of the old one's state (the old one hears QUIT).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_takes_rein_has_its_reply_relayed_and_the_login_starts_over() {
    let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let mut config = proxy_config(fake.addr, 2);
    config.health.probe_interval = Duration::from_secs(3600);
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::login(loopback(14), proxy.control_addr).await;
    let reply = client.cmd("REIN").await;
    assert_eq!(reply.text, "220 Ready for a new user.\r\n", "{reply:?}");
    assert_eq!(
        client.cmd("PWD").await.code,
        530,
        "REIN logged the client out"
    );
    assert_eq!(
        client.cmd("HOST ftp.example.com").await.code,
        220,
        "HOST is allowed again"
    );
    assert_eq!(client.cmd("USER again").await.code, 331);
    assert_eq!(client.cmd("PASS again").await.code, 230);
    assert_eq!(client.cmd("PWD").await.code, 257);
    let seen = fake.observed();
    let mut logins = seen.logins();
    let rein_session = logins
        .next()
        .expect("the first login has a backend connection");
    assert_eq!(
        rein_session
            .iter()
            .skip_while(|c| *c != "REIN")
            .collect::<Vec<_>>(),
        ["REIN", "QUIT"],
        "the connection that took REIN is ended: {rein_session:?}"
    );
    let new_session = logins
        .next()
        .expect("the new login has a backend connection of its own");
    assert_eq!(new_session, &["USER again", "PASS again", "PWD"]);
    proxy.shutdown().await;
}

/// A backend slow to answer one question of the feature probe (`FEAT X`, 4 s, longer
/// than the backend's 3 s `connect_timeout` that bounds the whole probe): what it answered
/// before stays learnt (SYST; the whole probe was lost, 530), and its late answer is not
/// taken for the next question's (REIN: unknown, so ftpfront's own 220, not "502 Late
/// answer.").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_question_the_backend_answers_late_costs_only_the_answers_after_it() {
    let fake = FakeBackend::start(Behaviour::LateFeatArgument).await;
    let mut config = proxy_config(fake.addr, 2);
    config.backends[0].health = false;
    let proxy = start_proxy(config).await;
    let (mut client, _greeting) =
        FtpClient::connect_unchecked(loopback(15), proxy.control_addr).await;
    assert_eq!(client.cmd("SYST").await.text, "215 UNIX Type: L8\r\n");
    let rein = client.cmd("REIN").await;
    assert_eq!(rein.code, 220, "{rein:?}");
    proxy.shutdown().await;
}

/// ftpfront's own failures (here: nothing listens at the backend's address) say what
/// failed, naming no backend, host or address: the log has those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_failures_name_no_backend_or_address() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let mut config = proxy_config(closed, 2);
    config.backends[0].name = "secret-backend".into();
    let proxy = start_proxy(config).await;
    let reply = user_refused(&proxy).await;
    assert_eq!(reply.code, 421);
    for internal in ["secret-backend", "127.0.0.1", &closed.port().to_string()] {
        assert!(
            !reply.text.contains(internal),
            "{internal} leaked: {reply:?}"
        );
    }
    proxy.shutdown().await;
}

/// One wrong USER/PASS pair; returns the reply to PASS.
async fn guess(client: &mut FtpClient) -> RawReply {
    assert_eq!(client.cmd("USER alice").await.code, 331);
    client.cmd("PASS guess").await
}

/// Servers allow a few failed logins per connection (vsftpd `max_login_fails`, proftpd
/// `MaxLoginAttempts`, 3 by default); ftpfront must not reset that count by opening a new
/// backend connection per USER: `limits.max_login_attempts` (3) failures close the
/// session with 421, and the retries reuse one backend connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_per_connection_are_limited_on_one_backend_connection() {
    let fake = FakeBackend::start(Behaviour::RejectPasswords).await;
    let mut config = proxy_config(fake.addr, 2);
    config.health.probe_interval = Duration::from_secs(3600);
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::connect(loopback(13), proxy.control_addr).await;
    for _ in 0..3 {
        assert_eq!(guess(&mut client).await.code, 530);
    }
    let closing = client.reply().await;
    assert_eq!(closing.code, 421, "after 3 failed logins: {closing:?}");
    assert!(matches!(
        client.reply_within(Duration::from_secs(5)).await,
        Awaited::Closed(_)
    ));
    // One connection for the three logins, and maybe the health probe at start (it runs
    // in its own task, before or after).
    let connections = fake.observed().control_connections;
    assert!(
        connections <= 2,
        "{connections} backend connections for 3 logins"
    );
    proxy.shutdown().await;
}

/// Every reply code until the connection has been quiet for a second.
async fn codes_until_quiet(client: &mut FtpClient) -> Vec<u16> {
    let mut codes = Vec::new();
    while let Awaited::Reply(reply) = client.reply_within(Duration::from_secs(1)).await {
        codes.push(reply.code);
    }
    codes
}

/// Lines as text-mode scripts write them: a doubled CR before the LF (`"...\r\n"` through
/// a stream that turns `\n` into `\r\n`) and blank lines between commands. vsftpd takes
/// the command and ignores the blank line; through ftpfront the replies must be the same
/// and in step (they were not: 500 "stray CR" to every command, a 500 per blank line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubled_cr_and_blank_lines_are_taken_as_vsftpd_takes_them() {
    let Some(server) = vsftpd(&[]).await else {
        return;
    };
    let proxy = proxy_for(&server).await;
    let script = b"USER anonymous\r\r\n\r\nPWD\r\r\n\r\n\nNOOP\r\n";
    let mut seen = Vec::new();
    for (source, addr) in [(20, server.addr), (21, proxy.control_addr)] {
        let mut client = FtpClient::connect(loopback(source), addr).await;
        client.send_bytes(script).await;
        seen.push(codes_until_quiet(&mut client).await);
    }
    assert_eq!(seen[0], [230, 257, 200], "vsftpd itself");
    assert_eq!(seen[1], seen[0], "through ftpfront");
    proxy.shutdown().await;
}

/// ftpfront's own 500 to a line it cannot parse reads as one sentence ("500 Syntax error,
/// invalid command ..."): it said "Syntax error: Syntax error, invalid command ...".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_syntax_errors_say_syntax_error_once() {
    let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let proxy = start_proxy(proxy_config(fake.addr, 2)).await;
    let mut client = FtpClient::connect(loopback(22), proxy.control_addr).await;
    for line in [&b"1X\r\n"[..], b"NO\0OP\r\n", b"NO\rOP\r\n"] {
        client.send_bytes(line).await;
        let reply = client.reply().await;
        assert_eq!(reply.code, 500, "{line:?}: {reply:?}");
        assert_eq!(
            reply.text.matches("Syntax error").count(),
            1,
            "{line:?}: {reply:?}"
        );
    }
    proxy.shutdown().await;
}

/// STAT of a directory is its listing on the control connection, as long as the directory
/// is (5 MiB here, 6 MiB for 25,000 files with long names). Through ftpfront it must be
/// the same bytes as from vsftpd itself; it was cut at 4 MiB and the session ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stat_listing_of_any_length_is_relayed_whole() {
    let Some(server) = vsftpd(&[]).await else {
        return;
    };
    let files = server.fill_directory("huge", 5 << 20);
    let proxy = proxy_for(&server).await;
    let mut listings = Vec::new();
    for (source, addr) in [(23, server.addr), (24, proxy.control_addr)] {
        let mut client = anonymous(addr, source).await;
        let listing = client.cmd("STAT huge").await;
        assert_eq!(client.cmd("NOOP").await.code, 200, "the session goes on");
        listings.push((
            listing.code,
            listing.text.len(),
            sha256(listing.text.as_bytes()),
        ));
    }
    let (code, len, _) = &listings[0];
    assert_eq!(*code, 213, "vsftpd itself");
    assert!(
        *len > 5 << 20,
        "vsftpd's listing of {files} files: {len} bytes"
    );
    assert_eq!(
        listings[1], listings[0],
        "through ftpfront (code, length, SHA-256)"
    );
    proxy.shutdown().await;
}
