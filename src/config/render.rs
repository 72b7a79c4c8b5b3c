//! Rendering the effective configuration as TOML, secrets masked, for `ftpfront check`.

use serde::Deserialize;

use super::Config;

/// What [`Config::render_effective`] writes instead of a secret.
const MASK: &str = "****";
/// Key paths whose values are secrets (`*` matches every array element).
const SECRET_KEYS: &[&str] = &["metrics.basic_auth_password"];

impl Config {
    /// The effective config as TOML, secrets masked, for `ftpfront check`.
    pub fn render_effective(&self) -> String {
        self.render_masked(SECRET_KEYS).unwrap_or_else(|error| {
            format!("# cannot render the effective configuration: {error}\n")
        })
    }

    fn render_masked(&self, secret_keys: &[&str]) -> Result<String, String> {
        let mut value = toml::Value::try_from(self).map_err(|e| e.to_string())?;
        mask_secrets(&mut value, secret_keys);
        // Back through the typed config so the output keeps the field order of the
        // structs (toml::Value sorts keys); masks are strings, as secrets are.
        let masked = Config::deserialize(value).map_err(|e| e.to_string())?;
        toml::to_string_pretty(&masked).map_err(|e| e.to_string())
    }
}

impl Config {
    /// The effective route table as TOML comments: each rule, in the order they are
    /// asked, with the backends it may reach (a pool's in its listed order).
    pub fn render_routes(&self) -> String {
        let mut rules: Vec<(String, String)> = Vec::new();
        // Exact host names are asked before `*.` ones.
        let (wildcards, exact): (Vec<_>, Vec<_>) =
            (self.routing.hosts.iter()).partition(|(host, _)| host.starts_with("*."));
        for (host, target) in exact {
            let rule = format!("host {host} (HOST, else TLS name)");
            rules.push((rule, self.describe_target(target)));
        }
        for (host, target) in wildcards {
            let rule = format!("host {host} (one label; HOST, else TLS name)");
            rules.push((rule, self.describe_target(target)));
        }
        if self.routing.allow_user_at_backend {
            let reached = "that backend or pool, as name".to_string();
            rules.push(("user name@target".into(), reached));
        }
        for (user, target) in self.routing.exact_users() {
            rules.push((format!("user {user}"), self.describe_target(target)));
        }
        for (pattern, target) in self.routing.user_patterns() {
            let rule = format!("user pattern {pattern}");
            rules.push((rule, self.describe_target(target)));
        }
        let everyone = match self.default_backend() {
            Some(target) => self.describe_target(target),
            None => "no route (530)".to_string(),
        };
        rules.push(("everyone else".into(), everyone));
        let mut out = String::from(
            "# Routes, in the order they are asked (the first that matches decides):\n",
        );
        for (rule, reached) in rules {
            out.push_str(&format!("#   {rule} -> {reached}\n"));
        }
        out
    }

    fn describe_target(&self, target: &str) -> String {
        let members = |pool: &super::PoolConfig| pool.backends.join(", ");
        match self.pool(target) {
            Some(pool) => {
                let policy = policy_name(self.pool_policy(pool));
                let sticky = match pool.sticky {
                    Some(window) => format!(", sticky {}", humantime::format_duration(window)),
                    None => String::new(),
                };
                format!("pool {target} ({policy}: {}{sticky})", members(pool))
            }
            None => format!("backend {target}"),
        }
    }
}

/// The policy as it is written in the file.
fn policy_name(policy: super::RoutingPolicy) -> &'static str {
    use super::RoutingPolicy::*;
    match policy {
        RoundRobin => "round_robin",
        LeastConn => "least_conn",
        Random => "random",
        First => "first",
    }
}

/// Replaces the values at `patterns` (dotted key paths, `*` = every array element).
fn mask_secrets(value: &mut toml::Value, patterns: &[&str]) {
    for pattern in patterns {
        let segments: Vec<&str> = pattern.split('.').collect();
        mask_path(value, &segments);
    }
}

