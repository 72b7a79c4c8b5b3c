//! The deployment examples in config/deploy: each one passes the checker of the tool that
//! reads it (`ftpfront check`, `promtool`, `haproxy -c`, `systemd-analyze`, `docker-compose
//! config`, `kubernetes-validate`), and the files agree with each other: published and
//! forwarded ports equal the configured listeners and passive ranges, probes hit the
//! configured metrics port, the sandboxing is what the files' comments promise.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::external::require_program;
use common::tls::TestPki;
use ftpfront::config::{Config, PortRange, TlsMode};
use serde::Deserialize;
use serde_norway::Value;

const DEPLOY: &str = "config/deploy";
/// Where the image (Dockerfile) and the examples put the configuration and the TLS files.
const CONFIG_PATH: &str = "/etc/ftpfront/ftpfront.toml";
const TLS_DIR: &str = "/etc/ftpfront/tls";
/// ftpfront gives transfers this long to finish after SIGTERM (see `ftpfront --help`).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn deploy(name: &str) -> PathBuf {
    repo(DEPLOY).join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("run {command:?}: {e}"))
}

fn assert_success(what: &str, out: &Output) {
    assert!(out.status.success(), "{what} failed:\n{}", output_text(out));
}

fn yaml(path: &Path) -> Value {
    serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml_documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|doc| !doc.is_null())
        .collect()
}

fn str_of<'a>(value: &'a Value, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: expected a string, got {value:?}"))
}

fn u16_of(value: &Value, what: &str) -> u16 {
    value
        .as_u64()
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or_else(|| panic!("{what}: expected a port number, got {value:?}"))
}

fn seq<'a>(value: &'a Value, what: &str) -> &'a [Value] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: expected a list, got {value:?}"))
}

fn strings(value: &Value, what: &str) -> Vec<String> {
    seq(value, what)
        .iter()
        .map(|v| str_of(v, what).to_string())
        .collect()
}

/// "30000-30099" for a contiguous set, else the list.
fn describe(ports: &BTreeSet<u16>) -> String {
    match (ports.first(), ports.last()) {
        (Some(first), Some(last)) if usize::from(last - first) + 1 == ports.len() => {
            if first == last {
                first.to_string()
            } else {
                format!("{first}-{last}")
            }
        }
        _ => format!("{ports:?}"),
    }
}

fn ports(range: PortRange) -> BTreeSet<u16> {
    range.iter().collect()
}

/// "30000-30099" or "21" as a set of ports.
fn port_set(text: &str) -> BTreeSet<u16> {
    let (start, end) = text.split_once('-').unwrap_or((text, text));
    let parse = |p: &str| -> u16 {
        p.trim()
            .parse()
            .unwrap_or_else(|e| panic!("port {p:?} in {text:?}: {e}"))
    };
    let (start, end) = (parse(start), parse(end));
    assert!(start <= end, "reversed range {text:?}");
    (start..=end).collect()
}

/// The certificate variables for a config with TLS on (examples point at /etc/ftpfront/tls,
/// which does not exist here): an operator may override the paths the same way.
fn tls_env(text: &str, pki: &TestPki) -> Vec<(String, String)> {
    let value: toml::Value = toml::from_str(text).expect("TOML");
    let mode = value
        .get("tls")
        .and_then(|tls| tls.get("mode"))
        .and_then(toml::Value::as_str)
        .unwrap_or("off");
    if mode == "off" {
        return Vec::new();
    }
    vec![
        (
            "FTPFRONT_TLS__CERT".to_string(),
            pki.server_cert.display().to_string(),
        ),
        (
            "FTPFRONT_TLS__KEY".to_string(),
            pki.server_key.display().to_string(),
        ),
    ]
}

/// `ftpfront check` (the built binary) on `path` with `env` set; must succeed.
fn ftpfront_check(path: &Path, env: &[(String, String)]) {
    let out = run(Command::new(env!("CARGO_BIN_EXE_ftpfront"))
        .args(["check", "--config"])
        .arg(path)
        .envs(env.iter().map(|(k, v)| (k, v))));
    assert_success(&format!("ftpfront check --config {}", path.display()), &out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("configuration is valid"),
        "{}",
        output_text(&out)
    );
}

