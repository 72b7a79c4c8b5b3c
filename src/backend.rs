//! Backends: choosing one for a login (routing) and opening its control connection
//! (resolve, connect with timeout, keepalive, greeting).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::config::{BackendConfig, Config};
use crate::conn::{BackendControl, BackendLegError};
use crate::metrics::{labels, Metrics};

/// Keepalive on control legs: NATs drop idle control connections during long transfers,
/// and then the final 226 is lost.
pub fn set_keepalive(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
}

/// A session's connection to its backend, with that backend's settings.
pub struct BackendLeg {
    pub control: BackendControl,
    pub config: BackendConfig,
}

/// Picks the backend for a user name: the `routing.users` map first, then `routing.default`.
pub struct Router {
    config: Arc<Config>,
}

impl Router {
    pub fn new(config: Arc<Config>) -> Router {
        Router { config }
    }

    pub fn route(&self, user: &str) -> Option<&BackendConfig> {
        let name = self
            .config
            .routing
            .users
            .get(user)
            .map(String::as_str)
            .or_else(|| self.config.default_backend())?;
        self.config.backend(name)
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
    #[error("connecting to backend `{name}` at {address} timed out after {timeout:?}")]
    Timeout {
        name: String,
        address: String,
        timeout: Duration,
    },
    #[error("backend `{name}` refused the session: {code} {text}")]
    Refused {
        name: String,
        code: u16,
        text: String,
    },
    #[error("backend `{name}` greeting failed: {source}")]
    Greeting {
        name: String,
        source: BackendLegError,
    },
}

impl ConnectError {
    fn reason(&self) -> &'static str {
        match self {
            ConnectError::Resolve { .. } => "resolve",
            ConnectError::Connect { .. } => labels::CONNECT_FAILED,
            ConnectError::Timeout { .. } => labels::TIMEOUT,
            ConnectError::Refused { .. } => labels::REFUSED,
            ConnectError::Greeting { .. } => labels::BAD_GREETING,
        }
    }
}

/// Opens the backend control connection and consumes its greeting.
pub async fn connect(
    backend: &BackendConfig,
    metrics: &Metrics,
) -> Result<BackendControl, ConnectError> {
    let result = connect_and_greet(backend).await;
    let up = metrics.backend_up.with_label_values(&[&backend.name]);
    match &result {
        Ok(_) => up.set(1),
        Err(e) => {
            up.set(0);
            metrics
                .backend_connect_errors_total
                .with_label_values(&[&backend.name, e.reason()])
                .inc();
        }
    }
    result
}

async fn connect_and_greet(backend: &BackendConfig) -> Result<BackendControl, ConnectError> {
    let timeout = backend.connect_timeout;
    let stream = tokio::time::timeout(timeout, open_stream(backend))
        .await
        .map_err(|_| ConnectError::Timeout {
            name: backend.name.clone(),
            address: backend.address.clone(),
            timeout,
        })??;
    set_keepalive(&stream);
    let _ = stream.set_nodelay(true);
    let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
    let addresses = stream
        .peer_addr()
        .and_then(|peer| Ok((peer, stream.local_addr()?)));
    let (peer, local) = addresses.map_err(|source| ConnectError::Connect {
        name: backend.name.clone(),
        addr: unknown,
        source,
    })?;
    let mut control = BackendControl::new(Box::new(stream), peer, local, backend.reply_timeout);
    read_greeting(&mut control, backend).await?;
    Ok(control)
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
            120 => continue,
            220 => return Ok(()),
            code => {
                return Err(ConnectError::Refused {
                    name: backend.name.clone(),
                    code,
                    text: reply.text(),
                })
            }
        }
    }
}
