//! The fault suite: ftpfront in front of a hostile fake backend (`common::fake_backend`)
//! that dies, resets, stalls, floods or never speaks, and clients that die or abort
//! mid-transfer. Each case checks what the client sees, what the backend saw where that
//! matters (an aborted upload must look aborted there, not complete), and that the proxy
//! holds no session, transfer or passive port afterwards. One case compares ABOR
//! mid-upload through ftpfront and straight to a real vsftpd (skipped without vsftpd).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fake_backend::{Behaviour, DataEnd, FakeBackend, Observed};
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::vsftpd::{Vsftpd, VsftpdOptions};
use ftpfront::config::Config;
use ftpfront::server::RunningProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for the proxy's own steps after a timeout (QUIT to the backend, a busy machine).
const SLACK: Duration = Duration::from_secs(3);
/// How long the proxy may take to release everything after a case.
const SETTLE: Duration = Duration::from_secs(5);
const GAUGES: [&str; 4] = [
    "ftpfront_sessions_active",
    "ftpfront_transfers_active",
    "ftpfront_passive_ports_in_use",
    "ftpfront_passive_reservations_active",
];

/// A proxy in front of `fake` with short timeouts, so that every case ends quickly.
fn config_for(fake: &FakeBackend) -> Config {
    let mut config = proxy_config(fake.addr, 2);
    config.backends[0].connect_timeout = CONNECT_TIMEOUT;
    config.backends[0].reply_timeout = REPLY_TIMEOUT;
    config.limits.data_accept_timeout = Duration::from_secs(2);
    config
}

async fn start(behaviour: Behaviour) -> (FakeBackend, RunningProxy) {
    let fake = FakeBackend::start(behaviour).await;
    let proxy = start_proxy(config_for(&fake)).await;
    (fake, proxy)
}

/// After every case: sessions, transfers and passive ports are all released (polled for
/// up to [`SETTLE`]); then the proxy stops.
async fn assert_released_and_stop(proxy: RunningProxy) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = scrape(&proxy).await;
        let held: Vec<String> = GAUGES
            .iter()
            .map(|gauge| (gauge, metric_value(&text, gauge)))
            .filter(|(_, value)| *value != 0.0)
            .map(|(gauge, value)| format!("{gauge} = {value}"))
            .collect();
        if held.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still held {SETTLE:?} after the case: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::timeout(Duration::from_secs(10), proxy.shutdown())
        .await
        .expect("proxy shutdown within 10 s");
}

/// PASV, the data connection, then `command`, whose 150 is checked.
async fn open_transfer(client: &mut FtpClient, command: &str) -> TcpStream {
    let addr = client.pasv().await.expect("PASV");
    let data = connect_from(client.source, addr)
        .await
        .expect("data connect");
    client.send(command).await;
    let start = client.reply().await;
    assert!(
        start.code == 150 || start.code == 125,
        "{command}: {start:?}"
    );
    data
}

