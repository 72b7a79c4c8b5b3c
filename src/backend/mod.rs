//! Backends: choosing one for a login (routing) and opening its control connection
//! (resolve, connect with timeout, keepalive, PROXY header, greeting, TLS).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{BackendConfig, BackendTls};
use crate::conn::{BackendControl, BackendLegError, BoxStream};
use crate::ftp::codes;
use crate::ftp::{Command, Reply};
use crate::metrics::{labels, Metrics};
use crate::proxy_protocol::encode_header;
use crate::tls::{BackendTlsConfig, SessionTls};

mod data_setup;
mod health;
mod routes;
mod select;
mod sticky;

pub use data_setup::{
    open_backend_data, prepare_backend_data, ActiveListener, BackendData, BackendDataError,
    DataError,
};
pub use health::Health;
pub use routes::ClientNames;
pub use select::{Route, Router, SessionCount};
pub use sticky::{StickySlot, StickyTable};

/// A session's connection to its backend, with that backend's settings.
pub struct BackendLeg {
    pub control: BackendControl,
    pub config: BackendConfig,
    /// TLS towards the backend: its data connections are wrapped too (PROT P).
    pub tls: Option<SessionTls>,
    /// Keeps this session in `ftpfront_backend_sessions` while the leg lives.
    pub _counted: SessionCount,
    /// Where the login is remembered on a sticky pool; held while the leg lives.
    pub sticky: StickySlot,
    /// The backend's passive data connection, opened when the client's PASV/EPSV was
    /// answered, for the next transfer (see `session/data_setup.rs`).
    pub prepared_data: Option<TcpStream>,
}

