//! Sticky sessions (`pools.sticky`): the backend of a user's last session on a pool,
//! remembered while their sessions run and for the pool's window after the last one ended,
//! in a bounded table.
//!
//! The key is (pool, user name as the backend hears it), not the client's address: a user
//! whose address changes (mobile clients, NAT pools) still finds the backend holding the
//! first part of their upload. Only successful logins are recorded, so anonymous peers
//! cannot grow the table; it holds at most [`MAX_ENTRIES`] entries (about 250 bytes each
//! plus the pool and user names, so some 30 MB at most). An entry whose window has ended is
//! dropped at the next lookup or login (no task needed); when the table is still full, the
//! entry whose window ends soonest makes room, and when every entry is held by a running
//! session the new login is not remembered. Both are counted in
//! `ftpfront_sticky_table_full_total`.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::config::MAX_STICKY;
use crate::metrics::{Metrics, StickyOverflow};

/// Most entries at once (see the module comment for the memory this bounds).
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, PartialEq, Eq, Hash)]
struct Key {
    pool: String,
    user: String,
}

/// When an entry's window ends; the sequence number orders equal instants.
type Ending = (Instant, u64);

struct Entry {
    backend: String,
    window: Duration,
    /// Sessions of this user on this pool running now; while any runs, the entry stays.
    holders: u32,
    /// The end of the window once no session holds the entry (its key in `ending`).
    ends: Option<Ending>,
}

#[derive(Default)]
struct Table {
    entries: HashMap<Arc<Key>, Entry>,
    /// Entries no session holds, by the end of their window: swept and evicted from the front.
    ending: BTreeMap<Ending, Arc<Key>>,
    sequence: u64,
}

impl Table {
    /// Drops every entry whose window ended at or before `now`.
    fn sweep(&mut self, now: Instant) {
        while let Some(entry) = self.ending.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            self.entries.remove(&key);
        }
    }

    /// Makes room for one more entry; `Err` when every entry is held.
    fn make_room(&mut self, max: usize) -> Result<Option<StickyOverflow>, StickyOverflow> {
        if self.entries.len() < max {
            return Ok(None);
        }
        match self.ending.pop_first() {
            Some((_, key)) => {
                self.entries.remove(&key);
                Ok(Some(StickyOverflow::Evicted))
            }
            None => Err(StickyOverflow::NotRecorded),
        }
    }
}

/// Which backend each (pool, user) returns to; shared by every session.
pub struct StickyTable {
    max_entries: usize,
    table: Mutex<Table>,
    metrics: Arc<Metrics>,
}

impl StickyTable {
    pub fn new(metrics: Arc<Metrics>) -> Arc<StickyTable> {
        StickyTable::with_max_entries(MAX_ENTRIES, metrics)
    }

