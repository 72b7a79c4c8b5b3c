//! Line-framed control connections: the client leg (commands in, replies out) and the
//! backend leg (commands out, replies in), over any byte stream (plain TCP now, TLS later).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::ftp::{Command, LineEvent, LineSplitter, Reply, ReplyError, ReplyParser};

/// A byte stream a control connection can run over; boxed so that a TLS upgrade can swap
/// the stream type without changing the session's type.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}
pub type BoxStream = Box<dyn ByteStream>;

const READ_CHUNK: usize = 4096;
/// A peer that does not take a reply for this long is not reading its control connection;
/// without a bound, a client that pipelines commands and never reads pins a session.
const WRITE_TIMEOUT: Duration = Duration::from_secs(60);

/// Reads lines from a stream with a bounded buffer. `next_event` is cancel-safe: bytes
/// already read stay in the splitter when a `select!` drops the future.
pub struct LineConn {
    stream: BoxStream,
    splitter: LineSplitter,
    peer: SocketAddr,
    urgent: Option<UrgentDrain>,
    eof_pending: bool,
}

impl LineConn {
    pub fn new(stream: BoxStream, peer: SocketAddr, max_line_length: usize) -> Self {
        LineConn {
            stream,
            splitter: LineSplitter::new(max_line_length),
            peer,
            urgent: None,
            eof_pending: false,
        }
    }

    /// A plain TCP client connection: see [`UrgentDrain`].
    pub fn plain_tcp(
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        max_line_length: usize,
    ) -> Self {
        let urgent = UrgentDrain::of(&stream);
        let mut conn = LineConn::new(Box::new(stream), peer, max_line_length);
        conn.urgent = Some(urgent);
        conn
    }

    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// A stand-in that holds the place of a connection being upgraded to TLS.
    pub fn placeholder(peer: SocketAddr) -> Self {
        let nothing = tokio::io::join(tokio::io::empty(), tokio::io::sink());
        LineConn::new(Box::new(nothing), peer, 1)
    }

    /// The stream, for a TLS upgrade. Bytes already read past the last line would belong
    /// to the TLS handshake: a peer that sent them before our 234 broke the protocol.
    pub fn into_stream(mut self) -> Result<BoxStream, UpgradeError> {
        let early = self.splitter.take_buffered();
        if !early.is_empty() {
            return Err(UpgradeError::EarlyBytes(early.len()));
        }
        Ok(self.stream)
    }

    /// Next line or overlong-line event; `None` at end of stream.
    pub async fn next_event(&mut self) -> io::Result<Option<LineEvent>> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            if let Some(event) = self.splitter.next_event() {
                return Ok(Some(event));
            }
            if self.eof_pending {
                return Ok(None);
            }
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            self.splitter.push(&chunk[..n]);
            if let Some(urgent) = &self.urgent {
                self.eof_pending = urgent.drain_into(&mut self.splitter, &mut chunk);
            }
        }
    }

    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let write = async {
            self.stream.write_all(bytes).await?;
            self.stream.flush().await
        };
        tokio::time::timeout(WRITE_TIMEOUT, write)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer does not read its control connection",
                )
            })?
    }

    pub async fn shutdown(&mut self) {
        // Best effort: the peer may already be gone, and there is nobody left to tell.
        let _ = self.stream.shutdown().await;
    }
}

/// Reads what tokio's readiness tracking would leave behind on a plain TCP control socket.
///
/// Python's ftplib (and others) send `ABOR\r\n` with MSG_OOB, which makes the final byte
/// urgent. With SO_OOBINLINE the byte stays in the stream, but a read stops at the urgent
/// mark, and tokio takes that short read as "socket drained": no wake-up ever comes for the
/// last byte and the ABOR would hang. Reading on with non-blocking `recv` until EAGAIN
/// collects it.
struct UrgentDrain {
    fd: std::os::fd::RawFd,
}

impl UrgentDrain {
    fn of(stream: &tokio::net::TcpStream) -> UrgentDrain {
        use std::os::fd::AsRawFd;
        UrgentDrain {
            fd: stream.as_raw_fd(),
        }
    }

