//! The client's TLS handshake on a passive data connection, begun when the connection
//! arrives and held before the client's Finished until the transfer command says whether
//! session tickets may follow.
//!
//! Why begin early: curl 7.88 (Debian 12) connects the data connection right after EPSV,
//! sends its ClientHello and then waits for the server's answer on that socket alone, so
//! the replies to the TYPE and SIZE it sends meanwhile are read only when its own timers
//! fire (200 ms, then 1 s). A server that answers the ClientHello only after RETR costs
//! every such download or upload 0.2 to 1.4 s; answering on arrival costs nothing.
//!
//! Why hold: TLS 1.3 tickets go out once the client's Finished is read. An uploading client
//! never reads them, and a socket closed with unread bytes sends a reset that a load
//! balancer turns into a truncated upload; a downloading curl needs them (it uses each
//! ticket once). Which one it is, only the transfer command says, so [`GatedStream`] lets
//! the ClientHello's record through and nothing more until [`EarlyTls::finish`] decides.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::rustls::server::ProducesTickets;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;

use crate::ports::{Reservation, Slot};

/// The TLS record header: type, version, length.
const RECORD_HEADER: usize = 5;

// What the transfer command decided; 0 is undecided (the default).
const TLS_WITH_TICKETS: u8 = 1;
const TLS_WITHOUT_TICKETS: u8 = 2;
const PLAIN: u8 = 3;

/// What a held connection waits for: the transfer command's decision, TLS with or without
/// tickets, or plain after all (a PROT C between PASV and the command). Undecided tickets
/// count as allowed: a TLS 1.2 resumption issues its ticket in the server's first flight,
/// which the client reads during its handshake.
#[derive(Debug, Default)]
pub struct TicketGate {
    decision: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl TicketGate {
    /// A gate already open: a handshake that starts after the transfer command.
    pub fn opened(tickets: bool) -> Arc<TicketGate> {
        let gate = Arc::new(TicketGate::default());
        gate.open(tickets);
        gate
    }

    /// Lets the handshake go on, issuing tickets or not.
    pub fn open(&self, tickets: bool) {
        self.decide(if tickets {
            TLS_WITH_TICKETS
        } else {
            TLS_WITHOUT_TICKETS
        });
    }

    fn decide(&self, decision: u8) {
        self.decision.store(decision, Ordering::Release);
        let waiting = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waiting {
            waker.wake();
        }
    }

    fn decided(&self) -> u8 {
        self.decision.load(Ordering::Acquire)
    }

    /// Ready once decided; until then `open` or `decide` wakes the waiting task.
    fn poll_decided(&self, cx: &mut Context<'_>) -> Poll<u8> {
        if self.decided() == 0 {
            *self.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(cx.waker().clone());
        }
        match self.decided() {
            0 => Poll::Pending,
            decision => Poll::Ready(decision),
        }
    }

    fn is_open(&self) -> bool {
        matches!(self.decided(), TLS_WITH_TICKETS | TLS_WITHOUT_TICKETS)
    }

    fn tickets_refused(&self) -> bool {
        self.decided() == TLS_WITHOUT_TICKETS
    }
}

/// The session's ticketer, asked through the gate: no ticket once the gate refused them
/// (rustls then sends none), and every ticket still accepted for resumption.
#[derive(Debug)]
pub struct GatedTickets {
    pub inner: Arc<dyn ProducesTickets>,
    pub gate: Arc<TicketGate>,
}

impl ProducesTickets for GatedTickets {
    fn enabled(&self) -> bool {
        self.inner.enabled()
    }

