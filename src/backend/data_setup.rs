//! The backend's data leg before it exists: asking the backend for PASV/EPSV (and
//! connecting to it) or listening and announcing PORT/EPRT, per `backends.data_mode`.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use super::BackendLeg;
use crate::config::{DataMode, PortRange};
use crate::conn::BackendLegError;
use crate::ftp::codes;
use crate::ftp::{addr, Command};
use crate::net::{self, canonical_ip};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot listen for the backend's data connection on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("the backend did not open its data connection within {0:?}")]
    AcceptTimeout(Duration),
    #[error("accepting the backend's data connection failed: {0}")]
    Accept(io::Error),
}

/// A listener waiting for an active-mode backend to connect to ftpfront.
pub struct ActiveListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl ActiveListener {
    /// Binds on `ip`, on a free port of `ports` (or an ephemeral port when none is set).
    pub async fn bind(ip: IpAddr, ports: Option<PortRange>) -> Result<ActiveListener, DataError> {
        let candidates: Vec<u16> = match ports {
            Some(range) => range.iter().collect(),
            None => vec![0],
        };
        let mut last_error = None;
        for port in candidates {
            let addr = SocketAddr::new(ip, port);
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    let addr = listener
                        .local_addr()
                        .map_err(|source| DataError::Listen { addr, source })?;
                    return Ok(ActiveListener { listener, addr });
                }
                Err(e) => last_error = Some((addr, e)),
            }
        }
        let (addr, source) = last_error.unwrap_or_else(|| {
            (
                SocketAddr::new(ip, 0),
                io::Error::new(io::ErrorKind::AddrInUse, "empty port range"),
            )
        });
        Err(DataError::Listen { addr, source })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accepts the backend's connection; connections from other addresses than the
    /// backend's are refused, like the client side's anti-theft check.
    pub async fn accept_from(
        self,
        backend_ip: IpAddr,
        timeout: Duration,
    ) -> Result<TcpStream, DataError> {
        let backend_ip = canonical_ip(backend_ip);
        let wait = async {
            loop {
                let (stream, peer) = self.listener.accept().await.map_err(DataError::Accept)?;
                if canonical_ip(peer.ip()) == backend_ip {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                tracing::warn!(%peer, expected = %backend_ip, "active-mode data connection from an unexpected address: dropped");
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| DataError::AcceptTimeout(timeout))?
    }
}

/// The backend side of a transfer, before its data connection exists.
pub enum BackendData {
    Connected(TcpStream),
    Listening(ActiveListener),
}

/// Why a backend data connection could not be prepared: the control leg failed (the
/// session cannot go on) or only this transfer's setup did (the client gets 425).
pub enum BackendDataError {
    Leg(BackendLegError),
    Setup(String),
}

impl From<BackendLegError> for BackendDataError {
    fn from(e: BackendLegError) -> Self {
        BackendDataError::Leg(e)
    }
}

/// Prepares the backend's data connection the way the backend is configured: its passive
/// mode (connecting to its control address, not the private one in its 227, by default)
/// or active mode (ftpfront listens, then announces PORT/EPRT). A passive connection
/// prepared earlier ([`prepare_backend_data`]) is taken when the backend has not closed it.
pub async fn open_backend_data(leg: &mut BackendLeg) -> Result<BackendData, BackendDataError> {
    if let Some(stream) = leg.prepared_data.take() {
        if still_open(&stream) {
            return Ok(BackendData::Connected(stream));
        }
    }
    match leg.config.data_mode {
        DataMode::Passive => open_backend_passive(leg).await.map(BackendData::Connected),
        DataMode::Active => open_backend_active(leg).await.map(BackendData::Listening),
    }
}

/// Opens the backend's passive data connection ahead of the transfer, right after the
/// client's PASV/EPSV was answered: the backend's PASV round trip and connect then overlap
/// the client's own connect, instead of delaying the transfer's 150. Active-mode backends
/// are left to the transfer (their PORT names a listener that would wait). A failure
/// here is only logged: the transfer asks again and reports it.
pub async fn prepare_backend_data(leg: &mut BackendLeg) -> Result<(), BackendLegError> {
    leg.prepared_data = None;
    if leg.config.data_mode != DataMode::Passive {
        return Ok(());
    }
    match open_backend_passive(leg).await {
        Ok(stream) => leg.prepared_data = Some(stream),
        Err(BackendDataError::Leg(e)) => return Err(e),
        Err(BackendDataError::Setup(reason)) => {
            tracing::debug!(
                reason = reason.as_str(),
                "backend data connection not prepared"
            )
        }
    }
    Ok(())
}

/// Whether a prepared data connection is still usable: no FIN or reset from the backend
/// since (a server that timed out its passive wait closes it). A peek, nothing is read.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [std::mem::MaybeUninit::<u8>::uninit()];
    match socket2::SockRef::from(stream).peek(&mut byte) {
        Ok(0) => false,
        Ok(_) => true,
        Err(e) => e.kind() == io::ErrorKind::WouldBlock,
    }
}

