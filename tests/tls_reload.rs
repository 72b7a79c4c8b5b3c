//! SIGHUP reloads the client-facing certificate of the running binary without dropping
//! sessions; a bad new certificate keeps the old one and is logged.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::ftp_client::FtpClient;
use common::harness::free_port_block;
use common::process::{run_binary, signal};
use common::tls::{TestPki, WRONG_HOST};
use tokio_rustls::rustls::pki_types::ServerName;

/// AUTH TLS, then a handshake that verifies the certificate for `name`.
async fn explicit_tls(addr: SocketAddr, pki: &TestPki, name: &str) -> std::io::Result<FtpClient> {
    let (mut control, greeting) = FtpClient::explicit(addr, pki).await;
    assert!(greeting.text.starts_with("220"));
    assert!(control.cmd("AUTH TLS").await.text.starts_with("234"));
    let name = ServerName::try_from(name.to_string()).expect("server name");
    control.try_upgrade(name).await?;
    Ok(control)
}

async fn noop(control: &mut FtpClient) -> String {
    control.cmd("NOOP").await.text
}

fn install(
    pki_cert: &std::path::Path,
    pki_key: &std::path::Path,
    cert: &std::path::Path,
    key: &std::path::Path,
) {
    std::fs::copy(pki_cert, cert).expect("copy certificate");
    std::fs::copy(pki_key, key).expect("copy key");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_the_certificate_and_keeps_sessions() {
    let pki = TestPki::generate();
    let live_cert = pki.dir.path().join("live.pem");
    let live_key = pki.dir.path().join("live.key");
    install(&pki.server_cert, &pki.server_key, &live_cert, &live_key);
    let port = free_port_block(1);
    let passive = free_port_block(2);
    let config = format!(
        r#"
[listen]
control = "127.0.0.1:{port}"
[passive]
ports = "{passive}-{}"
[tls]
mode = "optional"
cert = "{}"
key = "{}"
[[backends]]
name = "unused"
address = "127.0.0.1:9"
[metrics]
listen = "127.0.0.1:0"
"#,
        passive + 1,
        live_cert.display(),
        live_key.display()
    );
    let mut proxy = run_binary(pki.dir.path(), port, &config).await;
    let addr = proxy.control;
    // FtpClient::explicit makes a fresh client configuration per connection: a cached
    // session would be resumed without looking at the certificate again.

    let mut before = explicit_tls(addr, &pki, "localhost")
        .await
        .expect("the first certificate is served");
    assert!(noop(&mut before).await.starts_with("200"));

    // A new certificate (for another name) and SIGHUP: new sessions get it.
    install(
        &pki.wrong_host_cert,
        &pki.wrong_host_key,
        &live_cert,
        &live_key,
    );
    signal(&proxy.child, libc::SIGHUP);
    let mut swapped = false;
    for _ in 0..50 {
        if explicit_tls(addr, &pki, WRONG_HOST).await.is_ok() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "after SIGHUP the new certificate is served");
    assert!(
        explicit_tls(addr, &pki, "localhost").await.is_err(),
        "the old certificate is gone for new sessions"
    );
    assert!(
        noop(&mut before).await.starts_with("200"),
        "the session opened before the reload goes on"
    );

    // A broken certificate file: the reload fails, the current certificate stays.
    std::fs::write(&live_cert, "not a certificate").expect("break the certificate");
    signal(&proxy.child, libc::SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    explicit_tls(addr, &pki, WRONG_HOST)
        .await
        .expect("the previous certificate is still served");
    let logged = std::fs::read_to_string(&proxy.log).expect("read log");
    assert!(
        logged.contains("configuration reload rejected"),
        "the failed reload is logged:\n{logged}"
    );
    assert!(
        proxy.child.try_wait().expect("status").is_none(),
        "still running"
    );
    let _ = proxy.child.start_kill();
}
