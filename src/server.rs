//! Wiring of a running proxy: binds the listeners, accepts client control connections,
//! admits them, spawns one session task each, and shuts everything down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument};

use crate::backend::{set_keepalive, Router};
use crate::config::Config;
use crate::conn::LineConn;
use crate::limits::{Limiter, Permit};
use crate::metrics::{self, labels, Metrics};
use crate::ports::{bind_listener, PoolSettings, PortPool};
use crate::session::{Session, Shared};

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
}

/// A proxy that is accepting connections.
pub struct RunningProxy {
    pub control_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub metrics: Arc<Metrics>,
    shutdown: watch::Sender<bool>,
    sessions: TaskTracker,
    tasks: Vec<JoinHandle<()>>,
}

/// How long a shutdown waits for running sessions (and their transfers) to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Binds every listener of `config` and starts serving.
pub async fn start(config: Config) -> Result<RunningProxy, ServerError> {
    let config = Arc::new(config);
    let metrics = Metrics::new();
    let pool = PortPool::new(
        PoolSettings {
            range: config.passive.ports,
            bind: config.passive.bind,
            multiplex: config.passive.multiplex,
            accept_timeout: config.limits.data_accept_timeout,
        },
        metrics.clone(),
    );
    let shared = Arc::new(Shared {
        config: config.clone(),
        features: Default::default(),
        metrics: metrics.clone(),
        pool,
        router: Router::new(config.clone()),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let control_bind = config.listen.control;
    let control = bind_listener(control_bind.ip(), control_bind.port()).map_err(|source| {
        ServerError::BindControl {
            addr: control_bind,
            source,
        }
    })?;
    let control_addr = control
        .local_addr()
        .map_err(|source| ServerError::BindControl {
            addr: control_bind,
            source,
        })?;
    let mut tasks = Vec::new();
    let metrics_addr = match config.metrics.listen {
        Some(addr) => {
            let listener = metrics::bind(addr)
                .await
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            let bound = listener
                .local_addr()
                .map_err(|source| ServerError::BindMetrics { addr, source })?;
            tasks.push(tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                shutdown_rx.clone(),
            )));
            Some(bound)
        }
        None => None,
    };
    let sessions = TaskTracker::new();
    let acceptor = Acceptor {
        shared,
        limiter: Limiter::new(&config.limits),
        sessions: sessions.clone(),
        shutdown: shutdown_rx,
    };
    tasks.push(tokio::spawn(acceptor.run(control)));
    metrics.set_ready(true);
    info!(control = %control_addr, metrics = ?metrics_addr, passive = %config.passive.ports, "ftpfront listening");
    Ok(RunningProxy {
        control_addr,
        metrics_addr,
        metrics,
        shutdown,
        sessions,
        tasks,
    })
}

impl RunningProxy {
    /// Stops accepting, tells idle sessions 421, lets running transfers finish (up to a
    /// grace period), then returns.
    pub async fn shutdown(self) {
        self.metrics.set_ready(false);
        let _ = self.shutdown.send(true);
        self.sessions.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, self.sessions.wait())
            .await
            .is_err()
        {
            warn!("sessions still running after the shutdown grace period; dropping them");
        }
        for task in self.tasks {
            task.abort();
        }
    }
}

struct Acceptor {
    shared: Arc<Shared>,
    limiter: Arc<Limiter>,
    sessions: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

impl Acceptor {
    async fn run(mut self, listener: TcpListener) {
        let mut next_id: u64 = 1;
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = self.shutdown.changed() => return,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.admit(stream, peer, next_id);
                    next_id += 1;
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    warn!(error = %e, "control accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn admit(&self, stream: TcpStream, peer: SocketAddr, id: u64) {
        let metrics = self.shared.metrics.clone();
        match self.limiter.admit(peer.ip()) {
            Ok(permit) => {
                let session = run_session(
                    self.shared.clone(),
                    stream,
                    peer,
                    id,
                    permit,
                    self.shutdown.clone(),
                );
                self.sessions.spawn(session);
            }
            Err(rejection) => {
                info!(%peer, reason = %rejection, "connection rejected");
                metrics
                    .sessions_total
                    .with_label_values(&[labels::REJECTED])
                    .inc();
                tokio::spawn(async move {
                    let mut stream = stream;
                    let line = format!("421 {}\r\n", rejection.reply_text());
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        stream.write_all(line.as_bytes()),
                    )
                    .await;
                });
            }
        }
    }
}

/// Keeps `sessions_active` right even if a session task panics.
struct ActiveGuard(Arc<Metrics>);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.sessions_active.dec();
    }
}

async fn run_session(
    shared: Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    permit: Permit,
    shutdown: watch::Receiver<bool>,
) {
    let metrics = shared.metrics.clone();
    metrics.sessions_active.inc();
    let _active = ActiveGuard(metrics.clone());
    let span = tracing::info_span!("session", id, client = %peer, user = tracing::field::Empty, backend = tracing::field::Empty);
    set_keepalive(&stream);
    let _ = stream.set_nodelay(true);
    // ABOR sent with MSG_OOB (Python's ftplib does) must stay in the byte stream.
    let _ = socket2::SockRef::from(&stream).set_out_of_band_inline(true);
    let local = match stream.local_addr() {
        Ok(local) => local,
        Err(e) => {
            warn!(%peer, error = %e, "cannot read the local address of a new connection");
            metrics
                .sessions_total
                .with_label_values(&[labels::ERROR])
                .inc();
            return;
        }
    };
    let max_line = shared.config.limits.max_line_length;
    let client = LineConn::plain_tcp(stream, peer, max_line);
    let session = Session::new(shared, client, local, span.clone());
    let outcome = async {
        info!("session start");
        let outcome = session.run(shutdown).await;
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
