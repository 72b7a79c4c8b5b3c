//! Bans of client addresses after repeated failed logins: `limits.max_failed_logins`
//! failures within `limits.failed_login_window` shut the address out for
//! `limits.ban_duration`.
//!
//! Memory is bounded: at most [`MAX_TRACKED`] addresses are tracked, each in a fixed-size
//! record (a fixed window counter, not a list of timestamps). IPv6 clients are tracked by
//! their /64, the block one subscriber usually gets, so that hopping through the addresses
//! of one's own prefix does not escape the ban.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;
use std::time::{Duration, Instant};

use crate::config::LimitsConfig;
use crate::metrics::Metrics;
use crate::net::canonical_ip;
use crate::shutdown;

/// Most addresses tracked at once (~64 bytes each, so ~4 MiB at most). When full, expired
/// records are dropped; if none has expired, new addresses go untracked (and the
/// refusal is counted) rather than evicting a ban that is still running.
pub const MAX_TRACKED: usize = 65_536;

/// The 421 text a banned address gets, on connect and at its next USER.
pub const BANNED_TEXT: &str = "Too many failed logins from your address; try again later.";

/// What a failed login did to the address's record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Counted; the address is not banned (yet), or bans are off.
    Counted,
    /// This failure reached the limit: the address is banned from now on.
    Banned,
    /// The table is full of live records; this address could not be tracked.
    Untracked,
}

#[derive(Debug, Clone, Copy)]
struct Record {
    window_start: Instant,
    failures: u32,
    banned_until: Option<Instant>,
}

impl Record {
    fn is_live(&self, now: Instant, window: Duration) -> bool {
        match self.banned_until {
            Some(until) => now < until,
            None => now.duration_since(self.window_start) < window,
        }
    }
}

pub struct Bans {
    /// Swapped by a reload; bans running keep their end.
    rules: ArcSwap<BanRules>,
    records: Mutex<HashMap<IpAddr, Record>>,
}

/// The `[limits]` ban settings.
#[derive(Clone, Copy)]
struct BanRules {
    max_failures: u32,
    window: Duration,
    duration: Duration,
}

impl BanRules {
    fn new(limits: &LimitsConfig) -> BanRules {
        BanRules {
            max_failures: limits.max_failed_logins,
            window: limits.failed_login_window,
            duration: limits.ban_duration,
        }
    }
}

/// The key an address is tracked under: the address itself, or the /64 of an IPv6 one.
fn key(ip: IpAddr) -> IpAddr {
    match canonical_ip(ip) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
        v4 => v4,
    }
}

impl Bans {
    pub fn new(limits: &LimitsConfig) -> Bans {
        Bans {
            rules: ArcSwap::from_pointee(BanRules::new(limits)),
            records: Mutex::new(HashMap::new()),
        }
    }

    /// New ban settings (a reload), for the failures and bans from now on.
    pub fn apply(&self, limits: &LimitsConfig) {
        self.rules.store(Arc::new(BanRules::new(limits)));
    }

    fn rules(&self) -> BanRules {
        **self.rules.load()
    }

