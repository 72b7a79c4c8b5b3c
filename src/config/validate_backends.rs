//! Validation of `[[backends]]` (names, HOST:PORT addresses, timeouts, TLS keys), of
//! `[[pools]]` and of `[routing]` (every target a backend or a pool).

use std::collections::HashMap;
use std::net::Ipv6Addr;

use super::validate::{check_duration, check_port_range};
use super::{BackendConfig, BackendTls, Config, DataMode, Problem, MAX_STICKY};

impl Config {
    /// Pools: a name no backend or other pool has, at least one member, every member an
    /// existing backend, listed once.
    pub(super) fn check_pools(&self, problems: &mut Vec<Problem>) {
        let backends: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, pool) in self.pools.iter().enumerate() {
            let i = index.to_string();
            let path = |key| ["pools", i.as_str(), key];
            if pool.name.trim().is_empty() {
                let message = "must not be empty: every pool needs a name (routing refers to it)";
                problems.push(Problem::new(&path("name"), message));
            } else if self.backend(&pool.name).is_some() {
                let message = format!(
                    "\"{}\" is already a backend's name; pools and backends share one namespace",
                    pool.name
                );
                problems.push(Problem::new(&path("name"), message));
            } else if let Some(first) = seen.insert(&pool.name, index) {
                let message = format!(
                    "duplicate pool name \"{}\" (also used by pools[{first}])",
                    pool.name
                );
                problems.push(Problem::new(&path("name"), message));
            }
            if pool.backends.is_empty() {
                let message = "must name at least one backend, e.g. backends = [\"a\", \"b\"]";
                problems.push(Problem::new(&path("backends"), message));
            }
            if let Some(window) = pool.sticky {
                check_sticky(&path("sticky"), window, problems);
            }
            let mut members: HashMap<&str, ()> = HashMap::new();
            for member in &pool.backends {
                if self.backend(member).is_none() {
                    let message = format!(
                        "names backend \"{member}\", which does not exist; configured backends: {}",
                        backends.join(", ")
                    );
                    problems.push(Problem::new(&path("backends"), message));
                } else if members.insert(member, ()).is_some() {
                    let message = format!("lists backend \"{member}\" twice");
                    problems.push(Problem::new(&path("backends"), message));
                }
            }
        }
    }

    pub(super) fn check_routing(&self, problems: &mut Vec<Problem>) {
        let names: Vec<&str> = self.backends.iter().map(|b| b.name.as_str()).collect();
        let pools: Vec<&str> = self.pools.iter().map(|p| p.name.as_str()).collect();
        let known = match pools.is_empty() {
            true => names.join(", "),
            false => format!("{}; pools: {}", names.join(", "), pools.join(", ")),
        };
        let unknown = |name: &str| {
            format!("names backend \"{name}\", which does not exist; configured backends: {known}")
        };
        let is_target = |name: &str| self.backend(name).is_some() || self.pool(name).is_some();
        if let Some(name) = &self.routing.default {
            if !is_target(name) {
                problems.push(Problem::new(&["routing", "default"], unknown(name)));
            }
        } else if self.backends.len() > 1
            && self.routing.hosts.is_empty()
            && self.routing.users.is_empty()
        {
            // With rules, no default is a choice: whom they miss gets 530 (no_route).
            let message = format!(
                "{} backends are configured and none is the default; set routing.default to one of: {known}",
                self.backends.len()
            );
            problems.push(Problem::new(&["routing", "default"], message));
        }
        for (user, name) in &self.routing.users {
            if !is_target(name) {
                problems.push(Problem::new(&["routing", "users", user], unknown(name)));
            }
        }
        for (host, name) in &self.routing.hosts {
            if !is_target(name) {
                problems.push(Problem::new(&["routing", "hosts", host], unknown(name)));
            }
        }
        self.check_route_keys(problems);
    }
}

/// A sticky window: more than nothing (leave the key out for off), at most a week.
fn check_sticky(path: &[&str], window: std::time::Duration, problems: &mut Vec<Problem>) {
    check_duration(path, window, problems);
    if window > MAX_STICKY {
        let message = "must be at most 7 days, e.g. \"10m\" or \"1h\"";
        problems.push(Problem::new(path, message));
    }
}

pub(super) fn check_backends(backends: &[BackendConfig], problems: &mut Vec<Problem>) {
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
    if backend.max_sessions == Some(0) {
        let message = "must be at least 1 (leave it out for no limit)";
        problems.push(Problem::new(&path("max_sessions"), message));
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
        if let Err(e) = crate::pem::load_certs(ca) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

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
        for rules in [
            "users = { alice = \"a\" }",
            "hosts = { \"ftp.example.com\" = \"b\" }",
        ] {
            let text = format!("{two}[routing]\n{rules}\n");
            let config = Config::from_toml_str(&text).expect("rules without a default");
            assert!(config
                .render_routes()
                .contains("everyone else -> no route (530)"));
        }
    }

    #[test]
    fn pools_name_existing_backends_once_and_routes_may_name_pools() {
        let two = format!("{ONE_BACKEND}[[backends]]\nname = \"b\"\naddress = \"h:21\"\n[routing]\ndefault = \"web\"\n");
        let pool = |body: &str| format!("{two}[[pools]]\n{body}\n");
        let valid = pool("name = \"web\"\nbackends = [\"main\", \"b\"]\npolicy = \"first\"");
        let config = Config::from_toml_str(&valid).expect("a valid pool");
        let members: Vec<&str> = config
            .target_backends("web")
            .unwrap()
            .iter()
            .map(|b| b.name.as_str())
            .collect();
        assert_eq!(members, ["main", "b"]);
        assert_error(
            &pool("name = \"web\"\nbackends = []"),
            "pools[0].backends",
            "at least one backend",
        );
        assert_error(
            &pool("name = \"web\"\nbackends = [\"main\", \"x\"]"),
            "pools[0].backends",
            "names backend \"x\", which does not exist",
        );
        assert_error(
            &pool("name = \"web\"\nbackends = [\"b\", \"b\"]"),
            "pools[0].backends",
            "twice",
        );
        assert_error(
            &pool("name = \"web\"\nbackends = [\"b\"]\npolicy = \"fastest\""),
            "pools[0].policy",
            "expected one of: round_robin, least_conn, random, first",
        );
        assert_error(
            &pool("name = \"web\"\nbackends = [\"b\"]\nsticky = \"0s\""),
            "pools[0].sticky",
            "must be greater than 0",
        );
        assert_error(
            &pool("name = \"web\"\nbackends = [\"b\"]\nsticky = \"8days\""),
            "pools[0].sticky",
            "at most 7 days",
        );
        let sticky = Config::from_toml_str(&pool(
            "name = \"web\"\nbackends = [\"b\"]\nsticky = \"10m\"",
        ));
        let window = sticky.expect("a sticky pool").pools[0].sticky;
        assert_eq!(window, Some(std::time::Duration::from_secs(600)));
        let clash = format!("{two}[[pools]]\nname = \"b\"\nbackends = [\"main\"]\n[[pools]]\nname = \"web\"\nbackends = [\"b\"]\n");
        assert_error(&clash, "pools[0].name", "already a backend's name");
        let unknown = format!(
            "{}[routing.users]\nalice = \"nope\"\n[[pools]]\nname = \"web\"\nbackends = [\"b\"]\n",
            two
        );
        assert_error(
            &unknown,
            "routing.users.alice",
            "configured backends: main, b; pools: web",
        );
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
}
