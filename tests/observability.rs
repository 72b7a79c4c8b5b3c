//! The observability artefacts checked with the tools that consume them: the alert rules with
//! `promtool check rules` and their unit tests with `promtool test rules`, a real `/metrics`
//! scrape with `promtool check metrics`, and the Grafana dashboard's structure, plus a check
//! that every metric the dashboard and the alerts use is in a real scrape of ftpfront.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::observability::{repo_file, run_ok, write_temp};
use common::tls::{enable_client_tls, garbage_on_fresh_connection, not_a_client_hello, TestPki};
use ftpfront::config::{PoolConfig, TlsMode};
use ftpfront::server::RunningProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let Some(promtool) = require_program("promtool") else {
        return;
    };
    let checked = run_ok(
        &promtool,
        &["check", "rules", "dashboards/alerts.yml"],
        None,
    );
    assert!(checked.contains("SUCCESS: 10 rules found"), "{checked}");
    run_ok(
        &promtool,
        &["test", "rules", "dashboards/alerts_test.yml"],
        None,
    );
}

/// The `/metrics` body of a scrape, without the HTTP status line and headers.
async fn scrape_body(proxy: &RunningProxy) -> String {
    let response = scrape(proxy).await;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("transfer-encoding"),
        "chunked metrics response: {head}"
    );
    body.to_string()
}

