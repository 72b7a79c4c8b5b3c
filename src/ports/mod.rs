//! The passive port pool over the fixed forwarded range: one long-lived listener per port,
//! pending reservations keyed by (port, client IP), dispatch of accepted data connections.
//!
//! A port is not owned by a session. Sessions from different client IPs may hold the same
//! port at once, because an accepted connection is handed to the reservation whose client IP
//! equals its source IP: the anti-theft check *is* the dispatch. Two pending reservations of
//! the same IP get different ports, since nothing on the wire could tell them apart.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::{PassiveConfig, PortRange};
use crate::metrics::{labels, Metrics};
use crate::net::{bind_listener, canonical_ip};
use crate::proxy_protocol::ProxyPolicy;

mod announce;

pub use announce::Announcement;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("no passive port is free for {0}; all {1} ports of the range hold a pending reservation for this address")]
    Exhausted(IpAddr, usize),
    #[error("the proxy is shutting down")]
    Closed,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AcceptError {
    #[error("no data connection arrived within {0:?}")]
    Timeout(Duration),
}

/// How long a port whose bind failed is skipped before it is tried again.
const BIND_RETRY_AFTER: Duration = Duration::from_secs(10);
/// How long a passive listener stays open without reservations (a PASV burst reuses it).
pub const LISTENER_IDLE: Duration = Duration::from_secs(60);
/// How often expired reservations are swept so the gauges stay true.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

struct Pending {
    id: u64,
    client_ip: IpAddr,
    deadline: Instant,
    deliver: oneshot::Sender<(TcpStream, SocketAddr)>,
}

enum ListenerState {
    /// Listening; `stop` ends its accept loop (and closes it) once the port sat idle.
    Bound {
        stop: CancellationToken,
        last_used: Instant,
    },
    Failed {
        retry_at: Instant,
    },
}

#[derive(Default)]
struct State {
    listeners: HashMap<u16, ListenerState>,
    /// Only ports with at least one pending reservation have an entry.
    pending: HashMap<u16, Vec<Pending>>,
    reservation_count: usize,
    cursor: usize,
}

struct Inner {
    range: PortRange,
    bind: IpAddr,
    multiplex: bool,
    accept_timeout: Duration,
    proxy: Option<Arc<ProxyPolicy>>,
    listener_idle: Duration,
    announce: Announcement,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    next_id: AtomicU64,
    /// Cancelled when the pool closes: every accept loop and the sweeper stop at once, so
    /// a stopped proxy's ports are free (and refuse connections) without waiting for a
    /// connection or a timer.
    closed: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Shared handle on the pool; cheap to clone.
#[derive(Clone)]
pub struct PortPool {
    inner: Arc<Inner>,
}

/// Settings of the pool, taken from `[passive]` and `[limits]`.
pub struct PoolSettings {
    pub range: PortRange,
    pub bind: IpAddr,
    pub multiplex: bool,
    pub accept_timeout: Duration,
    /// Data connections start with a PROXY header from a trusted load balancer.
    pub proxy: Option<Arc<ProxyPolicy>>,
    /// See [`LISTENER_IDLE`].
    pub listener_idle: Duration,
    /// What clients are told to connect to.
    pub announce: Announcement,
}

impl PoolSettings {
    /// The pool `[passive]` describes, with `accept_timeout` from `[limits]`.
    pub fn new(
        passive: &PassiveConfig,
        accept_timeout: Duration,
        proxy: Option<Arc<ProxyPolicy>>,
    ) -> PoolSettings {
        PoolSettings {
            range: passive.ports,
            bind: passive.bind,
            multiplex: passive.multiplex,
            accept_timeout,
            proxy,
            listener_idle: LISTENER_IDLE,
            announce: Announcement::new(passive),
        }
    }
}

impl PortPool {
    /// Creates the pool and its sweeper task (must run inside a tokio runtime).
    pub fn new(settings: PoolSettings, metrics: Arc<Metrics>) -> PortPool {
        metrics
            .passive_ports_configured
            .set(i64::try_from(settings.range.len()).unwrap_or(i64::MAX));
        let inner = Arc::new(Inner {
            range: settings.range,
            bind: settings.bind,
            multiplex: settings.multiplex,
            accept_timeout: settings.accept_timeout,
            proxy: settings.proxy,
            listener_idle: settings.listener_idle,
            announce: settings.announce,
            metrics,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
        });
        tokio::spawn(sweep_expired(Arc::downgrade(&inner), inner.closed.clone()));
        PortPool { inner }
    }

    /// What clients are told to connect to.
    pub fn announcement(&self) -> &Announcement {
        &self.inner.announce
    }

