//! Configuration: typed settings, loading (defaults <- TOML file <- `FTPFRONT_<SECTION>__<KEY>` env), validation with file:line errors, and the effective-config rendering for `ftpfront check`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

mod env;
mod load;
mod port_range;
mod problem;
mod render;

#[cfg(test)]
mod test_support;

pub use port_range::{PortRange, PortRangeError};
pub use problem::{ConfigError, Origin, Problem};

// ---------------------------------------------------------------------------
// Typed configuration
// ---------------------------------------------------------------------------

/// The whole configuration; `config/ftpfront.toml` is the commented example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: ListenConfig,
    pub passive: PassiveConfig,
    pub tls: TlsConfig,
    pub backends: Vec<BackendConfig>,
    pub routing: RoutingConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub shutdown: ShutdownConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
}

/// `[shutdown]`: how a SIGTERM/SIGINT ends the proxy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long running transfers may go on after the signal; then they are cut (421).
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(30),
        }
    }
}

/// `[health]`: the periodic backend probe behind `ftpfront_backend_up` and `/readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// How often each backend is probed (TCP connect, TLS if configured, 220 greeting).
    #[serde(with = "humantime_serde")]
    pub probe_interval: Duration,
    /// How long one probe may take before the backend counts as down.
    #[serde(with = "humantime_serde")]
    pub probe_timeout: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
        }
    }
}

/// `[listen]`: the client-facing control listeners.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Plain FTP (and, later, explicit AUTH TLS).
    pub control: SocketAddr,
    /// Implicit FTPS listener (TLS from the first byte).
    pub implicit_tls: Option<SocketAddr>,
    /// Every connection on the control, implicit and passive listeners starts with a
    /// PROXY v1/v2 header naming the real client (behind a load balancer).
    pub proxy_protocol: bool,
    /// The only peers allowed to connect while `proxy_protocol` is on (the load balancers).
    pub proxy_protocol_from: Vec<IpNet>,
    /// How long a trusted peer may take to send its PROXY header.
    #[serde(with = "humantime_serde")]
    pub proxy_protocol_timeout: Duration,
}

impl Default for ListenConfig {
    fn default() -> Self {
        Self {
            control: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 21)),
            implicit_tls: None,
            proxy_protocol: false,
            proxy_protocol_from: Vec::new(),
            proxy_protocol_timeout: Duration::from_secs(5),
        }
    }
}

/// `[passive]`: the passive port range the NAT forwards, and what 227/229 replies announce.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveConfig {
    pub ports: PortRange,
    /// Written into 227 replies; `None`: the local address of the control connection.
    pub public_address: Option<IpAddr>,
    pub bind: IpAddr,
    /// Share one port between sessions from different client IPs.
    pub multiplex: bool,
    /// What 227/229 announce when the NAT translates ports; same length as `ports`.
    pub advertised_ports: Option<PortRange>,
    /// Split horizon: the first rule whose `clients` contains the client IP wins.
    pub public_address_by_client: Vec<SplitHorizonRule>,
}

impl Default for PassiveConfig {
    fn default() -> Self {
        Self {
            ports: PortRange {
                start: 30000,
                end: 30099,
            },
            public_address: None,
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            multiplex: true,
            advertised_ports: None,
            public_address_by_client: Vec::new(),
        }
    }
}

impl PassiveConfig {
    /// The address to announce to `client`: a matching split-horizon rule, else
    /// `public_address` (`None`: use the local address of the control connection).
    pub fn public_address_for(&self, client: IpAddr) -> Option<IpAddr> {
        // IPv4 clients on a dual-stack socket show up as ::ffff:a.b.c.d.
        let client = client.to_canonical();
        self.public_address_by_client
            .iter()
            .find(|rule| rule.clients.iter().any(|net| net.contains(&client)))
            .map(|rule| rule.address)
            .or(self.public_address)
    }

    /// The port to announce for local passive port `port`: its counterpart in
    /// `advertised_ports`, or `port` itself. `None` when `port` is outside `ports`.
    pub fn advertised_port(&self, port: u16) -> Option<u16> {
        let offset = self.ports.offset_of(port)?;
        match self.advertised_ports {
            Some(advertised) => advertised.port_at(offset),
            None => Some(port),
        }
    }
}

/// One `[[passive.public_address_by_client]]` rule.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SplitHorizonRule {
    pub clients: Vec<IpNet>,
    pub address: IpAddr,
}

