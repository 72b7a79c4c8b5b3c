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
use common::members::*;
use common::metrics::*;
use common::pools::*;
use common::servers::ServerKind;
use ftpfront::server::RunningProxy;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;
use tokio::io::{copy_bidirectional, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// A TCP relay in front of a server that can be stopped (its port refuses connections,
/// the relayed ones are cut) and restarted on the same address, as a backend that goes
/// down and comes back; it counts the connections it accepted.
struct Switch {
    addr: SocketAddr,
    target: SocketAddr,
    accepted: Arc<AtomicUsize>,
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl Switch {
    async fn start(target: SocketAddr) -> Switch {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut switch = Switch {
            addr: listener.local_addr().expect("addr"),
            target,
            accepted: Arc::default(),
            relay: None,
        };
        switch.serve(listener);
        switch
    }

    fn serve(&mut self, listener: TcpListener) {
        let (target, accepted) = (self.target, self.accepted.clone());
        self.relay = Some(tokio::spawn(async move {
            // Owned by this task, so aborting it cuts every relayed connection too.
            let mut relayed = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, AtomicOrdering::SeqCst);
                relayed.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        }));
    }

    fn stop(&mut self) {
        if let Some(relay) = self.relay.take() {
            relay.abort();
        }
    }

    async fn restart(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("rebinding {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    fn accepted(&self) -> usize {
        self.accepted.load(AtomicOrdering::SeqCst)
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls until `backend_up` of `backend` is `up`.
async fn wait_backend_up(proxy: &RunningProxy, backend: &str, up: bool) {
    let want = f64::from(u8::from(up));
    let became = poll(Duration::from_secs(10), || async {
        metric_now(proxy, "ftpfront_backend_up", &[("backend", backend)]).await == want
    })
    .await;
    assert!(
        became,
        "{backend} never became {}",
        if up { "up" } else { "down" }
    );
}

/// `first` with `rise = 3`: the first member stopped sends sessions to the second; once
/// it is back, sessions stay on the second until three probes in a row passed, then
/// return to the first. Both flips are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_returns_to_a_restarted_backend_after_rise_probes() {
    let Some(members) = three_members().await else {
        return;
    };
    let (first, second) = (members[0].name, members[1].name);
    let mut switch = Switch::start(members[0].addr).await;
    let backends = [(first, switch.addr), (second, members[1].addr)];
    let extra = Extra {
        health: Some("probe_interval = \"400ms\"\nprobe_timeout = \"1s\"\nrise = 3\nfall = 1"),
        ..Extra::default()
    };
    let proxy = start_proxy(pool_config_with(&backends, "first", "1s", &extra)).await;
    all_up(&proxy, &[first, second]).await;
    assert_eq!(session_marker(&proxy).await, first);

    switch.stop();
    wait_backend_up(&proxy, first, false).await;
    assert_eq!(
        session_marker(&proxy).await,
        second,
        "while {first} is down"
    );

    switch.restart().await;
    let probes_before = switch.accepted();
    assert_eq!(
        session_marker(&proxy).await,
        second,
        "{first} is back but has not passed rise = 3 probes"
    );
    wait_backend_up(&proxy, first, true).await;
    let probes = switch.accepted() - probes_before;
    assert!(probes >= 3, "{first} up again after {probes} probes");
    assert_eq!(session_marker(&proxy).await, first, "back on {first}");
    let text = scrape(&proxy).await;
    let flips = |to| {
        metric(
            &text,
            "ftpfront_backend_health_transitions_total",
            &[("backend", first), ("to", to)],
        )
    };
    assert_eq!((flips("down"), flips("up")), (1.0, 1.0));
    proxy.shutdown().await;
}

/// `health = false`: the backend is never probed, counts as up from the start, and
/// serves sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_with_health_off_is_never_probed_and_counts_as_up() {
    let Some(member) = Member::program(ServerKind::Vsftpd).await else {
        return;
    };
    let switch = Switch::start(member.addr).await;
    let extra = Extra {
        backend: &[(member.name, "health = false")],
        health: Some("probe_interval = \"100ms\"\nprobe_timeout = \"1s\""),
        ..Extra::default()
    };
    let proxy = start_proxy(pool_config_with(
        &[(member.name, switch.addr)],
        "first",
        "1s",
        &extra,
    ))
    .await;
    assert!(wait_for_readyz(&proxy, 200).await, "ready without a probe");
    assert_eq!(
        metric_now(&proxy, "ftpfront_backend_up", &[("backend", member.name)]).await,
        1.0
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(switch.accepted(), 0, "probed although health = false");
    assert_eq!(session_marker(&proxy).await, member.name);
    proxy.shutdown().await;
}

/// `/readyz` follows the default route's backends: another backend being up does not
/// make the proxy ready while every backend of the default pool is down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_backends_of_the_default_route() {
    let Some(members) = three_members().await else {
        return;
    };
    let (web, other) = (&members[0], &members[1]);
    let mut switch = Switch::start(web.addr).await;
    let extra = Extra {
        routing: &format!("users = {{ someone = \"{}\" }}", other.name),
        health: Some("probe_interval = \"100ms\"\nprobe_timeout = \"1s\""),
        ..Extra::default()
    };
    // The pool `web` holds only its first entry's backend; `other` is routed by user.
    let mut config = pool_config_with(
        &[(web.name, switch.addr), (other.name, other.addr)],
        "first",
        "1s",
        &extra,
    );
    config.pools[0].backends.truncate(1);
    let proxy = start_proxy(config).await;
    all_up(&proxy, &[web.name, other.name]).await;
    assert!(wait_for_readyz(&proxy, 200).await);
    switch.stop();
    assert!(
        wait_for_readyz(&proxy, 503).await,
        "ready with the default pool down"
    );
    assert_eq!(
        metric_now(&proxy, "ftpfront_backend_up", &[("backend", other.name)]).await,
        1.0
    );
    switch.restart().await;
    assert!(wait_for_readyz(&proxy, 200).await, "ready again");
    proxy.shutdown().await;
}