    /// Stops every listener of the pool now (shutdown); reservations fail from here on.
    pub fn close(&self) {
        self.inner.closed.cancel();
    }

    /// Reserves a port for a data connection from `client_ip`.
    pub fn reserve(&self, client_ip: IpAddr) -> Result<Reservation, PoolError> {
        let client_ip = canonical_ip(client_ip);
        let inner = &self.inner;
        if inner.closed.is_cancelled() {
            return Err(PoolError::Closed);
        }
        let mut state = inner.lock();
        let now = Instant::now();
        inner.purge_expired(&mut state, now);
        let len = inner.range.len();
        for offset in 0..len {
            let index = (state.cursor + offset) % len;
            let Some(port) = port_at(inner.range, index) else {
                continue;
            };
            if !inner.port_is_free_for(&state, port, client_ip)
                || !inner.ensure_listener(&mut state, port, now)
            {
                continue;
            }
            state.cursor = (index + 1) % len;
            let (deliver, receiver) = oneshot::channel();
            let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
            let deadline = now + inner.accept_timeout;
            state.pending.entry(port).or_default().push(Pending {
                id,
                client_ip,
                deadline,
                deliver,
            });
            state.reservation_count += 1;
            inner.update_gauges(&state);
            return Ok(Reservation {
                pool: self.inner.clone(),
                port,
                id,
                deadline,
                receiver,
                accept_timeout: inner.accept_timeout,
            });
        }
        inner.metrics.passive_port_exhausted_total.inc();
        Err(PoolError::Exhausted(client_ip, len))
    }
}

fn port_at(range: PortRange, index: usize) -> Option<u16> {
    u16::try_from(index)
        .ok()
        .and_then(|i| range.start.checked_add(i))
        .filter(|port| *port <= range.end)
}

impl Inner {
    /// The lock only guards short table updates; a poisoned lock (a panic elsewhere) still
    /// holds consistent data, so the pool keeps serving instead of failing every session.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn port_is_free_for(&self, state: &State, port: u16, client_ip: IpAddr) -> bool {
        match state.pending.get(&port) {
            None => true,
            Some(pending) if self.multiplex => pending.iter().all(|p| p.client_ip != client_ip),
            Some(pending) => pending.is_empty(),
        }
    }

    /// Binds the port's shared listener on first use; false when it cannot be bound now.
    fn ensure_listener(self: &Arc<Self>, state: &mut State, port: u16, now: Instant) -> bool {
        match state.listeners.get_mut(&port) {
            Some(ListenerState::Bound { last_used, .. }) => {
                *last_used = now;
                return true;
            }
            Some(ListenerState::Failed { retry_at }) if *retry_at > now => return false,
            _ => {}
        }
        match bind_listener(self.bind, port) {
            Ok(listener) => {
                debug!(port, "passive listener bound");
                let stop = self.closed.child_token();
                let bound = ListenerState::Bound {
                    stop: stop.clone(),
                    last_used: now,
                };
                state.listeners.insert(port, bound);
                self.count_listeners(state);
                tokio::spawn(accept_loop(Arc::downgrade(self), listener, port, stop));
                true
            }
            Err(e) => {
                warn!(port, bind = %self.bind, error = %e, "cannot bind passive port; skipping it for now");
                state.listeners.insert(
                    port,
                    ListenerState::Failed {
                        retry_at: now + BIND_RETRY_AFTER,
                    },
                );
                false
            }
        }
    }

    /// Closes the listeners of ports that held no reservation for `listener_idle`: lazily
    /// bound listeners would otherwise stay open for good, one descriptor per port of a
    /// range that may be thousands wide.
    fn close_idle_listeners(&self, state: &mut State, now: Instant) {
        let pending = &state.pending;
        let idle = self.listener_idle;
        let before = state.listeners.len();
        state.listeners.retain(|port, listener| match listener {
            ListenerState::Bound { stop, last_used } => {
                let keep = pending.contains_key(port) || now.duration_since(*last_used) < idle;
                if !keep {
                    debug!(port, "passive listener idle: closed");
                    stop.cancel();
                }
                keep
            }
            ListenerState::Failed { .. } => true,
        });
        if state.listeners.len() != before {
            self.count_listeners(state);
        }
    }

