//! Choosing backends for a login: the route (`routing.hosts` by HOST or TLS name,
//! `USER name@target`, `routing.users` names then patterns, `routing.default`; the
//! first step that matches decides) names a target, a backend or a pool; a pool's policy
//! orders its backends, healthy ones first, and the session tries them in that order
//! (failover before the login reply); a sticky pool puts the user's remembered backend
//! first (`sticky.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use prometheus::IntGauge;

use super::routes::{ClientNames, RouteTable};
use super::sticky::{StickySlot, StickyTable};
use super::Health;
use crate::config::{BackendConfig, Config, RoutingPolicy};
use crate::metrics::{RouteStep, StickyDecision};

/// Routes logins to targets and orders a target's backends for a new session.
pub struct Router {
    config: Arc<Config>,
    health: Arc<Health>,
    /// Per pool: where `round_robin` (and `least_conn` among equals) starts next.
    cursors: HashMap<String, AtomicUsize>,
    /// `routing.hosts` and `routing.users`, compiled once.
    routes: RouteTable,
    /// The backend of each user's last session on a sticky pool (outlives reloads).
    sticky: Arc<StickyTable>,
}

impl Router {
    pub fn new(config: Arc<Config>, health: Arc<Health>, sticky: Arc<StickyTable>) -> Router {
        let cursors = config
            .pools
            .iter()
            .map(|pool| (pool.name.clone(), AtomicUsize::new(0)))
            .collect();
        let routes = RouteTable::new(&config.routing);
        Router {
            sticky,
            config,
            health,
            cursors,
            routes,
        }
    }

    /// The target (backend or pool name) of `user` by `routing.users` and
    /// `routing.default`; `None`: no route at all.
    pub fn target(&self, user: &str) -> Option<&str> {
        self.user_target(user).map(|(target, _)| target)
    }

    fn user_target(&self, user: &str) -> Option<(&str, RouteStep)> {
        self.routes.user(user).or_else(|| {
            let default = self.config.default_backend()?;
            Some((default, RouteStep::Default))
        })
    }

    /// The target every login goes to whoever logs in, when there is one: no host or
    /// user rule, and a default that is not a sticky pool (its order depends on the
    /// user). `name@target` may still pick another; the early connection is then closed.
    pub fn early_target(&self) -> Option<&str> {
        if !self.routes.is_empty() {
            return None;
        }
        let default = self.config.default_backend()?;
        let sticky = self
            .config
            .pool(default)
            .is_some_and(|p| p.sticky.is_some());
        (!sticky).then_some(default)
    }

    /// Whether HOST must name a `routing.hosts` entry (else 504, RFC 7151).
    pub fn has_hosts(&self) -> bool {
        self.routes.has_hosts()
    }

    /// The target of a HOST argument or TLS server name by `routing.hosts`.
    pub fn host_target(&self, name: &str) -> Option<&str> {
        self.routes.host(name)
    }

