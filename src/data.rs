//! Data channel: the client's data leg (pooled passive port or active-mode connect), the
//! data streams of both legs (plain or TLS), and the bounded byte pump between them.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::ftp::codes;
use crate::ftp::Reply;
use crate::net;
use crate::ports::Reservation;

/// Pump buffer: large enough for loopback and LAN line rate, small enough that thousands of
/// concurrent transfers stay within memory (the whole file is never held).
const PUMP_BUFFER: usize = 128 * 1024;

/// Copies `from` to `to` until end of stream, then half-closes `to` so the receiver sees
/// EOF (an upload's end must reach the backend as a FIN, or it never answers 226).
/// `progress` counts the bytes moved so far, for STAT during a transfer.
pub async fn pump<R, W>(from: &mut R, to: &mut W, progress: Arc<AtomicU64>) -> io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buffer = vec![0u8; PUMP_BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buffer).await.map_err(at_read)?;
        if n == 0 {
            break;
        }
        to.write_all(&buffer[..n]).await.map_err(at_write)?;
        total += n as u64;
        progress.store(total, Ordering::Relaxed);
    }
    to.flush().await.map_err(at_write)?;
    to.shutdown().await.map_err(at_write)?;
    Ok(total)
}

/// An I/O error of a pump, with the end it happened at (named later by [`name_leg`]).
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
struct AtEnd {
    reading: bool,
    source: io::Error,
}

fn at_read(source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AtEnd {
            reading: true,
            source,
        },
    )
}

fn at_write(source: io::Error) -> io::Error {
    io::Error::new(
        source.kind(),
        AtEnd {
            reading: false,
            source,
        },
    )
}

/// "reading from the client: Connection reset by peer" instead of the bare OS error.
fn name_leg(error: io::Error, from: &str, to: &str) -> io::Error {
    let kind = error.kind();
    let text = error.to_string();
    let at_end = error
        .into_inner()
        .and_then(|inner| inner.downcast::<AtEnd>().ok());
    let text = match at_end {
        Some(at) if at.reading => format!("reading from the {from}: {}", at.source),
        Some(at) => format!("writing to the {to}: {}", at.source),
        None => text,
    };
    io::Error::new(kind, text)
}

/// Pumps between two plain TCP sockets: zero-copy `splice(2)` through a pipe on Linux (the
/// bytes never enter user space), the buffered [`pump`] elsewhere.
pub async fn pump_tcp(
    from: &mut TcpStream,
    to: &mut TcpStream,
    progress: Arc<AtomicU64>,
) -> io::Result<u64> {
    #[cfg(target_os = "linux")]
    {
        match splice::Pipe::new() {
            Ok(pipe) => return splice::pump(from, to, &pipe, progress).await,
            Err(e) => tracing::debug!(error = %e, "no pipe for splice; using the buffered pump"),
        }
    }
    pump(from, to, progress).await
}

/// One data leg: plain TCP, or TLS towards the client (ftpfront is the TLS server) or
/// towards the backend (ftpfront is the TLS client).
pub enum DataStream {
    Plain(TcpStream),
    ClientTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    BackendTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl DataStream {
    fn tcp(&self) -> &TcpStream {
        match self {
            DataStream::Plain(s) => s,
            DataStream::ClientTls(s) => s.get_ref().0,
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

/// Pumps one transfer: zero-copy between plain legs, buffered otherwise. A TLS leg that
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
    stop: CancellationToken,
) -> io::Result<u64> {
    let moved = async {
        match (&mut from, &mut to) {
            (DataStream::Plain(a), DataStream::Plain(b)) => pump_tcp(a, b, progress).await,
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

#[cfg(target_os = "linux")]
mod splice {
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use tokio::io::Interest;
    use tokio::net::TcpStream;

    /// Bytes moved per splice call, and the pipe size asked for. Pipe memory of an
    /// unprivileged user is capped (pipe-user-pages-soft), so each transfer asks modestly.
    /// 1 MiB cost about a fifth less CPU per GiB on loopback, but holds four times more of
    /// a download in flight: pure-ftpd then notices an urgent ABOR it does not notice on a
    /// direct connection (tests/conformance.rs, `abor_variants_during_a_download`).
    const CHUNK: usize = 256 * 1024;

    pub struct Pipe {
        read: OwnedFd,
        write: OwnedFd,
    }

    impl Pipe {
        pub fn new() -> io::Result<Pipe> {
            let mut fds = [0 as RawFd; 2];
            // SAFETY: `fds` is a valid array of two descriptors for pipe2 to fill.
            let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
            if rc != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
            let (read, write) =
                unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            // Past the per-user pipe budget the kernel hands out one-page pipes, and splice
            // would move 4 KiB per call: refuse, so the caller uses the buffered pump.
            // SAFETY: F_SETPIPE_SZ on a pipe descriptor we own.
            let size =
                unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
            if size < CHUNK as libc::c_int {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    "pipe buffer budget exhausted",
                ));
            }
            Ok(Pipe { read, write })
        }
    }

    fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
        let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
        // SAFETY: both descriptors are open for the duration of the call; null offsets are
        // required for sockets and pipes.
        let n = unsafe {
            libc::splice(
                from,
                std::ptr::null_mut(),
                to,
                std::ptr::null_mut(),
                len,
                flags,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// Fills the (empty) pipe from the socket; 0 means end of stream.
    async fn fill(from: &TcpStream, pipe: &Pipe) -> io::Result<usize> {
        loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                splice(from.as_raw_fd(), pipe.write.as_raw_fd(), CHUNK)
            }) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                other => return other,
            }
        }
    }

    /// Drains `len` bytes from the pipe into the socket.
    async fn drain(to: &TcpStream, pipe: &Pipe, mut len: usize) -> io::Result<()> {
        while len > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), to.as_raw_fd(), len)
            }) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "peer stopped accepting data",
                    ))
                }
                Ok(n) => len -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub async fn pump(
        from: &TcpStream,
        to: &TcpStream,
        pipe: &Pipe,
        progress: Arc<AtomicU64>,
    ) -> io::Result<u64> {
        let mut total = 0u64;
        loop {
            let n = fill(from, pipe).await.map_err(super::at_read)?;
            if n == 0 {
                break;
            }
            drain(to, pipe, n).await.map_err(super::at_write)?;
            total += n as u64;
            progress.store(total, Ordering::Relaxed);
        }
        // The half-close that tells the receiver (an uploading backend) the data is complete.
        socket2::SockRef::from(to)
            .shutdown(std::net::Shutdown::Write)
            .map_err(super::at_write)?;
        Ok(total)
    }
}