    fn count_listeners(&self, state: &State) {
        let open = state
            .listeners
            .values()
            .filter(|l| matches!(l, ListenerState::Bound { .. }))
            .count();
        self.metrics
            .passive_listeners_open
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    fn purge_expired(&self, state: &mut State, now: Instant) {
        let mut removed = 0;
        state.pending.retain(|_, pending| {
            let before = pending.len();
            pending.retain(|p| p.deadline > now && !p.deliver.is_closed());
            removed += before - pending.len();
            !pending.is_empty()
        });
        if removed > 0 {
            state.reservation_count -= removed;
            self.update_gauges(state);
        }
    }

    fn remove(
        &self,
        state: &mut State,
        port: u16,
        matches: impl Fn(&Pending) -> bool,
    ) -> Option<Pending> {
        let pending = state.pending.get_mut(&port)?;
        let position = pending.iter().position(matches)?;
        let taken = pending.swap_remove(position);
        if pending.is_empty() {
            state.pending.remove(&port);
        }
        state.reservation_count -= 1;
        self.update_gauges(state);
        Some(taken)
    }

    fn release(&self, port: u16, id: u64) {
        let mut state = self.lock();
        self.remove(&mut state, port, |p| p.id == id);
    }

    /// Hands an accepted connection to the reservation of its source IP, or drops it.
    fn dispatch(&self, port: u16, stream: TcpStream, peer: SocketAddr) {
        let client_ip = canonical_ip(peer.ip());
        let now = Instant::now();
        let taken = {
            let mut state = self.lock();
            self.remove(&mut state, port, |p| {
                p.client_ip == client_ip && p.deadline > now
            })
        };
        match taken {
            Some(pending) => {
                if pending.deliver.send((stream, peer)).is_err() {
                    debug!(port, %peer, "data connection arrived for a session that just ended");
                }
            }
            None => {
                warn!(port, %peer, "data connection from an address without a reservation on this port: dropped");
                self.metrics
                    .data_connections_rejected_total
                    .with_label_values(&[labels::FOREIGN_IP])
                    .inc();
            }
        }
    }

    fn update_gauges(&self, state: &State) {
        self.metrics
            .passive_reservations_active
            .set(i64::try_from(state.reservation_count).unwrap_or(i64::MAX));
        self.metrics
            .passive_ports_in_use
            .set(i64::try_from(state.pending.len()).unwrap_or(i64::MAX));
        // How many client addresses share the busiest port: one series instead of one
        // per port, which a wide range would turn into thousands.
        let busiest = state.pending.values().map(Vec::len).max().unwrap_or(0);
        self.metrics
            .passive_port_reservations_max
            .set(i64::try_from(busiest).unwrap_or(i64::MAX));
    }
}

async fn accept_loop(pool: Weak<Inner>, listener: TcpListener, port: u16, stop: CancellationToken) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.cancelled() => return,
        };
        let Some(inner) = pool.upgrade() else {
            return;
        };
        match accepted {
            Ok((stream, peer)) => match inner.proxy.clone() {
                None => inner.dispatch(port, stream, peer),
                // Read the header aside: a slow balancer must not stall the port's accept.
                Some(policy) => {
                    tokio::spawn(dispatch_after_header(inner, policy, port, stream, peer));
                }
            },
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the port stays bound.
                warn!(port, error = %e, "passive accept failed");
                drop(inner);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Dispatches a data connection by the client address its PROXY header names.
async fn dispatch_after_header(
    inner: Arc<Inner>,
    policy: Arc<ProxyPolicy>,
    port: u16,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    let local = stream
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(inner.bind, port));
    let result = policy.accept(&mut stream, peer, local).await;
    inner
        .metrics
        .count_proxy_header(labels::PASSIVE_LISTENER, &result);
    match result {
        Ok(endpoints) => inner.dispatch(port, stream, endpoints.client),
        Err(e) => {
            warn!(port, %peer, error = %e, "data connection refused");
            inner
                .metrics
                .data_connections_rejected_total
                .with_label_values(&[labels::PROXY_PROTOCOL])
                .inc();
        }
    }
}

async fn sweep_expired(pool: Weak<Inner>, closed: CancellationToken) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
            _ = closed.cancelled() => return,
        }
        let Some(inner) = pool.upgrade() else {
            return;
        };
        let mut state = inner.lock();
        let now = Instant::now();
        inner.purge_expired(&mut state, now);
        inner.close_idle_listeners(&mut state, now);
    }
}

/// A pending reservation. Dropping it releases the (port, client IP) slot.
pub struct Reservation {
    pool: Arc<Inner>,
    port: u16,
    id: u64,
    deadline: Instant,
    receiver: oneshot::Receiver<(TcpStream, SocketAddr)>,
    accept_timeout: Duration,
}

