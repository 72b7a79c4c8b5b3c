//! Data channel: the client's data leg (pooled passive port or active-mode connect), the
//! data streams of both legs (plain or TLS), and the bounded byte pump between them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::config::PumpMode;
use crate::ftp::codes;
use crate::ftp::Reply;
use crate::net;
use crate::ports::Reservation;

mod early_tls;
mod pump;
#[cfg(target_os = "linux")]
mod splice;

pub use early_tls::{EarlyConn, EarlyTls, GatedStream, GatedTickets, TicketGate};

use pump::{name_leg, pump};

/// Pumps between two plain TCP sockets: the buffered [`pump`], or with `data.pump =
/// "splice"` zero-copy `splice(2)` through a pipe on Linux (the bytes never enter user
/// space; the buffered pump when the kernel has no pipe to give).
async fn pump_tcp(
    from: &mut TcpStream,
    to: &mut TcpStream,
    progress: Arc<AtomicU64>,
    mode: PumpMode,
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    if mode == PumpMode::Splice {
        match splice::Pipe::new() {
            Ok(pipe) => return splice::pump(from, to, &pipe, progress).await,
            Err(e) => tracing::debug!(error = %e, "no pipe for splice; using the buffered pump"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = mode;
    pump(from, to, progress).await
}

/// One data leg: plain TCP, or TLS towards the client (ftpfront is the TLS server) or
/// towards the backend (ftpfront is the TLS client).
pub enum DataStream {
    Plain(TcpStream),
    ClientTls(Box<tokio_rustls::server::TlsStream<GatedStream>>),
    BackendTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl DataStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            DataStream::Plain(s) => s,
            DataStream::ClientTls(s) => s.get_ref().0.tcp(),
            DataStream::BackendTls(s) => s.get_ref().0,
        }
    }

    /// Close with RST instead of FIN (see [`net::reset_on_close`]).
    fn reset(&self) {
        net::reset_on_close(self.tcp());
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            DataStream::Plain($s) => $e,
            DataStream::ClientTls($s) => $e,
            DataStream::BackendTls($s) => $e,
        }
    };
}

impl AsyncRead for DataStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        delegate!(self, s => std::pin::Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<io::Result<usize>> {
        delegate!(self, s => std::pin::Pin::new(s).poll_write(cx, buf))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        delegate!(self, s => std::pin::Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        delegate!(self, s => std::pin::Pin::new(s).poll_shutdown(cx))
    }
}

/// How long an upload waits for a TLS backend's own close_notify after ours.
const TLS_CLOSE_WAIT: Duration = Duration::from_secs(5);

/// Pumps one transfer (plain legs as `mode` says, see [`pump_tcp`]). A TLS leg that
/// ends without close_notify is an error (a truncated transfer), and on any error both
/// legs are reset. After an upload to a TLS backend, the backend's close_notify (and any
/// TLS 1.3 session tickets, which later data connections resume with) is read.
///
/// `stop` ends the transfer early (ABOR, a stall, a client that vanished, shutdown): both
/// legs are then reset too, never closed with a FIN, because a FIN is all that marks the
/// end of a plain upload and the backend would record the cut file as complete.
pub async fn pump_legs(
    mut from: DataStream,
    mut to: DataStream,
    progress: Arc<AtomicU64>,
    [from_name, to_name]: [&'static str; 2],
    mode: PumpMode,
    stop: CancellationToken,
) -> io::Result<u64> {
    let moved = async {
        match (&mut from, &mut to) {
            (DataStream::Plain(a), DataStream::Plain(b)) => pump_tcp(a, b, progress, mode).await,
            (from, to) => pump(from, to, progress).await,
        }
    };
    let result = tokio::select! {
        result = moved => result,
        _ = stop.cancelled() => Err(io::Error::new(io::ErrorKind::Interrupted, "transfer stopped")),
    };
    // Operators need to know which leg broke: name it in the error.
    let result = result.map_err(|e| name_leg(e, from_name, to_name));
    // TLS closes in both directions: a sender that ended with close_notify (an FTPS upload)
    // may wait for ours before it reads the final reply.
    if result.is_ok() && !matches!(from, DataStream::Plain(_)) {
        let _ = tokio::time::timeout(TLS_CLOSE_WAIT, from.shutdown()).await;
    }
    match &result {
        Ok(_) if matches!(to, DataStream::BackendTls(_)) => {
            let mut sink = [0u8; 4096];
            let drain = async { while to.read(&mut sink).await.map(|n| n > 0).unwrap_or(false) {} };
            let _ = tokio::time::timeout(TLS_CLOSE_WAIT, drain).await;
        }
        Ok(_) => {}
        Err(_) => {
            from.reset();
            to.reset();
        }
    }
    result
}

/// Where the client's next data connection comes from.
pub enum ClientData {
    /// PASV/EPSV: the client connects to a reserved port of the pool.
    Passive(Reservation),
    /// PASV/EPSV under PROT P: the same, its TLS handshake begun on arrival.
    PassiveTls(EarlyTls),
    /// PORT/EPRT: ftpfront connects to the client.
    Active(SocketAddr),
}

/// The client's data connection once it is there.
pub enum ClientConn {
    Tcp(TcpStream),
    /// Its TLS handshake begun, held until the transfer command (`EarlyTls::finish`).
    EarlyTls(EarlyTls),
}

/// Connects the client's data leg: the pooled passive port's accepted connection, or a
/// connection to the address of the client's PORT/EPRT.
pub async fn client_data_stream(
    setup: ClientData,
    local_ip: IpAddr,
    timeout: std::time::Duration,
) -> Result<ClientConn, Reply> {
    match setup {
        ClientData::Passive(reservation) => match reservation.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "client data connection accepted");
                let _ = stream.set_nodelay(true);
                Ok(ClientConn::Tcp(stream))
            }
            Err(e) => Err(cant_open(e)),
        },
        ClientData::PassiveTls(mut early) => match early.arrived().await {
            Ok(()) => Ok(ClientConn::EarlyTls(early)),
            Err(e) => Err(cant_open(e)),
        },
        ClientData::Active(target) => {
            net::connect(target, Some(local_ip), timeout, "client data (active mode)")
                .await
                .map(ClientConn::Tcp)
                .map_err(cant_open)
        }
    }
}

