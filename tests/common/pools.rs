//! Pools of the marker-serving members (`members.rs`) behind ftpfront: the config of a pool
//! of them, whole sessions and which member served them, and waiting for `/metrics` to
//! settle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::ftp_client::*;
use super::harness::*;
use super::members::*;
use super::metrics::*;
use ftpfront::config::Config;
use ftpfront::server::RunningProxy;

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
    /// The body of `[health]`; `None`: probes every second.
    pub health: Option<&'a str>,
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
{health}

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
        health = extra
            .health
            .unwrap_or("probe_interval = \"1s\"\nprobe_timeout = \"2s\""),
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
