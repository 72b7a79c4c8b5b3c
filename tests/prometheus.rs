//! A real Prometheus server (Debian's `prometheus` package) scrapes an in-process ftpfront
//! while FTP traffic runs and loads dashboards/alerts.yml; then every metric selector of the
//! dashboard and of the alert rules is queried through Prometheus's HTTP API and must return
//! a series (no dead panel, no alert on a metric that does not exist), and the alert rules
//! must all be loaded and evaluate without error.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::observability::{
    alert_names, dashboard_exprs, metric_selectors, repo_file, write_temp,
};
use ftpfront::config::PoolConfig;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// A Prometheus server on loopback with its own data directory; killed when dropped.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` scraping `target` every second and evaluating dashboards/alerts.yml.
    fn start(binary: &Path, target: SocketAddr) -> Prometheus {
        let dir = tempfile::tempdir().expect("tempdir");
        let rules = repo_file("dashboards/alerts.yml");
        let config = format!(
            r#"global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - "{rules}"
scrape_configs:
  - job_name: ftpfront
    static_configs:
      - targets: ["{target}"]
"#,
            rules = rules.display()
        );
        let config = write_temp(dir.path(), "prometheus.yml", &config);
        let data = dir.path().join("data");
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create prometheus.log");
        let addr = free_loopback_addr();
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        Prometheus {
            child,
            addr,
            log,
            _dir: dir,
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics with the server log if Prometheus has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("prometheus exited ({status}):\n{}", self.log_text());
        }
    }

    /// GET `path_and_query` from the HTTP API; the parsed JSON `data` of a success answer.
    /// `None` while the server is not (yet) answering.
    async fn api(&self, path_and_query: &str) -> Option<Value> {
        let exchange = async {
            let mut stream = TcpStream::connect(self.addr).await.ok()?;
            // HTTP/1.0: the server closes the connection after an unchunked body.
            let request = format!(
                "GET {path_and_query} HTTP/1.0\r\nHost: {}\r\n\r\n",
                self.addr
            );
            stream.write_all(request.as_bytes()).await.ok()?;
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.ok()?;
            Some(response)
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .ok()??;
        let response = String::from_utf8_lossy(&response);
        let (head, body) = response.split_once("\r\n\r\n")?;
        if head.starts_with("HTTP/1.1 503") || head.starts_with("HTTP/1.0 503") {
            return None; // still starting
        }
        let json: Value = serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}\n{head}\n{body}"));
        assert_eq!(
            json["status"], "success",
            "GET {path_and_query}: {head}\n{body}"
        );
        Some(json["data"].clone())
    }

    /// The result vector of an instant query; panics if the server does not answer.
    async fn query(&self, promql: &str) -> Vec<Value> {
        let path = format!("/api/v1/query?query={}", url_encode(promql));
        let data = self
            .api(&path)
            .await
            .unwrap_or_else(|| panic!("no answer to {promql}:\n{}", self.log_text()));
        assert_eq!(data["resultType"], "vector", "{promql}: {data}");
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Polls until `done` accepts the result of `promql`, or panics after `within`.
    async fn wait_for(
        &mut self,
        promql: &str,
        within: Duration,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + within;
        let mut last = None;
        loop {
            self.assert_running();
            let path = format!("/api/v1/query?query={}", url_encode(promql));
            if let Some(data) = self.api(&path).await {
                let result = data["result"].as_array().cloned().unwrap_or_default();
                if done(&result) {
                    return result;
                }
                last = Some(result);
            }
            assert!(
                Instant::now() < deadline,
                "{promql} not as expected within {within:?}; last result {last:?}\nprometheus log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A loopback address with a port nobody listens on right now.
fn free_loopback_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

fn url_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The single sample value of an instant-vector result (0 when empty).
fn value(result: &[Value]) -> f64 {
    result
        .first()
        .and_then(|s| s["value"][1].as_str())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

/// STOR `bytes` as `path` over a fresh passive data connection; returns the final reply.
async fn stor(client: &mut FtpClient, path: &str, bytes: &[u8]) -> RawReply {
    let data_addr = client.pasv().await.expect("PASV");
    client.stor(path, data_addr, bytes).await
}

/// Logins, a download, an upload, a wrong password and a protocol error through the proxy.
async fn drive_traffic(backend: &TestBackend, addr: SocketAddr) {
    let mut client = FtpClient::login(loopback(1), addr).await;
    let data = client.pasv().await.expect("PASV");
    let (bytes, done) = client.retr("hello.txt", data).await;
    assert_eq!(bytes, b"hello through the proxy\n");
    assert_eq!(done.code, 226, "{done:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);

    let upload = sample_bytes(200_000, 5);
    let mut client = FtpClient::login(loopback(1), addr).await;
    let done = stor(&mut client, "upload/up.bin", &upload).await;
    assert_eq!(done.code, 226, "{done:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);
    assert_eq!(
        sha256(&read_file(&backend.path("upload/up.bin"))),
        sha256(&upload)
    );

    let mut client = FtpClient::connect(loopback(1), addr).await;
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    let reply = client.cmd("PASS wrong").await;
    assert_eq!(reply.code / 100, 5, "{reply:?}");
    // An overlong command line: a client protocol error (the "protocol errors" panel has
    // no series until one happens, its kinds are not a closed set initialised at start).
    let reply = client.cmd(&"NOOP ".repeat(2000)).await;
    assert_eq!(reply.code, 500, "{reply:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);

    let mut client = FtpClient::login(loopback(1), addr).await;
    assert_eq!(client.cmd("QUIT").await.code, 221);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_every_dashboard_and_alert_selector() {
    let Some(binary) = require_program("prometheus") else {
        return;
    };
    let backend = TestBackend::start().await;
    let mut config = proxy_config(backend.server.addr, 4);
    // A pool, so that the pool panel and alert have their series.
    config.pools = vec![PoolConfig {
        name: "site".into(),
        backends: vec!["main".into()],
        ..PoolConfig::default()
    }];
    let proxy = start_proxy(config).await;
    let metrics_addr = proxy.metrics_addr.expect("metrics enabled");
    let mut prometheus = Prometheus::start(&binary, metrics_addr);

    // Prometheus is up and has scraped ftpfront at least once.
    prometheus
        .wait_for(r#"up{job="ftpfront"}"#, Duration::from_secs(60), |r| {
            value(r) == 1.0
        })
        .await;

    // Traffic while Prometheus scrapes every second, then wait until a scrape has seen it.
    tokio::time::timeout(
        Duration::from_secs(60),
        drive_traffic(&backend, proxy.control_addr),
    )
    .await
    .expect("traffic within 60s");
    for (promql, at_least) in [
        (
            r#"sum(ftpfront_transfers_total{direction="download",result="ok"})"#,
            1.0,
        ),
        (
            r#"sum(ftpfront_transfers_total{direction="upload",result="ok"})"#,
            1.0,
        ),
        (r#"sum(ftpfront_logins_total{result="ok"})"#, 3.0),
        (r#"sum(ftpfront_logins_total{result="failed"})"#, 1.0),
        (r#"sum(ftpfront_protocol_errors_total)"#, 1.0),
    ] {
        prometheus
            .wait_for(promql, Duration::from_secs(30), |r| value(r) >= at_least)
            .await;
    }

    // The alert rules, as Prometheus loaded them: all of alerts.yml, evaluated without error.
    let expected: BTreeSet<String> = alert_names().into_iter().collect();
    assert_eq!(
        expected.len(),
        10,
        "alerts.yml should have 10 alerts: {expected:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let rules = loop {
        prometheus.assert_running();
        let data = prometheus.api("/api/v1/rules?type=alert").await;
        let rules: Vec<Value> = data
            .iter()
            .flat_map(|d| d["groups"].as_array().cloned().unwrap_or_default())
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let all_ok = rules.len() == expected.len()
            && rules
                .iter()
                .all(|r| r["type"] == "alerting" && r["health"] == "ok");
        if all_ok {
            break rules;
        }
        assert!(
            Instant::now() < deadline,
            "alert rules not all loaded with health ok within 30s: {rules:#?}\nprometheus log:\n{}",
            prometheus.log_text()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let loaded: BTreeSet<String> = rules
        .iter()
        .map(|r| r["name"].as_str().unwrap_or("?").to_string())
        .collect();
    assert_eq!(loaded, expected, "alert rules loaded by Prometheus");

    // Every selector of the dashboard and of the alert rules has a series in Prometheus.
    let mut exprs = dashboard_exprs();
    assert!(!exprs.is_empty(), "no expressions in the dashboard");
    for rule in &rules {
        let name = rule["name"].as_str().unwrap_or("?");
        let query = rule["query"].as_str().expect("rule query");
        exprs.push((format!("alert {name}"), query.to_string()));
    }
    let mut used: Vec<(String, Vec<String>)> = Vec::new();
    for (place, expr) in &exprs {
        let selectors = metric_selectors(expr);
        assert!(
            !selectors.is_empty(),
            "{place}: no ftpfront_ selector in {expr}"
        );
        for selector in selectors {
            match used.iter_mut().find(|(s, _)| *s == selector) {
                Some((_, places)) => places.push(place.clone()),
                None => used.push((selector, vec![place.clone()])),
            }
        }
    }
    assert!(
        prometheus.query("ftpfront_no_such_metric").await.is_empty(),
        "a metric ftpfront does not export must have no series"
    );
    let mut dead = Vec::new();
    for (selector, places) in &used {
        let series = prometheus.query(selector).await;
        println!("{selector}: {} series", series.len());
        if series.is_empty() {
            dead.push(format!("{selector} (used by {})", places.join(", ")));
        }
    }
    assert!(
        dead.is_empty(),
        "selectors without a series in Prometheus ({} of {} checked):\n{}",
        dead.len(),
        used.len(),
        dead.join("\n")
    );
    println!(
        "ok: {} selectors of {} expressions have series; {} alert rules healthy",
        used.len(),
        exprs.len(),
        rules.len()
    );

    prometheus.assert_running();
    let _ = prometheus.child.kill().await;
}
