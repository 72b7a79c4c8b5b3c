//! The keys of `routing.hosts` and `routing.users`: which user keys are glob patterns and
//! the order they are tried in (the file's), host names compared as DNS does, and their
//! validation (patterns that compile, host names that can match).

use std::collections::HashMap;

use globset::{GlobBuilder, GlobMatcher};

use super::{Config, Problem, RoutingConfig};

/// The characters that make a `routing.users` key a glob pattern.
const PATTERN_CHARACTERS: [char; 3] = ['*', '?', '['];

/// Whether a `routing.users` key is a glob pattern rather than one exact user name.
pub fn is_user_pattern(key: &str) -> bool {
    key.contains(PATTERN_CHARACTERS)
}

/// A `routing.users` pattern compiled (globset syntax; `*` also matches `/` and `@`,
/// user names have no path separators). Case-sensitive, as user names are to servers.
pub fn user_pattern(key: &str) -> Result<GlobMatcher, globset::Error> {
    let glob = GlobBuilder::new(key).literal_separator(false).build()?;
    Ok(glob.compile_matcher())
}

/// A host name as `routing.hosts` compares it: DNS names are case-insensitive and the
/// trailing dot of an absolute name changes nothing; an IPv6 literal loses its brackets.
pub fn normalize_host(name: &str) -> String {
    let name = name.trim();
    let name = name.strip_suffix('.').unwrap_or(name);
    let name = name
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(name);
    name.to_ascii_lowercase()
}

/// The name a `*.` wildcard key of `routing.hosts` stands for: `*.example.com` matches
/// `a.example.com` (exactly one more label, as a certificate wildcard does), not
/// `example.com` or `a.b.example.com`.
pub fn wildcard_suffix(normalized: &str) -> Option<&str> {
    normalized.strip_prefix("*.")
}

/// The wildcard key that could match a (normalized) host name: its first label replaced.
pub fn wildcard_parent(normalized: &str) -> Option<&str> {
    normalized.split_once('.').map(|(_, parent)| parent)
}

impl RoutingConfig {
    /// The glob patterns of `users` with their targets, in the order they are tried:
    /// the file's, then those only the environment set (in name order).
    pub fn user_patterns(&self) -> Vec<(&str, &str)> {
        let from_file = self
            .users_order
            .iter()
            .filter_map(|key| self.users.get_key_value(key));
        let from_env = self
            .users
            .iter()
            .filter(|(key, _)| !self.users_order.contains(key));
        from_file
            .chain(from_env)
            .filter(|(key, _)| is_user_pattern(key))
            .map(|(key, target)| (key.as_str(), target.as_str()))
            .collect()
    }

    /// The exact user names of `users` with their targets.
    pub fn exact_users(&self) -> impl Iterator<Item = (&str, &str)> {
        self.users
            .iter()
            .filter(|(key, _)| !is_user_pattern(key))
            .map(|(key, target)| (key.as_str(), target.as_str()))
    }
}

/// The keys of `[routing.users]` in the order of the TOML text (toml's `preserve_order`).
pub(super) fn users_file_order(table: &toml::Table) -> Vec<String> {
    let users = table
        .get("routing")
        .and_then(toml::Value::as_table)
        .and_then(|routing| routing.get("users"))
        .and_then(toml::Value::as_table);
    users.map_or_else(Vec::new, |users| users.keys().cloned().collect())
}

impl Config {
    /// Every user pattern compiles; every host key is a name (or `*.` and a name) and
    /// no two keys are the same host.
    pub(super) fn check_route_keys(&self, problems: &mut Vec<Problem>) {
        for (key, _) in self.routing.user_patterns() {
            if let Err(error) = user_pattern(key) {
                let message = format!("invalid glob pattern: {}", error.kind());
                problems.push(Problem::new(&["routing", "users", key], message));
            }
        }
        let mut seen: HashMap<String, &str> = HashMap::new();
        for key in self.routing.hosts.keys() {
            let path = ["routing", "hosts", key.as_str()];
            let normalized = normalize_host(key);
            if let Err(message) = check_host_key(&normalized) {
                problems.push(Problem::new(&path, message));
            } else if let Some(first) = seen.insert(normalized, key) {
                let message = format!("the same host as \"{first}\" (host names are compared without case and trailing dot)");
                problems.push(Problem::new(&path, message));
            }
        }
    }
}

