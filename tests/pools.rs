//! Pools of backends with real servers behind ftpfront (vsftpd, proftpd and libunftp, each
//! serving a `marker.txt` that names it): every policy's choices, seen in the file a client
//! downloads and in `/metrics`; failover past a stopped backend, one that never greets and
//! one that greets `421`; a pool with no working backend answering 421 with the reason.
//! Needs vsftpd and proftpd (root); skips without them unless FTP_TESTS_REQUIRE_EXTERNAL=1.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::pools::*;
use common::servers::ServerKind;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_thirty_sessions_ten_each() {
    let Some(members) = three_members().await else {
        return;
    };
    let names: Vec<&str> = members.iter().map(|m| m.name).collect();
    let proxy = start_proxy(pool_config(&named(&members), "round_robin", "3s")).await;
    all_up(&proxy, &names).await;
    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..30 {
        *served.entry(session_marker(&proxy).await).or_default() += 1;
    }
    let up = metric_now(&proxy, "ftpfront_pool_backends_up", &[("pool", "web")]).await;
    assert_eq!(up, 3.0, "backends up in the pool");
    for name in &names {
        let count = served.get(*name).copied().unwrap_or(0);
        assert!(
            (9..=11).contains(&count),
            "{name} served {count}: {served:?}"
        );
        let logins = metric_now(
            &proxy,
            "ftpfront_logins_total",
            &[("backend", name), ("result", "ok")],
        )
        .await;
        assert_eq!(logins, f64::from(count), "{name}'s logins in /metrics");
    }
    sessions_drained(&proxy, &names).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_uses_every_backend_over_thirty_sessions() {
    let Some(members) = three_members().await else {
        return;
    };
    let names: Vec<&str> = members.iter().map(|m| m.name).collect();
    let proxy = start_proxy(pool_config(&named(&members), "random", "3s")).await;
    all_up(&proxy, &names).await;
    let mut served: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..30 {
        *served.entry(session_marker(&proxy).await).or_default() += 1;
    }
    assert_eq!(served.len(), 3, "backends used: {served:?}");
    proxy.shutdown().await;
}

/// Three sessions held open land on three members; when one of them ends, the next new
/// session goes to the member it left, which now has the fewest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_sends_new_sessions_to_the_backend_with_fewest() {
    let Some(members) = three_members().await else {
        return;
    };
    let names: Vec<&str> = members.iter().map(|m| m.name).collect();
    let proxy = start_proxy(pool_config(&named(&members), "least_conn", "3s")).await;
    all_up(&proxy, &names).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut client = login(&proxy).await;
        let name = marker(&mut client).await;
        held.push((name, client));
    }
    let mut used: Vec<&str> = held.iter().map(|(name, _)| name.as_str()).collect();
    used.sort();
    let mut all = names.clone();
    all.sort();
    assert_eq!(used, all, "one held session per member");
    for name in &names {
        let open = metric_now(&proxy, "ftpfront_backend_sessions", &[("backend", name)]).await;
        assert_eq!(open, 1.0, "{name}'s sessions in /metrics");
    }
    let (freed, mut client) = held.remove(1);
    client.expect("QUIT", 221).await;
    sessions_settle(&proxy, &freed).await;
    for _ in 0..2 {
        let mut client = login(&proxy).await;
        assert_eq!(
            marker(&mut client).await,
            freed,
            "the member with fewest sessions"
        );
        client.expect("QUIT", 221).await;
        sessions_settle(&proxy, &freed).await;
    }
    drop(held);
    proxy.shutdown().await;
}

/// `first` is failover: every session on the first member while it runs, the next one
/// once it is stopped, counted in `backend_connect_errors_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_fails_over_when_the_first_backend_is_stopped() {
    let Some(mut members) = three_members().await else {
        return;
    };
    let config = pool_config(&named(&members), "first", "3s");
    let (first, second) = (members[0].name, members[1].name);
    let proxy = start_proxy(config).await;
    all_up(&proxy, &[first, second]).await;
    for _ in 0..3 {
        assert_eq!(session_marker(&proxy).await, first);
    }
    drop(members.remove(0));
    let started = Instant::now();
    assert_eq!(
        session_marker(&proxy).await,
        second,
        "after {first} stopped"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "failover took {:?}",
        started.elapsed()
    );
    let failed = metric_now(
        &proxy,
        "ftpfront_backend_connect_errors_total",
        &[("backend", first), ("reason", "connect_failed")],
    )
    .await;
    assert!(failed >= 1.0, "{first}'s connect errors: {failed}");
    proxy.shutdown().await;
}

/// A backend that accepts TCP and never says a word.
async fn silent_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    (addr, task)
}

/// A backend that greets every connection with `421 Too many users` and hangs up.
async fn full_backend() -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = stream
                .write_all(b"421 Too many users, try later.\r\n")
                .await;
        }
    });
    (addr, task)
}

