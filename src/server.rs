//! Wiring of a running proxy: binds the listeners, accepts client control connections,
//! admits them, spawns one session task each, and shuts everything down.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use crate::backend::{Health, Router, StickyTable};
use crate::bans::{Bans, BANNED_TEXT};
use crate::config::Config;
use crate::conn::LineConn;
use crate::limits::{Limiter, Permit};
use crate::metrics::{self, labels, Metrics};
use crate::net::bind_listener;
use crate::ports::{PoolSettings, PortPool};
use crate::proxy_protocol::{Endpoints, ProxyHeaderError, ProxyPolicy};
use crate::reload::ReloadError;
use crate::session::{Session, Shared};
use crate::shutdown;
use crate::tls::{self, BackendTlsConfig, ClientTls, TlsError};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen for control connections on {addr}: {source}")]
    BindControl {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot listen for metrics on {addr}: {source}")]
    BindMetrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// A proxy that is accepting connections.
pub struct RunningProxy {
    pub control_addr: SocketAddr,
    /// The implicit FTPS listener, when `listen.implicit_tls` is set.
    pub implicit_addr: Option<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: shutdown::Sender,
    /// Stops the metrics endpoint, which keeps answering (`/readyz` 503) while draining.
    metrics_stop: watch::Sender<bool>,
    sessions: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
    /// The tables new sessions get; a reload swaps them.
    current: Arc<ArcSwap<Shared>>,
    /// Its pool is closed at the end of the shutdown, so its ports are free at once.
    lasting: Lasting,
}

/// After the grace, how long cut sessions get to send their 421 and close.
const CUT_WAIT: Duration = Duration::from_secs(5);

/// Binds every listener of `config` and starts serving.
pub async fn start(config: Config) -> Result<RunningProxy, ServerError> {
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let proxy_policy = ProxyPolicy::from_config(&config.listen).map(Arc::new);
    // At zero even while off, so the dashboard panel and the alert never lack a series.
    metrics.init_proxy_protocol_series(config.listen.implicit_tls.is_some());
    let pool = PortPool::new(
        PoolSettings::new(
            &config.passive,
            config.limits.data_accept_timeout,
            proxy_policy.clone(),
        ),
        metrics.clone(),
    );
    let lasting = Lasting {
        metrics: metrics.clone(),
        bans: Arc::new(Bans::new(&config.limits)),
        pool: pool.clone(),
        health: Arc::new(Health::new(&config, metrics.clone())),
        sticky: StickyTable::new(metrics.clone()),
        limiter: Limiter::new(&config.limits),
    };
    let client_tls = ClientTls::from_config(&config.tls)?.map(Arc::new);
    let current = Arc::new(ArcSwap::from_pointee(tables(
        config.clone(),
        &lasting,
        client_tls,
    )?));
    crate::reload::mark_loaded(&metrics);
    let (shutdown, shutdown_rx) = shutdown::channel();
    let (metrics_stop, metrics_stop_rx) = watch::channel(false);
    let (control, control_addr) = bind_control(config.listen.control)?;
    let implicit = match config.listen.implicit_tls {
        Some(addr) => Some(bind_control(addr)?),
        None => None,
    };
    let implicit_addr = implicit.as_ref().map(|(_, addr)| *addr);
    let mut tasks = Vec::new();
    let metrics_addr = match config.metrics.listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            let auth = match (
                &config.metrics.basic_auth_user,
                &config.metrics.basic_auth_password,
            ) {
                (Some(user), Some(password)) => Some(metrics::basic_auth_header(user, password)),
                _ => None,
            };
            tasks.push(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                auth,
                metrics_stop_rx,
            )));
            Some(bound)
        }
        None => None,
    };
    let sessions = TaskTracker::new();
    let acceptor = Acceptor {
        current: current.clone(),
        limiter: lasting.limiter.clone(),
        sessions: sessions.clone(),
        shutdown: shutdown_rx,
        implicit_tls: false,
        proxy: proxy_policy,
        next_id: Arc::new(AtomicU64::new(1)),
    };
    if let Some((listener, _)) = implicit {
        let implicit_acceptor = Acceptor {
            implicit_tls: true,
            ..acceptor.clone()
        };
        tasks.push(tokio::spawn(implicit_acceptor.run(listener)));
    }
    tasks.push(tokio::spawn(acceptor.run(control)));
    tasks.push(tokio::spawn(crate::bans::sweep_loop(
        lasting.bans.clone(),
        metrics.clone(),
        shutdown.subscribe(),
    )));
    tasks.push(tokio::spawn(crate::backend::probe_loop(
        current.clone(),
        shutdown.subscribe(),
    )));
    metrics.set_ready(true);
    info!(control = %control_addr, implicit_tls = ?implicit_addr, metrics = ?metrics_addr, passive = %config.passive.ports, "ftpfront listening");
    Ok(RunningProxy {
        control_addr,
        implicit_addr,
        metrics_addr,
        metrics,
        shutdown,
        metrics_stop,
        sessions,
        tasks,
        current,
        lasting,
    })
}