impl Default for SplitHorizonRule {
    fn default() -> Self {
        // Unspecified on purpose: validation rejects a rule without an address.
        Self {
            clients: Vec::new(),
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// `[tls]`: TLS termination towards clients (explicit AUTH TLS and implicit FTPS).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    pub mode: TlsMode,
    /// PEM certificate chain and private key; required unless `mode = "off"`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Refuse data connections that do not resume the TLS session (as vsftpd's
    /// `require_ssl_reuse`); off by default because Python's ftplib never resumes.
    pub require_data_session_reuse: bool,
    /// Highest TLS version offered to clients; `None`: TLS 1.3.
    pub max_version: Option<TlsVersion>,
}

/// A TLS protocol version, written "1.2" or "1.3".
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum TlsVersion {
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum TlsMode {
    #[default]
    Off,
    Optional,
    /// No USER before AUTH TLS.
    Required,
}

/// One `[[backends]]` entry: an FTP server ftpfront proxies to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct BackendConfig {
    pub name: String,
    /// "host:port"; host may be a DNS name, resolved at connect time.
    pub address: String,
    pub tls: BackendTls,
    /// Verify the backend's certificate (`false` for legacy self-signed servers).
    pub tls_verify: bool,
    /// PEM CA certificates to verify the backend with; `None`: the system's CAs.
    pub tls_ca_file: Option<PathBuf>,
    /// Name sent as SNI and verified in the certificate; `None`: the host of `address`.
    pub tls_server_name: Option<String>,
    /// Highest TLS version towards the backend ("1.2" pins servers that need it).
    pub tls_max_version: Option<TlsVersion>,
    pub data_mode: DataMode,
    /// Connect data to the control peer address, ignoring the address in the backend's 227.
    pub use_control_address: bool,
    pub proxy_protocol: BackendProxyProtocol,
    /// Address written into PORT/EPRT towards this backend when `data_mode = active`;
    /// `None`: the local address of the backend control connection.
    pub active_address: Option<IpAddr>,
    /// Ports ftpfront listens on for active-mode backend data; `None`: ephemeral.
    pub active_ports: Option<PortRange>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Maximum wait for a backend reply to a command.
    #[serde(with = "humantime_serde")]
    pub reply_timeout: Duration,
}

impl Default for BackendConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            address: String::new(),
            tls: BackendTls::None,
            tls_verify: true,
            tls_ca_file: None,
            tls_server_name: None,
            tls_max_version: None,
            data_mode: DataMode::Passive,
            use_control_address: true,
            proxy_protocol: BackendProxyProtocol::Off,
            active_address: None,
            active_ports: None,
            connect_timeout: Duration::from_secs(10),
            reply_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendTls {
    #[default]
    None,
    Explicit,
    Implicit,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum DataMode {
    #[default]
    Passive,
    Active,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum BackendProxyProtocol {
    #[default]
    Off,
    V1,
    V2,
}

/// `[routing]`: which backend a login goes to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    pub default: Option<String>,
    pub policy: RoutingPolicy,
    /// User name -> backend name.
    pub users: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum RoutingPolicy {
    #[default]
    RoundRobin,
    LeastConn,
    Random,
    First,
}

/// `[metrics]`: the Prometheus / health endpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
    /// HTTP basic auth for `/metrics` (both or neither); `/healthz` and `/readyz` stay
    /// open for orchestrator probes.
    pub basic_auth_user: Option<String>,
    pub basic_auth_password: Option<String>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 9477))),
            basic_auth_user: None,
            basic_auth_password: None,
        }
    }
}

/// `[limits]`: resource limits and client access policy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    pub max_sessions: usize,
    pub max_sessions_per_ip: usize,
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub data_accept_timeout: Duration,
    pub max_line_length: usize,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub client_active_mode: ClientActiveMode,
    /// Failed logins on one control connection before it is closed (421), as servers do
    /// (vsftpd `max_login_fails`, proftpd `MaxLoginAttempts`); 0 turns the limit off.
    pub max_login_attempts: u32,
    /// Failed logins from one address (IPv6: one /64) within `failed_login_window` that
    /// ban it for `ban_duration`; 0 turns bans off.
    pub max_failed_logins: u32,
    #[serde(with = "humantime_serde")]
    pub failed_login_window: Duration,
    #[serde(with = "humantime_serde")]
    pub ban_duration: Duration,
}

const ALLOW_ALL_V4: Ipv4Net = Ipv4Net::new_assert(Ipv4Addr::UNSPECIFIED, 0);
const ALLOW_ALL_V6: Ipv6Net = Ipv6Net::new_assert(Ipv6Addr::UNSPECIFIED, 0);

/// Bounds of `limits.max_line_length`: below 512 real clients break (RFC 959 paths),
/// above 64 KiB a line buffer per session becomes a memory lever for attackers.
const MAX_LINE_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 512..=65536;

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_sessions: 10000,
            max_sessions_per_ip: 64,
            idle_timeout: Duration::from_secs(300),
            data_accept_timeout: Duration::from_secs(30),
            max_line_length: 4096,
            allow: vec![IpNet::V4(ALLOW_ALL_V4), IpNet::V6(ALLOW_ALL_V6)],
            deny: Vec::new(),
            client_active_mode: ClientActiveMode::SameIp,
            max_login_attempts: 3,
            max_failed_logins: 10,
            failed_login_window: Duration::from_secs(600),
            ban_duration: Duration::from_secs(600),
        }
    }
}

/// Policy for client PORT/EPRT.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum ClientActiveMode {
    Deny,
    /// Only to the control peer's IP and ports >= 1024 (no FTP bounce).
    #[default]
    SameIp,
    Any,
}

