//! Admission of client control connections: allow/deny networks, the total session limit
//! and the per-IP session limit.

use arc_swap::ArcSwap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use ipnet::IpNet;

use crate::config::LimitsConfig;
use crate::net::canonical_ip;

/// Raises the soft open-files limit to the hard one and returns the new soft limit. Each
/// session needs up to 4 descriptors (client and backend control, two data legs during a
/// transfer) plus one per open passive listener; the usual soft default of 1024 would cap
/// a proxy at ~250 busy sessions while the hard limit (often 524288) allows far more.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own; raising soft up to hard is allowed.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(limit.rlim_cur)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("address not allowed")]
    Denied,
    #[error("too many sessions")]
    TooManySessions,
    #[error("too many sessions from this address")]
    TooManyFromAddress,
}

impl Rejection {
    /// The reply a rejected client gets before the connection is closed.
    pub fn reply_text(self) -> &'static str {
        match self {
            Rejection::Denied => "Service not available for your address.",
            Rejection::TooManySessions => "Too many sessions; try again later.",
            Rejection::TooManyFromAddress => {
                "Too many sessions from your address; try again later."
            }
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

pub struct Limiter {
    /// Swapped by a reload; the counts of the sessions already admitted stay.
    rules: ArcSwap<Rules>,
    counts: Mutex<Counts>,
}

/// The `[limits]` admission settings.
struct Rules {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    max_sessions: usize,
    max_per_ip: usize,
}

impl Rules {
    fn new(limits: &LimitsConfig) -> Rules {
        Rules {
            allow: limits.allow.clone(),
            deny: limits.deny.clone(),
            max_sessions: limits.max_sessions,
            max_per_ip: limits.max_sessions_per_ip,
        }
    }
}

/// One admitted session; dropping it frees its slots.
pub struct Permit {
    limiter: Arc<Limiter>,
    ip: IpAddr,
}

impl Limiter {
    pub fn new(limits: &LimitsConfig) -> Arc<Limiter> {
        Arc::new(Limiter {
            rules: ArcSwap::from_pointee(Rules::new(limits)),
            counts: Mutex::new(Counts::default()),
        })
    }

    /// New limits (a reload): sessions admitted before keep their slots; lower maximums
    /// refuse new sessions until enough of them ended.
    pub fn apply(&self, limits: &LimitsConfig) {
        self.rules.store(Arc::new(Rules::new(limits)));
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Deny wins over allow, so an operator can punch holes into a broad allow list.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Rejection> {
        let ip = canonical_ip(ip);
        let rules = self.rules.load();
        let listed = |nets: &[IpNet]| nets.iter().any(|net| net.contains(&ip));
        if listed(&rules.deny) || !listed(&rules.allow) {
            return Err(Rejection::Denied);
        }
        let mut counts = self.lock();
        if counts.total >= rules.max_sessions {
            return Err(Rejection::TooManySessions);
        }
        let from_ip = counts.per_ip.entry(ip).or_insert(0);
        if *from_ip >= rules.max_per_ip {
            return Err(Rejection::TooManyFromAddress);
        }
        *from_ip += 1;
        counts.total += 1;
        Ok(Permit {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut counts = self.limiter.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.per_ip.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max: usize, per_ip: usize, deny: &[&str]) -> LimitsConfig {
        LimitsConfig {
            max_sessions: max,
            max_sessions_per_ip: per_ip,
            deny: deny.iter().map(|d| d.parse().expect("net")).collect(),
            ..LimitsConfig::default()
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn per_ip_and_total_limits_free_on_drop() {
        let limiter = Limiter::new(&limits(2, 1, &[]));
        let a = limiter.admit(ip("10.0.0.1")).expect("first");
        assert_eq!(
            limiter.admit(ip("10.0.0.1")).err(),
            Some(Rejection::TooManyFromAddress)
        );
        let _b = limiter.admit(ip("10.0.0.2")).expect("other ip");
        assert_eq!(
            limiter.admit(ip("10.0.0.3")).err(),
            Some(Rejection::TooManySessions)
        );
        drop(a);
        assert!(limiter.admit(ip("10.0.0.1")).is_ok());
    }

    #[test]
    fn deny_wins_and_mapped_addresses_match() {
        let limiter = Limiter::new(&limits(10, 10, &["192.0.2.0/24"]));
        assert_eq!(
            limiter.admit(ip("::ffff:192.0.2.7")).err(),
            Some(Rejection::Denied)
        );
        assert!(limiter.admit(ip("198.51.100.1")).is_ok());
    }
}