/// Where the client's next data connection comes from.
pub enum ClientData {
    /// PASV/EPSV: the client connects to a reserved port of the pool.
    Passive(Reservation),
    /// PORT/EPRT: ftpfront connects to the client.
    Active(SocketAddr),
}

/// Connects the client's data leg: the pooled passive port's accepted connection, or a
/// connection to the address of the client's PORT/EPRT.
pub async fn client_data_stream(
    setup: ClientData,
    local_ip: IpAddr,
    timeout: std::time::Duration,
) -> Result<tokio::net::TcpStream, Reply> {
    match setup {
        ClientData::Passive(reservation) => match reservation.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!(%peer, "client data connection accepted");
                let _ = stream.set_nodelay(true);
                Ok(stream)
            }
            Err(e) => Err(Reply::new(
                codes::CANT_OPEN_DATA,
                format!("Can't open data connection: {e}."),
            )),
        },
        ClientData::Active(target) => {
            net::connect(target, Some(local_ip), timeout, "client data (active mode)")
                .await
                .map_err(|e| {
                    Reply::new(
                        codes::CANT_OPEN_DATA,
                        format!("Can't open data connection: {e}."),
                    )
                })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

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
        let counter = progress.clone();
        let pumping = tokio::spawn(async move {
            let (mut from, mut to) = (source_reader, sink_writer);
            pump(&mut from, &mut to, counter).await
        });
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

    #[tokio::test]
    async fn tcp_pump_moves_every_byte_and_half_closes() {
        let [mut source, from, to, mut sink] = two_tcp_pairs().await;
        let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected = data.clone();
        let writer = tokio::spawn(async move {
            source.write_all(&data).await.expect("write");
            source.shutdown().await.expect("fin");
        });
        let progress = Arc::new(AtomicU64::new(0));
        let pumping = tokio::spawn(pump_legs(
            DataStream::Plain(from),
            DataStream::Plain(to),
            progress.clone(),
            ["backend", "client"],
            CancellationToken::new(),
        ));
        let mut received = Vec::new();
        sink.read_to_end(&mut received).await.expect("read to EOF");
        writer.await.expect("writer");
        assert_eq!(
            pumping.await.expect("join").expect("pump"),
            expected.len() as u64
        );
        assert_eq!(received, expected);
    }

    #[test]
    fn pump_errors_name_the_leg_that_broke() {
        let reset = || io::Error::from(io::ErrorKind::ConnectionReset);
        let named = name_leg(at_read(reset()), "client", "backend");
        assert_eq!(named.kind(), io::ErrorKind::ConnectionReset);
        assert!(
            named.to_string().starts_with("reading from the client: "),
            "{named}"
        );
        let named = name_leg(at_write(reset()), "client", "backend");
        assert!(
            named.to_string().starts_with("writing to the backend: "),
            "{named}"
        );
        let untagged = name_leg(io::Error::other("odd"), "client", "backend");
        assert_eq!(untagged.to_string(), "odd");
    }

    /// A stopped upload must not look complete to the receiver: reset, not FIN.
    #[tokio::test]
    async fn a_stopped_pump_resets_both_legs() {
        let [mut source, from, to, mut sink] = two_tcp_pairs().await;
        source.write_all(b"part of an upload").await.expect("write");
        let stop = CancellationToken::new();
        let pumping = tokio::spawn(pump_legs(
            DataStream::Plain(from),
            DataStream::Plain(to),
            Arc::new(AtomicU64::new(0)),
            ["client", "backend"],
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
