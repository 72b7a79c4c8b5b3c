//! Line-framed control connections: the client leg (commands in, replies out) and the
//! backend leg (commands out, replies in), over any byte stream (plain TCP now, TLS later).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{ready, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

use crate::ftp::telnet::{self, IAC};
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
/// How long closing a connection may take: a TLS close_notify to a peer that stopped
/// reading would otherwise wait forever, holding the session and its per-IP slot.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// Most bytes read ahead of the session: a pipelined burst is taken in this much at a
/// time, so memory per connection stays bounded however fast a peer sends.
const READ_AHEAD_LIMIT: usize = 64 * 1024;
/// Most reply bytes held back while the peer's pipelined commands are answered; one write
/// per this many bytes instead of one per reply.
const DEFERRED_WRITE_LIMIT: usize = 16 * 1024;

/// Reads lines from a stream with a bounded buffer. `next_event` is cancel-safe: bytes
/// already read stay in the splitter when a `select!` drops the future, and deferred
/// replies stay queued until they are written.
pub struct LineConn {
    stream: BoxStream,
    splitter: LineSplitter,
    peer: SocketAddr,
    urgent: Option<UrgentDrain>,
    eof_pending: bool,
    /// The urgent drain stopped at the read-ahead limit: more bytes may sit in the socket
    /// that no readiness event will announce.
    drain_pending: bool,
    /// Replies not written yet (see [`LineConn::write_deferred`]).
    deferred: Vec<u8>,
    write_timeout: Duration,
    /// TCP urgent data arrived since the last [`LineConn::take_urgent_seen`].
    urgent_seen: bool,
}

impl LineConn {
    pub fn new(stream: BoxStream, peer: SocketAddr, max_line_length: usize) -> Self {
        LineConn {
            stream,
            splitter: LineSplitter::new(max_line_length),
            peer,
            urgent: None,
            eof_pending: false,
            drain_pending: false,
            deferred: Vec::new(),
            write_timeout: WRITE_TIMEOUT,
            urgent_seen: false,
        }
    }

    /// Whether TCP urgent data arrived since the last call: a client that sends its ABOR
    /// line as urgent data without Telnet marks (Python's ftplib) wants an urgent ABOR.
    pub fn take_urgent_seen(&mut self) -> bool {
        std::mem::take(&mut self.urgent_seen)
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

    /// A shorter write timeout (never longer than the default): a client that reads
    /// nothing for the session's idle timeout is idle.
    pub fn with_write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout.min(WRITE_TIMEOUT);
        self
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
        if !self.deferred.is_empty() {
            return Err(UpgradeError::UnsentReplies(self.deferred.len()));
        }
        Ok(self.stream)
    }

    /// Next line or overlong-line event; `None` at end of stream. Deferred replies are
    /// written before waiting for the peer, who may be waiting for them.
    pub async fn next_event(&mut self) -> io::Result<Option<LineEvent>> {
        loop {
            if let Some(event) = self.splitter.next_event() {
                return Ok(Some(event));
            }
            if self.eof_pending {
                return Ok(None);
            }
            if self.drain_pending {
                self.drain_urgent();
                continue;
            }
            self.flush_deferred().await?;
            if self.read_some().await? == 0 {
                return Ok(None);
            }
            self.drain_urgent();
        }
    }

    /// Reads what the stream has into the splitter; 0 at end of stream. The read buffer
    /// lives on the stack of one poll, not in the future: an idle session waits on two of
    /// these (client and backend), and a buffer held across the wait would cost it 8 KiB.
    /// A pending `poll_read` has read nothing, so nothing is lost with the buffer.
    async fn read_some(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| {
            let mut chunk = [0u8; READ_CHUNK];
            let mut buf = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut self.stream).poll_read(cx, &mut buf))?;
            let n = buf.filled().len();
            self.splitter.push(&chunk[..n]);
            Poll::Ready(Ok(n))
        })
        .await
    }

    fn drain_urgent(&mut self) {
        self.drain_pending = false;
        if let Some(urgent) = &self.urgent {
            let mut chunk = [0u8; READ_CHUNK];
            let drained = urgent.drain_into(&mut self.splitter, &mut chunk, READ_AHEAD_LIMIT);
            self.urgent_seen |= drained.saw_urgent;
            match drained.end {
                Drained::Eof => self.eof_pending = true,
                Drained::Limit => self.drain_pending = true,
                Drained::Empty => {}
            }
        }
    }

    /// Writes a reply now (after any deferred ones).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.deferred.extend_from_slice(bytes);
        self.flush_deferred().await
    }

    /// Queues a reply that nothing but the peer's next read depends on, while more of the
    /// peer's pipelined commands are already buffered: a burst of N commands then costs
    /// N / (16 KiB of replies) writes instead of N. Written at the latest before the next
    /// wait for the peer, with the next [`LineConn::write_all`], or at shutdown.
    pub async fn write_deferred(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.deferred.extend_from_slice(bytes);
        if self.deferred.len() >= DEFERRED_WRITE_LIMIT || !self.splitter.has_event() {
            self.flush_deferred().await?;
        }
        Ok(())
    }

    /// Writes the queued replies; cancel-safe (written bytes leave the queue as they go).
    async fn flush_deferred(&mut self) -> io::Result<()> {
        if self.deferred.is_empty() {
            return Ok(());
        }
        let write = async {
            while !self.deferred.is_empty() {
                let n = self.stream.write(&self.deferred).await?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::WriteZero));
                }
                self.deferred.drain(..n);
            }
            // A long reply (STAT of a big directory) must not keep its buffer for the rest
            // of the session: idle sessions stay small.
            if self.deferred.capacity() > DEFERRED_WRITE_LIMIT {
                self.deferred = Vec::new();
            }
            self.stream.flush().await
        };
        tokio::time::timeout(self.write_timeout, write)
            .await
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::TimedOut,
                    "peer does not read its control connection",
                )
            })?
    }

    /// Writes what is queued and closes; bounded in time, best effort (the peer may already
    /// be gone, and there is nobody left to tell).
    pub async fn shutdown(&mut self) {
        let close = async {
            let _ = self.flush_deferred().await;
            let _ = self.stream.shutdown().await;
        };
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, close).await;
    }
}