/// Reads a download until the proxy ends it (FIN or reset); the byte count.
async fn read_until_end(data: &mut TcpStream) -> u64 {
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    let reading = async {
        while let Ok(n @ 1..) = data.read(&mut buffer).await {
            total += n as u64;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .expect("the proxy ends the broken download's data connection within 10 s");
    total
}

/// Writes up to `len` upload bytes; stops early where the proxy ended the connection.
async fn write_upload(data: &mut TcpStream, len: usize) {
    let bytes = sample_bytes(len, 5);
    let _ = tokio::time::timeout(Duration::from_secs(5), data.write_all(&bytes)).await;
}

/// Closes a data connection like a killed process: RST, no FIN.
fn kill(data: TcpStream) {
    let _ = socket2::SockRef::from(&data).set_linger(Some(Duration::ZERO));
}

/// The reply that ends a broken transfer: 426 or 451; never 226, never silence.
async fn assert_transfer_failed(client: &mut FtpClient, what: &str) {
    match client.reply_within(REPLY_TIMEOUT + SLACK).await {
        Awaited::Reply(reply) if reply.code == 426 || reply.code == 451 => {}
        other => panic!("{what}: expected 426 or 451 for the transfer, got {other:?}"),
    }
}

/// After a failed transfer the session goes on (PWD answered) or ends with 421; no hang.
async fn assert_goes_on_or_421(mut client: FtpClient, what: &str) {
    // A 421 closing the session follows the transfer's reply at once.
    let early = client.reply_within(Duration::from_millis(500)).await;
    let next = match early {
        Awaited::TimedOut => {
            client.send("PWD").await;
            client.reply_within(REPLY_TIMEOUT + SLACK).await
        }
        early => early,
    };
    match next {
        Awaited::Reply(reply) if reply.code == 257 => {}
        Awaited::Reply(reply) if reply.code == 421 => assert_closed(&mut client, what).await,
        other => panic!("{what}: expected the session to go on (257) or end with 421: {other:?}"),
    }
}

async fn assert_closed(client: &mut FtpClient, what: &str) {
    let after = client.reply_within(SLACK).await;
    assert!(
        matches!(after, Awaited::Closed(_)),
        "{what}: the connection stays open after 421: {after:?}"
    );
}

/// A reply within `limit` that closes the session: 421, then the connection ends.
async fn assert_421_within(client: &mut FtpClient, limit: Duration, what: &str) {
    let started = Instant::now();
    let reply = client.reply_within(limit).await;
    let took = started.elapsed();
    match reply {
        Awaited::Reply(reply) if reply.code == 421 => assert_closed(client, what).await,
        other => panic!("{what}: expected 421 within {limit:?}, got {other:?} after {took:.1?}"),
    }
}

/// The first data connection the backend saw, once it has ended (or after 5 s).
async fn first_data_end(fake: &FakeBackend, also: impl Fn(&Observed) -> bool) -> Observed {
    fake.wait_until(SETTLE, |seen| {
        seen.data.first().is_some_and(|d| d.end.is_some()) && also(seen)
    })
    .await
}

/// Starts an upload, sends `len` bytes and waits until the backend has some of them.
async fn upload_under_way(fake: &FakeBackend, client: &mut FtpClient, len: usize) -> TcpStream {
    let mut data = open_transfer(client, "STOR up.bin").await;
    write_upload(&mut data, len).await;
    let seen = fake
        .wait_until(SETTLE, |seen| {
            seen.data.first().is_some_and(|d| d.received > 0)
        })
        .await;
    assert!(
        seen.data.first().is_some_and(|d| d.received > 0),
        "the upload never reached the backend: {seen:#?}"
    );
    data
}

/// What m and n require of the backend: the upload's data connection reset, and ABOR.
fn assert_backend_saw_abort(seen: &Observed, what: &str) {
    let end = seen.data.first().and_then(|d| d.end.clone());
    assert!(
        end == Some(DataEnd::Reset) && seen.abor,
        "{what}: the backend must see an aborted upload (RST on its data connection, and \
         ABOR), not a complete one; it saw end {end:?}, ABOR {}: {seen:#?}",
        seen.abor
    );
}

/// (a)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_download_fails_the_transfer() {
    let (_fake, proxy) = start(Behaviour::DieMidDownload { after: 256 * 1024 }).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let mut data = open_transfer(&mut client, "RETR big.bin").await;
    read_until_end(&mut data).await;
    let what = "backend killed mid-download";
    assert_transfer_failed(&mut client, what).await;
    assert_goes_on_or_421(client, what).await;
    assert_released_and_stop(proxy).await;
}

/// QUIT is answered at once: waiting for the backend's own 221 cost every session a
/// backend round trip, and a backend slow to close held the client for up to 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quit_is_answered_without_waiting_for_the_backend() {
    let (fake, proxy) = start(Behaviour::SlowQuit).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let started = Instant::now();
    let reply = client.cmd("QUIT").await;
    let waited = started.elapsed();
    assert_eq!(reply.code, 221, "{reply:?}");
    assert!(
        waited < Duration::from_millis(1000),
        "221 came after {waited:?}: ftpfront waited for the backend's (1.5 s)"
    );
    // The session's own connection: the health probe's QUIT must not stand in for it.
    let heard_quit = |seen: &Observed| {
        seen.logins()
            .any(|commands| commands.iter().any(|c| c == "QUIT"))
    };
    let seen = fake.wait_until(SETTLE, heard_quit).await;
    assert!(
        heard_quit(&seen),
        "the backend never heard QUIT: {:?}",
        seen.commands
    );
    assert_released_and_stop(proxy).await;
}