/// What outlives a reload: the counters, the state kept per address and per backend.
struct Lasting {
    metrics: Arc<Metrics>,
    bans: Arc<Bans>,
    pool: PortPool,
    health: Arc<Health>,
    /// Users remembered on backends of sticky pools: a reload must not move them.
    sticky: Arc<StickyTable>,
    limiter: Arc<Limiter>,
}

/// The tables sessions opened from now on use, built from `config` (at start and by
/// each reload) around what lasts.
fn tables(
    config: Arc<Config>,
    lasting: &Lasting,
    client_tls: Option<Arc<ClientTls>>,
) -> Result<Shared, TlsError> {
    let backend_tls = Arc::new(backend_tls_configs(&config)?);
    let backend_names: Vec<String> = config.backends.iter().map(|b| b.name.clone()).collect();
    lasting.metrics.init_known_series(&backend_names);
    Ok(Shared {
        config: config.clone(),
        bans: lasting.bans.clone(),
        // A new table may point a name at another server: learn its features anew.
        features: Default::default(),
        client_tls,
        backend_tls,
        metrics: lasting.metrics.clone(),
        pool: lasting.pool.clone(),
        router: Router::new(config, lasting.health.clone(), lasting.sticky.clone()),
        health: lasting.health.clone(),
    })
}