    fn lifetime(&self) -> u32 {
        self.inner.lifetime()
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        if self.gate.tickets_refused() {
            return None;
        }
        self.inner.encrypt(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        self.inner.decrypt(cipher)
    }
}

/// A data connection whose reads stop after the first TLS record (the ClientHello) until
/// the gate opens. Writes always pass: the server's answer must reach the client.
pub struct GatedStream {
    tcp: TcpStream,
    gate: Arc<TicketGate>,
    header: [u8; RECORD_HEADER],
    passed: usize,
}

impl GatedStream {
    pub fn new(tcp: TcpStream, gate: Arc<TicketGate>) -> GatedStream {
        GatedStream {
            tcp,
            gate,
            header: [0; RECORD_HEADER],
            passed: 0,
        }
    }

    pub fn tcp(&self) -> &TcpStream {
        &self.tcp
    }

    /// Bytes that may still be read before the gate: the rest of the first record.
    fn allowance(&self) -> usize {
        if self.passed < RECORD_HEADER {
            return RECORD_HEADER - self.passed;
        }
        let body = usize::from(u16::from_be_bytes([self.header[3], self.header[4]]));
        (RECORD_HEADER + body).saturating_sub(self.passed)
    }

    fn observe(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            if let Some(slot) = self.header.get_mut(self.passed) {
                *slot = byte;
            }
            self.passed += 1;
        }
    }
}

impl AsyncRead for GatedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.gate.is_open() {
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        let allowed = this.allowance().min(buf.remaining());
        if allowed == 0 {
            if ready!(this.gate.poll_decided(cx)) == PLAIN {
                return Poll::Ready(Err(io::Error::other(
                    "plain data asked for after the client began its TLS handshake",
                )));
            }
            return Pin::new(&mut this.tcp).poll_read(cx, buf);
        }
        // Only the first record comes through here (two reads), so a copy is no cost.
        let mut part = vec![0u8; allowed];
        let mut limited = ReadBuf::new(&mut part);
        ready!(Pin::new(&mut this.tcp).poll_read(cx, &mut limited))?;
        let got = limited.filled().len();
        this.observe(&part[..got]);
        buf.put_slice(&part[..got]);
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for GatedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The arrival of the client's data connection: its address, or why none came.
type Arrival = Result<SocketAddr, String>;

/// A held data connection as the transfer gets it.
pub enum EarlyConn {
    /// Nothing had arrived on it when the transfer asked for plain data.
    Plain(TcpStream),
    Tls(Box<TlsStream<GatedStream>>),
}

/// A passive data connection under PROT P: accepted and its handshake begun by a task of
/// its own, so the server's answer to the ClientHello leaves as soon as it comes. Dropping
/// it (a new PASV, REIN, the session's end) stops the task and closes the connection.
pub struct EarlyTls {
    /// Frees the port for this client at once when the session lets go (a new PASV on a
    /// one-port range), before the stopped task drops the reservation.
    slot: Slot,
    gate: Arc<TicketGate>,
    arrival: Option<oneshot::Receiver<Arrival>>,
    task: AbortOnDropHandle<io::Result<EarlyConn>>,
}

impl EarlyTls {
    /// Starts waiting for the connection of `reservation`; `acceptor` must issue its
    /// tickets through `gate` (a [`GatedTickets`]).
    pub fn start(
        reservation: Reservation,
        acceptor: TlsAcceptor,
        gate: Arc<TicketGate>,
    ) -> EarlyTls {
        let (arrived, arrival) = oneshot::channel();
        let held = gate.clone();
        let slot = reservation.slot();
        let task = tokio::spawn(async move {
            let (tcp, peer) = match reservation.accept_uncounted().await {
                Ok(connection) => connection,
                Err(e) => {
                    let _ = arrived.send(Err(e.to_string()));
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no data connection",
                    ));
                }
            };
            tracing::debug!(%peer, "client data connection accepted (TLS under PROT P)");
            let _ = tcp.set_nodelay(true);
            let _ = arrived.send(Ok(peer));
            // The handshake begins with the client's first byte, not before: until then
            // the transfer may still ask for plain data and get the connection untouched.
            let mut first = [0u8; 1];
            tokio::select! {
                biased;
                decision = std::future::poll_fn(|cx| held.poll_decided(cx)) => {
                    if decision == PLAIN {
                        return Ok(EarlyConn::Plain(tcp));
                    }
                }
                // `readable` may wake with nothing to read; a peek waits for a byte.
                peeked = tcp.peek(&mut first) => { peeked?; }
            }
            let secured = acceptor.accept(GatedStream::new(tcp, held)).await?;
            Ok(EarlyConn::Tls(Box::new(secured)))
        });
        EarlyTls {
            slot,
            gate,
            arrival: Some(arrival),
            task: AbortOnDropHandle::new(task),
        }
    }