    fn enabled(&self) -> bool {
        self.rules().max_failures > 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Record>> {
        self.records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// How much longer `ip` is banned, if it is.
    pub fn banned_for(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        if !self.enabled() {
            return None;
        }
        let records = self.lock();
        let until = records.get(&key(ip))?.banned_until?;
        until.checked_duration_since(now).filter(|d| !d.is_zero())
    }

    /// Counts a failed login from `ip`.
    pub fn record_failure(&self, ip: IpAddr, now: Instant) -> Failure {
        let rules = self.rules();
        if rules.max_failures == 0 {
            return Failure::Counted;
        }
        let mut records = self.lock();
        let key = key(ip);
        if !records.contains_key(&key) && records.len() >= MAX_TRACKED {
            let window = rules.window;
            records.retain(|_, record| record.is_live(now, window));
            if records.len() >= MAX_TRACKED {
                return Failure::Untracked;
            }
        }
        let fresh = Record {
            window_start: now,
            failures: 0,
            banned_until: None,
        };
        let record = records.entry(key).or_insert(fresh);
        if !record.is_live(now, rules.window) {
            *record = fresh;
        }
        if record.banned_until.is_some() {
            // Already banned (a session opened before the ban): the ban runs as it is.
            return Failure::Counted;
        }
        record.failures += 1;
        if record.failures < rules.max_failures {
            return Failure::Counted;
        }
        record.banned_until = Some(now + rules.duration);
        Failure::Banned
    }

    /// Drops the records that no longer matter and returns the number of bans running.
    pub fn sweep(&self, now: Instant) -> usize {
        let window = self.rules().window;
        let mut records = self.lock();
        records.retain(|_, record| record.is_live(now, window));
        records
            .values()
            .filter(|record| record.banned_until.is_some())
            .count()
    }
}

/// Expires bans once a second and keeps `ftpfront_bans_active` current.
pub async fn sweep_loop(
    bans: std::sync::Arc<Bans>,
    metrics: std::sync::Arc<Metrics>,
    mut stop: shutdown::Receiver,
) {
    let mut ticks = tokio::time::interval(Duration::from_secs(1));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = shutdown::stopping(&mut stop) => return,
        }
        let active = bans.sweep(Instant::now());
        metrics
            .bans_active
            .set(i64::try_from(active).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bans(max: u32, window_s: u64, ban_s: u64) -> Bans {
        Bans::new(&LimitsConfig {
            max_failed_logins: max,
            failed_login_window: Duration::from_secs(window_s),
            ban_duration: Duration::from_secs(ban_s),
            ..LimitsConfig::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn the_limit_bans_only_that_address_for_the_duration() {
        let bans = bans(3, 60, 10);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(bans.record_failure(a, t0), Failure::Counted);
        assert_eq!(bans.record_failure(a, t0), Failure::Counted);
        assert_eq!(bans.banned_for(a, t0), None);
        assert_eq!(bans.record_failure(a, t0), Failure::Banned);
        assert_eq!(bans.banned_for(a, t0), Some(Duration::from_secs(10)));
        assert_eq!(bans.banned_for(ip("192.0.2.2"), t0), None);
        assert_eq!(bans.sweep(t0), 1);
        let later = t0 + Duration::from_secs(10);
        assert_eq!(bans.banned_for(a, later), None);
        assert_eq!(bans.sweep(later), 0);
        // After the ban the count starts over.
        assert_eq!(bans.record_failure(a, later), Failure::Counted);
    }

    #[test]
    fn failures_outside_the_window_do_not_add_up() {
        let bans = bans(2, 60, 10);
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        assert_eq!(bans.record_failure(a, t0), Failure::Counted);
        let t1 = t0 + Duration::from_secs(61);
        assert_eq!(bans.record_failure(a, t1), Failure::Counted);
        assert_eq!(bans.record_failure(a, t1), Failure::Banned);
    }

    #[test]
    fn ipv6_is_tracked_by_its_64_and_mapped_v4_as_v4() {
        let bans = bans(2, 60, 10);
        let t0 = Instant::now();
        bans.record_failure(ip("2001:db8:1:2::1"), t0);
        bans.record_failure(ip("2001:db8:1:2:ffff::9"), t0);
        assert!(bans.banned_for(ip("2001:db8:1:2::77"), t0).is_some());
        assert!(bans.banned_for(ip("2001:db8:1:3::1"), t0).is_none());
        bans.record_failure(ip("::ffff:192.0.2.9"), t0);
        bans.record_failure(ip("192.0.2.9"), t0);
        assert!(bans.banned_for(ip("192.0.2.9"), t0).is_some());
    }

    #[test]
    fn zero_turns_bans_off() {
        let bans = bans(0, 60, 10);
        let t0 = Instant::now();
        for _ in 0..100 {
            assert_eq!(bans.record_failure(ip("192.0.2.1"), t0), Failure::Counted);
        }
        assert_eq!(bans.banned_for(ip("192.0.2.1"), t0), None);
        assert_eq!(bans.sweep(t0), 0);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_running_bans() {
        let bans = bans(1, 60, 600);
        let t0 = Instant::now();
        for n in 0..MAX_TRACKED as u32 {
            let addr = IpAddr::V4((0x0a00_0000 + n).into());
            assert_eq!(bans.record_failure(addr, t0), Failure::Banned);
        }
        let newcomer = ip("192.0.2.1");
        assert_eq!(bans.record_failure(newcomer, t0), Failure::Untracked);
        assert!(bans.banned_for(ip("10.0.0.0"), t0).is_some());
        // Once bans expire there is room again.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(bans.record_failure(newcomer, later), Failure::Banned);
        assert_eq!(bans.sweep(later), 1);
    }
}
