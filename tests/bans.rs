//! Bans after failed-login bursts (`limits.max_failed_logins` in
//! `limits.failed_login_window`, for `limits.ban_duration`): driven by raw clients and by
//! curl against the in-process libunftp backend, each from its own loopback address.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use ftpfront::server::RunningProxy;
use tokio::io::{AsyncBufReadExt, BufReader};

const MAX_FAILED: u32 = 3;
const BAN: Duration = Duration::from_secs(3);

async fn start(backend: &TestBackend) -> RunningProxy {
    let mut config = proxy_config(backend.server.addr, 2);
    config.limits.max_failed_logins = MAX_FAILED;
    config.limits.failed_login_window = Duration::from_secs(60);
    config.limits.ban_duration = BAN;
    start_proxy(config).await
}

/// One failed USER/PASS on `client`; returns the reply to PASS.
async fn fail_login(client: &mut FtpClient) -> RawReply {
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    client.cmd("PASS wrong").await
}

/// The first line a fresh connection from `source` reads (greeting or refusal).
async fn first_line(source: IpAddr, proxy: SocketAddr) -> String {
    let stream = connect_from(source, proxy).await.expect("connect");
    let mut line = String::new();
    let mut reader = BufReader::new(stream);
    tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line))
        .await
        .expect("a first line within 5 s")
        .expect("read");
    line
}

async fn wait_for_metric(proxy: &RunningProxy, series: &str, value: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = metric_value(&scrape(proxy).await, series);
        if now == value || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Fails `MAX_FAILED` logins from `source`: the last one gets its 530, then 421, closed.
async fn get_banned(source: IpAddr, proxy: SocketAddr) {
    let mut first = FtpClient::connect(source, proxy).await;
    for _ in 1..MAX_FAILED {
        assert_eq!(fail_login(&mut first).await.code, 530);
    }
    let mut second = FtpClient::connect(source, proxy).await;
    assert_eq!(fail_login(&mut second).await.code, 530);
    let refusal = second.reply().await;
    assert_eq!(refusal.code, 421, "the banning failure closes: {refusal:?}");
    assert!(refusal.text.contains("failed logins"), "{refusal:?}");
    assert!(matches!(
        second.reply_within(Duration::from_secs(5)).await,
        Awaited::Closed(_)
    ));
    // A connection opened before the ban is refused at its next USER.
    first.send(&format!("USER {USER}")).await;
    assert_eq!(first.reply().await.code, 421);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_login_burst_bans_that_address_only_until_the_ban_ends() {
    let backend = TestBackend::start().await;
    let proxy = start(&backend).await;
    let (attacker, honest) = (loopback(61), loopback(62));
    get_banned(attacker, proxy.control_addr).await;

    let refused = first_line(attacker, proxy.control_addr).await;
    assert!(
        refused.starts_with("421 "),
        "banned address greeted: {refused:?}"
    );
    let mut other = FtpClient::login(honest, proxy.control_addr).await;
    assert_eq!(other.cmd("PWD").await.code, 257);
    let text = scrape(&proxy).await;
    assert_eq!(metric_value(&text, "ftpfront_bans_total"), 1.0);
    assert_eq!(metric_value(&text, "ftpfront_bans_active"), 1.0);
    assert!(metric_value(&text, "ftpfront_sessions_total{result=\"rejected\"}") >= 1.0);

    // The ban ends: the address is greeted and can log in again.
    tokio::time::sleep(BAN).await;
    assert_eq!(
        wait_for_metric(&proxy, "ftpfront_bans_active", 0.0).await,
        0.0
    );
    let mut back = FtpClient::login(attacker, proxy.control_addr).await;
    assert_eq!(back.cmd("PWD").await.code, 257);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_below_the_limit_and_successes_never_ban() {
    let backend = TestBackend::start().await;
    let proxy = start(&backend).await;
    let source = loopback(63);
    let mut client = FtpClient::connect(source, proxy.control_addr).await;
    for _ in 1..MAX_FAILED {
        assert_eq!(fail_login(&mut client).await.code, 530);
    }
    // The window holds MAX_FAILED - 1 failures: logging in still works, on this
    // connection and on a new one.
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(client.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    let mut good = FtpClient::login(source, proxy.control_addr).await;
    assert_eq!(good.cmd("PWD").await.code, 257);
    assert_eq!(
        metric_value(&scrape(&proxy).await, "ftpfront_bans_total"),
        0.0
    );
    proxy.shutdown().await;
}

/// curl, a client nobody here wrote, guessing passwords: after the ban even the right
/// password is refused from that address, while curl from another address downloads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_guessing_passwords_is_banned_and_others_still_download() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let backend = TestBackend::start().await;
    let proxy = start(&backend).await;
    let url = format!("ftp://{}/hello.txt", proxy.control_addr);
    let fetch = |source: IpAddr, password: &'static str| {
        let (curl, url) = (curl.clone(), url.clone());
        async move {
            let user = format!("{USER}:{password}");
            let interface = source.to_string();
            run_curl(&curl, &["--interface", &interface, "--user", &user, &url]).await
        }
    };
    let (guesser, other) = (loopback(64), loopback(65));
    for _ in 0..MAX_FAILED {
        let guess = fetch(guesser, "guess").await;
        assert_eq!(guess.status.code(), Some(67), "login denied: {guess:?}");
    }
    let banned = fetch(guesser, PASSWORD).await;
    assert!(
        !banned.status.success(),
        "banned curl downloaded: {banned:?}"
    );
    let fine = fetch(other, PASSWORD).await;
    assert_ok(&fine, "curl from another address");
    assert_eq!(fine.stdout, b"hello through the proxy\n");
    proxy.shutdown().await;
}