    /// Where the login of `USER user` goes and under which name. The first step that
    /// matches decides: the host the client named (HOST, else its TLS server name; the
    /// user name then goes to the backend as it is, `@` and all), `name@target` (with
    /// `routing.allow_user_at_backend`, logging in as `name`), then [`Router::target`].
    pub fn route<'a>(&'a self, user: &'a str, names: ClientNames<'_>) -> Route<'a> {
        if let Some((target, step)) = self.routes.client_names(names) {
            return Route::To { target, user, step };
        }
        if self.config.routing.allow_user_at_backend {
            if let Some((name, target)) = user.rsplit_once('@') {
                let known =
                    self.config.backend(target).is_some() || self.config.pool(target).is_some();
                return match (name.is_empty(), known) {
                    (false, true) => Route::To {
                        target,
                        user: name,
                        step: RouteStep::UserAt,
                    },
                    _ => Route::UnknownTarget(target),
                };
            }
        }
        match self.user_target(user) {
            Some((target, step)) => Route::To { target, user, step },
            None => Route::None,
        }
    }

    /// Whether `backend` is (one of) what `target` stands for: a failed login's retry may
    /// then reuse its connection, as a client connected directly would.
    pub fn serves(&self, target: &str, backend: &str) -> bool {
        self.config
            .target_backends(target)
            .is_some_and(|members| members.iter().any(|b| b.name == backend))
    }

    /// The backends to try for a new session of `user` (as the backend hears it) on
    /// `target`, in order: the pool's policy order with the backends that are down moved
    /// to the end (tried anyway, since the probe may be wrong, but only after every
    /// healthy one); on a sticky pool, the user's remembered backend first unless it is
    /// down or full.
    pub fn candidates(&self, target: &str, user: &str) -> Vec<BackendConfig> {
        let Some(members) = self.config.target_backends(target) else {
            return Vec::new();
        };
        let policy = match self.config.pool(target) {
            Some(pool) => self.config.pool_policy(pool),
            None => RoutingPolicy::First,
        };
        let ordered = self.order(target, policy, members);
        // The policy's order stays within the healthy and within the down ones.
        let (up, down): (Vec<_>, Vec<_>) = ordered
            .into_iter()
            .partition(|backend| self.health.is_up(&backend.name));
        let mut ordered: Vec<_> = up.into_iter().chain(down).collect();
        if self
            .config
            .pool(target)
            .is_some_and(|pool| pool.sticky.is_some())
        {
            self.remembered_first(target, user, &mut ordered);
        }
        ordered.into_iter().cloned().collect()
    }

    /// Moves the backend `user` last had on `pool` to the front, when it can take them.
    fn remembered_first(&self, pool: &str, user: &str, ordered: &mut Vec<&BackendConfig>) {
        let remembered = self.sticky.lookup(pool, user, Instant::now());
        let position = remembered.and_then(|name| ordered.iter().position(|b| b.name == name));
        let decision = match position {
            None => StickyDecision::Miss,
            Some(i) if !self.health.is_up(&ordered[i].name) => StickyDecision::BackendDown,
            Some(i) if self.is_full(ordered[i]) => StickyDecision::BackendFull,
            Some(i) => {
                let backend = ordered.remove(i);
                ordered.insert(0, backend);
                StickyDecision::Hit
            }
        };
        self.health
            .metrics()
            .sticky_decisions_total
            .with_label_values(&[decision.label()])
            .inc();
    }

    /// Where the login of `user` on `target` is remembered once it succeeds: in the sticky
    /// table for a sticky pool, nowhere otherwise.
    pub fn sticky_slot(&self, target: &str, user: &str) -> StickySlot {
        match self.config.pool(target).and_then(|pool| pool.sticky) {
            Some(window) => StickySlot::Pending {
                table: self.sticky.clone(),
                pool: target.to_string(),
                user: user.to_string(),
                window,
            },
            None => StickySlot::Off,
        }
    }

    fn order<'a>(
        &self,
        pool: &str,
        policy: RoutingPolicy,
        mut members: Vec<&'a BackendConfig>,
    ) -> Vec<&'a BackendConfig> {
        match policy {
            RoutingPolicy::First => {}
            RoutingPolicy::RoundRobin => self.rotate(pool, &mut members),
            RoutingPolicy::LeastConn => {
                // Rotating first spreads sessions over backends with equal counts.
                self.rotate(pool, &mut members);
                members.sort_by_key(|backend| self.sessions(&backend.name));
            }
            RoutingPolicy::Random => fastrand::shuffle(&mut members),
        }
        members
    }

    fn rotate(&self, pool: &str, members: &mut [&BackendConfig]) {
        if members.is_empty() {
            return;
        }
        let start = self
            .cursors
            .get(pool)
            .map(|cursor| cursor.fetch_add(1, Ordering::Relaxed))
            .unwrap_or(0);
        members.rotate_left(start % members.len());
    }

    fn is_full(&self, backend: &BackendConfig) -> bool {
        let sessions = self.sessions(&backend.name);
        backend
            .max_sessions
            .is_some_and(|max| sessions >= i64::from(max))
    }

    fn sessions(&self, backend: &str) -> i64 {
        self.health
            .metrics()
            .backend_sessions
            .with_label_values(&[backend])
            .get()
    }

    /// Counts a session on `backend` until the returned guard is dropped; `None` when
    /// the backend already has its `max_sessions` (it is then skipped like a down one).
    pub fn admit(&self, backend: &BackendConfig) -> Option<SessionCount> {
        let gauge = self
            .health
            .metrics()
            .backend_sessions
            .with_label_values(&[&backend.name]);
        gauge.inc();
        let counted = SessionCount(gauge);
        let full = backend
            .max_sessions
            .is_some_and(|max| counted.0.get() > i64::from(max));
        (!full).then_some(counted)
    }
}