/// Failover skips a backend that never greets (within its connect timeout) and one that
/// greets 421; with only such backends the client gets 421 and the last one's reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_full_backends_are_skipped_and_a_dead_pool_says_why() {
    let Some(real) = Member::program(ServerKind::Vsftpd).await else {
        return;
    };
    let (silent, _silent_task) = silent_backend().await;
    let (full, _full_task) = full_backend().await;
    let backends = [("silent", silent), ("full", full), (real.name, real.addr)];
    let proxy = start_proxy(pool_config(&backends, "first", "1s")).await;
    let started = Instant::now();
    assert_eq!(session_marker(&proxy).await, real.name);
    let took = started.elapsed();
    assert!(took < Duration::from_secs(3), "skipping took {took:?}");
    let text = scrape(&proxy).await;
    let errors = |backend, reason| {
        metric(
            &text,
            "ftpfront_backend_connect_errors_total",
            &[("backend", backend), ("reason", reason)],
        )
    };
    assert!(errors("silent", "timeout") >= 1.0, "{text}");
    assert!(errors("full", "refused") >= 1.0, "{text}");
    proxy.shutdown().await;

    let dead = [("silent", silent), ("full", full)];
    let proxy = start_proxy(pool_config(&dead, "first", "1s")).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let reply = client.cmd(&format!("USER {}", LOGIN.0)).await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(
        reply.text.contains("Too many users"),
        "the last backend's reason: {reply:?}"
    );
    let failed = metric_now(
        &proxy,
        "ftpfront_login_routing_failures_total",
        &[("reason", "all_failed")],
    )
    .await;
    assert_eq!(failed, 1.0);
    proxy.shutdown().await;
}

/// `USER name@target` picks the target when `routing.allow_user_at_backend` is on (the
/// backend hears `name`); an unknown target gets 530 naming it; with the option off the
/// line reaches the default backend unchanged, which answers as it does directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_at_target_picks_the_backend_only_when_allowed() {
    let Some(members) = three_members().await else {
        return;
    };
    let (vsftpd, proftpd) = (&members[0], &members[1]);
    let backends = [(vsftpd.name, vsftpd.addr), (proftpd.name, proftpd.addr)];
    let allowed = Extra {
        routing: "allow_user_at_backend = true",
        ..Extra::default()
    };
    let proxy = start_proxy(pool_config_with(&backends, "first", "3s", &allowed)).await;
    let mut client = login_as(&proxy, &format!("{}@{}", LOGIN.0, proftpd.name)).await;
    assert_eq!(marker(&mut client).await, proftpd.name);
    client.expect("QUIT", 221).await;
    let mut client = login_as(&proxy, &format!("{}@web", LOGIN.0)).await;
    assert_eq!(
        marker(&mut client).await,
        vsftpd.name,
        "a pool as the target"
    );
    client.expect("QUIT", 221).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let refused = client.cmd(&format!("USER {}@nope", LOGIN.0)).await;
    assert_eq!(refused.code, 530, "{refused:?}");
    assert!(refused.text.contains("\"nope\""), "{refused:?}");
    let unknown = metric_now(
        &proxy,
        "ftpfront_login_routing_failures_total",
        &[("reason", "unknown_target")],
    )
    .await;
    assert_eq!(unknown, 1.0);
    proxy.shutdown().await;

    let line = format!("USER {}@{}", LOGIN.0, proftpd.name);
    let mut direct = FtpClient::connect(loopback(1), vsftpd.addr).await;
    let direct_reply = direct.cmd(&line).await;
    let proxy = start_proxy(pool_config(&backends, "first", "3s")).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let relayed = client.cmd(&line).await;
    assert_eq!(
        relayed.code, direct_reply.code,
        "off: {relayed:?} vs direct {direct_reply:?}"
    );
    assert_eq!(relayed.text, direct_reply.text);
    proxy.shutdown().await;
}

/// A backend with `max_sessions` sessions is skipped like a down one (no connection is
/// tried); a pool whose backends are all full answers 421.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_backends_are_skipped_and_a_full_pool_answers_421() {
    let Some(members) = three_members().await else {
        return;
    };
    let (vsftpd, proftpd) = (&members[0], &members[1]);
    let backends = [(vsftpd.name, vsftpd.addr), (proftpd.name, proftpd.addr)];
    let capped = Extra {
        backend: &[("vsftpd", "max_sessions = 1")],
        ..Extra::default()
    };
    let proxy = start_proxy(pool_config_with(&backends, "first", "3s", &capped)).await;
    all_up(&proxy, &[vsftpd.name, proftpd.name]).await;
    let mut held = login(&proxy).await;
    assert_eq!(marker(&mut held).await, vsftpd.name);
    let mut second = login(&proxy).await;
    assert_eq!(marker(&mut second).await, proftpd.name, "vsftpd is full");
    let errors = metric_now(
        &proxy,
        "ftpfront_backend_connect_errors_total",
        &[("backend", "vsftpd"), ("reason", "refused")],
    )
    .await;
    assert_eq!(errors, 0.0, "a full backend is not even tried");
    second.expect("QUIT", 221).await;
    held.expect("QUIT", 221).await;
    proxy.shutdown().await;

    let only = [(vsftpd.name, vsftpd.addr)];
    let proxy = start_proxy(pool_config_with(&only, "first", "3s", &capped)).await;
    let mut held = login(&proxy).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let reply = client.cmd(&format!("USER {}", LOGIN.0)).await;
    assert_eq!(reply.code, 421, "{reply:?}");
    assert!(reply.text.contains("Too many users"), "{reply:?}");
    let full = metric_now(
        &proxy,
        "ftpfront_login_routing_failures_total",
        &[("reason", "all_full")],
    )
    .await;
    assert_eq!(full, 1.0);
    held.expect("QUIT", 221).await;
    proxy.shutdown().await;
}