/// Scrapes until `name` has a sample, or panics after 10 s with the last scrape.
async fn wait_for_series(proxy: &RunningProxy, name: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = scrape_body(proxy).await;
        if body.lines().any(|l| l.starts_with(name)) {
            return body;
        }
        assert!(Instant::now() < deadline, "no {name} series:\n{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads and discards whatever the peer sends until it closes or `within` passes.
async fn drain(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    };
    let _ = tokio::time::timeout(within, read).await;
    seen
}

/// Drives a proxy (client TLS optional) through successes and the failures the dashboard and
/// alerts watch, and returns a scrape with a series for each of them.
async fn scrape_after_traffic() -> String {
    let backend = TestBackend::start().await;
    let pki = TestPki::generate();
    let mut config = proxy_config(backend.server.addr, 4);
    enable_client_tls(&mut config, &pki, TlsMode::Optional);
    // A pool, so that the pool panel and alert have their series.
    config.pools = vec![PoolConfig {
        name: "site".into(),
        backends: vec!["main".into()],
        ..PoolConfig::default()
    }];
    let proxy = start_proxy(config).await;
    let addr = proxy.control_addr;

    // A login, a download and a clean QUIT.
    let mut client = FtpClient::login(loopback(1), addr).await;
    let data = client.pasv().await.expect("PASV");
    let (bytes, done) = client.retr("hello.txt", data).await;
    assert_eq!(bytes, b"hello through the proxy\n");
    assert_eq!(done.code, 226, "{done:?}");
    assert_eq!(client.cmd("QUIT").await.code, 221);

    // A wrong password.
    let mut client = FtpClient::connect(loopback(1), addr).await;
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    let reply = client.cmd("PASS wrong").await;
    assert_eq!(reply.code / 100, 5, "{reply:?}");

    // An overlong command line (a client protocol error; the session survives).
    let reply = client.cmd(&"NOOP ".repeat(2000)).await;
    assert_eq!(reply.code, 500, "{reply:?}");

    // A data connection from a foreign IP to a reserved passive port.
    let mut client = FtpClient::login(loopback(1), addr).await;
    let data: SocketAddr = client.pasv().await.expect("PASV");
    if let Ok(mut foreign) = connect_from(loopback(2), data).await {
        drain(&mut foreign, Duration::from_secs(2)).await;
    }
    wait_for_series(&proxy, "ftpfront_data_connections_rejected_total").await;

    // One good and one failed client TLS handshake.
    let implicit = proxy.implicit_addr.expect("implicit FTPS listener");
    let (mut tls_client, greeting) = FtpClient::implicit(implicit, &pki).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    tls_client.expect("QUIT", 221).await;
    assert!(
        garbage_on_fresh_connection(implicit, &not_a_client_hello(), Duration::from_secs(10)).await,
        "garbage instead of a ClientHello must close the connection"
    );

    // The backend goes away: a new session cannot reach it.
    drop(backend);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect to proxy");
    stream
        .write_all(format!("USER {USER}\r\n").as_bytes())
        .await
        .expect("send USER");
    let seen = drain(&mut stream, Duration::from_secs(10)).await;
    let seen = String::from_utf8_lossy(&seen);
    assert!(seen.starts_with("220 "), "{seen}");
    assert!(
        !seen.contains("\n331 "),
        "USER accepted without a backend: {seen}"
    );

    wait_for_series(&proxy, "ftpfront_backend_connect_errors_total").await;
    wait_for_series(&proxy, "ftpfront_tls_handshakes_total").await
}

/// Structural checks of the dashboard, and the metric names of the dashboard and the alerts
/// against a scrape. Arguments: dashboard JSON, alert rules, scrape body.
const DASHBOARD_CHECK: &str = r##"
import json, re, sys

dashboard_path, alerts_path, scrape_path = sys.argv[1:4]
errors = []
with open(dashboard_path) as f:
    d = json.load(f)

DS = "${DS_PROMETHEUS}"
inputs = [i for i in d.get("__inputs", []) if i.get("name") == "DS_PROMETHEUS"]
if not (inputs and inputs[0].get("type") == "datasource" and inputs[0].get("pluginId") == "prometheus"):
    errors.append("no DS_PROMETHEUS datasource input of plugin prometheus")
for key in ("title", "uid", "schemaVersion", "panels", "templating"):
    if key not in d:
        errors.append(f"dashboard has no {key}")

variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
backend = variables.get("backend")
if backend is None:
    errors.append("no `backend` template variable")
elif (backend.get("datasource") or {}).get("uid") != DS:
    errors.append(f"`backend` variable datasource is not {DS}")

def panels(items):
    for p in items:
        yield p
        yield from panels(p.get("panels", []))

exprs = []
ids = []
all_panels = list(panels(d.get("panels", [])))
if not all_panels:
    errors.append("no panels")
for p in all_panels:
    title = p.get("title", "?")
    ids.append(p.get("id"))
    if p.get("type") == "row":
        continue
    if not isinstance(p.get("id"), int):
        errors.append(f"panel {title!r}: no integer id")
    ds = p.get("datasource") or {}
    if ds.get("uid") != DS or ds.get("type") != "prometheus":
        errors.append(f"panel {title!r}: datasource {ds!r} is not the {DS} input")
    unit = ((p.get("fieldConfig") or {}).get("defaults") or {}).get("unit")
    if not unit:
        errors.append(f"panel {title!r}: no fieldConfig.defaults.unit")
    gp = p.get("gridPos") or {}
    if not all(isinstance(gp.get(k), int) for k in ("x", "y", "w", "h")):
        errors.append(f"panel {title!r}: gridPos incomplete")
    targets = p.get("targets") or []
    if not targets:
        errors.append(f"panel {title!r}: no targets")
    ref_ids = [t.get("refId") for t in targets]
    if len(set(ref_ids)) != len(ref_ids) or None in ref_ids:
        errors.append(f"panel {title!r}: refIds missing or repeated: {ref_ids}")
    for t in targets:
        tds = t.get("datasource")
        if tds is not None and tds.get("uid") != DS:
            errors.append(f"panel {title!r} target {t.get('refId')}: datasource {tds!r}")
        if not t.get("expr"):
            errors.append(f"panel {title!r} target {t.get('refId')}: no expr")
        else:
            exprs.append((f"panel {title!r}", t["expr"]))
dupes = sorted({i for i in ids if ids.count(i) > 1}, key=str)
if dupes:
    errors.append(f"panel ids not unique: {dupes}")

for name, v in variables.items():
    q = v.get("query")
    q = q.get("query") if isinstance(q, dict) else q
    if q:
        exprs.append((f"variable {name!r}", q))

with open(alerts_path) as f:
    alerts = f.read()
alert_text = "\n".join(l for l in alerts.splitlines() if not l.lstrip().startswith("#"))
exprs.append(("alerts.yml", alert_text))

# Names in the scrape: sample names, with histogram series mapped to their histogram.
types = {}
samples = set()
with open(scrape_path) as f:
    for line in f:
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            types[name] = kind
        elif line.strip() and not line.startswith("#"):
            samples.add(re.split(r"[{ ]", line, 1)[0])
def exported(name):
    if name in samples:
        return True
    for suffix, kinds in (("_bucket", ("histogram",)), ("_sum", ("histogram", "summary")),
                          ("_count", ("histogram", "summary"))):
        if name.endswith(suffix) and types.get(name[: -len(suffix)]) in kinds:
            return True
    return False

used = {}
for where, expr in exprs:
    for name in re.findall(r"\bftpfront_[a-zA-Z0-9_]+", expr):
        used.setdefault(name, set()).add(where)
if not used:
    errors.append("no ftpfront_ metric used at all")
for name, wheres in sorted(used.items()):
    if not exported(name):
        errors.append(f"{name} (used by {', '.join(sorted(wheres))}) is not in the scrape")

if errors:
    print("\n".join(errors))
    sys.exit(1)
print(f"ok: {len(all_panels)} panels, {len(used)} metric names checked")
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_scrape_passes_promtool_and_covers_dashboard_and_alerts() {
    let promtool = require_program("promtool");
    let python = require_program("python3");
    if promtool.is_none() && python.is_none() {
        return;
    }
    let body = scrape_after_traffic().await;
    assert!(
        body.contains("# TYPE ftpfront_sessions_active gauge"),
        "{body}"
    );

    if let Some(promtool) = &promtool {
        // Lint findings are printed; only a parse error (non-zero exit) fails.
        run_ok(promtool, &["check", "metrics"], Some(&body));
    }

    if let Some(python) = &python {
        let dir = tempfile::tempdir().expect("tempdir");
        let scrape_file = write_temp(dir.path(), "scrape.txt", &body);
        let dashboard = repo_file("dashboards/ftpfront.json");
        let alerts = repo_file("dashboards/alerts.yml");
        let paths = [&dashboard, &alerts, &scrape_file].map(|p| p.to_str().expect("utf-8 path"));
        let out = run_ok(
            python,
            &["-c", DASHBOARD_CHECK, paths[0], paths[1], paths[2]],
            None,
        );
        assert!(out.contains("ok: "), "{out}");
    }
}