    fn with_max_entries(max_entries: usize, metrics: Arc<Metrics>) -> Arc<StickyTable> {
        Arc::new(StickyTable {
            max_entries,
            table: Mutex::new(Table::default()),
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // The table stays consistent at every step, so a panic elsewhere leaves it usable.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn publish(&self, table: &Table) {
        let entries = i64::try_from(table.entries.len()).unwrap_or(i64::MAX);
        self.metrics.sticky_entries.set(entries);
    }

    /// The backend `user` returns to on `pool` at `now`, if any.
    pub fn lookup(&self, pool: &str, user: &str, now: Instant) -> Option<String> {
        let mut table = self.lock();
        table.sweep(now);
        self.publish(&table);
        let key = Key {
            pool: pool.to_string(),
            user: user.to_string(),
        };
        table.entries.get(&key).map(|entry| entry.backend.clone())
    }

    /// Records a successful login of `user` on `backend` of `pool` (replacing what was
    /// remembered) and holds the entry until the returned hold is dropped, when its
    /// `window` starts; `None` when the table is full of held entries.
    pub fn hold(
        self: &Arc<Self>,
        pool: &str,
        user: &str,
        backend: &str,
        window: Duration,
        now: Instant,
    ) -> Option<StickyHold> {
        // Validation bounds the window; the clamp keeps `now + window` from overflowing.
        let window = window.min(MAX_STICKY);
        let key = Arc::new(Key {
            pool: pool.to_string(),
            user: user.to_string(),
        });
        let mut table = self.lock();
        table.sweep(now);
        let table = &mut *table;
        if let Some(entry) = table.entries.get_mut(&key) {
            if let Some(ends) = entry.ends.take() {
                table.ending.remove(&ends);
            }
            entry.holders += 1;
            entry.window = window;
            backend.clone_into(&mut entry.backend);
        } else {
            let room = table.make_room(self.max_entries);
            if let Ok(Some(overflow)) | Err(overflow) = room {
                self.count_overflow(overflow);
            }
            if room.is_err() {
                self.publish(table);
                return None;
            }
            let entry = Entry {
                backend: backend.to_string(),
                window,
                holders: 1,
                ends: None,
            };
            table.entries.insert(key.clone(), entry);
        }
        self.publish(table);
        Some(StickyHold {
            table: self.clone(),
            key,
        })
    }

    fn count_overflow(&self, overflow: StickyOverflow) {
        self.metrics
            .sticky_table_full_total
            .with_label_values(&[overflow.label()])
            .inc();
    }

    /// One session of the entry ended; the last one starts the window.
    fn release(&self, key: &Arc<Key>, now: Instant) {
        let mut table = self.lock();
        let table = &mut *table;
        let Some(entry) = table.entries.get_mut(key) else {
            return;
        };
        entry.holders = entry.holders.saturating_sub(1);
        if entry.holders == 0 {
            table.sequence += 1;
            let ends = (now + entry.window, table.sequence);
            entry.ends = Some(ends);
            table.ending.insert(ends, key.clone());
        }
    }
}

/// A running session's hold on its entry: the entry does not expire while any hold on it
/// lives; dropping the last one starts the window.
pub struct StickyHold {
    table: Arc<StickyTable>,
    key: Arc<Key>,
}

impl Drop for StickyHold {
    fn drop(&mut self) {
        self.table.release(&self.key, Instant::now());
    }
}

/// Where a session's login is remembered: nowhere (not a sticky pool), in the table once
/// the login succeeds (`Pending`), or held while the session runs.
#[derive(Default)]
pub enum StickySlot {
    #[default]
    Off,
    Pending {
        table: Arc<StickyTable>,
        pool: String,
        user: String,
        window: Duration,
    },
    Held(StickyHold),
}

impl StickySlot {
    /// The login succeeded on `backend`: remember it and hold the entry.
    pub fn logged_in(&mut self, backend: &str) {
        if let StickySlot::Pending {
            table,
            pool,
            user,
            window,
        } = std::mem::take(self)
        {
            if let Some(hold) = table.hold(&pool, &user, backend, window, Instant::now()) {
                *self = StickySlot::Held(hold);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: Duration = Duration::from_secs(10);

    fn table(max: usize) -> (Arc<StickyTable>, Arc<Metrics>) {
        let metrics = Metrics::new();
        (StickyTable::with_max_entries(max, metrics.clone()), metrics)
    }

    fn full(metrics: &Metrics, overflow: StickyOverflow) -> u64 {
        metrics
            .sticky_table_full_total
            .with_label_values(&[overflow.label()])
            .get()
    }

    #[test]
    fn the_window_counts_from_the_end_of_the_session() {
        let (table, metrics) = table(10);
        let t0 = Instant::now();
        let hold = table
            .hold("web", "alice", "a", WINDOW, t0)
            .expect("recorded");
        let much_later = t0 + WINDOW * 5;
        assert_eq!(
            table.lookup("web", "alice", much_later).as_deref(),
            Some("a"),
            "held while the session runs, however long"
        );
        let ended = Instant::now();
        drop(hold);
        let after = Instant::now();
        let within = ended + WINDOW - Duration::from_millis(1);
        assert_eq!(table.lookup("web", "alice", within).as_deref(), Some("a"));
        assert_eq!(metrics.sticky_entries.get(), 1);
        let past = after + WINDOW + Duration::from_millis(1);
        assert_eq!(table.lookup("web", "alice", past), None, "window over");
        assert_eq!(metrics.sticky_entries.get(), 0, "swept");
    }

    #[test]
    fn the_key_is_pool_and_user_and_the_last_login_wins() {
        let (table, _) = table(10);
        let now = Instant::now();
        drop(table.hold("web", "alice", "a", WINDOW, now));
        drop(table.hold("ftp", "alice", "c", WINDOW, now));
        assert_eq!(table.lookup("web", "alice", now).as_deref(), Some("a"));
        assert_eq!(table.lookup("ftp", "alice", now).as_deref(), Some("c"));
        assert_eq!(table.lookup("web", "bob", now), None);
        drop(table.hold("web", "alice", "b", WINDOW, now));
        assert_eq!(table.lookup("web", "alice", now).as_deref(), Some("b"));
    }

    #[test]
    fn concurrent_sessions_hold_the_entry_until_the_last_ends() {
        let (table, _) = table(10);
        let t0 = Instant::now();
        let first = table.hold("web", "alice", "a", WINDOW, t0).expect("first");
        let second = table.hold("web", "alice", "a", WINDOW, t0).expect("second");
        drop(first);
        let long_after = Instant::now() + WINDOW * 3;
        assert_eq!(
            table.lookup("web", "alice", long_after).as_deref(),
            Some("a"),
            "the second session still runs"
        );
        drop(second);
        let after = Instant::now();
        assert_eq!(
            table.lookup("web", "alice", after + WINDOW / 2).as_deref(),
            Some("a")
        );
        assert_eq!(table.lookup("web", "alice", long_after), None);
    }

    #[test]
    fn a_full_table_sweeps_then_evicts_the_soonest_ending_and_keeps_held_entries() {
        let (table, metrics) = table(3);
        let t0 = Instant::now();
        let held = table.hold("web", "held", "a", WINDOW, t0).expect("held");
        drop(table.hold("web", "short", "a", Duration::from_secs(1), t0));
        drop(table.hold("web", "long", "a", WINDOW, t0));
        let now = Instant::now();
        drop(table.hold("web", "new", "b", WINDOW, now).expect("evicts"));
        assert_eq!(full(&metrics, StickyOverflow::Evicted), 1);
        assert_eq!(table.lookup("web", "short", now), None, "ended soonest");
        assert_eq!(table.lookup("web", "held", now).as_deref(), Some("a"));
        assert_eq!(table.lookup("web", "long", now).as_deref(), Some("a"));
        // After the long windows pass, a login finds room by sweeping alone.
        let later = Instant::now() + WINDOW * 2;
        drop(
            table
                .hold("web", "late", "b", WINDOW, later)
                .expect("swept"),
        );
        assert_eq!(full(&metrics, StickyOverflow::Evicted), 1);
        assert_eq!(metrics.sticky_entries.get(), 2, "held and late");
        drop(held);
    }

    #[test]
    fn a_table_full_of_running_sessions_records_nothing_new() {
        let (table, metrics) = table(2);
        let now = Instant::now();
        let _held = [
            table.hold("web", "a", "a", WINDOW, now),
            table.hold("web", "b", "a", WINDOW, now),
        ];
        assert!(table.hold("web", "c", "a", WINDOW, now).is_none());
        assert_eq!(full(&metrics, StickyOverflow::NotRecorded), 1);
        assert_eq!(table.lookup("web", "c", now), None);
        assert!(
            table.hold("web", "a", "b", WINDOW, now).is_some(),
            "a held user still moves"
        );
    }

    #[test]
    fn a_slot_records_only_after_the_login() {
        let (table, _) = table(10);
        let mut slot = StickySlot::Pending {
            table: table.clone(),
            pool: "web".into(),
            user: "alice".into(),
            window: WINDOW,
        };
        let now = Instant::now();
        assert_eq!(table.lookup("web", "alice", now), None);
        slot.logged_in("b");
        assert!(matches!(slot, StickySlot::Held(_)));
        assert_eq!(table.lookup("web", "alice", now).as_deref(), Some("b"));
        let mut off = StickySlot::Off;
        off.logged_in("c");
        assert!(matches!(off, StickySlot::Off));
    }
}