impl Reservation {
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Waits for the client's data connection until the reservation's deadline.
    pub async fn accept(self) -> Result<(TcpStream, SocketAddr), AcceptError> {
        let pool = self.pool.clone();
        let result = self.accept_uncounted().await;
        if result.is_err() {
            count_accept_timeout(&pool);
        }
        result
    }

    /// The same, without counting a timeout: for a connection awaited before any transfer
    /// asks for it (data/early_tls.rs), whose transfer counts it through [`Slot`].
    pub async fn accept_uncounted(mut self) -> Result<(TcpStream, SocketAddr), AcceptError> {
        match tokio::time::timeout_at(self.deadline, &mut self.receiver).await {
            Ok(Ok(connection)) => Ok(connection),
            // The sender is gone only when the sweeper expired the reservation.
            Ok(Err(_)) | Err(_) => Err(AcceptError::Timeout(self.accept_timeout)),
        }
    }

    /// A handle that frees this reservation's (port, client IP) slot when dropped, at
    /// once, even while the reservation itself is held by a task being stopped.
    pub fn slot(&self) -> Slot {
        Slot {
            pool: self.pool.clone(),
            port: self.port,
            id: self.id,
        }
    }
}

fn count_accept_timeout(pool: &Inner) {
    pool.metrics
        .data_connections_rejected_total
        .with_label_values(&[labels::TIMEOUT])
        .inc();
}

/// See [`Reservation::slot`]. Freeing a slot twice is harmless (it is found by its id).
pub struct Slot {
    pool: Arc<Inner>,
    port: u16,
    id: u64,
}

