//! Pools of real servers behind ftpfront (vsftpd, proftpd and libunftp, each serving a
//! `marker.txt` that names it): the members, the config of a pool of them, whole sessions
//! and which member served them, and waiting for `/metrics` to settle.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ftp_client::*;
use super::harness::*;
use super::metrics::*;
use super::servers::{start_async, ServerKind, ServerOptions};
use ftpfront::config::Config;
use ftpfront::demo::{start_embedded_backend, StaticUsers};
use ftpfront::server::RunningProxy;

/// The login every member of the pools accepts (vsftpd's and proftpd's anonymous user).
pub const LOGIN: (&str, &str) = ("anonymous", "guest@");

/// A second user every member accepts (vsftpd's and proftpd's other anonymous name), with
/// the password of [`LOGIN`].
pub const SECOND_USER: &str = "ftp";

/// One member of a pool: a running server and the name its marker file holds.
pub struct Member {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// What keeps the server running (stopped when the member is dropped).
    _server: Box<dyn std::any::Any + Send>,
}

impl Member {
    pub async fn program(kind: ServerKind) -> Option<Member> {
        let server = start_async(kind, ServerOptions::default()).await?;
        assert_eq!(server.user, LOGIN.0, "{} login", kind.name());
        std::fs::write(server.root.join("marker.txt"), kind.name()).expect("marker");
        Some(Member {
            name: kind.name(),
            addr: server.addr,
            _server: Box::new(server),
        })
    }

    pub async fn libunftp() -> Member {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("marker.txt"), "libunftp").expect("marker");
        let users = StaticUsers(HashMap::from([
            (LOGIN.0.into(), LOGIN.1.into()),
            (SECOND_USER.into(), LOGIN.1.into()),
        ]));
        let first = free_port_block(40);
        let server = start_embedded_backend(root.path(), users, first..=first + 39)
            .await
            .expect("libunftp");
        Member {
            name: "libunftp",
            addr: server.addr,
            _server: Box::new((server, root)),
        }
    }
}

/// vsftpd, proftpd and libunftp, or `None` (skip) when the programs are missing.
pub async fn three_members() -> Option<Vec<Member>> {
    let vsftpd = Member::program(ServerKind::Vsftpd).await?;
    let proftpd = Member::program(ServerKind::Proftpd).await?;
    Some(vec![vsftpd, proftpd, Member::libunftp().await])
}

/// `[[backends]]` for `(name, address)` pairs and one pool `web` of all of them.
pub fn pool_config(backends: &[(&str, SocketAddr)], policy: &str, connect_timeout: &str) -> Config {
    pool_config_with(backends, policy, connect_timeout, &Extra::default())
}

/// Keys added to the config of [`pool_config`].
#[derive(Default)]
pub struct Extra<'a> {
    /// Lines for `[routing]`.
    pub routing: &'a str,
    /// Lines for the `[[backends]]` table of one backend, by name.
    pub backend: &'a [(&'a str, &'a str)],
    /// Lines for the `[[pools]]` table of the pool `web`.
    pub pool: &'a str,
}

pub fn pool_config_with(
    backends: &[(&str, SocketAddr)],
    policy: &str,
    connect_timeout: &str,
    extra: &Extra,
) -> Config {
    let ports = free_port_block(8);
    let mut text = format!(
        r#"
[listen]
control = "127.0.0.1:0"

[passive]
ports = "{ports}-{last}"
public_address = "127.0.0.1"

[metrics]
listen = "127.0.0.1:0"

[health]
probe_interval = "1s"
probe_timeout = "2s"

[limits]
data_accept_timeout = "5s"
max_sessions_per_ip = 200

[routing]
default = "web"
{routing}

[[pools]]
name = "web"
policy = "{policy}"
backends = [{members}]
{pool}
"#,
        last = ports + 7,
        routing = extra.routing,
        pool = extra.pool,
        members = backends
            .iter()
            .map(|(name, _)| format!("\"{name}\""))
            .collect::<Vec<_>>()
            .join(", "),
    );
    for (name, addr) in backends {
        text.push_str(&format!(
            "\n[[backends]]\nname = \"{name}\"\naddress = \"{addr}\"\nconnect_timeout = \"{connect_timeout}\"\n"
        ));
        for (_, lines) in extra.backend.iter().filter(|(backend, _)| backend == name) {
            text.push_str(lines);
            text.push('\n');
        }
    }
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
}

pub fn named(members: &[Member]) -> Vec<(&str, SocketAddr)> {
    members.iter().map(|m| (m.name, m.addr)).collect()
}

/// Logs in through the proxy and returns the session, logged in, with TYPE I.
pub async fn login(proxy: &RunningProxy) -> FtpClient {
    login_as(proxy, LOGIN.0).await
}

/// [`login`] with `USER user`.
pub async fn login_as(proxy: &RunningProxy, user: &str) -> FtpClient {
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let user = client.cmd(&format!("USER {user}")).await;
    // Some servers log anonymous in at USER already.
    if user.code != 230 {
        assert_eq!(user.code, 331, "{user:?}");
        let pass = client.cmd(&format!("PASS {}", LOGIN.1)).await;
        assert_eq!(pass.code, 230, "{pass:?}");
    }
    client.expect("TYPE I", 200).await;
    client
}

/// Which member served `client`: the content of its marker file.
pub async fn marker(client: &mut FtpClient) -> String {
    let data = client.pasv().await.expect("PASV");
    let (bytes, last) = client.retr("marker.txt", data).await;
    assert_eq!(last.code, 226, "{last:?}");
    String::from_utf8(bytes).expect("marker text")
}

/// One whole session: login, the marker, QUIT.
pub async fn session_marker(proxy: &RunningProxy) -> String {
    let mut client = login(proxy).await;
    let name = marker(&mut client).await;
    client.expect("QUIT", 221).await;
    name
}

pub async fn metric_now(proxy: &RunningProxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(&scrape(proxy).await, name, labels)
}

/// Waits until the health probes saw every member up: the policies order healthy
/// backends first, so a member not probed yet would skew the counts.
pub async fn all_up(proxy: &RunningProxy, members: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = scrape(proxy).await;
        let up = members
            .iter()
            .all(|name| metric(&text, "ftpfront_backend_up", &[("backend", name)]) == 1.0);
        if up {
            return;
        }
        assert!(Instant::now() < deadline, "members not all up:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until no session is counted on any member any more (QUIT is relayed a moment
/// after the client's 221).
pub async fn sessions_drained(proxy: &RunningProxy, members: &[&str]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = scrape(proxy).await;
        let open: f64 = members
            .iter()
            .map(|name| metric(&text, "ftpfront_backend_sessions", &[("backend", name)]))
            .sum();
        if open == 0.0 {
            return;
        }
        assert!(Instant::now() < deadline, "sessions still counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `backend` counts no session (the QUIT just sent reached it).
pub async fn sessions_settle(proxy: &RunningProxy, backend: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric_now(proxy, "ftpfront_backend_sessions", &[("backend", backend)]).await != 0.0 {
        assert!(
            Instant::now() < deadline,
            "{backend}'s session still counted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
