//! Validation: the rules a loaded `Config` must pass, all problems reported at once (backends and routing: validate_backends.rs).

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use super::validate_backends::check_backends;
use super::{
    Config, ConfigError, HealthConfig, LimitsConfig, ListenConfig, LogConfig, MetricsConfig,
    PassiveConfig, PortRange, Problem, TlsMode, MAX_LOG_QUEUE_LINES,
};

impl Config {
    /// Checks every rule and reports all problems at once (key paths, no locations).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        // Port 0 (ephemeral) is legitimate in tests, so [listen] checks only PROXY settings.
        check_listen(&self.listen, &mut problems);
        check_passive(&self.passive, &mut problems);
        self.check_tls(&mut problems);
        check_backends(&self.backends, &mut problems);
        self.check_pools(&mut problems);
        self.check_routing(&mut problems);
        check_limits(&self.limits, &mut problems);
        check_health(&self.health, &mut problems);
        check_duration(&["shutdown", "grace"], self.shutdown.grace, &mut problems);
        check_metrics(&self.metrics, &mut problems);
        check_log(&self.log, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

/// Bounds of `limits.max_line_length`: below 512 real clients break (RFC 959 paths),
/// above 64 KiB a line buffer per session becomes a memory lever for attackers.
const MAX_LINE_LENGTH_RANGE: std::ops::RangeInclusive<usize> = 512..=65536;

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

impl Config {
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
            if let Err(e) = crate::pem::load_certs(cert) {
                problems.push(Problem::new(&["tls", "cert"], e.to_string()));
            }
            if let Err(e) = crate::pem::load_key(key) {
                problems.push(Problem::new(&["tls", "key"], e.to_string()));
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

pub(super) fn check_port_range(path: &[&str], range: PortRange, problems: &mut Vec<Problem>) {
    if let Err(error) = PortRange::new(range.start, range.end) {
        problems.push(Problem::new(path, error.to_string()));
    }
}

fn tls_mode_name(mode: TlsMode) -> &'static str {
    match mode {
        TlsMode::Off => "off",
        TlsMode::Optional => "optional",
        TlsMode::Required => "required",
    }
}

fn check_metrics(metrics: &MetricsConfig, problems: &mut Vec<Problem>) {
    if metrics.basic_auth_user.is_some() != metrics.basic_auth_password.is_some() {
        let message =
            "basic auth needs both metrics.basic_auth_user and metrics.basic_auth_password";
        problems.push(Problem::new(&["metrics", "basic_auth_user"], message));
    }
}

pub(super) fn check_duration(path: &[&str], duration: Duration, problems: &mut Vec<Problem>) {
    if duration.is_zero() {
        let message = "must be greater than 0, e.g. \"30s\" or \"5m\"";
        problems.push(Problem::new(path, message));
    }
}

/// Streaks longer than this would keep a dead backend "up" for hours of probes.
const MAX_HEALTH_STREAK: u32 = 100;

fn check_health(health: &HealthConfig, problems: &mut Vec<Problem>) {
    check_duration(
        &["health", "probe_interval"],
        health.probe_interval,
        problems,
    );
    check_duration(&["health", "probe_timeout"], health.probe_timeout, problems);
    for (key, value) in [("rise", health.rise), ("fall", health.fall)] {
        if !(1..=MAX_HEALTH_STREAK).contains(&value) {
            let message = format!(
                "must be between 1 and {MAX_HEALTH_STREAK} consecutive results (got {value})"
            );
            problems.push(Problem::new(&["health", key], message));
        }
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
    if !(1..=MAX_LOG_QUEUE_LINES).contains(&log.queue_lines) {
        let message = format!("must be 1 to {MAX_LOG_QUEUE_LINES} (lines)");
        problems.push(Problem::new(&["log", "queue_lines"], message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{BackendProxyProtocol, PumpMode};

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
    fn the_pump_is_copy_or_splice() {
        assert_eq!(
            errors_free("[data]\npump = \"splice\"\n").data.pump,
            PumpMode::Splice
        );
        assert_eq!(
            errors_free("[data]\npump = \"copy\"\n").data.pump,
            PumpMode::Copy
        );
        assert_error("[data]\npump = \"zero-copy\"\n", "data.pump", "zero-copy");
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
        assert_error("[health]\nrise = 0\n", "health.rise", "between 1 and 100");
        assert_error("[health]\nfall = 101\n", "health.fall", "between 1 and 100");
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
        assert_error(
            "[log]\nqueue_lines = 0\n",
            "log.queue_lines",
            "must be 1 to",
        );
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