impl BackendLeg {
    pub fn new(
        control: BackendControl,
        config: BackendConfig,
        tls: Option<SessionTls>,
        counted: SessionCount,
    ) -> BackendLeg {
        BackendLeg {
            control,
            config,
            tls,
            _counted: counted,
            sticky: StickySlot::default(),
            prepared_data: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve backend `{name}` address {address}: {reason}")]
    Resolve {
        name: String,
        address: String,
        reason: String,
    },
    #[error("cannot connect to backend `{name}` at {addr}: {source}")]
    Connect {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to backend `{name}` at {address} (connect, greeting, TLS) timed out after {timeout:?}")]
    Timeout {
        name: String,
        address: String,
        timeout: Duration,
    },
    #[error("backend `{name}` refused the session: {} {}", reply.code, reply.text())]
    Refused { name: String, reply: Reply },
    #[error("backend `{name}` greeting failed: {source}")]
    Greeting {
        name: String,
        source: BackendLegError,
    },
    #[error("backend `{name}`: TLS failed: {reason}")]
    Tls { name: String, reason: String },
}

impl ConnectError {
    /// What the client is told: a backend's own refusal (`421 Too many connected users`)
    /// as the backend said it; for ftpfront's own failures what failed, naming no backend,
    /// host or address (the log has them).
    pub fn client_reply(&self) -> Reply {
        let closing = "closing control connection.";
        let text = match self {
            ConnectError::Refused { reply, .. } if reply.is_error() => return reply.clone(),
            ConnectError::Refused { .. } | ConnectError::Greeting { .. } => {
                format!(
                    "Service not available: the server's greeting was not understood; {closing}"
                )
            }
            ConnectError::Resolve { .. } | ConnectError::Connect { .. } => {
                format!("Service not available: cannot reach the server; {closing}")
            }
            ConnectError::Timeout { .. } => {
                format!("Service not available: the server did not answer in time; {closing}")
            }
            ConnectError::Tls { .. } => {
                format!("Service not available: TLS to the server failed; {closing}")
            }
        };
        Reply::new(codes::SERVICE_NOT_AVAILABLE, text)
    }

    fn reason(&self) -> &'static str {
        match self {
            ConnectError::Resolve { .. } => "resolve",
            ConnectError::Connect { .. } => labels::CONNECT_FAILED,
            ConnectError::Timeout { .. } => labels::TIMEOUT,
            ConnectError::Refused { .. } => labels::REFUSED,
            ConnectError::Greeting { .. } => labels::BAD_GREETING,
            ConnectError::Tls { .. } => "tls",
        }
    }
}

/// Opens the backend control connection, consumes its greeting and, when the backend
/// uses TLS, secures it (implicit: before the greeting; explicit: AUTH TLS after it) and
/// asks for protected data connections (PBSZ 0, PROT P). With `proxy_protocol` set, a
/// PROXY header naming `client` comes first (`None`: ftpfront's own probes). The result
/// counts towards the backend's health.
pub async fn connect(
    backend: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    health: &Health,
    client: Option<SocketAddr>,
) -> Result<(BackendControl, Option<SessionTls>), ConnectError> {
    let established = AtomicBool::new(false);
    let result = connect_unrecorded(backend, tls, health.metrics(), client, &established).await;
    health.record(&backend.name, result.is_ok());
    result
}

/// [`connect`] without counting the result towards health, setting `established` once
/// the TCP connection is up. For a client's early connection (`routing.preconnect`): its
/// result counts only if a login takes it, and until it is established it can be dropped
/// without the backend ever seeing it. A storm of clients that connect and leave at once
/// must neither make a healthy backend look down nor fill its listen queue.
pub async fn connect_unrecorded(
    backend: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    metrics: &Metrics,
    client: Option<SocketAddr>,
    established: &AtomicBool,
) -> Result<(BackendControl, Option<SessionTls>), ConnectError> {
    let result = connect_and_greet(backend, tls, metrics, client, established).await;
    if let Err(e) = &result {
        count_connect_error(metrics, backend, e.reason());
    }
    result
}

fn count_connect_error(metrics: &Metrics, backend: &BackendConfig, reason: &str) {
    metrics
        .backend_connect_errors_total
        .with_label_values(&[&backend.name, reason])
        .inc();
}

/// The whole setup (connect, PROXY header, TLS, greeting, PBSZ/PROT) must fit in
/// `connect_timeout`: a backend that never greets, or sends `120` lines forever, must not
/// hold the client for the much longer `reply_timeout`.
async fn connect_and_greet(
    backend: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    metrics: &Metrics,
    client: Option<SocketAddr>,
    established: &AtomicBool,
) -> Result<(BackendControl, Option<SessionTls>), ConnectError> {
    let timeout = backend.connect_timeout;
    let setup = establish(backend, tls, metrics, client, established);
    tokio::time::timeout(timeout, setup)
        .await
        .map_err(|_| ConnectError::Timeout {
            name: backend.name.clone(),
            address: backend.address.clone(),
            timeout,
        })?
}

async fn establish(
    backend: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    metrics: &Metrics,
    client: Option<SocketAddr>,
    established: &AtomicBool,
) -> Result<(BackendControl, Option<SessionTls>), ConnectError> {
    let mut stream = open_stream(backend).await?;
    established.store(true, Ordering::Release);
    crate::net::tune_control(&stream);
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let addresses = stream
        .peer_addr()
        .and_then(|peer| Ok((peer, stream.local_addr()?)));
    let (peer, local) = addresses.map_err(|source| ConnectError::Connect {
        name: backend.name.clone(),
        addr: unknown,
        source,
    })?;
    if let Some(header) = encode_header(backend.proxy_protocol, client, peer) {
        stream
            .write_all(&header)
            .await
            .map_err(|source| ConnectError::Connect {
                name: backend.name.clone(),
                addr: peer,
                source,
            })?;
    }
    let session_tls = tls.map(BackendTlsConfig::session_connector);
    let implicit = tls.map(|t| t.mode) == Some(BackendTls::Implicit);
    let mut control = match (&session_tls, implicit) {
        (Some(session), true) => {
            let secured = handshake(backend, session, Box::new(stream), metrics).await?;
            BackendControl::new(Box::new(secured), peer, local, backend.reply_timeout)
        }
        _ => BackendControl::plain_tcp(stream, peer, local, backend.reply_timeout),
    };
    read_greeting(&mut control, backend).await?;
    if let Some(session) = &session_tls {
        if !implicit {
            control = start_explicit_tls(control, backend, session, metrics).await?;
        }
        protect_data(&mut control, backend).await?;
    }
    Ok((control, session_tls))
}

async fn handshake(
    backend: &BackendConfig,
    session: &SessionTls,
    stream: BoxStream,
    metrics: &Metrics,
) -> Result<tokio_rustls::client::TlsStream<BoxStream>, ConnectError> {
    let result = session.connect(stream).await;
    metrics.count_tls_handshake("backend", result.is_ok());
    result.map_err(|e| ConnectError::Tls {
        name: backend.name.clone(),
        reason: e.to_string(),
    })
}

fn tls_refused(backend: &BackendConfig, step: &str, code: u16, text: String) -> ConnectError {
    ConnectError::Tls {
        name: backend.name.clone(),
        reason: format!("{step} refused: {code} {text}"),
    }
}

fn greeting_failed(backend: &BackendConfig) -> impl Fn(BackendLegError) -> ConnectError + '_ {
    |source| ConnectError::Greeting {
        name: backend.name.clone(),
        source,
    }
}

/// Explicit FTPS towards the backend: AUTH TLS, then the handshake on the same connection.
async fn start_explicit_tls(
    mut control: BackendControl,
    backend: &BackendConfig,
    session: &SessionTls,
    metrics: &Metrics,
) -> Result<BackendControl, ConnectError> {
    let auth = Command::new("AUTH", Some("TLS"));
    let reply = control
        .command(&auth, "sending AUTH TLS")
        .await
        .map_err(greeting_failed(backend))?;
    if reply.code != codes::AUTH_OK {
        return Err(tls_refused(backend, "AUTH TLS", reply.code, reply.text()));
    }
    let (peer, local) = (control.peer(), control.local());
    let plain = control.into_stream().map_err(|e| ConnectError::Tls {
        name: backend.name.clone(),
        reason: e.to_string(),
    })?;
    let secured = handshake(backend, session, plain, metrics).await?;
    Ok(BackendControl::new(
        Box::new(secured),
        peer,
        local,
        backend.reply_timeout,
    ))
}

/// PBSZ 0 and PROT P: the backend's data connections are TLS too.
async fn protect_data(
    control: &mut BackendControl,
    backend: &BackendConfig,
) -> Result<(), ConnectError> {
    for (verb, arg) in [("PBSZ", "0"), ("PROT", "P")] {
        let reply = control
            .command(
                &Command::new(verb, Some(arg)),
                "protecting data connections",
            )
            .await
            .map_err(greeting_failed(backend))?;
        if !reply.is_completion() {
            return Err(tls_refused(backend, verb, reply.code, reply.text()));
        }
    }
    Ok(())
}

/// Tries every resolved address in turn, like any client would.
async fn open_stream(backend: &BackendConfig) -> Result<TcpStream, ConnectError> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(backend.address.as_str())
        .await
        .map_err(|e| ConnectError::Resolve {
            name: backend.name.clone(),
            address: backend.address.clone(),
            reason: e.to_string(),
        })?
        .collect();
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(source) => last = Some((addr, source)),
        }
    }
    Err(match last {
        Some((addr, source)) => ConnectError::Connect {
            name: backend.name.clone(),
            addr,
            source,
        },
        None => ConnectError::Resolve {
            name: backend.name.clone(),
            address: backend.address.clone(),
            reason: "no addresses".into(),
        },
    })
}

