//! SIGHUP reloads the client-facing certificate of the running binary without dropping
//! sessions; a bad new certificate keeps the old one and is logged.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::harness::{free_port_block, run_binary};
use common::tls::{TestPki, WRONG_HOST};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

type TlsControl = BufReader<tokio_rustls::client::TlsStream<TcpStream>>;

async fn read_reply<S: tokio::io::AsyncBufRead + Unpin>(stream: &mut S) -> String {
    let mut line = String::new();
    let read = stream.read_line(&mut line);
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("reply in time")
        .expect("read reply");
    line
}

/// AUTH TLS, then a handshake that verifies the certificate for `name`.
async fn explicit_tls(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    name: &str,
) -> std::io::Result<TlsControl> {
    let mut plain = BufReader::new(TcpStream::connect(addr).await?);
    assert!(read_reply(&mut plain).await.starts_with("220"));
    plain.get_mut().write_all(b"AUTH TLS\r\n").await?;
    assert!(read_reply(&mut plain).await.starts_with("234"));
    let name = ServerName::try_from(name.to_string()).expect("server name");
    let secured = TlsConnector::from(tls)
        .connect(name, plain.into_inner())
        .await?;
    Ok(BufReader::new(secured))
}

async fn noop(control: &mut TlsControl) -> String {
    control
        .get_mut()
        .write_all(b"NOOP\r\n")
        .await
        .expect("send NOOP");
    read_reply(control).await
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

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
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
    let pid = proxy.child.id().expect("pid");
    let addr = proxy.control;
    // A fresh client configuration per connection: a cached session would be resumed
    // without looking at the certificate again.
    let tls = || pki.client_config();

    let mut before = explicit_tls(addr, tls(), "localhost")
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
    hangup(pid);
    let mut swapped = false;
    for _ in 0..50 {
        if explicit_tls(addr, tls(), WRONG_HOST).await.is_ok() {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "after SIGHUP the new certificate is served");
    assert!(
        explicit_tls(addr, tls(), "localhost").await.is_err(),
        "the old certificate is gone for new sessions"
    );
    assert!(
        noop(&mut before).await.starts_with("200"),
        "the session opened before the reload goes on"
    );

    // A broken certificate file: the reload fails, the current certificate stays.
    std::fs::write(&live_cert, "not a certificate").expect("break the certificate");
    hangup(pid);
    tokio::time::sleep(Duration::from_millis(500)).await;
    explicit_tls(addr, tls(), WRONG_HOST)
        .await
        .expect("the previous certificate is still served");
    let logged = std::fs::read_to_string(&proxy.log).expect("read log");
    assert!(
        logged.contains("TLS certificate reload failed"),
        "the failed reload is logged:\n{logged}"
    );
    assert!(
        proxy.child.try_wait().expect("status").is_none(),
        "still running"
    );
    let _ = proxy.child.start_kill();
}
