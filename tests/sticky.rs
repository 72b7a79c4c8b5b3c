//! Sticky sessions (`pools.sticky`) with real servers behind ftpfront (vsftpd, proftpd and
//! libunftp, each serving a `marker.txt` that names it), in a `round_robin` pool: a user's
//! sessions stay on one backend, concurrent ones too; another user is balanced on their
//! own; once the window after the last session has passed, round robin moves the user on;
//! a stopped backend sends them elsewhere, where they stick. Checked in the bytes of the
//! marker file and in `/metrics`. Needs vsftpd and proftpd (root); skips without them
//! unless FTP_TESTS_REQUIRE_EXTERNAL=1.

mod common;

use std::time::{Duration, Instant};

use common::ftp_client::FtpClient;
use common::members::*;
use common::pools::*;
use ftpfront::server::RunningProxy;

/// The pool's window (`sticky = "2s"` below); the test waits it out once.
const WINDOW: Duration = Duration::from_secs(2);

/// One whole session of `user`: login, the marker, QUIT; waits until the proxy has ended
/// it (the sticky window starts there).
async fn session_of(proxy: &RunningProxy, user: &str, members: &[&str]) -> String {
    let mut client: FtpClient = login_as(proxy, user).await;
    let name = marker(&mut client).await;
    client.expect("QUIT", 221).await;
    sessions_drained(proxy, members).await;
    name
}

async fn decisions(proxy: &RunningProxy, result: &str) -> f64 {
    metric_now(
        proxy,
        "ftpfront_sticky_decisions_total",
        &[("result", result)],
    )
    .await
}

/// Waits until the health probe has seen `backend` down.
async fn probed_down(proxy: &RunningProxy, backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric_now(proxy, "ftpfront_backend_up", &[("backend", backend)]).await != 0.0 {
        assert!(Instant::now() < deadline, "{backend} still up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Round robin's cursor moves with every new session on the pool, sticky or not, so each
/// step below knows what the policy alone would pick (`names[n % 3]` with all up): the
/// assertions show sticky overriding it, and the policy back once the window has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_sticks_to_one_backend_until_the_window_after_their_last_session() {
    let Some(mut members) = three_members().await else {
        return;
    };
    let names: Vec<&'static str> = members.iter().map(|m| m.name).collect();
    let sticky = Extra {
        pool: "sticky = \"2s\"",
        ..Extra::default()
    };
    let proxy = start_proxy_with(&members, &sticky).await;
    all_up(&proxy, &names).await;
    let user = LOGIN.0;

    // Sessions 0-4: one backend, though round robin alone would use all three.
    let mut served = Vec::new();
    for _ in 0..5 {
        served.push(session_of(&proxy, user, &names).await);
    }
    let first = served[0].clone();
    assert!(served.iter().all(|s| *s == first), "{served:?}");
    // Sessions 5 and 6, at once: both on the remembered backend.
    let mut held = login_as(&proxy, user).await;
    assert_eq!(marker(&mut held).await, first, "a session held open");
    let mut concurrent = login_as(&proxy, user).await;
    assert_eq!(marker(&mut concurrent).await, first, "one beside it");
    held.expect("QUIT", 221).await;
    concurrent.expect("QUIT", 221).await;
    sessions_drained(&proxy, &names).await;

    // Sessions 7-9: another user, balanced on their own (round robin's turn 7: names[1]).
    let other = session_of(&proxy, SECOND_USER, &names).await;
    assert_ne!(other, first, "the other user is balanced independently");
    for _ in 0..2 {
        assert_eq!(session_of(&proxy, SECOND_USER, &names).await, other);
    }
    let both_ended = Instant::now();
    let entries = metric_now(&proxy, "ftpfront_sticky_entries", &[]).await;
    assert_eq!(entries, 2.0, "two users remembered");
    assert_eq!(decisions(&proxy, "miss").await, 2.0);
    assert_eq!(decisions(&proxy, "hit").await, 8.0);

    // Session 10, after the window: round robin's pick (names[1]) again, then sticky there.
    let waited = both_ended.elapsed();
    tokio::time::sleep((WINDOW + Duration::from_millis(300)).saturating_sub(waited)).await;
    let moved = session_of(&proxy, user, &names).await;
    assert_ne!(
        moved, first,
        "after the window, round robin moves the user on"
    );
    assert_eq!(moved, names[10 % 3], "round robin's pick");
    assert_eq!(
        decisions(&proxy, "miss").await,
        3.0,
        "the entry had expired"
    );
    let entries = metric_now(&proxy, "ftpfront_sticky_entries", &[]).await;
    assert_eq!(
        entries, 1.0,
        "both windows passed: swept; the user recorded anew"
    );
    assert_eq!(session_of(&proxy, user, &names).await, moved);

    // The remembered backend stops: the user goes elsewhere and sticks there.
    let stopped = members
        .iter()
        .position(|m| m.name == moved)
        .expect("a member");
    drop(members.remove(stopped));
    probed_down(&proxy, &moved).await;
    let up: Vec<&str> = members.iter().map(|m| m.name).collect();
    let elsewhere = session_of(&proxy, user, &up).await;
    assert_ne!(elsewhere, moved);
    assert_eq!(decisions(&proxy, "backend_down").await, 1.0);
    for _ in 0..2 {
        assert_eq!(
            session_of(&proxy, user, &up).await,
            elsewhere,
            "sticks there"
        );
    }
    assert_eq!(decisions(&proxy, "hit").await, 11.0);
    assert_eq!(decisions(&proxy, "backend_full").await, 0.0);
    let entries = metric_now(&proxy, "ftpfront_sticky_entries", &[]).await;
    assert_eq!(entries, 1.0, "the user, on their new backend");
    proxy.shutdown().await;
}

async fn start_proxy_with(members: &[Member], extra: &Extra<'_>) -> RunningProxy {
    let config = pool_config_with(&named(members), "round_robin", "3s", extra);
    common::harness::start_proxy(config).await
}