    /// Pushes every immediately available byte; true when the peer's end of stream was seen.
    fn drain_into(&self, splitter: &mut LineSplitter, chunk: &mut [u8]) -> bool {
        loop {
            // SAFETY: `fd` belongs to the TcpStream owned by the same LineConn, which outlives
            // this call; the buffer is valid for `chunk.len()` bytes.
            let n = unsafe {
                libc::recv(
                    self.fd,
                    chunk.as_mut_ptr().cast(),
                    chunk.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            match n {
                0 => return true,
                n if n > 0 => splitter.push(&chunk[..n as usize]),
                // EAGAIN (nothing more) or a real error, which the next awaited read reports.
                _ => return false,
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0} bytes arrived before the TLS handshake could start")]
    EarlyBytes(usize),
}

/// What went wrong on the backend control leg, with the phase it happened in.
#[derive(Debug, thiserror::Error)]
pub enum BackendLegError {
    #[error("backend {peer}: I/O error while {phase}: {source}")]
    Io {
        peer: SocketAddr,
        phase: &'static str,
        source: io::Error,
    },
    #[error("backend {peer} closed the control connection while {phase}")]
    Closed {
        peer: SocketAddr,
        phase: &'static str,
    },
    #[error("backend {peer} did not reply within {timeout:?} while {phase}")]
    Timeout {
        peer: SocketAddr,
        phase: &'static str,
        timeout: Duration,
    },
    #[error("backend {peer} sent a malformed reply while {phase}: {source}")]
    Malformed {
        peer: SocketAddr,
        phase: &'static str,
        source: ReplyError,
    },
    #[error("backend {peer} sent a reply line longer than allowed while {phase}")]
    LineTooLong {
        peer: SocketAddr,
        phase: &'static str,
    },
    #[error("backend {peer} sent a reply larger than {MAX_REPLY_BYTES} bytes while {phase}")]
    ReplyTooLarge {
        peer: SocketAddr,
        phase: &'static str,
    },
}

impl BackendLegError {
    /// A short fixed label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            BackendLegError::Io { .. } => "io",
            BackendLegError::Closed { .. } => "closed",
            BackendLegError::Timeout { .. } => "timeout",
            BackendLegError::Malformed { .. } => "malformed_reply",
            BackendLegError::LineTooLong { .. } => "line_too_long",
            BackendLegError::ReplyTooLarge { .. } => "reply_too_large",
        }
    }
}

/// Most lines a backend may put in one multi-line reply (a FEAT or STAT listing).
const MAX_REPLY_LINES: usize = 100_000;
/// Most bytes of one reply: a hostile backend must not make a session hold gigabytes.
const MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
/// Backend replies (STAT of a directory) can carry long lines.
const MAX_BACKEND_LINE: usize = 64 * 1024;

/// The backend control leg: sends commands, assembles replies.
pub struct BackendControl {
    conn: LineConn,
    local: SocketAddr,
    parser: ReplyParser,
    partial_bytes: usize,
    reply_timeout: Duration,
}

impl BackendControl {
    pub fn new(
        stream: BoxStream,
        peer: SocketAddr,
        local: SocketAddr,
        reply_timeout: Duration,
    ) -> Self {
        BackendControl {
            conn: LineConn::new(stream, peer, MAX_BACKEND_LINE),
            local,
            parser: ReplyParser::new(MAX_REPLY_LINES),
            partial_bytes: 0,
            reply_timeout,
        }
    }

    pub fn peer(&self) -> SocketAddr {
        self.conn.peer()
    }

    /// Our end of the backend control connection (the default address for PORT/EPRT).
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Next complete reply, without a timeout (cancel-safe; used while idle or transferring).
    pub async fn next_reply(&mut self, phase: &'static str) -> Result<Reply, BackendLegError> {
        let peer = self.conn.peer();
        loop {
            let event = self
                .conn
                .next_event()
                .await
                .map_err(|source| BackendLegError::Io {
                    peer,
                    phase,
                    source,
                })?;
            match event {
                None => return Err(BackendLegError::Closed { peer, phase }),
                Some(LineEvent::TooLong) => {
                    return Err(BackendLegError::LineTooLong { peer, phase })
                }
                Some(LineEvent::Line(line)) => {
                    self.partial_bytes += line.len() + 2;
                    if self.partial_bytes > MAX_REPLY_BYTES {
                        return Err(BackendLegError::ReplyTooLarge { peer, phase });
                    }
                    let parsed = self.parser.push_line(&line).map_err(|source| {
                        BackendLegError::Malformed {
                            peer,
                            phase,
                            source,
                        }
                    })?;
                    if let Some(reply) = parsed {
                        self.partial_bytes = 0;
                        return Ok(reply);
                    }
                }
            }
        }
    }

    /// Next reply, failing after the configured reply timeout.
    pub async fn read_reply(&mut self, phase: &'static str) -> Result<Reply, BackendLegError> {
        let timeout = self.reply_timeout;
        let peer = self.conn.peer();
        tokio::time::timeout(timeout, self.next_reply(phase))
            .await
            .map_err(|_| BackendLegError::Timeout {
                peer,
                phase,
                timeout,
            })?
    }

    pub async fn send(
        &mut self,
        command: &Command,
        phase: &'static str,
    ) -> Result<(), BackendLegError> {
        let peer = self.conn.peer();
        self.conn
            .write_all(&command.to_wire())
            .await
            .map_err(|source| BackendLegError::Io {
                peer,
                phase,
                source,
            })
    }

    /// Sends a command and returns its first reply.
    pub async fn command(
        &mut self,
        command: &Command,
        phase: &'static str,
    ) -> Result<Reply, BackendLegError> {
        self.send(command, phase).await?;
        self.read_reply(phase).await
    }

    pub async fn shutdown(&mut self) {
        self.conn.shutdown().await;
    }

    /// Ends the session politely: QUIT, its reply (within `timeout`: the backend may be the
    /// one that failed), then the connection is closed.
    pub async fn quit(mut self, timeout: Duration) {
        let goodbye = async {
            let quit = Command::new("QUIT", None);
            self.command(&quit, "sending QUIT").await
        };
        let _ = tokio::time::timeout(timeout, goodbye).await;
        self.shutdown().await;
    }

    /// The stream, for the TLS upgrade after AUTH TLS.
    pub fn into_stream(self) -> Result<BoxStream, UpgradeError> {
        self.conn.into_stream()
    }
}