/// Whether a normalized `routing.hosts` key can match a client's host name.
fn check_host_key(normalized: &str) -> Result<(), String> {
    let name = wildcard_suffix(normalized).unwrap_or(normalized);
    if name.parse::<std::net::IpAddr>().is_ok() && name.len() == normalized.len() {
        return Ok(());
    }
    if name.contains('*') {
        return Err("a wildcard must be the whole first label, as in \"*.example.com\"".into());
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    if name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(
            "not a host name: labels of letters, digits, '-' and '_' joined by dots".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::test_support::*;

    #[test]
    fn patterns_are_tried_in_file_order_and_env_ones_after() {
        let text = format!(
            "{ONE_BACKEND}[routing.users]\nzed = \"main\"\n\"p-*\" = \"main\"\n\"[a-c]*\" = \"main\"\n\"?\" = \"main\"\nalice = \"main\"\n"
        );
        let file = config_file(&text);
        let env = vars(&[("FTPFRONT_ROUTING__USERS__X*", "main")]);
        let config = Config::load_with_vars(file.path(), env).unwrap();
        let order: Vec<&str> = config
            .routing
            .user_patterns()
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        assert_eq!(order, ["p-*", "[a-c]*", "?", "x*"]);
        let exact: Vec<&str> = config.routing.exact_users().map(|(key, _)| key).collect();
        assert_eq!(exact, ["alice", "zed"]);
    }

    #[test]
    fn an_invalid_pattern_is_a_problem_at_its_line() {
        assert_error(
            "[routing.users]\nalice = \"main\"\n\"p-[a\" = \"main\"\n",
            "routing.users.p-[a",
            "invalid glob pattern",
        );
        let errors = errors("[routing.users]\nalice = \"main\"\n\"p-[a\" = \"main\"\n");
        assert!(errors[0].starts_with("<toml>:6: "), "{errors:?}");
    }

    #[test]
    fn host_keys_must_be_names_and_distinct() {
        assert_error(
            "[routing.hosts]\n\"ftp.*.example\" = \"main\"\n",
            "routing.hosts.ftp.*.example",
            "whole first label",
        );
        assert_error(
            "[routing.hosts]\n\"*\" = \"main\"\n",
            "routing.hosts.*",
            "whole first label",
        );
        assert_error(
            "[routing.hosts]\n\"ftp example\" = \"main\"\n",
            "routing.hosts.ftp example",
            "not a host name",
        );
        assert_error(
            "[routing.hosts]\n\"FTP.Example.com.\" = \"main\"\n\"ftp.example.com\" = \"main\"\n",
            "routing.hosts.ftp.example.com",
            "the same host as \"FTP.Example.com.\"",
        );
        assert_error(
            "[routing.hosts]\n\"ftp.example.com\" = \"nope\"\n",
            "routing.hosts.ftp.example.com",
            "does not exist",
        );
        let text = format!(
            "{ONE_BACKEND}[routing.hosts]\n\"*.partners.example\" = \"main\"\n\"192.0.2.7\" = \"main\"\n\"[2001:db8::7]\" = \"main\"\n"
        );
        assert!(Config::from_toml_str(&text).is_ok());
    }

    #[test]
    fn host_names_compare_like_dns() {
        assert_eq!(normalize_host("FTP.Example.COM."), "ftp.example.com");
        assert_eq!(normalize_host("[2001:DB8::1]"), "2001:db8::1");
        assert_eq!(
            wildcard_suffix("*.partners.example"),
            Some("partners.example")
        );
        assert_eq!(
            wildcard_parent("a.partners.example"),
            Some("partners.example")
        );
        assert_eq!(wildcard_parent("localhost"), None);
    }
}