fn cant_open(reason: impl std::fmt::Display) -> Reply {
    Reply::new(
        codes::CANT_OPEN_DATA,
        format!("Can't open data connection: {reason}."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// `[source, from]` and `[to, sink]`: two connected loopback pairs; a pump between
    /// `from` and `to` relays what `source` sends to `sink`.
    async fn two_tcp_pairs() -> [TcpStream; 4] {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let source = TcpStream::connect(addr).await.expect("connect");
        let (from, _) = listener.accept().await.expect("accept");
        let to = TcpStream::connect(addr).await.expect("connect");
        let (sink, _) = listener.accept().await.expect("accept");
        [source, from, to, sink]
    }

    /// What `sink` receives while `source` sends `data` and then its FIN.
    async fn sent_and_received(mut source: TcpStream, mut sink: TcpStream, data: &[u8]) -> Vec<u8> {
        let data = data.to_vec();
        let writer = tokio::spawn(async move {
            source.write_all(&data).await.expect("write");
            source.shutdown().await.expect("fin");
        });
        let mut received = Vec::new();
        sink.read_to_end(&mut received).await.expect("read to EOF");
        writer.await.expect("writer");
        received
    }

    fn sample(len: u32, modulus: u32) -> Vec<u8> {
        (0..len).map(|i| (i % modulus) as u8).collect()
    }

    #[tokio::test]
    async fn tcp_pump_moves_every_byte_and_half_closes() {
        for mode in [PumpMode::Copy, PumpMode::Splice] {
            tcp_pump_moves_every_byte(mode).await;
        }
    }

    async fn tcp_pump_moves_every_byte(mode: PumpMode) {
        let [source, from, to, sink] = two_tcp_pairs().await;
        let data = sample(5_000_000, 253);
        let pumping = pump_legs(
            DataStream::Plain(from),
            DataStream::Plain(to),
            Arc::new(AtomicU64::new(0)),
            ["backend", "client"],
            mode,
            CancellationToken::new(),
        );
        let (moved, received) = tokio::join!(pumping, sent_and_received(source, sink, &data));
        assert_eq!(moved.expect("pump"), data.len() as u64);
        assert_eq!(received, data);
    }

    /// The splice path itself (the mode tests above would fall back to the copy without a
    /// pipe): every byte, then the half-close.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn splice_moves_every_byte_and_half_closes() {
        let [source, from, to, sink] = two_tcp_pairs().await;
        let data = sample(3_000_000, 241);
        let pipe = splice::Pipe::new().expect("a pipe for splice");
        let pumping = splice::pump(&from, &to, &pipe, Arc::new(AtomicU64::new(0)));
        let (moved, received) = tokio::join!(pumping, sent_and_received(source, sink, &data));
        assert_eq!(moved.expect("splice"), data.len() as u64);
        assert!(received == data, "bytes differ");
    }

    /// A stopped upload must not look complete to the receiver: reset, not FIN.
    #[tokio::test]
    async fn a_stopped_pump_resets_both_legs() {
        for mode in [PumpMode::Copy, PumpMode::Splice] {
            a_stopped_pump_resets_both_legs_in(mode).await;
        }
    }

    async fn a_stopped_pump_resets_both_legs_in(mode: PumpMode) {
        let [mut source, from, to, mut sink] = two_tcp_pairs().await;
        source.write_all(b"part of an upload").await.expect("write");
        let stop = CancellationToken::new();
        let pumping = tokio::spawn(pump_legs(
            DataStream::Plain(from),
            DataStream::Plain(to),
            Arc::new(AtomicU64::new(0)),
            ["client", "backend"],
            mode,
            stop.clone(),
        ));
        let mut first = [0u8; 17];
        sink.read_exact(&mut first).await.expect("relayed bytes");
        stop.cancel();
        let stopped = pumping.await.expect("join");
        assert_eq!(
            stopped.map_err(|e| e.kind()),
            Err(io::ErrorKind::Interrupted)
        );
        let mut rest = Vec::new();
        let end = sink.read_to_end(&mut rest).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
        let end = source.read_to_end(&mut rest).await;
        assert_eq!(
            end.map_err(|e| e.kind()),
            Err(io::ErrorKind::ConnectionReset)
        );
    }
}
