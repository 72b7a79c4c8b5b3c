//! Live reload (SIGHUP): which parts of a re-read configuration a running proxy can take
//! (backends, pools, routing, limits, health, TLS, shutdown, data) and which need a restart
//! (listeners, the passive range, the metrics endpoint, logging), kept as they run.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError};
use crate::metrics::{labels, Metrics};
use crate::tls::TlsError;

/// Why a reload was refused; the running configuration stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Tls(#[from] TlsError),
}

impl ReloadError {
    /// One line per problem, as `ftpfront check` prints them.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_owned).collect()
    }
}

/// The sections a running proxy cannot change: their sockets (and the logger) exist once.
const RESTART_ONLY: [&str; 4] = ["listen", "passive", "metrics", "log"];

/// The sections of `new` that differ from `running` but need a restart.
pub fn needs_restart(running: &Config, new: &Config) -> Vec<&'static str> {
    let changed = [
        running.listen != new.listen,
        running.passive != new.passive,
        running.metrics != new.metrics,
        running.log != new.log,
    ];
    RESTART_ONLY
        .into_iter()
        .zip(changed)
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
}

/// `new` with the restart-only sections as they run, so the configuration in effect says
/// what really runs (and is validated as a whole).
pub fn keep_restart_only(running: &Config, mut new: Config) -> Config {
    new.listen = running.listen.clone();
    new.passive = running.passive.clone();
    new.metrics = running.metrics.clone();
    new.log = running.log.clone();
    new
}

/// Counts one reload's result in `ftpfront_config_reloads_total` and, when it took, the
/// time in `ftpfront_config_last_reload_success_timestamp_seconds`.
pub fn count(metrics: &Metrics, ok: bool) {
    let result = if ok { labels::OK } else { labels::REJECTED };
    metrics
        .config_reloads_total
        .with_label_values(&[result])
        .inc();
    if ok {
        mark_loaded(metrics);
    }
}

/// The configuration in effect was loaded now (at start, or by a reload).
pub fn mark_loaded(metrics: &Metrics) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|since| since.as_secs_f64())
        .unwrap_or(0.0);
    metrics
        .config_last_reload_success_timestamp_seconds
        .set(now);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_changed_restart_only_sections_are_reported_and_kept() {
        let running = Config::default();
        let mut new = Config::default();
        new.passive.ports = "40000-40009".parse().expect("range");
        new.limits.max_sessions = 7;
        new.routing.default = Some("b".into());
        assert_eq!(needs_restart(&running, &new), ["passive"]);
        let kept = keep_restart_only(&running, new);
        assert_eq!(kept.passive, running.passive, "the running range stays");
        assert_eq!(kept.limits.max_sessions, 7, "limits take effect");
        assert_eq!(kept.routing.default.as_deref(), Some("b"));
        assert!(needs_restart(&running, &kept).is_empty());
    }
}