    /// Waits for the client's data connection (the reservation's deadline applies).
    pub async fn arrived(&mut self) -> Result<(), String> {
        let Some(arrival) = self.arrival.take() else {
            return Ok(());
        };
        match arrival.await {
            Ok(Ok(_peer)) => Ok(()),
            Ok(Err(reason)) => {
                // Counted here, where a transfer waited for it, as for a plain PASV.
                self.slot.count_accept_timeout();
                Err(reason)
            }
            Err(_) => Err("the data connection was lost".to_string()),
        }
    }

    /// The transfer command's decision: TLS with or without tickets, or plain. Made as
    /// soon as the command is taken, before its 150 lets an uploading client send.
    pub fn decide(&self, tls: bool, tickets: bool) {
        if tls {
            self.gate.open(tickets);
        } else {
            self.gate.decide(PLAIN);
        }
    }

    /// The connection as [`decide`](Self::decide) made it: the finished handshake, or the
    /// plain connection if the client had not begun one.
    pub async fn finish(self) -> io::Result<EarlyConn> {
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(format!("data connection task: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let client = TcpStream::connect(address).await.expect("connect");
        let (server, _) = listener.accept().await.expect("accept");
        (client, server)
    }

    #[tokio::test]
    async fn the_first_record_passes_and_the_rest_waits_for_the_gate() {
        let (mut client, server) = tcp_pair().await;
        let gate = Arc::new(TicketGate::default());
        let mut gated = GatedStream::new(server, gate.clone());
        // One record of 3 bytes, then the next record's bytes.
        client
            .write_all(&[0x16, 3, 1, 0, 3, b'a', b'b', b'c', 0x17, 3, 3])
            .await
            .expect("write");
        let mut first = [0u8; 8];
        gated.read_exact(&mut first).await.expect("first record");
        assert_eq!(first, [0x16, 3, 1, 0, 3, b'a', b'b', b'c']);
        let mut next = [0u8; 3];
        let held =
            tokio::time::timeout(std::time::Duration::from_millis(100), gated.read(&mut next))
                .await;
        assert!(
            held.is_err(),
            "a read past the first record must wait for the gate"
        );
        gate.open(true);
        gated.read_exact(&mut next).await.expect("after the gate");
        assert_eq!(next, [0x17, 3, 3]);
    }

    #[tokio::test]
    async fn a_gate_opened_before_the_read_lets_everything_through() {
        let (mut client, server) = tcp_pair().await;
        let mut gated = GatedStream::new(server, TicketGate::opened(false));
        client.write_all(b"plain bytes").await.expect("write");
        drop(client);
        let mut all = Vec::new();
        gated.read_to_end(&mut all).await.expect("read");
        assert_eq!(all, b"plain bytes");
    }

    #[test]
    fn refused_tickets_are_not_issued_but_old_ones_still_resume() {
        let inner = tokio_rustls::rustls::crypto::ring::Ticketer::new().expect("ticketer");
        let issued = inner.encrypt(b"session").expect("a ticket");
        let gate = Arc::new(TicketGate::default());
        let gated = GatedTickets {
            inner,
            gate: gate.clone(),
        };
        assert!(gated.encrypt(b"x").is_some(), "undecided: allowed");
        gate.open(false);
        assert!(gated.encrypt(b"x").is_none());
        assert_eq!(gated.decrypt(&issued).as_deref(), Some(&b"session"[..]));
    }
}
