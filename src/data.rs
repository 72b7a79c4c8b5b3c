//! Data channel: opening the backend's data connection (passive or active), connecting to an
//! active-mode client, and the bounded byte pump between two streams.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::config::PortRange;
use crate::ports::canonical_ip;

/// Pump buffer: large enough for loopback and LAN line rate, small enough that thousands of
/// concurrent transfers stay within memory (the whole file is never held).
const PUMP_BUFFER: usize = 128 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("cannot connect to {peer} ({role}): {source}")]
    Connect {
        peer: SocketAddr,
        role: &'static str,
        source: io::Error,
    },
    #[error("connecting to {peer} ({role}) timed out after {timeout:?}")]
    ConnectTimeout {
        peer: SocketAddr,
        role: &'static str,
        timeout: Duration,
    },
    #[error("cannot listen for the backend's data connection on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("the backend did not open its data connection within {0:?}")]
    AcceptTimeout(Duration),
    #[error("accepting the backend's data connection failed: {0}")]
    Accept(io::Error),
}

/// Connects with a timeout, optionally from a given local address.
pub async fn connect(
    peer: SocketAddr,
    local_ip: Option<IpAddr>,
    timeout: Duration,
    role: &'static str,
) -> Result<TcpStream, DataError> {
    let attempt = async {
        let socket = match peer {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == peer.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(peer).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(DataError::Connect { peer, role, source }),
        Err(_) => Err(DataError::ConnectTimeout {
            peer,
            role,
            timeout,
        }),
    }
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

/// Copies `from` to `to` until end of stream, then half-closes `to` so the receiver sees
/// EOF (an upload's end must reach the backend as a FIN, or it never answers 226).
/// `progress` counts the bytes moved so far, for STAT during a transfer.
pub async fn pump<R, W>(mut from: R, mut to: W, progress: Arc<AtomicU64>) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; PUMP_BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buffer).await?;
        if n == 0 {
            break;
        }
        to.write_all(&buffer[..n]).await?;
        total += n as u64;
        progress.store(total, Ordering::Relaxed);
    }
    to.flush().await?;
    to.shutdown().await?;
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pump_moves_every_byte_and_half_closes() {
        let (mut source_writer, source_reader) = tokio::io::duplex(1024);
        let (sink_writer, mut sink_reader) = tokio::io::duplex(1024);
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            source_writer.write_all(&data).await.expect("write");
        });
        let progress = Arc::new(AtomicU64::new(0));
        let pumping = tokio::spawn(pump(source_reader, sink_writer, progress.clone()));
        let mut received = Vec::new();
        sink_reader
            .read_to_end(&mut received)
            .await
            .expect("read to EOF");
        writer.await.expect("writer");
        let moved = pumping.await.expect("join").expect("pump");
        assert_eq!(moved, expected.len() as u64);
        assert_eq!(progress.load(Ordering::Relaxed), moved);
        assert_eq!(received, expected);
    }

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
