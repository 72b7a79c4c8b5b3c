//! A shorter session setup, never at the cost of a login or a transfer: `routing.preconnect`
//! connects the backend when the client connects (USER does not wait for the backend's
//! connect and greeting), and the backend's data connection is opened right after the
//! client's PASV is answered; a stale early connection of either kind is replaced.

mod common;

use std::time::Duration;

use common::fake_backend::{Behaviour, FakeBackend, Observed};
use common::ftp_client::*;
use common::harness::*;
use common::metrics::{metric, scrape};
use common::tcp_queues::connecting_to;
use ftpfront::config::Config;
use ftpfront::server::RunningProxy;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const WAIT: Duration = Duration::from_secs(3);

/// A proxy in front of `fake` that never probes it: every backend connection is a session's.
fn config(fake: &FakeBackend, routing: &str) -> Config {
    let mut config = proxy_config(fake.addr, 2);
    config.backends[0].health = false;
    if !routing.is_empty() {
        let text = format!("[routing]\n{routing}\n");
        let extra = Config::from_toml_str(&format!("{}{text}", base_toml(fake)))
            .unwrap_or_else(|e| panic!("routing {routing}: {e}"));
        config.routing = extra.routing;
    }
    config
}

fn base_toml(fake: &FakeBackend) -> String {
    format!(
        "[[backends]]\nname = \"main\"\naddress = \"{}\"\n",
        fake.addr
    )
}

fn connections(seen: &Observed) -> usize {
    seen.control_connections
}

async fn login(client: &mut FtpClient) {
    client.expect("USER alice", 331).await;
    client.expect("PASS secret", 230).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_is_connected_before_user_and_the_login_uses_that_connection() {
    let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let proxy = start_proxy(config(&fake, "")).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let seen = fake.wait_until(WAIT, |seen| connections(seen) == 1).await;
    assert_eq!(connections(&seen), 1, "no backend connection before USER");
    assert!(
        seen.commands.is_empty(),
        "the backend heard {:?}",
        seen.commands
    );
    login(&mut client).await;
    client.expect("PWD", 257).await;
    let seen = fake.observed();
    assert_eq!(connections(&seen), 1, "the login opened another connection");
    assert_eq!(seen.commands, ["USER alice", "PASS secret", "PWD"]);
    proxy.shutdown().await;
}

/// A client that leaves without logging in (a scanner, a readiness check): its early
/// connection ends with QUIT. It was dropped, and when that happened before its greeting
/// was read the kernel reset it: libunftp logged "Connection reset by peer" for it
/// (`tests/logs.rs` caught that now and then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_connection_nobody_logs_in_on_ends_with_quit() {
    let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let proxy = start_proxy(config(&fake, "")).await;
    for _ in 0..5 {
        let client = FtpClient::connect(loopback(1), proxy.control_addr).await;
        drop(client);
    }
    let quits = |seen: &Observed| seen.commands.iter().filter(|c| *c == "QUIT").count();
    let seen = fake.wait_until(WAIT, |seen| quits(seen) == 5).await;
    assert_eq!(connections(&seen), 5, "{seen:?}");
    assert_eq!(
        quits(&seen),
        5,
        "early connections not ended with QUIT: {seen:?}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_preconnect_off_or_a_user_rule_the_backend_waits_for_user() {
    for routing in ["preconnect = false", "users = { bob = \"main\" }"] {
        let fake = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
        let proxy = start_proxy(config(&fake, routing)).await;
        let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(
            connections(&fake.observed()),
            0,
            "{routing}: connected before USER"
        );
        login(&mut client).await;
        assert_eq!(connections(&fake.observed()), 1, "{routing}");
        proxy.shutdown().await;
    }
}

/// The backend ends the early connection before the client logs in (its pre-login
/// timeout): the login connects again instead of failing on the dead one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_connection_the_backend_ended_is_replaced_at_user() {
    let fake = FakeBackend::start(Behaviour::FirstTimesOut).await;
    let proxy = start_proxy(config(&fake, "")).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    fake.wait_until(WAIT, |seen| connections(seen) == 1).await;
    // The 421 and the close come 100 ms after the greeting.
    tokio::time::sleep(Duration::from_millis(400)).await;
    login(&mut client).await;
    client.expect("PWD", 257).await;
    let seen = fake.observed();
    assert_eq!(
        connections(&seen),
        2,
        "expected a second backend connection"
    );
    assert_eq!(seen.commands, ["USER alice", "PASS secret", "PWD"]);
    proxy.shutdown().await;
}