async fn open_backend_passive(leg: &mut BackendLeg) -> Result<TcpStream, BackendDataError> {
    let peer = leg.control.peer();
    // Old servers know PASV; EPSV is the only choice over IPv6 and the fallback otherwise.
    let mut reply = if peer.is_ipv4() {
        leg.control
            .command(&Command::new("PASV", None), "asking the backend for PASV")
            .await?
    } else {
        leg.control
            .command(&Command::new("EPSV", None), "asking the backend for EPSV")
            .await?
    };
    if peer.is_ipv4() && reply.is_permanent_error() {
        reply = leg
            .control
            .command(&Command::new("EPSV", None), "asking the backend for EPSV")
            .await?;
    }
    let target = match reply.code {
        codes::ENTERING_PASSIVE => {
            let announced = addr::parse_pasv_reply(&reply)
                .map_err(|e| BackendDataError::Setup(format!("bad 227 reply: {e}")))?;
            if leg.config.use_control_address {
                SocketAddr::new(peer.ip(), announced.port())
            } else {
                SocketAddr::V4(announced)
            }
        }
        codes::ENTERING_EXTENDED_PASSIVE => {
            let port = addr::parse_epsv_reply(&reply)
                .map_err(|e| BackendDataError::Setup(format!("bad 229 reply: {e}")))?;
            SocketAddr::new(peer.ip(), port)
        }
        _ => {
            return Err(BackendDataError::Setup(format!(
                "backend refused passive mode: {} {}",
                reply.code,
                reply.text()
            )))
        }
    };
    net::connect(target, None, leg.config.connect_timeout, "backend data")
        .await
        .map_err(|e| BackendDataError::Setup(e.to_string()))
}

async fn open_backend_active(leg: &mut BackendLeg) -> Result<ActiveListener, BackendDataError> {
    let ip = leg
        .config
        .active_address
        .unwrap_or_else(|| leg.control.local().ip());
    let listener = ActiveListener::bind(ip, leg.config.active_ports)
        .await
        .map_err(|e| BackendDataError::Setup(e.to_string()))?;
    let command = match listener.addr() {
        SocketAddr::V4(v4) => Command::new("PORT", Some(&addr::format_port_arg(v4))),
        v6 => Command::new("EPRT", Some(&addr::format_eprt_arg(v6))),
    };
    let reply = leg
        .control
        .command(&command, "announcing PORT/EPRT to the backend")
        .await?;
    if !reply.is_completion() {
        return Err(BackendDataError::Setup(format!(
            "backend refused {}: {} {}",
            command.verb_text,
            reply.code,
            reply.text()
        )));
    }
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn active_listener_refuses_other_addresses() {
        let listener = ActiveListener::bind("127.0.0.1".parse().expect("ip"), None)
            .await
            .expect("bind");
        let addr = listener.addr();
        let stray = TcpStream::connect(addr).await.expect("connect");
        let result = listener
            .accept_from("127.0.0.2".parse().expect("ip"), Duration::from_millis(100))
            .await;
        assert!(matches!(result, Err(DataError::AcceptTimeout(_))));
        drop(stray);
    }
}
