//! Backend health: each backend's up/down state from consecutive connect results (the
//! probes' and the sessions'), flipped after `health.rise` successes or `health.fall`
//! failures in a row; behind `ftpfront_backend_up`, `ftpfront_pool_backends_up`, the
//! policies' "healthy first" and `/readyz`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::Config;
use crate::metrics::Metrics;

/// The health of every configured backend.
pub struct Health {
    metrics: Arc<Metrics>,
    inner: Mutex<Inner>,
}

struct Inner {
    rise: u32,
    fall: u32,
    backends: HashMap<String, State>,
    /// Each pool's members, for `ftpfront_pool_backends_up`.
    pools: Vec<(String, Vec<String>)>,
}

/// One backend's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct State {
    /// `None` until the first result, which decides at once (no streak to wait for at
    /// start); a backend with `health = false` is up for good.
    up: Option<bool>,
    /// Consecutive results against the current state.
    streak: u32,
    /// `health = false`: never probed, always up, connect results ignored.
    unchecked: bool,
}

impl State {
    fn new(unchecked: bool) -> State {
        State {
            up: unchecked.then_some(true),
            streak: 0,
            unchecked,
        }
    }

    /// Takes one result; returns whether the state flipped.
    fn observe(&mut self, ok: bool, rise: u32, fall: u32) -> bool {
        if self.unchecked {
            return false;
        }
        match self.up {
            None => {
                self.up = Some(ok);
                true
            }
            Some(up) if up == ok => {
                self.streak = 0;
                false
            }
            Some(up) => {
                self.streak += 1;
                let needed = if up { fall } else { rise };
                if self.streak < needed.max(1) {
                    return false;
                }
                self.up = Some(ok);
                self.streak = 0;
                true
            }
        }
    }
}

impl Health {
    pub fn new(config: &Config, metrics: Arc<Metrics>) -> Health {
        let health = Health {
            metrics,
            inner: Mutex::new(Inner {
                rise: 1,
                fall: 1,
                backends: HashMap::new(),
                pools: Vec::new(),
            }),
        };
        health.apply(config);
        health
    }