/// `name@target` to another backend than the default: the early connection to the default
/// is ended unused (with QUIT), and the login goes to its target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_to_another_target_leaves_the_early_connection_unused() {
    let default = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let other = FakeBackend::start(Behaviour::Normal { retr_bytes: 0 }).await;
    let ports = free_port_block(2);
    let text = format!(
        "[listen]\ncontrol = \"127.0.0.1:0\"\n[passive]\nports = \"{}-{}\"\n\
         public_address = \"127.0.0.1\"\n[[backends]]\nname = \"main\"\naddress = \"{}\"\n\
         health = false\n[[backends]]\nname = \"other\"\naddress = \"{}\"\nhealth = false\n\
         [routing]\ndefault = \"main\"\nallow_user_at_backend = true\n",
        ports,
        ports + 1,
        default.addr,
        other.addr
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    default
        .wait_until(WAIT, |seen| connections(seen) == 1)
        .await;
    client.expect("USER alice@other", 331).await;
    client.expect("PASS secret", 230).await;
    assert_eq!(other.observed().commands, ["USER alice", "PASS secret"]);
    // The goodbye runs on its own task after the login: wait for it, not just look.
    let seen = default
        .wait_until(WAIT, |seen| !seen.commands.is_empty())
        .await;
    assert_eq!(connections(&seen), 1);
    assert_eq!(
        seen.commands,
        ["QUIT"],
        "the default heard more than a goodbye"
    );
    proxy.shutdown().await;
}

async fn download(client: &mut FtpClient, data: std::net::SocketAddr, path: &str) -> usize {
    use tokio::io::AsyncReadExt;
    let mut stream = tokio::net::TcpStream::connect(data)
        .await
        .expect("data connect");
    client.expect(&format!("RETR {path}"), 150).await;
    let mut bytes = Vec::new();
    stream.read_to_end(&mut bytes).await.expect("data read");
    assert_eq!(client.reply().await.code, 226);
    bytes.len()
}

/// A logged-in client of a proxy in front of a fake backend, its PASV answered.
async fn after_pasv(
    behaviour: Behaviour,
) -> (FakeBackend, RunningProxy, FtpClient, std::net::SocketAddr) {
    let fake = FakeBackend::start(behaviour).await;
    let proxy = start_proxy(config(&fake, "")).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    login(&mut client).await;
    let data = client.pasv().await.expect("PASV");
    (fake, proxy, client, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_data_connection_is_opened_when_the_clients_pasv_is_answered() {
    let behaviour = Behaviour::Normal {
        retr_bytes: 100_000,
    };
    let (fake, proxy, mut client, data) = after_pasv(behaviour).await;
    let seen = fake
        .wait_until(WAIT, |seen| seen.commands.iter().any(|c| c == "PASV"))
        .await;
    assert_eq!(seen.commands, ["USER alice", "PASS secret", "PASV"]);
    assert_eq!(download(&mut client, data, "f.bin").await, 100_000);
    let seen = fake.observed();
    assert_eq!(
        seen.commands,
        ["USER alice", "PASS secret", "PASV", "RETR f.bin"]
    );
    proxy.shutdown().await;
}

/// The backend closed the prepared data connection before the transfer (its passive wait
/// timed out): the transfer asks for another one instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_data_connection_the_backend_closed_is_replaced() {
    let behaviour = Behaviour::DropFirstPassive {
        retr_bytes: 100_000,
    };
    let (fake, proxy, mut client, data) = after_pasv(behaviour).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(download(&mut client, data, "f.bin").await, 100_000);
    let seen = fake.observed();
    let pasvs = seen.commands.iter().filter(|c| *c == "PASV").count();
    assert_eq!(pasvs, 2, "{:?}", seen.commands);
    proxy.shutdown().await;
}

/// A backend that greets one connection (the health probe at start) and then accepts no
/// more: its listen queue (backlog 1) fills, and connects to it wait for an answer that
/// never comes, as they do to a real server overrun by a storm of connects.
async fn backend_that_stops_accepting() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("address");
    let listener = socket.listen(1).expect("listen");
    let task = tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let (read, mut write) = stream.into_split();
        let _ = write.write_all(b"220 probe welcome\r\n").await;
        let mut lines = BufReader::new(read).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if line.starts_with("QUIT") {
                let _ = write.write_all(b"221 bye\r\n").await;
                break;
            }
        }
        // Holds the listener, accepting nothing, until the test ends.
        std::future::pending::<()>().await;
    });
    (addr, task)
}

/// Clients that connect and leave before USER, while their early connects wait in the
/// backend's full listen queue. Those connects were left to run out the connect timeout
/// and each failure counted towards the backend's health: a storm of connect/close made
/// a backend look down (readyz failed) and filled its listen queue for the logins behind.
/// Now a connect not yet established is dropped with its client, and the early connect's
/// result counts only when a login takes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_leave_at_once_cost_the_backend_no_connects_and_no_health() {
    let (backend, _held) = backend_that_stops_accepting().await;
    let mut config = proxy_config(backend, 2);
    config.backends[0].connect_timeout = Duration::from_secs(1);
    config.health.probe_interval = Duration::from_secs(3600);
    let proxy = start_proxy(config).await;
    let up = |text: &str| metric(text, "ftpfront_backend_up", &[("backend", "main")]);
    let deadline = std::time::Instant::now() + WAIT;
    while up(&scrape(&proxy).await) != 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the probe never succeeded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for index in 0..40u8 {
        let client = FtpClient::connect(loopback(100 + index), proxy.control_addr).await;
        drop(client);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let waiting = connecting_to(backend.port());
    // Past the connect timeout: a connect left running has failed by now.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = scrape(&proxy).await;
    assert_eq!(waiting, 0, "connects still under way for clients that left");
    assert_eq!(up(&text), 1.0, "the backend looks down after the storm");
    proxy.shutdown().await;
}