/// (b)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_killed_mid_upload_fails_the_transfer() {
    let (_fake, proxy) = start(Behaviour::DieMidUpload { after: 128 * 1024 }).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let mut data = open_transfer(&mut client, "STOR up.bin").await;
    write_upload(&mut data, 4 * 1024 * 1024).await;
    let what = "backend killed mid-upload";
    assert_transfer_failed(&mut client, what).await;
    assert_goes_on_or_421(client, what).await;
    assert_released_and_stop(proxy).await;
}

/// (c) The backend resets the data connection and then claims 226.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_resetting_the_download_fails_the_transfer() {
    let (_fake, proxy) = start(Behaviour::ResetDataMidDownload { after: 256 * 1024 }).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let mut data = open_transfer(&mut client, "RETR big.bin").await;
    read_until_end(&mut data).await;
    let what = "backend reset the download's data connection";
    assert_transfer_failed(&mut client, what).await;
    assert_goes_on_or_421(client, what).await;
    assert_released_and_stop(proxy).await;
}

/// (d), (e): USER gets 421 within connect_timeout + 1 s from a backend that does not
/// complete its greeting, however long reply_timeout is.
async fn assert_greeting_bounded(behaviour: Behaviour, what: &str) {
    let fake = FakeBackend::start(behaviour).await;
    let mut config = config_for(&fake);
    config.backends[0].reply_timeout = Duration::from_secs(8);
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let limit = CONNECT_TIMEOUT + Duration::from_secs(1);
    let started = Instant::now();
    client.send("USER alice").await;
    // Waits past the limit, so that a failure says when (and whether) 421 came.
    let reply = client.reply_within(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert!(
        matches!(&reply, Awaited::Reply(r) if r.code == 421) && took <= limit,
        "{what}: expected 421 within {limit:?} (connect_timeout + 1 s), got {reply:?} after \
         {took:.1?}"
    );
    assert_released_and_stop(proxy).await;
}

/// (d)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_never_greets_gets_421_within_connect_timeout() {
    assert_greeting_bounded(Behaviour::NeverGreet, "backend never greets").await;
}

/// (e)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_greeting_120_forever_gets_421_within_connect_timeout() {
    assert_greeting_bounded(Behaviour::Greet120Forever, "backend greets 120 forever").await;
}

/// (f)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_greeting_421_gives_the_client_421() {
    let (_fake, proxy) = start(Behaviour::Busy421).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    client.send("USER alice").await;
    assert_421_within(&mut client, REPLY_TIMEOUT + SLACK, "backend greets 421").await;
    assert_released_and_stop(proxy).await;
}

/// (g)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_227_from_the_backend_gives_425_and_the_session_goes_on() {
    let (_fake, proxy) = start(Behaviour::MalformedPasv).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let addr = client.pasv().await.expect("PASV");
    let data = connect_from(client.source, addr)
        .await
        .expect("data connect");
    client.send("RETR big.bin").await;
    match client.reply_within(REPLY_TIMEOUT + SLACK).await {
        Awaited::Reply(reply) if reply.code == 425 => {}
        other => panic!("RETR after a malformed 227: expected 425, got {other:?}"),
    }
    drop(data);
    let pwd = client.cmd("PWD").await;
    assert_eq!(pwd.code, 257, "PWD after the 425: {pwd:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);
    assert_released_and_stop(proxy).await;
}

/// (h)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_megabyte_reply_line_ends_the_session_with_421() {
    let (_fake, proxy) = start(Behaviour::HugeReplyLine).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    client.send("PWD").await;
    let limit = REPLY_TIMEOUT + SLACK;
    assert_421_within(&mut client, limit, "10 MB reply line").await;
    assert_released_and_stop(proxy).await;
}

/// (i) A reply that never ends is relayed as it comes (a long listing must not wait for
/// its end, nor be held whole) up to 32 MiB; then it is ended with its own code, so that
/// the 421 that follows reads as a reply, and the session closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_multiline_reply_ends_the_session_with_421() {
    let (_fake, proxy) = start(Behaviour::EndlessMultiline).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    client.send("STAT").await;
    let limit = Duration::from_secs(60);
    let Some((total, tail)) = client.read_until_closed(limit, 200).await else {
        panic!("endless multi-line reply: still relayed after {limit:?}");
    };
    let tail = String::from_utf8_lossy(&tail);
    let limit = ftpfront::conn::MAX_RELAYED_REPLY_BYTES;
    let near = (limit - (1 << 20))..=limit;
    assert!(
        near.contains(&total),
        "{total} bytes relayed, the limit is {limit}"
    );
    assert!(
        tail.ends_with("\r\n211 Reply cut short.\r\n421 Backend connection failed; closing control connection.\r\n"),
        "endless multi-line reply ended with {tail:?}"
    );
    assert_released_and_stop(proxy).await;
}