/// Where a login goes.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// To `target`, logging in as `user` (without a `@target` suffix), chosen by `step`.
    To {
        target: &'a str,
        user: &'a str,
        step: RouteStep,
    },
    /// `name@target` with a target that is neither a backend nor a pool.
    UnknownTarget(&'a str),
    /// No rule and no default.
    None,
}

/// A session connected to a backend, in `ftpfront_backend_sessions` while it lives.
pub struct SessionCount(IntGauge);

impl Drop for SessionCount {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;
    use crate::metrics::Metrics;

    fn router(policy: RoutingPolicy) -> Router {
        let backends = ["a", "b", "c"].map(|name| BackendConfig {
            name: name.into(),
            address: "127.0.0.1:21".into(),
            ..BackendConfig::default()
        });
        let mut config = Config {
            backends: backends.to_vec(),
            pools: vec![PoolConfig {
                name: "web".into(),
                backends: vec!["a".into(), "b".into(), "c".into()],
                policy: Some(policy),
                ..PoolConfig::default()
            }],
            ..Config::default()
        };
        config.routing.default = Some("web".into());
        config.routing.users.insert("alice".into(), "b".into());
        let config = Arc::new(config);
        let metrics = Metrics::new();
        let health = Arc::new(Health::new(&config, metrics.clone()));
        Router::new(config, health, StickyTable::new(metrics))
    }

    fn admit(router: &Router, name: &str) -> SessionCount {
        let backend = router.config.backend(name).expect("backend").clone();
        router.admit(&backend).expect("admitted")
    }

    #[test]
    fn a_full_backend_admits_nobody_until_a_session_ends() {
        let router = router(RoutingPolicy::First);
        let capped = BackendConfig {
            max_sessions: Some(2),
            ..router.config.backend("a").expect("a").clone()
        };
        let held = [router.admit(&capped), router.admit(&capped)];
        assert!(held.iter().all(Option::is_some));
        assert!(router.admit(&capped).is_none(), "a third session");
        assert_eq!(
            router.sessions("a"),
            2,
            "a refused admission is not counted"
        );
        drop(held);
        assert!(router.admit(&capped).is_some());
    }