/// What an urgent drain found.
struct Drain {
    end: Drained,
    /// The urgent mark was among the bytes read.
    saw_urgent: bool,
}

/// How an urgent drain ended.
enum Drained {
    /// Nothing more to read now (or an error, which the next awaited read reports).
    Empty,
    /// The peer closed its end.
    Eof,
    /// The read-ahead limit is reached; the socket may hold more.
    Limit,
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

    /// Pushes the immediately available bytes, until `limit` bytes are buffered.
    fn drain_into(&self, splitter: &mut LineSplitter, chunk: &mut [u8], limit: usize) -> Drain {
        let mut saw_urgent = false;
        let end = loop {
            // Without a complete line to hand out, stopping would stall the reader.
            if splitter.buffered_len() >= limit && splitter.has_event() {
                break Drained::Limit;
            }
            saw_urgent |= self.at_mark();
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
                0 => break Drained::Eof,
                n if n > 0 => splitter.push(&chunk[..n as usize]),
                _ => break Drained::Empty,
            }
        };
        Drain { end, saw_urgent }
    }

    /// Whether the next byte to read is the urgent one: a read stops right before it.
    #[cfg(target_os = "linux")]
    fn at_mark(&self) -> bool {
        /// From Linux's asm-generic/sockios.h (the libc crate does not export it).
        const SIOCATMARK: libc::c_ulong = 0x8905;
        let mut at_mark: libc::c_int = 0;
        // SAFETY: `fd` is alive (see `drain_into`); SIOCATMARK writes one c_int.
        let rc = unsafe { libc::ioctl(self.fd, SIOCATMARK as _, &mut at_mark) };
        rc == 0 && at_mark != 0
    }

    #[cfg(not(target_os = "linux"))]
    fn at_mark(&self) -> bool {
        false
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("{0} bytes arrived before the TLS handshake could start")]
    EarlyBytes(usize),
    #[error("{0} bytes of replies were not sent before the TLS handshake")]
    UnsentReplies(usize),
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
    #[error("backend {peer} sent a reply larger than {limit} bytes while {phase}")]
    ReplyTooLarge {
        peer: SocketAddr,
        phase: &'static str,
        limit: usize,
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

/// Most lines of one multi-line reply held at a time (a FEAT, a login message).
const MAX_REPLY_LINES: usize = 20_000;
/// Most bytes of one reply held at a time: a hostile backend must not make a session hold
/// gigabytes. Relayed replies (STAT of a big directory) pass in pieces and have no limit.
const MAX_REPLY_BYTES: usize = 1024 * 1024;
/// A relayed multi-line reply goes on to the client in pieces of about this size (one
/// write each) rather than whole: a client that does not read it holds no more than this.
const RELAY_PIECE_BYTES: usize = 16 * 1024;
/// Most bytes of one relayed reply: far beyond any listing on a control connection (a
/// STAT of 120,000 files with 200-character names), and the end of a backend that sends
/// one reply forever.
pub const MAX_RELAYED_REPLY_BYTES: usize = 32 * 1024 * 1024;
/// Backend replies (STAT of a directory) can carry long lines.
const MAX_BACKEND_LINE: usize = 64 * 1024;

/// What the backend sent of a reply relayed to the client: a piece of a long multi-line
/// reply (pass it on as it is), or the end of one.
#[derive(Debug)]
pub enum ReplyPart {
    /// The next bytes of a multi-line reply still arriving.
    Piece(Vec<u8>),
    /// A whole reply, or the rest of one whose pieces went before (see
    /// [`ReplyParser::take_relayable`]).
    End(Reply),
}

/// The backend control leg: sends commands, assembles replies.
pub struct BackendControl {
    conn: LineConn,
    local: SocketAddr,
    parser: ReplyParser,
    partial_bytes: usize,
    /// Bytes of the reply being relayed that went on in pieces already.
    relayed_bytes: usize,
    reply_timeout: Duration,
    /// When the backend last heard a command from us (see `quiet_for`).
    last_sent: tokio::time::Instant,
    /// The socket of a plain TCP connection, for urgent data (see `send_urgent_abor`).
    urgent_fd: Option<std::os::fd::RawFd>,
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
            relayed_bytes: 0,
            reply_timeout,
            last_sent: tokio::time::Instant::now(),
            urgent_fd: None,
        }
    }

    /// A connection over plain TCP, which can carry urgent data.
    pub fn plain_tcp(
        stream: tokio::net::TcpStream,
        peer: SocketAddr,
        local: SocketAddr,
        reply_timeout: Duration,
    ) -> Self {
        use std::os::fd::AsRawFd;
        let fd = stream.as_raw_fd();
        let mut control = BackendControl::new(Box::new(stream), peer, local, reply_timeout);
        control.urgent_fd = Some(fd);
        control
    }

    /// ABOR as RFC 959 (4.1.3) has a client send it: Telnet IP, the Synch (IAC DM, the DM
    /// as TCP urgent data), then the line. Servers that read no command during a transfer
    /// (vsftpd with `async_abor_enable`, proftpd) notice only this form at once. Over TLS
    /// there is no urgent data, and the line goes alone.
    pub async fn send_urgent_abor(&mut self, phase: &'static str) -> Result<(), BackendLegError> {
        let abor = Command::new("ABOR", None);
        let Some(fd) = self.urgent_fd else {
            return self.send(&abor, phase).await;
        };
        let peer = self.conn.peer();
        let io_error = |source| BackendLegError::Io {
            peer,
            phase,
            source,
        };
        self.conn
            .write_all(&[IAC, telnet::IP, IAC])
            .await
            .map_err(io_error)?;
        let synch = [telnet::DM];
        // SAFETY: `fd` belongs to the TcpStream owned by `self.conn`, alive for this call;
        // the buffer is valid for one byte.
        let sent = unsafe { libc::send(fd, synch.as_ptr().cast(), 1, libc::MSG_OOB) };
        if sent != 1 {
            // A full send buffer: the DM goes inline, the line still follows it.
            self.conn.write_all(&synch).await.map_err(io_error)?;
        }
        self.send(&abor, phase).await
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
        loop {
            if let ReplyPart::End(reply) = self.next_part(phase, None).await? {
                return Ok(reply);
            }
        }
    }

    /// The next part of a reply being relayed, failing after the reply timeout (which
    /// each piece restarts: a long listing may take longer than that, as long as it moves).
    pub async fn read_relayed_part(
        &mut self,
        phase: &'static str,
    ) -> Result<ReplyPart, BackendLegError> {
        let (timeout, peer) = (self.reply_timeout, self.conn.peer());
        let part = self.next_part(phase, Some(RELAY_PIECE_BYTES));
        within_reply_timeout(timeout, peer, phase, part).await
    }

    /// The next reply, or with `piece_bytes` a piece of a multi-line one as soon as that
    /// many bytes of it are in. Cancel-safe: what was read stays in the splitter and the
    /// parser.
    async fn next_part(
        &mut self,
        phase: &'static str,
        piece_bytes: Option<usize>,
    ) -> Result<ReplyPart, BackendLegError> {
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
                        let limit = MAX_REPLY_BYTES;
                        return Err(BackendLegError::ReplyTooLarge { peer, phase, limit });
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
                        self.relayed_bytes = 0;
                        return Ok(ReplyPart::End(reply));
                    }
                    let piece = piece_bytes.and_then(|min| self.parser.take_relayable(min));
                    if let Some(piece) = piece {
                        self.partial_bytes = 0;
                        self.relayed_bytes += piece.len();
                        if self.relayed_bytes > MAX_RELAYED_REPLY_BYTES {
                            self.parser.reset();
                            let limit = MAX_RELAYED_REPLY_BYTES;
                            return Err(BackendLegError::ReplyTooLarge { peer, phase, limit });
                        }
                        return Ok(ReplyPart::Piece(piece));
                    }
                }
            }
        }
    }

    /// Next reply, failing after the configured reply timeout.
    pub async fn read_reply(&mut self, phase: &'static str) -> Result<Reply, BackendLegError> {
        let (timeout, peer) = (self.reply_timeout, self.conn.peer());
        within_reply_timeout(timeout, peer, phase, self.next_reply(phase)).await
    }

    /// How long the backend has heard nothing from us: its idle timer has run that long.
    pub fn quiet_for(&self) -> Duration {
        self.last_sent.elapsed()
    }

    pub async fn send(
        &mut self,
        command: &Command,
        phase: &'static str,
    ) -> Result<(), BackendLegError> {
        let peer = self.conn.peer();
        self.last_sent = tokio::time::Instant::now();
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

/// `read`, failing with [`BackendLegError::Timeout`] after `timeout`.
async fn within_reply_timeout<T>(
    timeout: Duration,
    peer: SocketAddr,
    phase: &'static str,
    read: impl std::future::Future<Output = Result<T, BackendLegError>>,
) -> Result<T, BackendLegError> {
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| BackendLegError::Timeout {
            peer,
            phase,
            timeout,
        })?
}