/// `[log]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing `EnvFilter` directive string.
    pub filter: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_string(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Config {
    /// Checks every rule and reports all problems at once (key paths, no locations).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        self.reject_unbuilt_features(&mut problems);
        // Port 0 (ephemeral) is legitimate in tests, so [listen] checks only PROXY settings.
        check_listen(&self.listen, &mut problems);
        check_passive(&self.passive, &mut problems);
        self.check_tls(&mut problems);
        check_backends(&self.backends, &mut problems);
        self.check_routing(&mut problems);
        check_limits(&self.limits, &mut problems);
        check_duration(
            &["health", "probe_interval"],
            self.health.probe_interval,
            &mut problems,
        );
        check_duration(
            &["health", "probe_timeout"],
            self.health.probe_timeout,
            &mut problems,
        );
        check_duration(&["shutdown", "grace"], self.shutdown.grace, &mut problems);
        check_metrics(&self.metrics, &mut problems);
        check_log(&self.log, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|backend| backend.name == name)
    }

    /// routing.default, or the only backend's name when exactly one backend exists and no default is set.
    pub fn default_backend(&self) -> Option<&str> {
        match (&self.routing.default, self.backends.as_slice()) {
            (Some(name), _) => Some(name),
            (None, [only]) => Some(&only.name),
            (None, _) => None,
        }
    }
}

// ---------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------

/// PROXY headers are trusted only from listed peers: on without a list would refuse every
/// connection, and a list without the switch would be ignored.
fn check_listen(listen: &ListenConfig, problems: &mut Vec<Problem>) {
    match (listen.proxy_protocol, listen.proxy_protocol_from.is_empty()) {
        (true, true) => problems.push(Problem::new(
            &["listen", "proxy_protocol_from"],
            "must list the load balancers' addresses (CIDRs) while listen.proxy_protocol = true; every other peer is refused".to_string(),
        )),
        (false, false) => problems.push(Problem::new(
            &["listen", "proxy_protocol_from"],
            "is unused while listen.proxy_protocol = false; set listen.proxy_protocol = true, or remove it".to_string(),
        )),
        _ => {}
    }
    // Peers are compared unmapped (a dual-stack listener sees ::ffff:a.b.c.d), so a mapped
    // network would never match.
    for net in &listen.proxy_protocol_from {
        if let IpNet::V6(v6) = net {
            if v6.network().to_ipv4_mapped().is_some() && v6.prefix_len() >= 96 {
                problems.push(Problem::new(
                    &["listen", "proxy_protocol_from"],
                    format!("{net}: write IPv4-mapped networks as IPv4 (e.g. \"10.0.0.0/8\")"),
                ));
            }
        }
    }
    check_duration(
        &["listen", "proxy_protocol_timeout"],
        listen.proxy_protocol_timeout,
        problems,
    );
}

const POLICY_MISSING: &str = "routing policies among backend groups are not available yet";

impl Config {
    /// Keys named for later work are accepted only at their inert value, so no
    /// setting silently does nothing. Remove each check when its feature lands.
    fn reject_unbuilt_features(&self, problems: &mut Vec<Problem>) {
        let inert = |path: &[&str], missing: &str, fix: &str| {
            Problem::new(path, format!("{missing}; {fix}"))
        };
        if self.routing.policy != RoutingPolicy::RoundRobin {
            let fix = "remove routing.policy or set it to \"round_robin\"";
            problems.push(inert(&["routing", "policy"], POLICY_MISSING, fix));
        }
    }

    /// TLS settings only mean something together: a certificate without a TLS mode, or a
    /// TLS mode (or implicit listener) without a readable certificate, is an error.
    fn check_tls(&self, problems: &mut Vec<Problem>) {
        let tls = &self.tls;
        let wanted = tls.mode != TlsMode::Off;
        if self.listen.implicit_tls.is_some() && !wanted {
            let message = "an implicit FTPS listener needs TLS: set tls.mode = \"optional\" or \"required\" and tls.cert/tls.key";
            problems.push(Problem::new(
                &["listen", "implicit_tls"],
                message.to_string(),
            ));
        }
        for (key, path) in [("cert", &tls.cert), ("key", &tls.key)] {
            match (wanted, path) {
                (true, None) => problems.push(Problem::new(
                    &["tls", key],
                    format!("is required with tls.mode = \"{}\"", tls_mode_name(tls.mode)),
                )),
                (false, Some(_)) => problems.push(Problem::new(
                    &["tls", key],
                    "is unused while tls.mode = \"off\"; set tls.mode = \"optional\" or \"required\", or remove it".to_string(),
                )),
                _ => {}
            }
        }
        if !wanted && (tls.require_data_session_reuse || tls.max_version.is_some()) {
            let message = "is unused while tls.mode = \"off\"".to_string();
            let key = if tls.require_data_session_reuse {
                "require_data_session_reuse"
            } else {
                "max_version"
            };
            problems.push(Problem::new(&["tls", key], message));
        }
        if let (true, Some(cert), Some(key)) = (wanted, &tls.cert, &tls.key) {
            if let Err(e) = crate::tls::load_certs(cert) {
                problems.push(Problem::new(&["tls", "cert"], e.to_string()));
            }
            if let Err(e) = crate::tls::load_key(key) {
                problems.push(Problem::new(&["tls", "key"], e.to_string()));
            }
        }
    }

