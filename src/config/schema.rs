//! The configuration schema: the typed settings of every section, their defaults, and lookups on them.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

use super::PortRange;

/// The whole configuration; `config/ftpfront.toml` is the commented example.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub listen: ListenConfig,
    pub passive: PassiveConfig,
    pub tls: TlsConfig,
    pub backends: Vec<BackendConfig>,
    pub pools: Vec<PoolConfig>,
    pub routing: RoutingConfig,
    pub metrics: MetricsConfig,
    pub health: HealthConfig,
    pub shutdown: ShutdownConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub data: DataConfig,
}

/// `[data]`: how the bytes of a transfer are moved.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Between two plain legs: copied through a buffer, or spliced in the kernel.
    pub pump: PumpMode,
}

/// How a transfer between two plain TCP legs is pumped (TLS legs are always copied).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum PumpMode {
    /// Read into a buffer that grows while the sender keeps it full (64 KiB to 1 MiB),
    /// write it out: the fastest on every figure of the loopback benchmark.
    #[default]
    Copy,
    /// `splice(2)` through a 256 KiB kernel pipe (Linux; elsewhere `copy`): no copy in
    /// user space, which may pay off on fast NICs; on loopback slower than `copy`.
    Splice,
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
    /// Consecutive successes (probes or session connects) that bring a down backend up.
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    pub fall: u32,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            probe_interval: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(5),
            rise: 1,
            fall: 1,
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
    /// At most this many client sessions at once; a full backend is skipped like a down
    /// one. `None`: unlimited.
    pub max_sessions: Option<u32>,
    /// Probed by `[health]` (`false`: never probed, always counted as up).
    pub health: bool,
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
            max_sessions: None,
            health: true,
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// The target (a backend or a pool) of users no other rule routes.
    pub default: Option<String>,
    /// The policy of pools that name none.
    pub policy: RoutingPolicy,
    /// Client host name (HOST, else the TLS SNI name) -> backend or pool name; a
    /// `*.` key covers one more label (see `config/routing.rs`).
    pub hosts: BTreeMap<String, String>,
    /// User name, or glob pattern (a key with `*`, `?` or `[`) -> backend or pool name.
    pub users: BTreeMap<String, String>,
    /// `USER name@target` picks the target (a backend or a pool) and logs in as `name`.
    pub allow_user_at_backend: bool,
    /// Connect to the default route's backend when a client connects, not at its USER,
    /// when no host or user rule could route the login elsewhere (see `session/early.rs`).
    pub preconnect: bool,
    /// The keys of `users` in the order the file writes them (figment's maps are
    /// sorted): patterns are tried in it. Filled by the loader, never read from TOML.
    #[serde(skip)]
    pub users_order: Vec<String>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            default: None,
            policy: RoutingPolicy::default(),
            hosts: BTreeMap::new(),
            users: BTreeMap::new(),
            allow_user_at_backend: false,
            preconnect: true,
            users_order: Vec::new(),
        }
    }
}

/// The longest `pools.sticky`: beyond a week a "resumed" upload is a new one, and the
/// bound keeps every window's end a representable instant.
pub const MAX_STICKY: Duration = Duration::from_secs(7 * 24 * 3600);

/// One `[[pools]]` entry: backends serving the same site, and how a session picks one.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PoolConfig {
    /// Shares one namespace with backend names: a route names either.
    pub name: String,
    /// Names of `[[backends]]`, in the order `first` tries them.
    pub backends: Vec<String>,
    /// `None`: `routing.policy`.
    pub policy: Option<RoutingPolicy>,
    /// A user's new sessions go to the backend of their last one for this long after it
    /// ended (`backend/sticky.rs`); `None`: off.
    #[serde(with = "humantime_serde")]
    pub sticky: Option<Duration>,
}

/// How a pool orders its backends for a new session.
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
    /// Lines waiting for the log's writer thread; beyond them a line is dropped (and
    /// counted) rather than a session made to wait for a stalled stderr reader.
    pub queue_lines: usize,
}

/// `log.queue_lines` when unset: a few seconds of a burst's lines, a few MiB at most.
pub const DEFAULT_LOG_QUEUE_LINES: usize = 8192;
/// The largest `log.queue_lines` taken: the queue's memory is its bound, so it has one.
pub const MAX_LOG_QUEUE_LINES: usize = 1_000_000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            filter: "info".to_string(),
            queue_lines: DEFAULT_LOG_QUEUE_LINES,
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
    pub fn backend(&self, name: &str) -> Option<&BackendConfig> {
        self.backends.iter().find(|backend| backend.name == name)
    }

    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|pool| pool.name == name)
    }

    /// The backends a route target stands for: itself for a backend, the members of a
    /// pool in their listed order; `None` when the name is neither.
    pub fn target_backends(&self, target: &str) -> Option<Vec<&BackendConfig>> {
        if let Some(backend) = self.backend(target) {
            return Some(vec![backend]);
        }
        let pool = self.pool(target)?;
        Some(
            pool.backends
                .iter()
                .filter_map(|name| self.backend(name))
                .collect(),
        )
    }

    /// The policy a pool orders its backends by.
    pub fn pool_policy(&self, pool: &PoolConfig) -> RoutingPolicy {
        pool.policy.unwrap_or(self.routing.policy)
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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(config.data.pump, PumpMode::Copy);

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
}