/// (j) A reply at 1 byte/s is cut off by reply_timeout (421), or delivered: bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_byte_per_second_replies_are_bounded() {
    let (_fake, proxy) = start(Behaviour::SlowReplies).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    assert_eq!(client.cmd("USER alice").await.code, 331);
    assert_eq!(client.cmd("PASS secret").await.code, 230);
    client.send("PWD").await;
    let started = Instant::now();
    let limit = REPLY_TIMEOUT + SLACK;
    match client.reply_within(limit).await {
        Awaited::Reply(reply) if reply.code == 257 => {}
        Awaited::Reply(reply) if reply.code == 421 => {
            assert_closed(&mut client, "1 byte/s replies").await
        }
        other => panic!(
            "1 byte/s replies: expected 257 or 421 within {limit:?}, got {other:?} after {:.1?}",
            started.elapsed()
        ),
    }
    assert_released_and_stop(proxy).await;
}

/// (k)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_download_ends_the_backend_data_connection() {
    let (fake, proxy) = start(Behaviour::Normal {
        retr_bytes: 1 << 30,
    })
    .await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let mut data = open_transfer(&mut client, "RETR big.bin").await;
    let mut first = vec![0u8; 64 * 1024];
    tokio::time::timeout(Duration::from_secs(10), data.read_exact(&mut first))
        .await
        .expect("the first 64 KiB within 10 s")
        .expect("read the first 64 KiB");
    client.kill();
    kill(data);
    let seen = first_data_end(&fake, |_| true).await;
    assert!(
        seen.data.first().is_some_and(|d| d.end.is_some()),
        "the backend's data connection is still open {SETTLE:?} after the client died: {seen:#?}"
    );
    assert_released_and_stop(proxy).await;
}

/// (l)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_mid_upload_is_an_aborted_upload_at_the_backend() {
    let (fake, proxy) = start(Behaviour::Normal { retr_bytes: 0 }).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let data = upload_under_way(&fake, &mut client, 256 * 1024).await;
    // Control first, as a dying process closes its descriptors in order; the data
    // connection only once the backend saw the proxy's reaction (or after 5 s), so that
    // the case checks that reaction, not a race with the pump seeing the data RST.
    client.kill();
    first_data_end(&fake, |_| true).await;
    kill(data);
    let seen = first_data_end(&fake, |_| true).await;
    let conn = seen.data.first().expect("a data connection");
    assert!(
        conn.end == Some(DataEnd::Reset) || conn.abor_while_open,
        "client killed mid-upload: the backend must see an aborted transfer (RST on its data \
         connection, or ABOR), not a complete one: {seen:#?}"
    );
    assert_released_and_stop(proxy).await;
}

/// (m)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_mid_upload_is_an_aborted_upload_at_the_backend() {
    let (fake, proxy) = start(Behaviour::Normal { retr_bytes: 0 }).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let _data = upload_under_way(&fake, &mut client, 256 * 1024).await;
    client.send("ABOR").await;
    let limit = Duration::from_secs(10);
    // The backend's own replies are relayed: 426 for the transfer, then 225 or 226 for
    // ABOR, whichever the server says (RFC 959 allows both).
    for codes in [&[426][..], &[225, 226]] {
        match client.reply_within(limit).await {
            Awaited::Reply(reply) if codes.contains(&reply.code) => {}
            other => panic!("ABOR mid-upload: expected {codes:?}, got {other:?}"),
        }
    }
    let pwd = client.cmd("PWD").await;
    assert_eq!(pwd.code, 257, "PWD after ABOR: {pwd:?}");
    let seen = first_data_end(&fake, |seen| seen.abor).await;
    assert_backend_saw_abort(&seen, "ABOR mid-upload");
    assert_eq!(client.cmd("QUIT").await.code, 221);
    drop(client);
    assert_released_and_stop(proxy).await;
}