    fn check_routing(&self, problems: &mut Vec<Problem>) {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let known = names.join(", ");
        let unknown = |name: &str| {
            format!("names backend \"{name}\", which does not exist; configured backends: {known}")
        };
        if let Some(name) = &self.routing.default {
            if self.backend(name).is_none() {
                problems.push(Problem::new(&["routing", "default"], unknown(name)));
            }
        } else if self.backends.len() > 1 {
            let message = format!(
                "{} backends are configured and none is the default; set routing.default to one of: {known}",
                self.backends.len()
            );
            problems.push(Problem::new(&["routing", "default"], message));
        }
        for (user, name) in &self.routing.users {
            if self.backend(name).is_none() {
                problems.push(Problem::new(&["routing", "users", user], unknown(name)));
            }
        }
    }
}

fn check_passive(passive: &PassiveConfig, problems: &mut Vec<Problem>) {
    check_port_range(&["passive", "ports"], passive.ports, problems);
    if let Some(advertised) = passive.advertised_ports {
        check_port_range(&["passive", "advertised_ports"], advertised, problems);
        if advertised.len() != passive.ports.len() {
            let message = format!(
                "has {} ports but passive.ports has {}; both ranges must have the same length (the n-th local port is announced as the n-th advertised port)",
                advertised.len(),
                passive.ports.len()
            );
            problems.push(Problem::new(&["passive", "advertised_ports"], message));
        }
    }
    if let Some(address) = passive.public_address {
        check_public_address(&["passive", "public_address"], address, problems);
    }
    for (index, rule) in passive.public_address_by_client.iter().enumerate() {
        let i = index.to_string();
        let path = |key| ["passive", "public_address_by_client", &i, key];
        if rule.clients.is_empty() {
            let message = "must list at least one client network, e.g. [\"192.168.0.0/16\"]";
            problems.push(Problem::new(&path("clients"), message));
        }
        check_public_address(&path("address"), rule.address, problems);
    }
}

fn check_public_address(path: &[&str], address: IpAddr, problems: &mut Vec<Problem>) {
    // Clients connect to this address: 0.0.0.0, :: or a multicast group can never work.
    if address.is_unspecified() || address.is_multicast() {
        let message = format!(
            "{address} cannot be announced to clients; set the specific (public) address clients connect to, e.g. \"203.0.113.10\""
        );
        problems.push(Problem::new(path, message));
    }
}

fn check_port_range(path: &[&str], range: PortRange, problems: &mut Vec<Problem>) {
    if let Err(error) = PortRange::new(range.start, range.end) {
        problems.push(Problem::new(path, error.to_string()));
    }
}

fn check_backends(backends: &[BackendConfig], problems: &mut Vec<Problem>) {
    if backends.is_empty() {
        let message = "at least one [[backends]] entry is required, e.g. [[backends]] name = \"main\" address = \"10.0.0.5:21\"";
        problems.push(Problem::new(&["backends"], message));
    }
    let mut first_index: HashMap<&str, usize> = HashMap::new();
    for (index, backend) in backends.iter().enumerate() {
        let i = index.to_string();
        if backend.name.trim().is_empty() {
            let message = "must not be empty: every backend needs a name (routing refers to it)";
            problems.push(Problem::new(&["backends", &i, "name"], message));
        } else if let Some(first) = first_index.get(backend.name.as_str()) {
            let message = format!(
                "duplicate backend name \"{}\" (also used by backends[{first}]); names must be unique",
                backend.name
            );
            problems.push(Problem::new(&["backends", &i, "name"], message));
        } else {
            first_index.insert(&backend.name, index);
        }
        check_backend(&i, backend, problems);
    }
}

fn check_backend(i: &str, backend: &BackendConfig, problems: &mut Vec<Problem>) {
    let path = |key| ["backends", i, key];
    if let Err(reason) = split_host_port(&backend.address) {
        let message = format!(
            "invalid backend address \"{}\": {reason}; expected HOST:PORT, e.g. \"10.0.0.5:21\", \"ftp.internal:21\" or \"[2001:db8::5]:21\"",
            backend.address
        );
        problems.push(Problem::new(&path("address"), message));
    }
    for (key, duration) in [
        ("connect_timeout", backend.connect_timeout),
        ("reply_timeout", backend.reply_timeout),
    ] {
        check_duration(&path(key), duration, problems);
    }
    if let Some(ports) = backend.active_ports {
        check_port_range(&path("active_ports"), ports, problems);
    }
    check_backend_tls(i, backend, problems);
    if backend.data_mode == DataMode::Passive {
        // These only shape PORT/EPRT, which passive mode never sends.
        let unused = [
            ("active_address", backend.active_address.is_some()),
            ("active_ports", backend.active_ports.is_some()),
        ];
        for (key, _) in unused.iter().filter(|(_, set)| *set) {
            let message = format!(
                "is only used with data_mode = \"active\"; remove it or set backends[{i}].data_mode = \"active\""
            );
            problems.push(Problem::new(&path(key), message));
        }
    }
}

fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Off => "off",
        TlsMode::Optional => "optional",
        TlsMode::Required => "required",
    }
}

