//! SIGHUP re-reads the whole configuration of the running binary: a new backend and a
//! changed route move new sessions while a 100 MiB download started before the reload
//! finishes intact; a changed passive range is reported as needing a restart and the old
//! one stays; an invalid file keeps the running configuration (log line, metric).
//! Needs vsftpd and proftpd (root); skips without them unless FTP_TESTS_REQUIRE_EXTERNAL=1.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::ftp_client::*;
use common::harness::*;
use common::members::{login_on, LOGIN};
use common::metrics::*;
use common::process::{run_binary, signal, BinaryProxy};
use common::servers::{start_async, FtpServer, ServerKind, ServerOptions};
use tokio::io::AsyncReadExt;

const BIG: usize = 100 << 20;

/// The config: both backends listed (or only vsftpd), `default` the route.
fn config_text(ports: (u16, u16, u16), backends: &[(&str, SocketAddr)], default: &str) -> String {
    let (control, metrics, passive) = ports;
    let mut text = format!(
        r#"
[listen]
control = "127.0.0.1:{control}"
[passive]
ports = "{passive}-{last}"
public_address = "127.0.0.1"
[metrics]
listen = "127.0.0.1:{metrics}"
[health]
probe_interval = "500ms"
[routing]
default = "{default}"
"#,
        last = passive + 3,
    );
    for (name, addr) in backends {
        text.push_str(&format!(
            "[[backends]]\nname = \"{name}\"\naddress = \"{addr}\"\n"
        ));
    }
    text
}

async fn server(kind: ServerKind) -> Option<FtpServer> {
    let server = start_async(kind, ServerOptions::default()).await?;
    std::fs::write(server.root.join("marker.txt"), kind.name()).expect("marker");
    Some(server)
}

async fn login(proxy: &BinaryProxy) -> FtpClient {
    let client = FtpClient::connect(loopback(1), proxy.control).await;
    login_on(client, LOGIN.0, LOGIN.1).await
}

/// One session: the marker of the backend it reached and the passive port it was given.
async fn session_marker(proxy: &BinaryProxy) -> (String, u16) {
    let mut client = login(proxy).await;
    let data = client.pasv().await.expect("PASV");
    let (bytes, last) = client.retr("marker.txt", data).await;
    assert_eq!(last.code, 226, "{last:?}");
    client.expect("QUIT", 221).await;
    (String::from_utf8(bytes).expect("marker"), data.port())
}

/// Sends SIGHUP and waits until `ftpfront_config_reloads_total{result}` went up by one.
async fn reload(proxy: &BinaryProxy, metrics: SocketAddr, result: &str) {
    let count = |text: &str| metric(text, "ftpfront_config_reloads_total", &[("result", result)]);
    let before = count(&http_get_at(metrics, "/metrics", "").await);
    signal(&proxy.child, libc::SIGHUP);
    let scrape = || http_get_at(metrics, "/metrics", "");
    let counted = poll(Duration::from_secs(5), || async {
        count(&scrape().await) == before + 1.0
    })
    .await;
    assert!(counted, "no {result} reload counted:\n{}", scrape().await);
}

fn log_text(proxy: &BinaryProxy) -> String {
    std::fs::read_to_string(&proxy.log).expect("read log")
}

fn write_config(dir: &Path, text: &str) {
    std::fs::write(dir.join("ftpfront.toml"), text).expect("write config");
}

async fn ready(metrics: SocketAddr) {
    let ready = poll(Duration::from_secs(10), || async {
        http_get_at(metrics, "/readyz", "")
            .await
            .starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(ready, "never ready");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_moves_new_sessions_while_a_running_download_finishes() {
    let Some(vsftpd) = server(ServerKind::Vsftpd).await else {
        return;
    };
    let Some(proftpd) = server(ServerKind::Proftpd).await else {
        return;
    };
    let big = sample_bytes(BIG, 7);
    std::fs::write(vsftpd.root.join("big.bin"), &big).expect("big file");
    let digest = sha256(&big);
    drop(big);
    let dir = tempfile::tempdir().expect("tempdir");
    let (control, metrics_port) = (free_port_block(1), free_port_block(1));
    let (old_range, new_range) = (free_port_block(4), free_port_block(4));
    let metrics = SocketAddr::from(([127, 0, 0, 1], metrics_port));
    let before = config_text(
        (control, metrics_port, old_range),
        &[("vsftpd", vsftpd.addr)],
        "vsftpd",
    );
    let proxy = run_binary(dir.path(), control, &before).await;
    ready(metrics).await;
    assert_eq!(session_marker(&proxy).await.0, "vsftpd");

    // A download that starts before the reload and is held (its reader pauses).
    let mut running = login(&proxy).await;
    let data = running.pasv().await.expect("PASV");
    let mut stream = running.start_transfer("RETR big.bin", data).await;
    let mut received = vec![0u8; 1 << 20];
    stream.read_exact(&mut received).await.expect("first MiB");

    // The new file: a second backend, the route moved to it, another passive range.
    let after = config_text(
        (control, metrics_port, new_range),
        &[("vsftpd", vsftpd.addr), ("proftpd", proftpd.addr)],
        "proftpd",
    );
    write_config(dir.path(), &after);
    reload(&proxy, metrics, "ok").await;
    let (served, port) = session_marker(&proxy).await;
    assert_eq!(served, "proftpd", "a session after the reload");
    assert!(
        (old_range..old_range + 4).contains(&port),
        "port {port}: the running passive range stays until a restart"
    );
    let logged = log_text(&proxy);
    assert!(
        logged.contains("need a restart") && logged.contains("passive"),
        "the restart-only change is logged:\n{logged}"
    );

    // The download from before goes on from vsftpd to the last byte.
    stream.read_to_end(&mut received).await.expect("the rest");
    drop(stream);
    assert_eq!(received.len(), BIG);
    assert_eq!(sha256(&received), digest, "the download across the reload");
    assert_eq!(running.reply().await.code, 226);
    running.expect("QUIT", 221).await;

    // An invalid file: rejected with check's message, the running configuration stays.
    write_config(
        dir.path(),
        &after.replace("default = \"proftpd\"", "default = \"nowhere\""),
    );
    reload(&proxy, metrics, "rejected").await;
    assert_eq!(
        session_marker(&proxy).await.0,
        "proftpd",
        "still the last good config"
    );
    let logged = log_text(&proxy);
    assert!(
        logged.contains("configuration reload rejected") && logged.contains("routing.default"),
        "the rejection names the problem:\n{logged}"
    );
    let scrape = http_get_at(metrics, "/metrics", "").await;
    assert!(
        metric(
            &scrape,
            "ftpfront_config_last_reload_success_timestamp_seconds",
            &[]
        ) > 1.0e9
    );
    assert_eq!(
        metric(&scrape, "ftpfront_backend_up", &[("backend", "proftpd")]),
        1.0,
        "the new backend is probed"
    );
}