impl Slot {
    /// Counts a data connection that did not come in time.
    pub fn count_accept_timeout(&self) {
        count_accept_timeout(&self.pool);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool.release(self.port, self.id);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.release(self.port, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn free_port_pair() -> u16 {
        // Two consecutive free ports below the ephemeral range. Tests run in parallel and
        // bind lazily, so each call takes its own slot (the counter) instead of the first
        // free pair, which two tests would otherwise both pick.
        static NEXT: std::sync::atomic::AtomicU16 = std::sync::atomic::AtomicU16::new(0);
        let base = (std::process::id() % 3000) as u16 * 2;
        loop {
            let slot = NEXT.fetch_add(2, Ordering::SeqCst);
            let port = 20000 + base.wrapping_add(slot) % 12000;
            let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
            if free(port) && free(port + 1) {
                return port;
            }
        }
    }

    fn pool(len: u16, multiplex: bool) -> (PortPool, Arc<Metrics>) {
        let start = free_port_pair();
        let metrics = Metrics::new();
        let settings = PoolSettings {
            range: PortRange {
                start,
                end: start + len - 1,
            },
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            multiplex,
            accept_timeout: Duration::from_secs(5),
            proxy: None,
            listener_idle: LISTENER_IDLE,
            announce: Announcement::new(&crate::config::PassiveConfig::default()),
        };
        (PortPool::new(settings, metrics.clone()), metrics)
    }

    /// Regression: lazily bound listeners were never closed (one fd per port, for good).
    #[tokio::test]
    async fn idle_listeners_are_closed_and_rebound_on_demand() {
        let start = free_port_pair();
        let metrics = Metrics::new();
        let settings = PoolSettings {
            range: PortRange {
                start,
                end: start + 1,
            },
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            multiplex: true,
            accept_timeout: Duration::from_secs(5),
            proxy: None,
            listener_idle: Duration::from_millis(200),
            announce: Announcement::new(&crate::config::PassiveConfig::default()),
        };
        let pool = PortPool::new(settings, metrics.clone());
        let a = pool.reserve(ip(1)).expect("reserve");
        let b = pool.reserve(ip(1)).expect("second port");
        assert_eq!(metrics.passive_listeners_open.get(), 2);
        let port = a.port();
        drop(a);
        drop(b);
        let closed = async {
            while metrics.passive_listeners_open.get() != 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("idle listeners closed");
        // The accept loop has dropped its socket: the port is free again.
        let free = async {
            while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), free)
            .await
            .expect("port released");
        let again = pool.reserve(ip(1)).expect("rebinds on demand");
        assert_eq!(metrics.passive_listeners_open.get(), 1);
        let mut client = TcpStream::connect(("127.0.0.1", again.port()))
            .await
            .expect("connect to the rebound listener");
        let (_stream, peer) = again.accept().await.expect("delivered");
        assert_eq!(peer.ip(), ip(1));
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut client).await;
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[tokio::test]
    async fn different_ips_share_one_port_same_ip_does_not() {
        let (pool, metrics) = pool(1, true);
        let a = pool.reserve(ip(1)).expect("first reservation");
        let b = pool.reserve(ip(2)).expect("other ip shares the port");
        assert_eq!(a.port(), b.port());
        assert!(matches!(pool.reserve(ip(1)), Err(PoolError::Exhausted(..))));
        assert_eq!(metrics.passive_port_exhausted_total.get(), 1);
        assert_eq!(metrics.passive_reservations_active.get(), 2);
        assert_eq!(metrics.passive_ports_in_use.get(), 1);
        assert_eq!(metrics.passive_port_reservations_max.get(), 2);
        drop(a);
        assert_eq!(metrics.passive_reservations_active.get(), 1);
        let again = pool.reserve(ip(1)).expect("released slot is reusable");
        assert_eq!(again.port(), b.port());
    }

    #[tokio::test]
    async fn without_multiplex_a_port_holds_one_reservation() {
        let (pool, _) = pool(1, false);
        let _a = pool.reserve(ip(1)).expect("first");
        assert!(pool.reserve(ip(2)).is_err());
    }

    #[tokio::test]
    async fn mapped_ipv6_is_the_same_client() {
        let (pool, _) = pool(1, true);
        let _a = pool.reserve(ip(1)).expect("first");
        let mapped = IpAddr::V6(Ipv4Addr::new(127, 0, 0, 1).to_ipv6_mapped());
        assert!(pool.reserve(mapped).is_err());
    }

    #[tokio::test]
    async fn connection_goes_to_the_reservation_of_its_source_ip() {
        let (pool, metrics) = pool(1, true);
        let reservation = pool.reserve(ip(1)).expect("reserve");
        let port = reservation.port();
        let _other = pool.reserve(ip(2)).expect("reserve other");
        let client = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let (_server_side, peer) = reservation.accept().await.expect("accepted");
        assert_eq!(peer.ip(), client.local_addr().expect("local").ip());
        assert_eq!(metrics.passive_reservations_active.get(), 1);
    }

    #[tokio::test]
    async fn connection_without_reservation_is_dropped_and_counted() {
        let (pool, metrics) = pool(1, true);
        let reservation = pool.reserve(ip(9)).expect("reserve");
        let mut stray = TcpStream::connect(("127.0.0.1", reservation.port()))
            .await
            .expect("connect");
        let mut buf = [0u8; 1];
        let n = tokio::io::AsyncReadExt::read(&mut stray, &mut buf)
            .await
            .unwrap_or(0);
        assert_eq!(n, 0, "a foreign connection is closed without data");
        let rejected = metrics
            .data_connections_rejected_total
            .with_label_values(&[labels::FOREIGN_IP])
            .get();
        assert_eq!(rejected, 1);
        assert_eq!(
            metrics.passive_reservations_active.get(),
            1,
            "the real reservation survives"
        );
    }

    #[tokio::test]
    async fn accept_times_out_and_releases() {
        let start = free_port_pair();
        let metrics = Metrics::new();
        let pool = PortPool::new(
            PoolSettings {
                range: PortRange { start, end: start },
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                multiplex: true,
                accept_timeout: Duration::from_millis(50),
                proxy: None,
                listener_idle: LISTENER_IDLE,
                announce: Announcement::new(&crate::config::PassiveConfig::default()),
            },
            metrics.clone(),
        );
        let reservation = pool.reserve(ip(1)).expect("reserve");
        assert!(matches!(
            reservation.accept().await,
            Err(AcceptError::Timeout(_))
        ));
        assert_eq!(metrics.passive_reservations_active.get(), 0);
        assert!(pool.reserve(ip(1)).is_ok());
    }

    /// Waits until nothing listens on `port` any more (a bind succeeds).
    async fn port_freed(port: u16) -> bool {
        let free = async {
            while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(2), free)
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn close_stops_every_listener_at_once() {
        let (pool, _metrics) = pool(2, true);
        let reservation = pool.reserve(ip(1)).expect("reserve");
        let port = reservation.port();
        drop(reservation);
        pool.close();
        assert!(
            port_freed(port).await,
            "port {port} still bound after close"
        );
        assert_eq!(pool.reserve(ip(1)).err(), Some(PoolError::Closed));
    }

    #[tokio::test]
    async fn dropping_the_pool_frees_its_ports_without_waiting_for_a_connection() {
        let (pool, _metrics) = pool(2, true);
        let reservation = pool.reserve(ip(1)).expect("reserve");
        let port = reservation.port();
        drop(reservation);
        drop(pool);
        assert!(
            port_freed(port).await,
            "port {port} still bound after the pool was dropped"
        );
    }
}