/// The TLS keys of a backend mean nothing for a plain backend; a CA file must parse.
fn check_backend_tls(i: &str, backend: &BackendConfig, problems: &mut Vec<Problem>) {
    let path = |key| ["backends", i, key];
    if backend.tls == BackendTls::None {
        let unused = [
            ("tls_verify", !backend.tls_verify),
            ("tls_ca_file", backend.tls_ca_file.is_some()),
            ("tls_server_name", backend.tls_server_name.is_some()),
            ("tls_max_version", backend.tls_max_version.is_some()),
        ];
        for (key, _) in unused.iter().filter(|(_, set)| *set) {
            let message = format!(
                "is only used with TLS towards the backend; set backends[{i}].tls = \"explicit\" or \"implicit\", or remove it"
            );
            problems.push(Problem::new(&path(key), message));
        }
        return;
    }
    if let Some(ca) = &backend.tls_ca_file {
        if let Err(e) = crate::tls::load_certs(ca) {
            problems.push(Problem::new(&path("tls_ca_file"), e.to_string()));
        }
    }
}

/// Splits "host:port" ("[v6]:port" for IPv6) and checks both halves.
fn split_host_port(address: &str) -> Result<(&str, u16), String> {
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or("an IPv6 address must be followed by :PORT, as in [ADDRESS]:PORT")?;
        host.parse::<Ipv6Addr>()
            .map_err(|_| format!("\"{host}\" is not an IPv6 address"))?;
        (host, port)
    } else {
        let (host, port) = address.rsplit_once(':').ok_or("the :PORT is missing")?;
        if host.contains(':') {
            return Err("an IPv6 address must be in brackets, as in [ADDRESS]:PORT".to_string());
        }
        check_host_name(host)?;
        (host, port)
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("\"{port}\" is not a port number (1-65535)")),
        Ok(port) => Ok((host, port)),
    }
}

fn check_host_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host is missing".to_string());
    }
    let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if host.chars().all(valid) {
        Ok(())
    } else {
        Err(format!("\"{host}\" is not a host name or IPv4 address"))
    }
}

fn check_metrics(metrics: &MetricsConfig, problems: &mut Vec<Problem>) {
    if metrics.basic_auth_user.is_some() != metrics.basic_auth_password.is_some() {
        let message =
            "basic auth needs both metrics.basic_auth_user and metrics.basic_auth_password";
        problems.push(Problem::new(&["metrics", "basic_auth_user"], message));
    }
}

fn check_duration(path: &[&str], duration: Duration, problems: &mut Vec<Problem>) {
    if duration.is_zero() {
        let message = "must be greater than 0, e.g. \"30s\" or \"5m\"";
        problems.push(Problem::new(path, message));
    }
}

fn check_limits(limits: &LimitsConfig, problems: &mut Vec<Problem>) {
    for (key, value) in [
        ("max_sessions", limits.max_sessions),
        ("max_sessions_per_ip", limits.max_sessions_per_ip),
    ] {
        if value == 0 {
            let message = "must be at least 1 (0 would refuse every client)";
            problems.push(Problem::new(&["limits", key], message));
        }
    }
    check_duration(&["limits", "idle_timeout"], limits.idle_timeout, problems);
    let accept = limits.data_accept_timeout;
    check_duration(&["limits", "data_accept_timeout"], accept, problems);
    if !MAX_LINE_LENGTH_RANGE.contains(&limits.max_line_length) {
        let message = format!(
            "must be between {} and {} (got {})",
            MAX_LINE_LENGTH_RANGE.start(),
            MAX_LINE_LENGTH_RANGE.end(),
            limits.max_line_length
        );
        problems.push(Problem::new(&["limits", "max_line_length"], message));
    }
    check_bans(limits, problems);
    if limits.allow.is_empty() {
        let message = "must not be empty (no client could connect); use [\"0.0.0.0/0\", \"::/0\"] to allow every client and limits.deny to exclude some";
        problems.push(Problem::new(&["limits", "allow"], message));
    }
}

/// Above this a failed-login counter no longer stops anyone guessing passwords.
const MAX_FAILED_LOGINS_LIMIT: u32 = 10_000;

fn check_bans(limits: &LimitsConfig, problems: &mut Vec<Problem>) {
    if limits.max_login_attempts > MAX_FAILED_LOGINS_LIMIT {
        let message = format!(
            "must be at most {MAX_FAILED_LOGINS_LIMIT} (got {}); 0 turns the limit off",
            limits.max_login_attempts
        );
        problems.push(Problem::new(&["limits", "max_login_attempts"], message));
    }
    if limits.max_failed_logins > MAX_FAILED_LOGINS_LIMIT {
        let message = format!(
            "must be at most {MAX_FAILED_LOGINS_LIMIT} (got {}); 0 turns bans off",
            limits.max_failed_logins
        );
        problems.push(Problem::new(&["limits", "max_failed_logins"], message));
    }
    if limits.max_failed_logins > 0 {
        let window = limits.failed_login_window;
        check_duration(&["limits", "failed_login_window"], window, problems);
        check_duration(&["limits", "ban_duration"], limits.ban_duration, problems);
    }
}