    /// Takes the backends, pools and counts of `config` (at start and on reload): a backend
    /// that stays keeps its state, a new one starts unknown (down until its first result),
    /// a removed one is forgotten.
    pub fn apply(&self, config: &Config) {
        let mut inner = self.lock();
        inner.rise = config.health.rise;
        inner.fall = config.health.fall;
        let mut old = std::mem::take(&mut inner.backends);
        for backend in &config.backends {
            let unchecked = !backend.health;
            let state = match old.remove(&backend.name) {
                Some(kept) if kept.unchecked == unchecked => kept,
                _ => State::new(unchecked),
            };
            inner.backends.insert(backend.name.clone(), state);
        }
        for removed in old.keys() {
            let _ = self.metrics.backend_up.remove_label_values(&[removed]);
        }
        for (pool, _) in &inner.pools {
            if config.pool(pool).is_none() {
                let _ = self.metrics.pool_backends_up.remove_label_values(&[pool]);
            }
        }
        inner.pools = config
            .pools
            .iter()
            .map(|pool| (pool.name.clone(), pool.backends.clone()))
            .collect();
        let ready_on = config
            .default_backend()
            .and_then(|target| config.target_backends(target))
            .map(|members| members.iter().map(|b| b.name.clone()).collect())
            .unwrap_or_else(|| config.backends.iter().map(|b| b.name.clone()).collect());
        self.metrics.set_readiness_backends(ready_on);
        self.publish(&inner);
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Whether `backend` is to be probed (`health = true`, the default).
    pub fn is_probed(&self, backend: &str) -> bool {
        self.lock()
            .backends
            .get(backend)
            .is_some_and(|state| !state.unchecked)
    }

    /// Whether `backend` counts as up (a backend not known, or not yet probed, does not).
    pub fn is_up(&self, backend: &str) -> bool {
        self.lock()
            .backends
            .get(backend)
            .is_some_and(|state| state.up == Some(true))
    }

    /// One connect result for `backend` (a probe's or a session's).
    pub fn record(&self, backend: &str, ok: bool) {
        let mut inner = self.lock();
        let (rise, fall) = (inner.rise, inner.fall);
        let Some(state) = inner.backends.get_mut(backend) else {
            return;
        };
        let was = state.up;
        if !state.observe(ok, rise, fall) {
            return;
        }
        match (was, ok) {
            (None, true) => tracing::info!(backend, "backend up"),
            (None, false) => tracing::warn!(backend, "backend down"),
            (Some(_), true) => tracing::info!(backend, rise, "backend up again"),
            (Some(_), false) => tracing::warn!(backend, fall, "backend down"),
        }
        if was.is_some() {
            let to = if ok { "up" } else { "down" };
            self.metrics
                .backend_health_transitions_total
                .with_label_values(&[backend, to])
                .inc();
        }
        self.publish(&inner);
    }

    /// `ftpfront_backend_up` for every backend and `ftpfront_pool_backends_up` per pool.
    fn publish(&self, inner: &Inner) {
        for (name, state) in &inner.backends {
            let up = i64::from(state.up == Some(true));
            self.metrics.backend_up.with_label_values(&[name]).set(up);
        }
        for (pool, members) in &inner.pools {
            let up = members
                .iter()
                .filter(|name| {
                    inner
                        .backends
                        .get(name.as_str())
                        .is_some_and(|state| state.up == Some(true))
                })
                .count();
            self.metrics
                .pool_backends_up
                .with_label_values(&[pool])
                .set(i64::try_from(up).unwrap_or(i64::MAX));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, PoolConfig};

    fn config(rise: u32, fall: u32) -> Config {
        let mut config = Config::default();
        config.health.rise = rise;
        config.health.fall = fall;
        for name in ["a", "b"] {
            config.backends.push(BackendConfig {
                name: name.into(),
                address: "127.0.0.1:21".into(),
                ..BackendConfig::default()
            });
        }
        config.pools.push(PoolConfig {
            name: "web".into(),
            backends: vec!["a".into(), "b".into()],
            ..PoolConfig::default()
        });
        config.routing.default = Some("web".into());
        config
    }

    fn up_gauge(health: &Health, name: &str) -> i64 {
        health.metrics.backend_up.with_label_values(&[name]).get()
    }

    #[test]
    fn the_first_result_decides_then_fall_and_rise_need_streaks() {
        let health = Health::new(&config(3, 2), Metrics::new());
        assert!(!health.is_up("a"), "unknown until the first result");
        health.record("a", true);
        assert!(health.is_up("a") && up_gauge(&health, "a") == 1);
        health.record("a", false);
        assert!(health.is_up("a"), "one failure of fall = 2");
        health.record("a", true);
        health.record("a", false);
        assert!(health.is_up("a"), "a success restarts the streak");
        health.record("a", false);
        assert!(!health.is_up("a") && up_gauge(&health, "a") == 0);
        for _ in 0..2 {
            health.record("a", true);
            assert!(!health.is_up("a"), "rise = 3");
        }
        health.record("a", true);
        assert!(health.is_up("a"));
        let transitions = |to: &str| {
            health
                .metrics
                .backend_health_transitions_total
                .with_label_values(&["a", to])
                .get()
        };
        assert_eq!((transitions("down"), transitions("up")), (1, 1));
    }

    #[test]
    fn pools_count_their_members_up_and_readiness_follows_the_default_route() {
        let metrics = Metrics::new();
        metrics.set_ready(true);
        let health = Health::new(&config(1, 1), metrics.clone());
        assert!(!metrics.is_ready(), "no backend of `web` known up");
        health.record("b", true);
        let pool = || metrics.pool_backends_up.with_label_values(&["web"]).get();
        assert_eq!(pool(), 1);
        assert!(metrics.is_ready());
        health.record("a", true);
        assert_eq!(pool(), 2);
        health.record("b", false);
        health.record("a", false);
        assert_eq!(pool(), 0);
        assert!(!metrics.is_ready());
    }

    #[test]
    fn an_unchecked_backend_is_up_for_good_and_a_reload_keeps_known_states() {
        let mut config = config(1, 1);
        config.backends[1].health = false;
        let health = Health::new(&config, Metrics::new());
        assert!(health.is_up("b") && !health.is_probed("b") && health.is_probed("a"));
        health.record("b", false);
        assert!(health.is_up("b"), "connect results do not move it");
        health.record("a", true);
        config.backends.push(BackendConfig {
            name: "c".into(),
            address: "127.0.0.1:21".into(),
            ..BackendConfig::default()
        });
        health.apply(&config);
        assert!(health.is_up("a"), "kept over a reload");
        assert!(!health.is_up("c"), "a new backend starts unknown");
        config.backends.remove(0);
        health.apply(&config);
        assert!(!health.is_up("a"), "a removed backend is forgotten");
    }
}