    /// `route` without HOST or TLS name, as (target, user, step).
    fn routed<'a>(router: &'a Router, user: &'a str) -> Option<(&'a str, &'a str, RouteStep)> {
        routed_for(router, user, ClientNames::default())
    }

    fn routed_for<'a>(
        router: &'a Router,
        user: &'a str,
        names: ClientNames<'_>,
    ) -> Option<(&'a str, &'a str, RouteStep)> {
        match router.route(user, names) {
            Route::To { target, user, step } => Some((target, user, step)),
            _ => None,
        }
    }

    /// [`router`] with `edit` applied to its config.
    fn router_with(edit: impl FnOnce(&mut Config)) -> Router {
        let off = router(RoutingPolicy::First);
        let mut config = (*off.config).clone();
        edit(&mut config);
        Router::new(Arc::new(config), off.health.clone(), off.sticky.clone())
    }

    #[test]
    fn user_at_target_names_its_target_only_when_allowed() {
        use RouteStep::*;
        let off = router(RoutingPolicy::First);
        assert_eq!(routed(&off, "bob@b"), Some(("web", "bob@b", Default)));
        let on = router_with(|config| config.routing.allow_user_at_backend = true);
        assert_eq!(routed(&on, "bob@b"), Some(("b", "bob", UserAt)));
        assert_eq!(routed(&on, "bob@web"), Some(("web", "bob", UserAt)));
        assert_eq!(
            routed(&on, "a.b@example.com@c"),
            Some(("c", "a.b@example.com", UserAt))
        );
        let none = ClientNames::default();
        assert_eq!(on.route("bob@nope", none), Route::UnknownTarget("nope"));
        assert_eq!(on.route("@b", none), Route::UnknownTarget("b"));
        assert_eq!(routed(&on, "alice"), Some(("b", "alice", User)));
    }

    /// Exact names win over patterns, patterns are tried in the file's order (not the
    /// sorted order of the map), and what matches nothing goes to the default.
    #[test]
    fn exact_users_then_patterns_in_file_order_then_the_default() {
        use RouteStep::*;
        let router = router_with(|config| {
            let users = &mut config.routing.users;
            users.insert("partner-x".into(), "a".into());
            users.insert("partner-*".into(), "b".into());
            users.insert("p*".into(), "c".into());
            users.insert("partner-[0-9]".into(), "a".into());
            config.routing.users_order = ["partner-*", "p*", "partner-[0-9]"]
                .map(String::from)
                .to_vec();
        });
        assert_eq!(routed(&router, "partner-x"), Some(("a", "partner-x", User)));
        assert_eq!(routed(&router, "alice"), Some(("b", "alice", User)));
        assert_eq!(
            routed(&router, "partner-1"),
            Some(("b", "partner-1", Pattern)),
            "the first pattern in the file, though partner-[0-9] matches too"
        );
        assert_eq!(routed(&router, "pat"), Some(("c", "pat", Pattern)));
        assert_eq!(
            routed(&router, "Partner-1"),
            Some(("web", "Partner-1", Default))
        );
        assert_eq!(routed(&router, "bob"), Some(("web", "bob", Default)));
        let no_default = router_with(|config| {
            config.routing.default = None;
            config.backends.push(BackendConfig::default());
        });
        assert_eq!(no_default.route("bob", ClientNames::default()), Route::None);
    }

    /// HOST, else the TLS name, decides first (before `name@target` and the user rules);
    /// exact host names win over `*.` ones, which cover one label; case and a trailing
    /// dot do not matter; a name that matches nothing falls through.
    #[test]
    fn hosts_by_host_then_sni_exact_before_wildcard() {
        use RouteStep::*;
        let router = router_with(|config| {
            let hosts = &mut config.routing.hosts;
            hosts.insert("ftp.example.com".into(), "a".into());
            hosts.insert("*.partners.example".into(), "c".into());
            hosts.insert("special.partners.example".into(), "b".into());
            config.routing.allow_user_at_backend = true;
        });
        let host = |name| ClientNames {
            host: Some(name),
            sni: None,
        };
        let sni = |name| ClientNames {
            host: None,
            sni: Some(name),
        };
        assert!(router.has_hosts());
        assert_eq!(
            routed_for(&router, "alice", host("FTP.Example.COM.")),
            Some(("a", "alice", Host))
        );
        assert_eq!(
            routed_for(&router, "bob@b", host("x.partners.example")),
            Some(("c", "bob@b", Host)),
            "the host decides; the name is passed on as it is"
        );
        assert_eq!(
            routed_for(&router, "bob", sni("special.partners.example")),
            Some(("b", "bob", Sni))
        );
        let both = ClientNames {
            host: Some("ftp.example.com"),
            sni: Some("x.partners.example"),
        };
        assert_eq!(routed_for(&router, "bob", both), Some(("a", "bob", Host)));
        for unmatched in ["a.b.partners.example", "partners.example", "other.example"] {
            assert_eq!(router.host_target(unmatched), None, "{unmatched}");
            assert_eq!(
                routed_for(&router, "alice", sni(unmatched)),
                Some(("b", "alice", User)),
                "{unmatched} falls through"
            );
        }
        assert_eq!(
            routed_for(&router, "bob@c", sni("other.example")),
            Some(("c", "bob", UserAt))
        );
        assert!(!router_with(|_| ()).has_hosts());
    }

    fn names(candidates: Vec<BackendConfig>) -> Vec<String> {
        candidates.into_iter().map(|b| b.name).collect()
    }

    fn set_up(router: &Router, up: &[&str]) {
        for name in ["a", "b", "c"] {
            router.health.record(name, up.contains(&name));
        }
    }

    #[test]
    fn users_route_to_their_target_and_others_to_the_default() {
        let router = router(RoutingPolicy::First);
        assert_eq!(router.target("alice"), Some("b"));
        assert_eq!(router.target("bob"), Some("web"));
        assert_eq!(names(router.candidates("b", "bob")), ["b"]);
        assert!(router.serves("web", "c") && !router.serves("b", "c"));
    }

    #[test]
    fn first_tries_the_listed_order_healthy_ones_first() {
        let router = router(RoutingPolicy::First);
        set_up(&router, &["a", "b", "c"]);
        assert_eq!(names(router.candidates("web", "bob")), ["a", "b", "c"]);
        set_up(&router, &["b", "c"]);
        assert_eq!(names(router.candidates("web", "bob")), ["b", "c", "a"]);
        set_up(&router, &[]);
        assert_eq!(
            names(router.candidates("web", "bob")),
            ["a", "b", "c"],
            "all down: all tried"
        );
    }

    #[test]
    fn round_robin_starts_at_the_next_backend_each_time() {
        let router = router(RoutingPolicy::RoundRobin);
        set_up(&router, &["a", "b", "c"]);
        let firsts: Vec<String> = (0..6)
            .map(|_| names(router.candidates("web", "bob")).remove(0))
            .collect();
        assert_eq!(firsts, ["a", "b", "c", "a", "b", "c"]);
    }

    #[test]
    fn least_conn_prefers_the_backend_with_fewest_sessions() {
        let router = router(RoutingPolicy::LeastConn);
        set_up(&router, &["a", "b", "c"]);
        let _a = [admit(&router, "a"), admit(&router, "a")];
        let _c = admit(&router, "c");
        for _ in 0..4 {
            assert_eq!(names(router.candidates("web", "bob")), ["b", "c", "a"]);
        }
        drop(_a);
        assert_eq!(router.sessions("a"), 0);
    }

    fn sticky_router(max_sessions: Option<u32>) -> Router {
        let base = router(RoutingPolicy::RoundRobin);
        let mut config = (*base.config).clone();
        config.pools[0].sticky = Some(std::time::Duration::from_secs(60));
        config.backends[1].max_sessions = max_sessions;
        Router::new(Arc::new(config), base.health.clone(), base.sticky.clone())
    }

    fn decisions(router: &Router, decision: StickyDecision) -> u64 {
        router
            .health
            .metrics()
            .sticky_decisions_total
            .with_label_values(&[decision.label()])
            .get()
    }

    /// Logs `user` in on `backend` of pool `web` and ends the session at once.
    fn remember(router: &Router, user: &str, backend: &str) {
        let mut slot = router.sticky_slot("web", user);
        slot.logged_in(backend);
    }

    #[test]
    fn a_sticky_pool_puts_the_remembered_backend_first_unless_down_or_full() {
        let router = sticky_router(Some(1));
        set_up(&router, &["a", "b", "c"]);
        assert_eq!(names(router.candidates("web", "bob")), ["a", "b", "c"]);
        assert_eq!(decisions(&router, StickyDecision::Miss), 1);
        remember(&router, "bob", "b");
        for _ in 0..3 {
            assert_eq!(names(router.candidates("web", "bob"))[0], "b");
        }
        assert_eq!(decisions(&router, StickyDecision::Hit), 3);
        assert_eq!(
            names(router.candidates("web", "carol")),
            ["b", "c", "a"],
            "another user: the policy (round robin's fifth turn)"
        );
        set_up(&router, &["a", "c"]);
        assert_eq!(names(router.candidates("web", "bob")), ["c", "a", "b"]);
        assert_eq!(decisions(&router, StickyDecision::BackendDown), 1);
        set_up(&router, &["a", "b", "c"]);
        let _held = admit(&router, "b");
        assert_eq!(names(router.candidates("web", "bob")), ["a", "b", "c"]);
        assert_eq!(decisions(&router, StickyDecision::BackendFull), 1);
        assert_eq!(
            names(router.candidates("b", "bob")),
            ["b"],
            "a backend target is never sticky"
        );
        assert_eq!(decisions(&router, StickyDecision::Miss), 2);
    }

    #[test]
    fn random_uses_every_backend() {
        let router = router(RoutingPolicy::Random);
        set_up(&router, &["a", "b", "c"]);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.insert(names(router.candidates("web", "bob")).remove(0));
        }
        assert_eq!(seen.len(), 3);
    }
}