/// (n)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_upload_is_an_aborted_upload_at_the_backend() {
    let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let mut config = config_for(&fake);
    let idle = Duration::from_secs(2);
    config.limits.idle_timeout = idle;
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let _data = upload_under_way(&fake, &mut client, 64 * 1024).await;
    // The client sends nothing more: the stall check (every second) gives up after `idle`.
    let limit = idle + Duration::from_secs(1) + SLACK;
    match client.reply_within(limit).await {
        Awaited::Reply(reply) if reply.code == 426 => {}
        other => panic!("stalled upload: expected 426 within {limit:?}, got {other:?}"),
    }
    let seen = first_data_end(&fake, |seen| seen.abor).await;
    assert_backend_saw_abort(&seen, "stalled upload");
    assert_released_and_stop(proxy).await;
}

/// ABOR (RFC 959 style, with Telnet IP and Synch) in the middle of an upload to vsftpd: to
/// vsftpd's own transfer log that is `FAIL UPLOAD` straight from a client, and must be
/// the same through ftpfront.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_mid_upload_is_a_failed_upload_in_vsftpds_log_through_ftpfront_too() {
    let options = VsftpdOptions {
        writable: true,
        // Without it vsftpd reads no command during a transfer: ABOR would wait for the
        // data connection to end (data_connection_timeout), straight or through ftpfront.
        extra_config: vec!["async_abor_enable=YES".into()],
        ..Default::default()
    };
    let started = tokio::task::spawn_blocking(move || Vsftpd::start(options));
    let Some(server) = started.await.expect("vsftpd start task") else {
        return;
    };
    let proxy = start_proxy(proxy_config(server.addr, 2)).await;
    let direct = abor_upload_to_vsftpd(&server, server.addr, "direct.bin").await;
    let proxied = abor_upload_to_vsftpd(&server, proxy.control_addr, "proxied.bin").await;
    assert!(
        direct.contains("FAIL UPLOAD"),
        "control case: straight to vsftpd, ABOR mid-upload is logged as {direct:?}"
    );
    assert!(
        proxied.contains("FAIL UPLOAD"),
        "through ftpfront, ABOR mid-upload must be a failed upload to vsftpd as it is \
         straight to it ({direct:?}), but vsftpd logged {proxied:?}"
    );
    assert_released_and_stop(proxy).await;
}

/// Anonymous login at `addr`, STOR `upload/name`, 1 MiB, urgent ABOR (426, 226); returns
/// vsftpd's transfer-log line for the file.
async fn abor_upload_to_vsftpd(server: &Vsftpd, addr: SocketAddr, name: &str) -> String {
    let mut client = FtpClient::connect(loopback(1), addr).await;
    let mut reply = client.cmd("USER anonymous").await;
    if reply.code == 331 {
        reply = client.cmd("PASS guest@").await;
    }
    assert_eq!(reply.code, 230, "anonymous login at {addr}: {reply:?}");
    assert_eq!(client.cmd("TYPE I").await.code, 200);
    let mut data = open_transfer(&mut client, &format!("STOR upload/{name}")).await;
    write_upload(&mut data, 1024 * 1024).await;
    let stored = server.upload_dir.join(name);
    let deadline = Instant::now() + SETTLE;
    while std::fs::metadata(&stored).map_or(true, |m| m.len() == 0) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client.send_urgent_abor();
    let mut replies = Vec::new();
    while let Awaited::Reply(reply) = client.reply_within(Duration::from_secs(10)).await {
        let code = reply.code;
        replies.push(reply);
        if code != 426 && code != 451 {
            break;
        }
    }
    let codes: Vec<u16> = replies.iter().map(|r| r.code).collect();
    assert!(
        codes.len() == 2 && (codes[1] == 225 || codes[1] == 226),
        "{name}: ABOR answered {replies:?}\n{}",
        server.log()
    );
    drop(data);
    let _ = client.cmd("QUIT").await;
    let deadline = Instant::now() + SETTLE;
    loop {
        let log = server.log();
        let line = log
            .lines()
            .find(|line| line.contains("UPLOAD") && line.contains(name));
        if let Some(line) = line {
            return line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no transfer log line for {name} in vsftpd's log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