/// Waits for 220; "120 ready in N minutes" may come first (RFC 959).
async fn read_greeting(
    control: &mut BackendControl,
    backend: &BackendConfig,
) -> Result<(), ConnectError> {
    loop {
        let reply = control
            .read_reply("reading the greeting")
            .await
            .map_err(|source| ConnectError::Greeting {
                name: backend.name.clone(),
                source,
            })?;
        match reply.code {
            codes::SERVICE_READY_IN => continue,
            codes::SERVICE_READY => return Ok(()),
            _ => {
                return Err(ConnectError::Refused {
                    name: backend.name.clone(),
                    reply,
                })
            }
        }
    }
}

/// Probes every backend with `health = true` on `health.probe_interval` (connect, TLS
/// when configured, 220 greeting, QUIT); the results feed [`Health`]. Each round takes the
/// backends of the configuration in effect, so a reload's new backends are probed.
pub async fn probe_loop(
    current: Arc<arc_swap::ArcSwap<crate::session::Shared>>,
    mut shutdown: crate::shutdown::Receiver,
) {
    let mut interval = current.load().config.health.probe_interval;
    let mut ticks = probe_ticks(interval);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = crate::shutdown::stopping(&mut shutdown) => return,
        }
        let shared = current.load_full();
        let config = &shared.config;
        for backend in config
            .backends
            .iter()
            .filter(|b| shared.health.is_probed(&b.name))
        {
            probe(
                backend,
                shared.backend_tls.get(&backend.name),
                &shared.health,
                config.health.probe_timeout,
            )
            .await;
        }
        if config.health.probe_interval != interval {
            interval = config.health.probe_interval;
            ticks = probe_ticks(interval);
            ticks.reset();
        }
    }
}

fn probe_ticks(interval: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks
}

async fn probe(
    backend: &BackendConfig,
    tls: Option<&BackendTlsConfig>,
    health: &Health,
    timeout: Duration,
) {
    match tokio::time::timeout(timeout, connect(backend, tls, health, None)).await {
        Ok(Ok((control, _))) => control.quit(timeout).await,
        Ok(Err(e)) => tracing::warn!(backend = %backend.name, error = %e, "health probe failed"),
        Err(_) => {
            tracing::warn!(backend = %backend.name, ?timeout, "health probe timed out");
            count_connect_error(health.metrics(), backend, labels::TIMEOUT);
            health.record(&backend.name, false);
        }
    }
}