fn bind_control(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServerError> {
    let failed = |source| ServerError::BindControl { addr, source };
    let listener = bind_listener(addr.ip(), addr.port()).map_err(failed)?;
    let bound = listener.local_addr().map_err(failed)?;
    Ok((listener, bound))
}

/// Builds every TLS backend's client configuration up front, so a bad CA file or server
/// name stops the start instead of failing the first login.
fn backend_tls_configs(config: &Config) -> Result<HashMap<String, BackendTlsConfig>, TlsError> {
    let mut configs = HashMap::new();
    for backend in &config.backends {
        if let Some(tls) = BackendTlsConfig::from_config(backend)? {
            if !backend.tls_verify {
                warn!(backend = %backend.name, "TLS certificate verification is OFF for this backend (tls_verify = false): its identity is not checked");
            }
            configs.insert(backend.name.clone(), tls);
        }
    }
    Ok(configs)
}

impl RunningProxy {
    /// Re-reads the configuration file (SIGHUP) and, when it is valid, gives sessions opened
    /// from now on its tables (backends, pools, routing, limits, health, TLS, shutdown).
    /// Running sessions and transfers keep theirs until they end. Sections that need a
    /// restart keep their running values and are logged; an invalid file changes nothing.
    /// Counted in `ftpfront_config_reloads_total`.
    pub fn reload(&self, path: &Path) -> Result<(), ReloadError> {
        let result = self.try_reload(path);
        crate::reload::count(&self.metrics, result.is_ok());
        result
    }

    fn try_reload(&self, path: &Path) -> Result<(), ReloadError> {
        let running = self.current.load_full();
        let loaded = Config::load(path)?;
        let restart = crate::reload::needs_restart(&running.config, &loaded);
        let config = crate::reload::keep_restart_only(&running.config, loaded);
        config.validate()?;
        let mut next = tables(Arc::new(config), &self.lasting, None)?;
        // Last: the only step that changes something running (the certificate in place).
        next.client_tls = reloaded_client_tls(&running, &next.config)?;
        self.lasting.health.apply(&next.config);
        self.lasting.limiter.apply(&next.config.limits);
        self.lasting.bans.apply(&next.config.limits);
        let (backends, pools) = (next.config.backends.len(), next.config.pools.len());
        self.current.store(Arc::new(next));
        if !restart.is_empty() {
            warn!(sections = ?restart, "configuration reloaded, but these sections need a restart to change; they keep their running values");
        }
        info!(path = %path.display(), backends, pools, "configuration reloaded");
        Ok(())
    }

    /// Stops accepting, tells idle sessions 421, lets running transfers finish within
    /// `[shutdown] grace`, then cuts what is left (421 to each client) and returns.
    /// `/readyz` answers 503 from the first moment until the end.
    pub async fn shutdown(self) {
        self.metrics.set_ready(false);
        let _ = self.shutdown.send(shutdown::Phase::Draining);
        self.sessions.close();
        let grace = self.current.load().config.shutdown.grace;
        if tokio::time::timeout(grace, self.sessions.wait())
            .await
            .is_err()
        {
            let left = self.sessions.len();
            warn!(
                sessions = left,
                ?grace,
                "shutdown grace over; cutting the sessions still running"
            );
            let _ = self.shutdown.send(shutdown::Phase::Cut);
            if tokio::time::timeout(CUT_WAIT, self.sessions.wait())
                .await
                .is_err()
            {
                warn!("sessions did not end after being cut; dropping them");
            }
        }
        // Sessions cut but not yet gone must not keep the passive ports bound.
        self.lasting.pool.close();
        let _ = self.metrics_stop.send(true);
        for task in self.tasks {
            task.abort();
        }
    }
}

/// The client TLS of a reloaded configuration: the running one with its certificate and
/// key re-read when `[tls]` did not change (session tickets stay valid), else a new one.
fn reloaded_client_tls(
    running: &Shared,
    config: &Config,
) -> Result<Option<Arc<ClientTls>>, TlsError> {
    match &running.client_tls {
        Some(tls) if running.config.tls == config.tls => {
            tls.reload()?;
            Ok(Some(tls.clone()))
        }
        _ => Ok(ClientTls::from_config(&config.tls)?.map(Arc::new)),
    }
}

#[derive(Clone)]
struct Acceptor {
    /// The tables of the configuration in effect; each session takes them as it starts.
    current: Arc<ArcSwap<Shared>>,
    limiter: Arc<Limiter>,
    sessions: TaskTracker,
    shutdown: shutdown::Receiver,
    /// Connections on this listener start with a TLS handshake (implicit FTPS).
    implicit_tls: bool,
    /// Connections start with a PROXY header from a trusted load balancer.
    proxy: Option<Arc<ProxyPolicy>>,
    /// Session ids, one sequence for every listener, so an id names one session.
    next_id: Arc<AtomicU64>,
}

impl Acceptor {
    async fn run(mut self, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown::stopping(&mut self.shutdown) => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                    self.accepted(stream, peer, id);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn listener_label(&self) -> &'static str {
        if self.implicit_tls {
            labels::IMPLICIT_TLS_LISTENER
        } else {
            labels::CONTROL_LISTENER
        }
    }

    fn accepted(&self, stream: TcpStream, peer: SocketAddr, id: u64) {
        let local = match stream.local_addr() {
            Ok(local) => local,
            Err(e) => {
                warn!(%peer, error = %e, "cannot read the local address of a new connection");
                self.count_session(labels::ERROR);
                return;
            }
        };
        let endpoints = Endpoints {
            client: peer,
            local,
        };
        match self.proxy.clone() {
            None => self.admit(stream, endpoints, local, id),
            // The header is read in its own task: a slow balancer must not stall accept.
            Some(policy) => {
                let acceptor = self.clone();
                self.sessions
                    .spawn(acceptor.admit_after_header(policy, stream, endpoints, id));
            }
        }
    }

    async fn admit_after_header(
        self,
        policy: Arc<ProxyPolicy>,
        mut stream: TcpStream,
        tcp: Endpoints,
        id: u64,
    ) {
        let mut stop = self.shutdown.clone();
        // Like a TLS handshake, a header still on its way must not hold a shutdown.
        let result = tokio::select! {
            result = policy.accept(&mut stream, tcp.client, tcp.local) => result,
            _ = shutdown::stopping(&mut stop) => return,
        };
        self.current
            .load()
            .metrics
            .count_proxy_header(self.listener_label(), &result);
        match result {
            Ok(endpoints) => {
                debug!(client = %endpoints.client, via = %tcp.client, "PROXY header accepted");
                self.admit(stream, endpoints, tcp.local, id);
            }
            Err(e) => {
                info!(peer = %tcp.client, listener = self.listener_label(), error = %e, "connection refused");
                self.count_session(labels::REJECTED);
                if !self.implicit_tls {
                    let text = match e {
                        ProxyHeaderError::UntrustedPeer(_) => {
                            "Service not available: connect through the load balancer."
                        }
                        _ => "Service not available: bad PROXY protocol header.",
                    };
                    refuse(stream, text).await;
                }
            }
        }
    }

    fn count_session(&self, result: &str) {
        self.current
            .load()
            .metrics
            .sessions_total
            .with_label_values(&[result])
            .inc();
    }

    /// `tcp_local` is our end of the connection, whatever a PROXY header said.
    fn admit(&self, stream: TcpStream, endpoints: Endpoints, tcp_local: SocketAddr, id: u64) {
        let client = endpoints.client;
        if let Some(left) = self
            .current
            .load()
            .bans
            .banned_for(client.ip(), Instant::now())
        {
            debug!(peer = %client, left = ?left, "connection from a banned address refused");
            self.count_session(labels::REJECTED);
            // Implicit FTPS clients expect a TLS handshake, not a line: just close.
            if !self.implicit_tls {
                tokio::spawn(refuse(stream, BANNED_TEXT));
            }
            return;
        }
        match self.limiter.admit(client.ip()) {
            Ok(permit) => {
                let start = SessionStart {
                    stream,
                    endpoints,
                    tcp_local,
                    id,
                    permit,
                    implicit_tls: self.implicit_tls,
                };
                let session = run_session(self.current.load_full(), start, self.shutdown.clone());
                self.sessions.spawn(session);
            }
            Err(rejection) => {
                info!(peer = %endpoints.client, reason = %rejection, "connection rejected");
                self.count_session(labels::REJECTED);
                tokio::spawn(refuse(stream, rejection.reply_text()));
            }
        }
    }
}

/// Tells a refused client why (421), without waiting long for a peer that does not read.
async fn refuse(mut stream: TcpStream, text: impl std::fmt::Display) {
    let line = format!("421 {text}\r\n");
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(line.as_bytes())).await;
}