/// The effective configuration as ftpfront would run it with `env`.
fn load_config(path: &Path, env: &[(String, String)]) -> Config {
    Config::load_with_vars(path, env.iter().cloned())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn metrics_port(config: &Config, what: &str) -> u16 {
    config
        .metrics
        .listen
        .unwrap_or_else(|| panic!("{what}: metrics.listen is unset"))
        .port()
}

fn deploy_files(extension: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo(DEPLOY))
        .expect("read config/deploy")
        .map(|entry| entry.expect("dir entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == extension))
        .collect();
    files.sort();
    files
}

// ---------------------------------------------------------------------------------------
// Every file

#[test]
fn every_deploy_file_starts_with_a_comment_saying_what_it_is() {
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(repo(DEPLOY)).expect("read config/deploy") {
        let path = entry.expect("dir entry").path();
        let text = read(&path);
        let first = text.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("# ") && first.len() > 20,
            "{} must start with a comment saying what it is, not {first:?}",
            path.display()
        );
        assert!(
            text.contains("Usage") || text.contains("usage"),
            "{} says how to use it",
            path.display()
        );
        names.insert(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for needed in [
        "docker-compose.yml",
        "ftpfront.toml",
        "kubernetes.yaml",
        "ftpfront.service",
        "prometheus.yml",
        "haproxy.cfg",
        "ftpfront-a.toml",
        "ftpfront-b.toml",
    ] {
        assert!(names.contains(needed), "config/deploy/{needed} is missing");
    }
}

/// Every TOML file of config/deploy, and the one embedded in the Kubernetes ConfigMap.
#[test]
fn every_deploy_config_passes_ftpfront_check() {
    let pki = TestPki::generate();
    let files = deploy_files("toml");
    assert!(
        files.len() >= 3,
        "compose and two HAProxy instances: {files:?}"
    );
    for file in &files {
        ftpfront_check(file, &tls_env(&read(file), &pki));
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let embedded = dir.path().join("kubernetes-configmap.toml");
    let text = Kubernetes::load().config_text;
    std::fs::write(&embedded, &text).expect("write ConfigMap TOML");
    ftpfront_check(&embedded, &tls_env(&text, &pki));
}

// ---------------------------------------------------------------------------------------
// Prometheus

#[test]
fn prometheus_config_passes_promtool_with_the_alert_rules() {
    let Some(promtool) = require_program("promtool") else {
        return;
    };
    // From another directory: the rule file path must be relative to prometheus.yml.
    let out = run(Command::new(promtool)
        .current_dir(std::env::temp_dir())
        .args(["check", "config"])
        .arg(deploy("prometheus.yml")));
    assert_success("promtool check config config/deploy/prometheus.yml", &out);
    let text = output_text(&out);
    assert!(
        text.contains("dashboards/alerts.yml") && text.contains("rules found"),
        "promtool checked the alert rules too:\n{text}"
    );
}

#[test]
fn prometheus_scrapes_ftpfront_every_15s_with_the_alert_rules() {
    let config = yaml(&deploy("prometheus.yml"));
    let rules = strings(&config["rule_files"], "rule_files");
    assert!(
        rules.iter().any(|rule| deploy("prometheus.yml")
            .parent()
            .unwrap()
            .join(rule)
            .canonicalize()
            .is_ok_and(|path| path == repo("dashboards/alerts.yml").canonicalize().unwrap())),
        "rule_files names dashboards/alerts.yml relative to prometheus.yml: {rules:?}"
    );
    let jobs = seq(&config["scrape_configs"], "scrape_configs");
    let job = jobs
        .iter()
        .find(|job| job["job_name"].as_str() == Some("ftpfront"))
        .expect("a scrape job named ftpfront");
    assert_eq!(job["scrape_interval"].as_str(), Some("15s"));
    let pki = TestPki::generate();
    let compose_file = deploy("ftpfront.toml");
    let compose_config = load_config(&compose_file, &tls_env(&read(&compose_file), &pki));
    let metrics = metrics_port(&compose_config, "config/deploy/ftpfront.toml");
    let targets: Vec<String> = seq(&job["static_configs"], "static_configs")
        .iter()
        .flat_map(|group| strings(&group["targets"], "targets"))
        .collect();
    assert!(
        targets
            .iter()
            .any(|t| t.rsplit_once(':').map(|(_, p)| p) == Some(&metrics.to_string())),
        "a target on the metrics port {metrics} the compose example publishes: {targets:?}"
    );
    assert!(
        read(&deploy("prometheus.yml")).contains("basic_auth"),
        "the basic_auth example for metrics.basic_auth_user/password"
    );
}

// ---------------------------------------------------------------------------------------
// HAProxy scale-out

#[test]
fn haproxy_config_passes_haproxy_check() {
    let Some(haproxy) = require_program("haproxy") else {
        return;
    };
    let out = run(Command::new(haproxy)
        .arg("-c")
        .arg("-f")
        .arg(deploy("haproxy.cfg")));
    assert_success("haproxy -c -f config/deploy/haproxy.cfg", &out);
    let text = output_text(&out);
    assert!(!text.contains("[WARNING]"), "haproxy warns:\n{text}");
}

/// One `frontend`, `backend`, `defaults` or `global` section: its keyword lines.
#[derive(Debug, Default)]
struct Section {
    kind: String,
    name: String,
    lines: Vec<Vec<String>>,
}

impl Section {
    fn values<'a>(&'a self, keyword: &'a str) -> impl Iterator<Item = &'a [String]> + 'a {
        self.lines
            .iter()
            .filter(move |words| words[0] == keyword)
            .map(|words| &words[1..])
    }
}

fn haproxy_sections(text: &str) -> Vec<Section> {
    let mut sections: Vec<Section> = Vec::new();
    for line in text.lines() {
        let code = line.split('#').next().unwrap_or_default();
        let words: Vec<String> = code.split_whitespace().map(str::to_string).collect();
        if words.is_empty() {
            continue;
        }
        if !line.starts_with(char::is_whitespace) {
            sections.push(Section {
                kind: words[0].clone(),
                name: words.get(1).cloned().unwrap_or_default(),
                lines: Vec::new(),
            });
        } else {
            sections
                .last_mut()
                .expect("a keyword line before any section")
                .lines
                .push(words);
        }
    }
    sections
}

/// `ADDRESS:PORTS` of a bind line.
fn bind_address(bind: &str) -> (IpAddr, BTreeSet<u16>) {
    let (address, ports) = bind.rsplit_once(':').expect("bind ADDRESS:PORT");
    let address = address
        .parse()
        .unwrap_or_else(|e| panic!("bind {bind}: {e}"));
    (address, port_set(ports))
}

struct Server {
    name: String,
    address: IpAddr,
    port: Option<u16>,
    options: Vec<String>,
}

fn servers(backend: &Section) -> Vec<Server> {
    backend
        .values("server")
        .map(|words| {
            let (address, port) = match words[1].parse::<IpAddr>() {
                Ok(address) => (address, None),
                Err(_) => {
                    let addr: std::net::SocketAddr = words[1]
                        .parse()
                        .unwrap_or_else(|e| panic!("server {}: {e}", words[1]));
                    (addr.ip(), Some(addr.port()))
                }
            };
            Server {
                name: words[0].clone(),
                address,
                port,
                options: words[2..].to_vec(),
            }
        })
        .collect()
}

#[test]
fn haproxy_forwards_each_instance_exactly_its_own_passive_range() {
    let sections = haproxy_sections(&read(&deploy("haproxy.cfg")));
    let section = |kind: &str, name: &str| {
        sections
            .iter()
            .find(|s| s.kind == kind && s.name == name)
            .unwrap_or_else(|| panic!("haproxy.cfg has no {kind} {name}"))
    };
    let defaults = section("defaults", "");
    assert_eq!(
        defaults.values("mode").next(),
        Some(&["tcp".to_string()][..])
    );
    let source: IpAddr = defaults
        .values("source")
        .next()
        .expect("defaults: source (the address the instances trust)")[0]
        .parse()
        .expect("source address");

    // Instance name (= server name in haproxy.cfg) -> its config file ftpfront-NAME.toml.
    let instances: BTreeMap<String, Config> = deploy_files("toml")
        .into_iter()
        .filter_map(|path| {
            let name = path.file_stem()?.to_str()?.to_string();
            name.starts_with("ftpfront-")
                .then(|| (name, load_config(&path, &[])))
        })
        .collect();
    assert!(instances.len() >= 2, "ftpfront-a.toml, ftpfront-b.toml");

    let mut control_seen = false;
    let mut forwarded: BTreeMap<String, BTreeSet<u16>> = BTreeMap::new();
    let mut data_address: BTreeMap<String, IpAddr> = BTreeMap::new();
    let mut control_address: BTreeMap<String, (IpAddr, u16)> = BTreeMap::new();
    let mut public = BTreeSet::new();
    for frontend in sections.iter().filter(|s| s.kind == "frontend") {
        let backend_name = &frontend.values("default_backend").next().expect("backend")[0];
        let backend = section("backend", backend_name);
        let servers = servers(backend);
        assert!(!servers.is_empty(), "backend {backend_name} has servers");
        let binds: Vec<(IpAddr, BTreeSet<u16>)> = frontend
            .values("bind")
            .map(|words| bind_address(&words[0]))
            .collect();
        assert!(!binds.is_empty(), "frontend {} binds", frontend.name);
        for server in &servers {
            assert!(
                server.options.iter().any(|o| o == "send-proxy-v2"),
                "server {} of {backend_name} sends a PROXY v2 header",
                server.name
            );
            assert!(
                instances.contains_key(&server.name),
                "server {} names an instance config (ftpfront-a/b.toml)",
                server.name
            );
        }
        let bound: BTreeSet<u16> = binds.iter().flat_map(|(_, p)| p.clone()).collect();
        public.extend(binds.iter().map(|(a, _)| *a));
        if servers.iter().all(|s| s.port.is_none()) {
            // A passive sub-range: to one instance only, keeping the client's port.
            assert_eq!(
                servers.len(),
                1,
                "passive frontend {} goes to ONE instance",
                frontend.name
            );
            let server = &servers[0];
            let ports = forwarded.entry(server.name.clone()).or_default();
            assert!(ports.is_disjoint(&bound), "{} forwarded twice", server.name);
            ports.extend(bound);
            data_address.insert(server.name.clone(), server.address);
        } else {
            assert!(
                servers.iter().all(|s| s.port.is_some()),
                "{backend_name}: all servers with a port"
            );
            assert_eq!(bound, BTreeSet::from([21]), "the control frontend binds 21");
            assert_eq!(
                backend.values("balance").next(),
                Some(&["roundrobin".to_string()][..]),
                "the control port is balanced round robin"
            );
            control_seen = true;
            for server in &servers {
                // Health: /readyz on the instance's metrics port (no PROXY header there).
                let config = &instances[&server.name];
                let check_port = server
                    .options
                    .iter()
                    .position(|o| o == "port")
                    .and_then(|i| server.options.get(i + 1))
                    .unwrap_or_else(|| panic!("{}: check port METRICS_PORT", server.name));
                let metrics = config.metrics.listen.expect("metrics.listen");
                assert_eq!(check_port, &metrics.port().to_string(), "{}", server.name);
                assert!(
                    metrics.ip().is_unspecified() || metrics.ip() == server.address,
                    "{}: metrics reachable by HAProxy",
                    server.name
                );
            }
            assert!(
                backend
                    .values("option")
                    .any(|words| words.join(" ") == "httpchk GET /readyz"),
                "control servers checked with GET /readyz"
            );
            for server in servers {
                control_address.insert(server.name, (server.address, server.port.unwrap()));
            }
        }
    }
    assert!(control_seen, "a frontend for the control port");
    assert_eq!(public.len(), 1, "one public address: {public:?}");
    let public = *public.first().unwrap();

    let mut all_ranges: Vec<(String, BTreeSet<u16>)> = Vec::new();
    for (name, config) in &instances {
        let own = ports(config.passive.ports);
        let got = forwarded.get(name).cloned().unwrap_or_default();
        assert_eq!(
            got,
            own,
            "HAProxy forwards {} to {name}, whose passive.ports = {}",
            describe(&got),
            describe(&own)
        );
        assert_eq!(
            config.passive.advertised_ports, None,
            "{name}: HAProxy keeps the port"
        );
        let (address, port) = control_address
            .get(name)
            .unwrap_or_else(|| panic!("{name} is a server of the control backend"));
        assert_eq!(
            *port,
            config.listen.control.port(),
            "{name}: control port in haproxy.cfg = listen.control"
        );
        assert_eq!(
            Some(address),
            data_address.get(name),
            "{name}: same address for control and data"
        );
        assert!(
            config.listen.proxy_protocol,
            "{name}: listen.proxy_protocol"
        );
        assert!(
            config
                .listen
                .proxy_protocol_from
                .iter()
                .any(|net| net.contains(&source)),
            "{name}: proxy_protocol_from trusts HAProxy's source {source}"
        );
        assert!(
            !config
                .listen
                .proxy_protocol_from
                .iter()
                .any(|net| net.prefix_len() == 0),
            "{name}: proxy_protocol_from must not trust everyone"
        );
        assert_eq!(
            config.passive.public_address,
            Some(public),
            "{name}: passive.public_address = HAProxy's public address"
        );
        all_ranges.push((name.clone(), ports(config.passive.ports)));
    }
    for (i, (a, range_a)) in all_ranges.iter().enumerate() {
        for (b, range_b) in &all_ranges[i + 1..] {
            assert!(
                range_a.is_disjoint(range_b),
                "{a} and {b} have overlapping passive ranges"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------
// systemd

const UNIT: &str = "ftpfront.service";
const INSTALLED_BINARY: &str = "/usr/local/bin/ftpfront";

/// The unit's `Key=value` lines (repeatable keys keep every value).
fn unit_directives(text: &str) -> BTreeMap<String, Vec<String>> {
    let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.starts_with('[') {
            continue;
        }
        if let Some((key, value)) = line.split_once('=') {
            map.entry(key.trim().to_string())
                .or_default()
                .push(value.trim().to_string());
        }
    }
    map
}

/// The unit in a temporary directory with the binary path pointing at the tested binary
/// (verify refuses an ExecStart that does not exist).
fn unit_with_test_binary() -> (tempfile::TempDir, PathBuf) {
    let text = read(&deploy(UNIT));
    assert!(text.contains(&format!(
        "ExecStart={INSTALLED_BINARY} run --config {CONFIG_PATH}"
    )));
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(UNIT);
    std::fs::write(
        &path,
        text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_ftpfront")),
    )
    .expect("write unit");
    (dir, path)
}

#[test]
fn systemd_unit_passes_systemd_analyze_verify() {
    let Some(analyze) = require_program("systemd-analyze") else {
        return;
    };
    let (_dir, unit) = unit_with_test_binary();
    let out = run(Command::new(&analyze).arg("verify").arg(&unit));
    let text = output_text(&out);
    assert_success("systemd-analyze verify ftpfront.service", &out);
    // Unknown keys and unparsable values are only warnings (exit 0): they name the file.
    let complaints: Vec<&str> = text.lines().filter(|l| l.contains(UNIT)).collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complains:\n{text}"
    );

    // The sandbox as systemd itself rates it: "OK" or better (exposure <= 2.0 of 10).
    let out = run(Command::new(&analyze)
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&unit));
    assert_success(
        "systemd-analyze security --offline=yes --threshold=20 ftpfront.service",
        &out,
    );
}

#[test]
fn systemd_unit_runs_sandboxed_with_one_capability() {
    let text = read(&deploy(UNIT));
    let directives = unit_directives(&text);
    let one = |key: &str| -> &str {
        match directives.get(key).map(Vec::as_slice) {
            Some([value]) => value,
            other => panic!("{UNIT}: expected one {key}=, got {other:?}"),
        }
    };
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
        ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictNamespaces", "yes"),
        ("LockPersonality", "yes"),
        ("MemoryDenyWriteExecute", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6 AF_UNIX"),
        ("SystemCallArchitectures", "native"),
        ("Restart", "on-failure"),
        ("LimitNOFILE", "65536"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        (
            "ExecStart",
            &format!("{INSTALLED_BINARY} run --config {CONFIG_PATH}"),
        ),
        (
            "ExecStartPre",
            &format!("{INSTALLED_BINARY} check --config {CONFIG_PATH}"),
        ),
    ] {
        assert_eq!(one(key), value, "{UNIT}: {key}");
    }
    assert!(
        directives["SystemCallFilter"].contains(&"@system-service".to_string()),
        "{UNIT}: SystemCallFilter=@system-service"
    );
    assert_eq!(one("ReadOnlyPaths"), "/etc/ftpfront");
    // Long enough for the graceful shutdown (transfers get up to 30 s).
    let stop = humantime::parse_duration(one("TimeoutStopSec")).expect("TimeoutStopSec");
    assert!(stop > SHUTDOWN_GRACE, "TimeoutStopSec {stop:?}");
    // The binary really has these subcommands and options.
    let help = run(Command::new(env!("CARGO_BIN_EXE_ftpfront")).args(["check", "--help"]));
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
}

// ---------------------------------------------------------------------------------------
// Docker Compose

struct Published {
    host_ip: Option<IpAddr>,
    published: BTreeSet<u16>,
    target: BTreeSet<u16>,
}

/// Compose's short port syntax: `[HOST_IP:]PUBLISHED:TARGET[/tcp]`, ports or ranges.
fn published_port(text: &str) -> Published {
    let text = text.strip_suffix("/tcp").unwrap_or(text);
    let parts: Vec<&str> = text.split(':').collect();
    let (host_ip, published, target) = match parts.as_slice() {
        [published, target] => (None, *published, *target),
        [ip, published, target] => (Some(ip.parse().expect("host IP")), *published, *target),
        _ => panic!("port {text:?}: publish as [HOST_IP:]PUBLISHED:TARGET"),
    };
    Published {
        host_ip,
        published: port_set(published),
        target: port_set(target),
    }
}

#[test]
fn docker_compose_file_passes_docker_compose_config() {
    let Some(compose) = require_program("docker-compose") else {
        return;
    };
    let out = run(Command::new(compose)
        .arg("--file")
        .arg(deploy("docker-compose.yml"))
        .args(["config", "--quiet"]));
    assert_success("docker-compose config", &out);
}

#[test]
fn docker_compose_publishes_what_the_mounted_config_listens_on() {
    let compose = yaml(&deploy("docker-compose.yml"));
    let service = &compose["services"]["ftpfront"];
    assert!(service.is_mapping(), "a service named ftpfront");

    // Built from the repository's Dockerfile.
    let context = deploy("").join(str_of(&service["build"]["context"], "build.context"));
    let dockerfile = str_of(&service["build"]["dockerfile"], "build.dockerfile");
    assert_eq!(
        context.join(dockerfile).canonicalize().ok(),
        repo("Dockerfile").canonicalize().ok(),
        "build context ../.. and the repository's Dockerfile"
    );
    assert_eq!(service["image"].as_str(), Some("ftpfront:latest"));
    assert_eq!(service["restart"].as_str(), Some("unless-stopped"));
    let grace = humantime::parse_duration(str_of(&service["stop_grace_period"], "grace"))
        .expect("stop_grace_period");
    assert!(grace > SHUTDOWN_GRACE, "stop_grace_period {grace:?}");

    // The mounted config: this directory's ftpfront.toml, read-only, where the image reads it.
    let volumes = strings(&service["volumes"], "volumes");
    let mount = |target: &str| -> PathBuf {
        let volume = volumes
            .iter()
            .find(|v| v.split(':').nth(1) == Some(target))
            .unwrap_or_else(|| panic!("a volume mounted at {target}: {volumes:?}"));
        assert!(volume.ends_with(":ro"), "{volume} is read-only");
        deploy(volume.split(':').next().unwrap())
    };
    let config_file = mount(CONFIG_PATH);
    assert!(config_file.is_file(), "{} exists", config_file.display());
    mount(TLS_DIR);
    let dockerfile_text = read(&repo("Dockerfile"));
    assert!(dockerfile_text.contains(&format!("\"--config\", \"{CONFIG_PATH}\"")));

    // The config as the container runs it: the file plus the service's environment.
    let environment: Vec<(String, String)> = service["environment"]
        .as_mapping()
        .expect("environment as a mapping")
        .iter()
        .map(|(k, v)| {
            let name = str_of(k, "variable");
            (name.to_string(), str_of(v, name).to_string())
        })
        .collect();
    for (name, value) in &environment {
        assert!(
            name.starts_with("FTPFRONT_") && name.contains("__"),
            "{name}: only FTPFRONT_<SECTION>__<KEY> variables are read"
        );
        if name == "FTPFRONT_PASSIVE__PUBLIC_ADDRESS" {
            value.parse::<IpAddr>().expect("public address");
        }
    }
    assert!(environment
        .iter()
        .any(|(name, _)| name == "FTPFRONT_PASSIVE__PUBLIC_ADDRESS"));
    let pki = TestPki::generate();
    let file_text = read(&config_file);
    let mut env = environment.clone();
    env.extend(tls_env(&file_text, &pki));
    ftpfront_check(&config_file, &env);
    let config = load_config(&config_file, &env);
    assert_ne!(config.tls.mode, TlsMode::Off, "FTPS in the compose example");
    let file_config: toml::Value = toml::from_str(&file_text).expect("TOML");
    for key in ["cert", "key"] {
        let path = file_config["tls"][key].as_str().expect("tls path");
        assert!(
            Path::new(path).starts_with(TLS_DIR),
            "tls.{key} {path} lies in the mounted {TLS_DIR}"
        );
    }

    // Ports: every listener published one to one, the metrics port on loopback only.
    let published: Vec<Published> = strings(&service["ports"], "ports")
        .iter()
        .map(|p| published_port(p))
        .collect();
    let find = |target: &BTreeSet<u16>| -> &Published {
        published
            .iter()
            .find(|p| &p.target == target)
            .unwrap_or_else(|| panic!("container port(s) {} published", describe(target)))
    };
    let metrics = metrics_port(&config, "compose ftpfront.toml");
    let implicit = config.listen.implicit_tls.expect("implicit FTPS listener");
    let expected = [
        BTreeSet::from([config.listen.control.port()]),
        BTreeSet::from([implicit.port()]),
        ports(config.passive.ports),
        BTreeSet::from([metrics]),
    ];
    for target in &expected {
        let p = find(target);
        assert_eq!(
            &p.published,
            target,
            "published as the same port(s): {}",
            describe(target)
        );
    }
    assert_eq!(
        find(&ports(config.passive.ports)).published,
        port_set("30000-30099"),
        "the documented passive range"
    );
    assert_eq!(find(&BTreeSet::from([21])).published, BTreeSet::from([21]));
    assert_eq!(
        find(&BTreeSet::from([990])).published,
        BTreeSet::from([990])
    );
    let metrics_published = find(&BTreeSet::from([metrics]));
    assert_eq!(
        metrics_published.host_ip,
        Some("127.0.0.1".parse().unwrap()),
        "metrics published on the host's loopback only"
    );
    assert_eq!(published.len(), expected.len(), "nothing else published");
    assert!(
        config.metrics.listen.unwrap().ip().is_unspecified(),
        "metrics listen on all container interfaces, or publishing them is useless"
    );

    // The image's health check, against the metrics port of this config.
    let test = strings(&service["healthcheck"]["test"], "healthcheck.test");
    assert_eq!(test[0], "CMD");
    assert_eq!(test[1], "/usr/local/bin/ftpfront");
    assert_eq!(test[2], "healthcheck");
    let address = test
        .iter()
        .position(|w| w == "--address")
        .map(|i| test[i + 1].clone())
        .expect("healthcheck --address");
    assert_eq!(address, format!("127.0.0.1:{metrics}"));
    assert!(
        dockerfile_text.contains(&format!("\"healthcheck\", \"--address\", \"{address}\"")),
        "the same check as the image's HEALTHCHECK"
    );

    // Non-root (the image's user) with only the capability the binary needs.
    assert_eq!(service["user"].as_str(), Some("10001:10001"));
    assert!(dockerfile_text.contains("USER 10001:10001"));
    assert_eq!(strings(&service["cap_drop"], "cap_drop"), ["ALL"]);
    assert_eq!(
        strings(&service["cap_add"], "cap_add"),
        ["NET_BIND_SERVICE"]
    );
    assert_eq!(service["read_only"].as_bool(), Some(true));
    let security_opt = service["security_opt"]
        .as_sequence()
        .map(|_| strings(&service["security_opt"], "security_opt"))
        .unwrap_or_default();
    assert!(
        !security_opt
            .iter()
            .any(|o| o.starts_with("no-new-privileges")),
        "no-new-privileges strips the binary's file capability (ports 21/990)"
    );
}

// ---------------------------------------------------------------------------------------
// Kubernetes

struct Kubernetes {
    documents: Vec<Value>,
    config_text: String,
}

impl Kubernetes {
    fn load() -> Kubernetes {
        let documents = yaml_documents(&deploy("kubernetes.yaml"));
        let config_maps: Vec<&Value> = documents
            .iter()
            .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
            .collect();
        assert_eq!(config_maps.len(), 1, "one ConfigMap");
        let config_text =
            str_of(&config_maps[0]["data"]["ftpfront.toml"], "ftpfront.toml").to_string();
        Kubernetes {
            documents,
            config_text,
        }
    }

    fn kind(&self, kind: &str) -> Vec<&Value> {
        self.documents
            .iter()
            .filter(|d| d["kind"].as_str() == Some(kind))
            .collect()
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("kubernetes.yaml: no {kind} {name}"))
    }
}

#[test]
fn kubernetes_manifest_passes_kubernetes_validate() {
    let Some(validate) = require_program("kubernetes-validate") else {
        return;
    };
    let out = run(Command::new(validate)
        .args(["--strict", "--quiet"])
        .arg(deploy("kubernetes.yaml")));
    assert_success(
        "kubernetes-validate --strict config/deploy/kubernetes.yaml",
        &out,
    );
}

/// The Deployment's pod and the ConfigMap's config as that pod runs it (with its env).
struct Pod {
    k8s: Kubernetes,
    deployment: Value,
    container: Value,
    config: Config,
    _pki: TestPki,
}

impl Pod {
    fn load() -> Pod {
        let k8s = Kubernetes::load();
        let deployments = k8s.kind("Deployment");
        assert_eq!(deployments.len(), 1, "one Deployment");
        let deployment = deployments[0].clone();
        let container = seq(
            &deployment["spec"]["template"]["spec"]["containers"],
            "containers",
        )
        .iter()
        .find(|c| c["name"].as_str() == Some("ftpfront"))
        .expect("a container named ftpfront")
        .clone();

        // The container's environment overrides the ConfigMap: read both as ftpfront does.
        let pki = TestPki::generate();
        let mut env = tls_env(&k8s.config_text, &pki);
        if let Some(vars) = container["env"].as_sequence() {
            for var in vars {
                let name = str_of(&var["name"], "env name");
                assert!(
                    name.starts_with("FTPFRONT_") && name.contains("__"),
                    "{name}: only FTPFRONT_<SECTION>__<KEY> variables are read"
                );
                env.push((name.to_string(), str_of(&var["value"], name).to_string()));
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("ftpfront.toml");
        std::fs::write(&file, &k8s.config_text).expect("write");
        ftpfront_check(&file, &env);
        let config = load_config(&file, &env);
        Pod {
            k8s,
            deployment,
            container,
            config,
            _pki: pki,
        }
    }

    fn spec(&self) -> &Value {
        &self.deployment["spec"]["template"]["spec"]
    }

    fn metrics_port(&self) -> u16 {
        metrics_port(&self.config, "ConfigMap ftpfront.toml")
    }

    /// Every port the config listens on in the pod.
    fn listeners(&self) -> Vec<u16> {
        let mut listeners = vec![self.config.listen.control.port(), self.metrics_port()];
        listeners.extend(self.config.listen.implicit_tls.map(|a| a.port()));
        listeners.extend(self.config.passive.ports.iter());
        listeners
    }

    /// A container port by number or by name.
    fn resolve_port(&self, port: &Value) -> u16 {
        match port {
            Value::String(name) => seq(&self.container["ports"], "container ports")
                .iter()
                .find(|p| p["name"].as_str() == Some(name))
                .map(|p| u16_of(&p["containerPort"], "containerPort"))
                .unwrap_or_else(|| panic!("no container port named {name}")),
            number => u16_of(number, "port"),
        }
    }

    fn selected_by(&self, service: &Value) -> bool {
        let labels = &self.deployment["spec"]["template"]["metadata"]["labels"];
        service["spec"]["selector"]
            .as_mapping()
            .expect("selector")
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
    }
}

#[test]
fn kubernetes_deployment_runs_one_unprivileged_pod_with_the_configmap() {
    let pod = Pod::load();
    let config = &pod.config;
    let container = &pod.container;
    let spec = pod.spec();

    // One replica, replaced (never two pods behind the one data port), ONE data port.
    assert_eq!(pod.deployment["spec"]["replicas"].as_u64(), Some(1));
    assert_eq!(
        pod.deployment["spec"]["strategy"]["type"].as_str(),
        Some("Recreate")
    );
    assert_eq!(
        config.passive.ports.len(),
        1,
        "ONE data port thanks to port sharing"
    );
    assert!(config.passive.multiplex, "port sharing on");
    let grace = spec["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(Duration::from_secs(grace) > SHUTDOWN_GRACE);

    // Started with the mounted ConfigMap.
    let args = strings(&container["args"], "args");
    let config_arg = args
        .iter()
        .position(|a| a == "--config")
        .map(|i| args[i + 1].clone())
        .expect("args: --config");
    let mounts = seq(&container["volumeMounts"], "volumeMounts");
    let volumes = seq(&spec["volumes"], "volumes");
    let volume = |name: &str| -> &Value {
        volumes
            .iter()
            .find(|v| v["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("volume {name}"))
    };
    let config_mount = mounts
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(&config_arg))
        .expect("the --config file is mounted");
    assert_eq!(config_mount["subPath"].as_str(), Some("ftpfront.toml"));
    assert_eq!(
        volume(str_of(&config_mount["name"], "mount"))["configMap"]["name"],
        pod.k8s.kind("ConfigMap")[0]["metadata"]["name"]
    );

    // The TLS files come from a Secret mounted where the config expects them.
    assert_ne!(config.tls.mode, TlsMode::Off);
    let tls_mount = mounts
        .iter()
        .find(|m| {
            volume(str_of(&m["name"], "mount"))["secret"]["secretName"]
                .as_str()
                .is_some()
        })
        .expect("a Secret volume for the certificate");
    let tls_dir = str_of(&tls_mount["mountPath"], "mountPath");
    let file_config: toml::Value = toml::from_str(&pod.k8s.config_text).expect("TOML");
    for key in ["cert", "key"] {
        let path = file_config["tls"][key].as_str().expect("tls path");
        assert!(
            Path::new(path).starts_with(tls_dir),
            "tls.{key} {path} lies in the Secret mount {tls_dir}"
        );
    }

    // Non-root, read-only, only NET_BIND_SERVICE (the image's binary carries it as a file
    // capability and cannot be executed without it in the bounding set).
    let security = &container["securityContext"];
    let either = |key: &str| -> Value {
        if security[key].is_null() {
            spec["securityContext"][key].clone()
        } else {
            security[key].clone()
        }
    };
    assert_eq!(either("runAsNonRoot").as_bool(), Some(true));
    assert_eq!(either("runAsUser").as_u64(), Some(10001));
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    assert_eq!(strings(&security["capabilities"]["drop"], "drop"), ["ALL"]);
    assert_eq!(
        strings(&security["capabilities"]["add"], "add"),
        ["NET_BIND_SERVICE"]
    );
    // allowPrivilegeEscalation: false stops the file capability from working, so the pod
    // must not need it: every listener on an unprivileged port, each one a containerPort.
    let container_ports: BTreeSet<u16> = seq(&container["ports"], "container ports")
        .iter()
        .map(|p| u16_of(&p["containerPort"], "containerPort"))
        .collect();
    for port in pod.listeners() {
        assert!(port >= 1024, "port {port} needs privileges in the pod");
        assert!(container_ports.contains(&port), "containerPort {port}");
    }

    // Probes on the metrics port the config listens on.
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(
            pod.resolve_port(&get["port"]),
            pod.metrics_port(),
            "{probe}"
        );
    }
    assert!(container["resources"]["requests"].is_mapping());
    assert!(container["resources"]["limits"]["memory"].is_string());
}

#[test]
fn kubernetes_services_expose_what_the_configmap_listens_on() {
    let pod = Pod::load();
    let config = &pod.config;

    // The LoadBalancer: 21, 990 and the data port, client addresses kept.
    let balancers: Vec<&Value> = pod
        .k8s
        .kind("Service")
        .into_iter()
        .filter(|s| s["spec"]["type"].as_str() == Some("LoadBalancer"))
        .collect();
    assert_eq!(balancers.len(), 1, "one LoadBalancer Service");
    let lb = &balancers[0]["spec"];
    assert_eq!(lb["externalTrafficPolicy"].as_str(), Some("Local"));
    assert!(
        pod.selected_by(balancers[0]),
        "the LoadBalancer selects the pod"
    );
    assert_eq!(
        config.passive.public_address,
        Some("203.0.113.10".parse().unwrap())
    );
    if let Some(ip) = lb["loadBalancerIP"].as_str() {
        assert_eq!(
            config.passive.public_address,
            Some(ip.parse().expect("loadBalancerIP")),
            "passive.public_address = loadBalancerIP"
        );
    }
    let exposed: BTreeMap<u16, u16> = seq(&lb["ports"], "Service ports")
        .iter()
        .map(|p| {
            let port = u16_of(&p["port"], "port");
            let target = if p["targetPort"].is_null() {
                port
            } else {
                pod.resolve_port(&p["targetPort"])
            };
            assert_ne!(p["protocol"].as_str(), Some("UDP"));
            (port, target)
        })
        .collect();
    let implicit = config.listen.implicit_tls.expect("implicit FTPS listener");
    let mut expected = BTreeMap::from([(21, config.listen.control.port()), (990, implicit.port())]);
    // The 227 reply names the port as configured: exposed as that same number.
    expected.extend(config.passive.ports.iter().map(|port| (port, port)));
    assert_eq!(
        exposed, expected,
        "LoadBalancer ports -> pod ports (metrics stay inside the cluster)"
    );

    // Metrics for Prometheus: a ClusterIP Service with the scrape annotations.
    let metrics = pod.metrics_port();
    let service = pod.k8s.named("Service", "ftpfront-metrics");
    assert!(pod.selected_by(service));
    assert_eq!(service["spec"]["type"].as_str(), Some("ClusterIP"));
    let annotations = &service["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(metrics.to_string().as_str())
    );
    let targets: Vec<u16> = seq(&service["spec"]["ports"], "ports")
        .iter()
        .map(|p| pod.resolve_port(&p["targetPort"]))
        .collect();
    assert_eq!(targets, [metrics]);
}
