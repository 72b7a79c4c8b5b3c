//! The `[routing]` tables compiled once per configuration: host names (exact ones, then
//! `*.` one-label wildcards; case-insensitive), exact user names, then user glob patterns
//! in the order of the file.

use std::collections::HashMap;

use globset::GlobMatcher;
use tracing::warn;

use crate::config::{self, RoutingConfig};
use crate::metrics::RouteStep;

/// What the client said about the host it wants, before USER.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClientNames<'a> {
    /// The argument of an accepted HOST command (RFC 7151).
    pub host: Option<&'a str>,
    /// The TLS server name (SNI) of the control connection (AUTH TLS or implicit FTPS).
    pub sni: Option<&'a str>,
}

/// `routing.hosts` and `routing.users` ready to match.
pub struct RouteTable {
    /// Exact host names, normalized (`config::normalize_host`).
    hosts: HashMap<String, String>,
    /// `*.name` keys by `name`.
    wildcard_hosts: HashMap<String, String>,
    users: HashMap<String, String>,
    /// In the order they are tried (`RoutingConfig::user_patterns`).
    patterns: Vec<(GlobMatcher, String)>,
}

impl RouteTable {
    pub fn new(routing: &RoutingConfig) -> RouteTable {
        let mut hosts = HashMap::new();
        let mut wildcard_hosts = HashMap::new();
        for (key, target) in &routing.hosts {
            let name = config::normalize_host(key);
            match config::wildcard_suffix(&name) {
                Some(parent) => wildcard_hosts.insert(parent.to_string(), target.clone()),
                None => hosts.insert(name, target.clone()),
            };
        }
        let users = routing
            .exact_users()
            .map(|(name, target)| (name.to_string(), target.to_string()))
            .collect();
        let patterns = routing
            .user_patterns()
            .into_iter()
            .filter_map(|(key, target)| match config::user_pattern(key) {
                Ok(matcher) => Some((matcher, target.to_string())),
                // Validation refuses these; a config built in code may still hold one.
                Err(error) => {
                    warn!(pattern = key, %error, "routing.users pattern ignored");
                    None
                }
            })
            .collect();
        RouteTable {
            hosts,
            wildcard_hosts,
            users,
            patterns,
        }
    }

    /// Whether no host or user rule exists: every login takes the default route.
    pub fn is_empty(&self) -> bool {
        !self.has_hosts() && self.users.is_empty() && self.patterns.is_empty()
    }

    /// Whether `routing.hosts` has any entry (HOST then names one of them or gets 504).
    pub fn has_hosts(&self) -> bool {
        !self.hosts.is_empty() || !self.wildcard_hosts.is_empty()
    }

    /// The target of a host name: an exact key, else the `*.` key of its parent.
    pub fn host(&self, name: &str) -> Option<&str> {
        let name = config::normalize_host(name);
        self.hosts
            .get(&name)
            .or_else(|| {
                let parent = config::wildcard_parent(&name)?;
                self.wildcard_hosts.get(parent)
            })
            .map(String::as_str)
    }

    /// The target of what the client named: HOST wins over the TLS server name; a
    /// name that matches nothing is no decision.
    pub fn client_names(&self, names: ClientNames<'_>) -> Option<(&str, RouteStep)> {
        if let Some(host) = names.host {
            if let Some(target) = self.host(host) {
                return Some((target, RouteStep::Host));
            }
        }
        let sni = names.sni?;
        self.host(sni).map(|target| (target, RouteStep::Sni))
    }

    /// The target of a user name: exact names first, then the first matching pattern.
    pub fn user(&self, name: &str) -> Option<(&str, RouteStep)> {
        if let Some(target) = self.users.get(name) {
            return Some((target, RouteStep::User));
        }
        self.patterns
            .iter()
            .find(|(matcher, _)| matcher.is_match(name))
            .map(|(_, target)| (target.as_str(), RouteStep::Pattern))
    }
}