fn mask_path(value: &mut toml::Value, segments: &[&str]) {
    let Some((first, rest)) = segments.split_first() else {
        *value = toml::Value::String(MASK.to_string());
        return;
    };
    match value {
        toml::Value::Table(table) => {
            if let Some(inner) = table.get_mut(*first) {
                mask_path(inner, rest);
            }
        }
        toml::Value::Array(items) if *first == "*" => {
            for item in items {
                mask_path(item, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;
    use crate::config::{PortRange, SplitHorizonRule};

    #[test]
    fn effective_config_round_trips() {
        let mut config = Config::from_toml_str(&design_example()).unwrap();
        config.passive.advertised_ports = Some(PortRange::new(50000, 50099).unwrap());
        config.passive.public_address_by_client = vec![SplitHorizonRule {
            clients: vec!["192.168.0.0/16".parse().unwrap()],
            address: "192.168.1.10".parse().unwrap(),
        }];
        let rendered = config.render_effective();
        assert!(rendered.contains("ports = \"30000-30099\""), "{rendered}");
        assert!(rendered.contains("idle_timeout = \"5m\""), "{rendered}");
        assert_eq!(
            Config::from_toml_str(&rendered).unwrap(),
            config,
            "{rendered}"
        );
    }

    #[test]
    fn secrets_are_masked() {
        let config = Config::from_toml_str(ONE_BACKEND).unwrap();
        let secrets = ["backends.*.address", "log.filter", "no.such", "limits.*"];
        let rendered = config.render_masked(&secrets).unwrap();
        assert!(rendered.contains("address = \"****\""), "{rendered}");
        assert!(rendered.contains("filter = \"****\""), "{rendered}");
        assert!(!rendered.contains("10.0.0.5"), "{rendered}");
        assert!(
            rendered.find("[listen]") < rendered.find("[passive]"),
            "{rendered}"
        );
    }

    #[test]
    fn the_route_table_names_each_rule_and_what_it_reaches() {
        let text = format!(
            "{ONE_BACKEND}[[backends]]\nname = \"b\"\naddress = \"h:21\"\n[[pools]]\nname = \"web\"\nbackends = [\"main\", \"b\"]\npolicy = \"first\"\n[routing]\ndefault = \"web\"\nusers = {{ alice = \"b\" }}\n"
        );
        let routes = Config::from_toml_str(&text).unwrap().render_routes();
        assert!(routes.contains("#   user alice -> backend b\n"), "{routes}");
        assert!(!routes.contains("host"), "{routes}");
        assert!(
            routes.contains("#   everyone else -> pool web (first: main, b)\n"),
            "{routes}"
        );
        let sticky = text.replace("policy = \"first\"", "policy = \"first\"\nsticky = \"90s\"");
        let routes = Config::from_toml_str(&sticky).unwrap().render_routes();
        assert!(
            routes.contains("#   everyone else -> pool web (first: main, b, sticky 1m 30s)\n"),
            "{routes}"
        );
    }

    #[test]
    fn the_route_table_lists_hosts_then_users_then_patterns_in_file_order() {
        let text = format!(
            "{ONE_BACKEND}[[backends]]\nname = \"b\"\naddress = \"h:21\"\n[routing]\ndefault = \"main\"\nallow_user_at_backend = true\nhosts = {{ \"*.partners.example\" = \"b\", \"ftp.example.com\" = \"main\" }}\n[routing.users]\n\"q*\" = \"b\"\nzed = \"b\"\n\"p*\" = \"main\"\n"
        );
        let routes = Config::from_toml_str(&text).unwrap().render_routes();
        let expected = "\
# Routes, in the order they are asked (the first that matches decides):
#   host ftp.example.com (HOST, else TLS name) -> backend main
#   host *.partners.example (one label; HOST, else TLS name) -> backend b
#   user name@target -> that backend or pool, as name
#   user zed -> backend b
#   user pattern q* -> backend b
#   user pattern p* -> backend main
#   everyone else -> backend main
";
        assert_eq!(routes, expected);
    }
}
