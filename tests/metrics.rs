//! One scenario with successes and every common failure, each metric read from the real
//! HTTP endpoint before and after: the numbers an operator's dashboard shows must move
//! exactly as the traffic did.

mod common;

use std::time::Duration;

use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use ftpfront::server::RunningProxy;

/// The value of `series` now minus its value in `before`.
async fn delta(proxy: &RunningProxy, before: &str, series: &str) -> f64 {
    metric_value(&scrape(proxy).await, series) - metric_value(before, series)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_moves_with_the_traffic() {
    let backend = TestBackend::start().await;
    let digest = backend.put_file("counted.bin", 1_234_567, 4);
    let proxy = start_proxy(proxy_config(backend.server.addr, 1)).await;
    let addr = proxy.control_addr;
    assert!(wait_for_readyz(&proxy, 200).await);
    let before = scrape(&proxy).await;

    // A failed login, then a good one with a download.
    let mut failing = FtpClient::connect(loopback(1), addr).await;
    assert_eq!(failing.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(failing.cmd("PASS wrong").await.code, 530);
    assert_eq!(failing.cmd("QUIT").await.code, 221);
    let mut client = FtpClient::login(loopback(1), addr).await;
    let data = client.pasv().await.expect("PASV");
    let (bytes, done) = client.retr("counted.bin", data).await;
    assert_eq!(done.code, 226);
    assert_eq!(sha256(&bytes), digest);

    // Exhaustion: a second pending reservation from the same address on a one-port range.
    let _pending = client.pasv().await.expect("PASV");
    let mut same_address = FtpClient::login(loopback(1), addr).await;
    assert_eq!(same_address.pasv().await.expect_err("exhausted").code, 425);
    // A foreign address connecting to the reserved port.
    let mut stray = connect_from(loopback(3), data)
        .await
        .expect("stray connects");
    let mut sink = Vec::new();
    let _ = tokio::io::AsyncReadExt::read_to_end(&mut stray, &mut sink).await;
    // A command line over the limit.
    let long = format!("NOOP {}", "x".repeat(5000));
    assert_eq!(client.cmd(&long).await.code, 500);
    assert_eq!(client.cmd("QUIT").await.code, 221);
    assert_eq!(same_address.cmd("QUIT").await.code, 221);

    // The backend goes away: the next login gets 421.
    drop(backend);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut late = FtpClient::connect(loopback(1), addr).await;
    assert_eq!(late.cmd(&format!("USER {USER}")).await.code, 421);

    for _ in 0..50 {
        if metric_value(&scrape(&proxy).await, "ftpfront_sessions_active") == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let expectations = [
        (
            r#"ftpfront_logins_total{backend="main",result="failed"}"#,
            1.0,
        ),
        (r#"ftpfront_logins_total{backend="main",result="ok"}"#, 2.0),
        (
            r#"ftpfront_transfers_total{backend="main",direction="download",result="ok"}"#,
            1.0,
        ),
        (
            r#"ftpfront_transfer_bytes_total{backend="main",direction="download"}"#,
            1_234_567.0,
        ),
        (
            r#"ftpfront_transfer_duration_seconds_count{direction="download"}"#,
            1.0,
        ),
        ("ftpfront_passive_port_exhausted_total", 1.0),
        (
            r#"ftpfront_data_connections_rejected_total{reason="foreign_ip"}"#,
            1.0,
        ),
        (
            r#"ftpfront_protocol_errors_total{kind="line_too_long",side="client"}"#,
            1.0,
        ),
        (r#"ftpfront_commands_total{command="pass"}"#, 3.0),
        (r#"ftpfront_commands_total{command="retr"}"#, 1.0),
        (r#"ftpfront_sessions_total{result="ok"}"#, 3.0),
        (r#"ftpfront_sessions_total{result="error"}"#, 1.0),
        (r#"ftpfront_data_connections_total{side="client"}"#, 1.0),
        ("ftpfront_sessions_active", 0.0),
        ("ftpfront_transfers_active", 0.0),
    ];
    for (series, expected) in expectations {
        assert_eq!(delta(&proxy, &before, series).await, expected, "{series}");
    }
    let after = scrape(&proxy).await;
    assert!(
        metric_value(
            &after,
            r#"ftpfront_backend_connect_errors_total{backend="main",reason="connect_failed"}"#
        ) >= 1.0,
        "{after}"
    );
    assert_eq!(
        metric_value(&after, r#"ftpfront_backend_up{backend="main"}"#),
        0.0
    );
    // The pending reservation ended with its session.
    assert_eq!(
        metric_value(&after, "ftpfront_passive_reservations_active"),
        0.0
    );
    assert_eq!(
        metric_value(&after, "ftpfront_passive_ports_configured"),
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_guards_metrics_but_not_health_probes() {
    let backend = TestBackend::start().await;
    let mut config = proxy_config(backend.server.addr, 1);
    config.metrics.basic_auth_user = Some("prometheus".into());
    config.metrics.basic_auth_password = Some("s3cret".into());
    let proxy = start_proxy(config).await;
    let denied = http_get(&proxy, "/metrics").await;
    assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
    assert!(
        denied.to_lowercase().contains("www-authenticate: basic"),
        "{denied}"
    );
    let wrong = ftpfront::metrics::basic_auth_header("prometheus", "guess");
    let guessed = http_get_with(&proxy, "/metrics", &format!("Authorization: {wrong}\r\n")).await;
    assert!(guessed.starts_with("HTTP/1.1 401"), "{guessed}");
    let right = ftpfront::metrics::basic_auth_header("prometheus", "s3cret");
    let allowed = http_get_with(&proxy, "/metrics", &format!("Authorization: {right}\r\n")).await;
    assert!(allowed.starts_with("HTTP/1.1 200"), "{allowed}");
    assert!(allowed.contains("ftpfront_sessions_active"));
    assert!(http_get(&proxy, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(
        wait_for_readyz(&proxy, 200).await,
        "readiness stays open to probes"
    );
    proxy.shutdown().await;
}