fn check_log(log: &LogConfig, problems: &mut Vec<Problem>) {
    if log.filter.trim().is_empty() {
        let message = "must not be empty, e.g. \"info\" or \"info,ftpfront=debug\"";
        problems.push(Problem::new(&["log", "filter"], message));
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    // --- defaults and parsing ---------------------------------------------

    #[test]
    fn defaults_match_the_contract() {
        let config = Config::default();
        assert_eq!(config.listen.control, "0.0.0.0:21".parse().unwrap());
        assert_eq!(config.listen.implicit_tls, None);
        assert!(!config.listen.proxy_protocol);
        assert!(config.listen.proxy_protocol_from.is_empty());
        assert_eq!(config.passive.ports, PortRange::new(30000, 30099).unwrap());
        assert_eq!(config.passive.public_address, None);
        assert_eq!(config.passive.bind, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert!(config.passive.multiplex);
        assert_eq!(config.passive.advertised_ports, None);
        assert!(config.passive.public_address_by_client.is_empty());
        assert_eq!(config.tls, TlsConfig::default());
        assert_eq!(config.tls.mode, TlsMode::Off);
        assert!(config.backends.is_empty());
        assert_eq!(config.routing.default, None);
        assert_eq!(config.routing.policy, RoutingPolicy::RoundRobin);
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9477".parse().unwrap())
        );
        let limits = &config.limits;
        assert_eq!(
            (limits.max_sessions, limits.max_sessions_per_ip),
            (10000, 64)
        );
        assert_eq!(limits.idle_timeout, Duration::from_secs(300));
        assert_eq!(limits.data_accept_timeout, Duration::from_secs(30));
        assert_eq!(limits.max_line_length, 4096);
        let allow_all: Vec<IpNet> = vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()];
        assert_eq!(limits.allow, allow_all);
        assert!(limits.deny.is_empty());
        assert_eq!(limits.client_active_mode, ClientActiveMode::SameIp);
        assert_eq!(limits.max_login_attempts, 3);
        assert_eq!(limits.max_failed_logins, 10);
        assert_eq!(limits.failed_login_window, Duration::from_secs(600));
        assert_eq!(limits.ban_duration, Duration::from_secs(600));
        assert_eq!(config.log.format, LogFormat::Text);
        assert_eq!(config.log.filter, "info");

        let backend = BackendConfig::default();
        assert_eq!(backend.tls, BackendTls::None);
        assert_eq!(backend.data_mode, DataMode::Passive);
        assert!(backend.use_control_address);
        assert_eq!(backend.proxy_protocol, BackendProxyProtocol::Off);
        assert_eq!((backend.active_address, backend.active_ports), (None, None));
        assert_eq!(backend.connect_timeout, Duration::from_secs(10));
        assert_eq!(backend.reply_timeout, Duration::from_secs(60));
    }

    #[test]
    fn default_backend_rules() {
        let mut config = Config::default();
        assert_eq!(config.default_backend(), None);
        let backend = |name: &str| BackendConfig {
            name: name.into(),
            address: "10.0.0.5:21".into(),
            ..BackendConfig::default()
        };
        config.backends = vec![backend("a"), backend("b")];
        assert_eq!(config.default_backend(), None);
        config.routing.default = Some("b".into());
        assert_eq!(config.default_backend(), Some("b"));
    }

    #[test]
    fn passive_helpers() {
        let text = r#"
[passive]
ports = "30000-30009"
advertised_ports = "50000-50009"
public_address = "203.0.113.10"
[[passive.public_address_by_client]]
clients = ["192.168.0.0/16"]
address = "192.168.1.10"
"#;
        let passive = errors_free(text).passive;
        assert_eq!(passive.advertised_port(30000), Some(50000));
        assert_eq!(passive.advertised_port(30009), Some(50009));
        assert_eq!(passive.advertised_port(30010), None);
        let public: IpAddr = "203.0.113.10".parse().unwrap();
        let lan: IpAddr = "192.168.1.10".parse().unwrap();
        assert_eq!(
            passive.public_address_for("198.51.100.7".parse().unwrap()),
            Some(public)
        );
        assert_eq!(
            passive.public_address_for("192.168.5.5".parse().unwrap()),
            Some(lan)
        );
        let mapped: IpAddr = "::ffff:192.168.5.5".parse().unwrap();
        assert_eq!(passive.public_address_for(mapped), Some(lan));
        let plain = PassiveConfig::default();
        assert_eq!(plain.advertised_port(30050), Some(30050));
        assert_eq!(plain.public_address_for(lan), None);
    }

    // --- validation --------------------------------------------------------------------

    #[test]
    fn backends_are_required() {
        let errors = errors("[[backends]]\n");
        assert!(
            errors
                .iter()
                .any(|e| e.contains("backends[0].name: must not be empty")),
            "{errors:?}"
        );
        let message = Config::from_toml_str("").unwrap_err().to_string();
        assert_eq!(message.lines().count(), 1, "{message}");
        assert!(
            message.starts_with("<toml>: backends: at least one [[backends]]"),
            "{message}"
        );
    }

    #[test]
    fn backend_names_must_be_nonempty_and_unique() {
        assert_error(
            "[[backends]]\nname = \" \"\naddress = \"h:21\"\n",
            "backends[0].name",
            "must not be empty",
        );
        let text = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[routing]\ndefault = \"a\"\n";
        assert_error(text, "backends[1].name", "duplicate backend name \"a\"");
    }

    #[test]
    fn backend_addresses_are_checked() {
        for good in [
            "10.0.0.5:21",
            "ftp.internal:2121",
            "ftp-1.example.com:21",
            "[2001:db8::5]:21",
            "backend_a:21",
        ] {
            assert!(split_host_port(good).is_ok(), "{good}");
        }
        let bad = [
            ("10.0.0.5", "the :PORT is missing"),
            ("10.0.0.5:", "is not a port number"),
            ("10.0.0.5:0", "is not a port number"),
            ("10.0.0.5:70000", "is not a port number"),
            (":21", "the host is missing"),
            ("2001:db8::5:21", "must be in brackets"),
            ("[2001:db8::5]", "followed by :PORT"),
            ("[nope]:21", "is not an IPv6 address"),
            ("ftp host:21", "is not a host name"),
            ("", "the :PORT is missing"),
        ];
        for (address, fragment) in bad {
            let text = format!("[[backends]]\nname = \"a\"\naddress = \"{address}\"\n");
            assert_error(&text, "backends[0].address", fragment);
        }
        assert_error(
            "[[backends]]\nname = \"a\"\n",
            "backends[0].address",
            "HOST:PORT",
        );
    }

    #[test]
    fn routing_must_name_existing_backends() {
        assert_error(
            "[routing]\ndefault = \"nope\"\n",
            "routing.default",
            "names backend \"nope\", which does not exist; configured backends: main",
        );
        assert_error(
            "[routing]\nusers = { alice = \"nope\" }\n",
            "routing.users.alice",
            "does not exist",
        );
        let two = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[[backends]]\nname = \"b\"\naddress = \"h:21\"\n";
        assert_error(
            two,
            "routing.default",
            "set routing.default to one of: a, b",
        );
    }

    #[test]
    fn port_ranges_are_checked() {
        let mut config = errors_free("");
        config.passive.ports = PortRange { start: 0, end: 5 };
        assert_single(&config, "passive.ports: invalid port range 0-5: port 0");
        config.passive.ports = PortRange { start: 10, end: 5 };
        assert_single(
            &config,
            "passive.ports: invalid port range 10-5: the start is greater",
        );
        assert_error(
            "[passive]\nports = \"30000-30009\"\nadvertised_ports = \"50000-50099\"\n",
            "passive.advertised_ports",
            "has 100 ports but passive.ports has 10",
        );
    }

    #[test]
    fn public_addresses_must_be_specific() {
        for address in ["0.0.0.0", "::", "224.0.0.1", "ff02::1"] {
            let text = format!("[passive]\npublic_address = \"{address}\"\n");
            assert_error(&text, "passive.public_address", "cannot be announced");
        }
        assert_error(
            "[[passive.public_address_by_client]]\nclients = [\"192.168.0.0/16\"]\n",
            "passive.public_address_by_client[0].address",
            "cannot be announced",
        );
        assert_error(
            "[[passive.public_address_by_client]]\naddress = \"192.168.1.10\"\n",
            "passive.public_address_by_client[0].clients",
            "at least one client network",
        );
    }

    #[test]
    fn ban_limits_are_checked_unless_bans_are_off() {
        assert_error(
            "[limits]\nmax_failed_logins = 10001\n",
            "limits.max_failed_logins",
            "at most 10000",
        );
        assert_error(
            "[limits]\nban_duration = \"0s\"\n",
            "limits.ban_duration",
            "greater than 0",
        );
        assert_error(
            "[limits]\nfailed_login_window = \"0s\"\n",
            "limits.failed_login_window",
            "greater than 0",
        );
        let off = "[limits]\nmax_failed_logins = 0\nban_duration = \"0s\"\n";
        assert!(Config::from_toml_str(&format!("{ONE_BACKEND}{off}")).is_ok());
    }

    #[test]
    fn limits_are_checked() {
        assert_error(
            "[limits]\nmax_line_length = 511\n",
            "limits.max_line_length",
            "between 512 and 65536 (got 511)",
        );
        assert_error(
            "[limits]\nmax_line_length = 65537\n",
            "limits.max_line_length",
            "between 512 and 65536",
        );
        assert!(
            Config::from_toml_str(&format!("{ONE_BACKEND}[limits]\nmax_line_length = 512\n"))
                .is_ok()
        );
        assert!(Config::from_toml_str(&format!(
            "{ONE_BACKEND}[limits]\nmax_line_length = 65536\n"
        ))
        .is_ok());
        assert_error(
            "[limits]\nmax_sessions = 0\n",
            "limits.max_sessions",
            "at least 1",
        );
        assert_error(
            "[limits]\nmax_sessions_per_ip = 0\n",
            "limits.max_sessions_per_ip",
            "at least 1",
        );
        assert_error(
            "[limits]\nidle_timeout = \"0s\"\n",
            "limits.idle_timeout",
            "greater than 0",
        );
        assert_error(
            "[limits]\ndata_accept_timeout = \"0s\"\n",
            "limits.data_accept_timeout",
            "greater than 0",
        );
        assert_error(
            "[limits]\nallow = []\n",
            "limits.allow",
            "must not be empty",
        );
        assert_error("[log]\nfilter = \"\"\n", "log.filter", "must not be empty");
    }

    #[test]
    fn backend_settings_are_checked() {
        let backend = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n";
        assert_error(
            &format!("{backend}connect_timeout = \"0s\"\n"),
            "backends[0].connect_timeout",
            "greater than 0",
        );
        assert_error(
            &format!("{backend}reply_timeout = \"0s\"\n"),
            "backends[0].reply_timeout",
            "greater than 0",
        );
        assert_error(
            &format!("{backend}active_address = \"10.0.0.2\"\n"),
            "backends[0].active_address",
            "only used with data_mode = \"active\"",
        );
        assert_error(
            &format!("{backend}active_ports = \"40000-40009\"\n"),
            "backends[0].active_ports",
            "only used with data_mode",
        );
        let active = format!("{backend}data_mode = \"active\"\nactive_address = \"10.0.0.2\"\nactive_ports = \"40000-40009\"\n");
        assert!(Config::from_toml_str(&active).is_ok());
    }

    #[test]
    fn unbuilt_features_are_accepted_only_when_inert() {
        for value in ["least_conn", "random", "first"] {
            let text = format!("[routing]\npolicy = \"{value}\"\n");
            assert_error(
                &text,
                "routing.policy",
                "routing policies among backend groups are not available yet",
            );
        }
    }

    #[test]
    fn proxy_protocol_needs_its_trusted_peers_and_vice_versa() {
        assert_error(
            "[listen]\nproxy_protocol = true\n",
            "listen.proxy_protocol_from",
            "must list the load balancers",
        );
        assert_error(
            "[listen]\nproxy_protocol_from = [\"10.0.0.0/8\"]\n",
            "listen.proxy_protocol_from",
            "is unused while listen.proxy_protocol = false",
        );
        assert_error(
            "[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\"]\nproxy_protocol_timeout = \"0s\"\n",
            "listen.proxy_protocol_timeout",
            "greater than 0",
        );
        assert_error(
            "[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"::ffff:10.0.0.0/104\"]\n",
            "listen.proxy_protocol_from",
            "write IPv4-mapped networks as IPv4",
        );
        let on = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\nproxy_protocol = \"v2\"\n[listen]\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"fd00::/8\"]\n";
        let config = Config::from_toml_str(on).expect("valid");
        assert!(config.listen.proxy_protocol);
        assert_eq!(config.listen.proxy_protocol_from.len(), 2);
        assert_eq!(config.backends[0].proxy_protocol, BackendProxyProtocol::V2);
    }

    #[test]
    fn metrics_basic_auth_needs_both_halves_and_is_masked() {
        assert_error(
            "[metrics]\nbasic_auth_user = \"prom\"\n",
            "metrics.basic_auth_user",
            "needs both",
        );
        let text = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n[metrics]\nbasic_auth_user = \"prom\"\nbasic_auth_password = \"hunter2\"\n";
        let config = Config::from_toml_str(text).expect("valid");
        let shown = config.render_effective();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("basic_auth_password = \"****\""), "{shown}");
    }

    #[test]
    fn tls_settings_are_validated() {
        assert_error(
            "[tls]\nmode = \"optional\"\nkey = \"/k.pem\"\n",
            "tls.cert",
            "is required with tls.mode = \"optional\"",
        );
        assert_error(
            "[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nmode = \"off\"\n[listen]\n"
                .replace("cert = \"/c.pem\"\n", "")
                .as_str(),
            "tls.key",
            "unused while tls.mode = \"off\"",
        );
        assert_error(
            "[listen]\nimplicit_tls = \"0.0.0.0:990\"\n",
            "listen.implicit_tls",
            "needs TLS",
        );
        let unreadable = errors(
            "[tls]\nmode = \"required\"\ncert = \"/nonexistent/c.pem\"\nkey = \"/dev/null\"\n",
        );
        assert!(
            unreadable[0].contains("tls.cert: cannot read certificate file /nonexistent/c.pem"),
            "{unreadable:?}"
        );
        assert!(
            unreadable[1].contains("tls.key: /dev/null: no private key found"),
            "{unreadable:?}"
        );
        let backend = "[[backends]]\nname = \"a\"\naddress = \"h:21\"\n";
        assert_error(
            &format!("{backend}tls_verify = false\n"),
            "backends[0].tls_verify",
            "only used with TLS towards the backend",
        );
        assert_error(
            &format!("{backend}tls = \"explicit\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n"),
            "backends[0].tls_ca_file",
            "cannot read certificate file",
        );
        let ok = format!("{backend}tls = \"implicit\"\ntls_verify = false\ntls_max_version = \"1.2\"\ntls_server_name = \"ftp.internal\"\n");
        assert!(Config::from_toml_str(&ok).is_ok());
    }

    #[test]
    fn all_problems_are_reported_with_lines() {
        let text = "[tls]\ncert = \"/x.pem\"\n[limits]\nmax_sessions = 0\nmax_line_length = 10\n";
        let errors = errors(text);
        assert_eq!(errors.len(), 3, "{errors:#?}");
        assert!(errors[0].starts_with("<toml>:5: tls.cert: "), "{errors:#?}");
        assert!(
            errors[1].starts_with("<toml>:7: limits.max_sessions: "),
            "{errors:#?}"
        );
        assert!(
            errors[2].starts_with("<toml>:8: limits.max_line_length: "),
            "{errors:#?}"
        );
    }

    #[test]
    fn validate_without_source_names_keys_only() {
        let mut config = errors_free("");
        config.limits.max_sessions = 0;
        assert_single(&config, "limits.max_sessions: must be at least 1");
    }
}