/// Keeps `sessions_active` right even if a session task panics.
struct ActiveGuard(Arc<Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.sessions_active.dec();
    }
}

/// A newly accepted control connection and what the session needs to know about it.
struct SessionStart {
    stream: TcpStream,
    /// The real client (after any PROXY header) and the address it connected to.
    endpoints: Endpoints,
    /// Our end of the TCP connection (a PROXY header may name the balancer's instead).
    tcp_local: SocketAddr,
    id: u64,
    permit: Permit,
    implicit_tls: bool,
}

async fn run_session(shared: Arc<Shared>, start: SessionStart, shutdown: shutdown::Receiver) {
    let SessionStart {
        stream,
        endpoints: Endpoints {
            client: peer,
            local: reached_at,
        },
        tcp_local,
        id,
        permit,
        implicit_tls,
    } = start;
    let metrics = shared.metrics.clone();
    metrics.sessions_active.inc();
    let _active = ActiveGuard(metrics.clone());
    let span = tracing::info_span!("session", id, client = %peer, user = tracing::field::Empty, backend = tracing::field::Empty);
    crate::net::tune_control(&stream);
    // ABOR sent with MSG_OOB (Python's ftplib does) must stay in the byte stream.
    let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
    let max_line = shared.config.limits.max_line_length;
    let mut sni = None;
    let client = if implicit_tls {
        let handshake = implicit_handshake(&shared, stream, peer, max_line);
        let mut stop = shutdown.clone();
        // A peer still in its handshake has no session to drain: it must not hold a
        // shutdown for the handshake timeout.
        let handshake = async {
            tokio::select! {
                client = handshake => client,
                _ = shutdown::stopping(&mut stop) => None,
            }
        };
        match handshake.instrument(span.clone()).await {
            Some((client, name)) => {
                sni = name;
                client
            }
            None => {
                metrics
                    .sessions_total
                    .with_label_values(&[labels::ERROR])
                    .inc();
                return;
            }
        }
    } else {
        LineConn::plain_tcp(stream, peer, max_line)
    };
    let client = client.with_write_timeout(shared.config.limits.idle_timeout);
    let mut session = Session::new(
        shared,
        client,
        [tcp_local, reached_at],
        span.clone(),
        shutdown,
    );
    if implicit_tls {
        session = session.with_implicit_tls(sni);
    }
    let outcome = async {
        info!("session start");
        let outcome = session.run().await;
        info!(result = outcome.label(), "session end");
        outcome
    }
    .instrument(span)
    .await;
    metrics
        .sessions_total
        .with_label_values(&[outcome.label()])
        .inc();
    drop(permit);
}

/// Implicit FTPS: the TLS handshake comes before the greeting. Garbage instead of a
/// ClientHello ends here, counted, without touching anything else. With the connection
/// comes the server name the client asked for (`routing.hosts`).
async fn implicit_handshake(
    shared: &Shared,
    stream: TcpStream,
    peer: SocketAddr,
    max_line: usize,
) -> Option<(LineConn, Option<String>)> {
    let client_tls = shared.client_tls.as_ref()?;
    let result = tls::accept(&client_tls.acceptor(), stream).await;
    shared.metrics.count_tls_handshake("client", result.is_ok());
    match result {
        Ok(secured) => {
            let sni = tls::server_name(&secured);
            Some((LineConn::new(Box::new(secured), peer, max_line), sni))
        }
        Err(e) => {
            info!(error = %e, "implicit FTPS handshake failed");
            None
        }
    }
}
