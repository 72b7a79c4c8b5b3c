//! A scriptable, hostile FTP server on 127.0.0.1 for the fault tests, recording what it saw.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

/// How the server behaves, one per server; what a variant does not name is normal: any
/// USER/PASS logs in (331/230), REIN logs out (220), PASV/EPSV get a listener of their
/// own, TYPE, PWD, QUIT and ABOR (225 with no transfer) are answered, STOR answers 226 on
/// FIN and 426 on reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// RETR serves `retr_bytes` bytes (any path).
    Normal { retr_bytes: u64 },
    /// Accepts and never says a word.
    NeverGreet,
    /// Greets `421 Too many connected users`, then closes.
    Busy421,
    /// Greets with `120` lines forever, one a second.
    Greet120Forever,
    /// Answers PASV with `227 Entering Passive Mode (1,2,3).`
    MalformedPasv,
    /// Answers PWD with a 10 MB line and no LF.
    HugeReplyLine,
    /// Answers STAT with `211-` lines forever.
    EndlessMultiline,
    /// Every reply after the 230 goes out at 1 byte per second.
    SlowReplies,
    /// RETR: after `after` bytes, control and data close with RST (SO_LINGER 0).
    DieMidDownload { after: u64 },
    /// STOR: once `after` bytes arrived, control and data close with RST.
    DieMidUpload { after: u64 },
    /// Every PASS gets `530 Login incorrect.`; the connection stays open for another USER.
    RejectPasswords,
    /// RETR: after `after` bytes the data connection closes with RST, and the server
    /// claims `226` anyway.
    ResetDataMidDownload { after: u64 },
    /// QUIT is answered `221` only after 1.5 s (a server busy closing its session).
    SlowQuit,
    /// The first control connection sends `421 Timeout.` 100 ms after its greeting and
    /// closes (a pre-login timeout); the others are normal.
    FirstTimesOut,
    /// RETR serves `retr_bytes`, but the data connection of the first PASV/EPSV is closed
    /// as soon as it is accepted, and its listener dropped (a passive wait timed out).
    DropFirstPassive { retr_bytes: u64 },
    /// `FEAT` with an argument is answered `502 Late answer.` only after 4 s.
    LateFeatArgument,
}

/// How a data connection ended, seen from the server's reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataEnd {
    /// A read returned 0: the peer closed normally.
    Fin,
    /// A read failed with ECONNRESET.
    Reset,
    /// Another read error.
    Error(String),
    /// The server closed it first (a fault, or an ABOR the peer did not follow up).
    ClosedByServer(&'static str),
}

#[derive(Debug, Clone)]
pub struct DataConn {
    /// The command line that opened it (`STOR x`).
    pub command: String,
    pub received: u64,
    pub sent: u64,
    /// `None` while it is open.
    pub end: Option<DataEnd>,
    /// ABOR arrived on the control connection while this connection was still open.
    pub abor_while_open: bool,
}

/// What the server saw, over all its control connections (ftpfront's health probes too).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    pub control_connections: usize,
    /// Every command line, in the order received.
    pub commands: Vec<String>,
    /// The command lines of each control connection, in the order they were accepted: a
    /// health probe that lands in the middle of a session does not mix into its commands.
    pub per_connection: Vec<Vec<String>>,
    pub data: Vec<DataConn>,
    /// ABOR arrived at some point.
    pub abor: bool,
}

impl Observed {
    /// The command lines of the connections a client's login came on (the first command
    /// was USER), in the order they were accepted: health and feature probes left out.
    pub fn logins(&self) -> impl Iterator<Item = &Vec<String>> {
        self.per_connection
            .iter()
            .filter(|commands| commands.first().is_some_and(|c| c.starts_with("USER ")))
    }
}

type Log = Arc<Mutex<Observed>>;

fn with_log<T>(log: &Log, f: impl FnOnce(&mut Observed) -> T) -> T {
    f(&mut log.lock().unwrap_or_else(|p| p.into_inner()))
}

/// A running fake backend; stops accepting when dropped.
pub struct FakeBackend {
    pub addr: SocketAddr,
    log: Log,
    _accept: AbortOnDropHandle<()>,
}

impl FakeBackend {
    pub async fn start(behaviour: Behaviour) -> FakeBackend {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind fake");
        let addr = listener.local_addr().expect("fake addr");
        let log = Log::default();
        let shared = log.clone();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let index = with_log(&shared, |o| {
                    o.control_connections += 1;
                    o.per_connection.push(Vec::new());
                    o.per_connection.len() - 1
                });
                let control = Control::new(stream, behaviour, shared.clone(), index);
                tokio::spawn(control.serve());
            }
        });
        FakeBackend {
            addr,
            log,
            _accept: AbortOnDropHandle::new(accept),
        }
    }

    pub fn observed(&self) -> Observed {
        with_log(&self.log, |o| o.clone())
    }

    /// Polls for up to `limit` until `done` holds; returns the last snapshot either way.
    pub async fn wait_until(&self, limit: Duration, done: impl Fn(&Observed) -> bool) -> Observed {
        let deadline = Instant::now() + limit;
        loop {
            let seen = self.observed();
            if done(&seen) || Instant::now() >= deadline {
                return seen;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

const CHUNK: usize = 64 * 1024;
/// How long the server waits, after an ABOR, for the peer to close the data connection.
const ABOR_GRACE: Duration = Duration::from_secs(1);

struct Control {
    stream: TcpStream,
    buffer: Vec<u8>,
    behaviour: Behaviour,
    log: Log,
    /// This connection's place in [`Observed::per_connection`].
    index: usize,
    logged_in: bool,
    passive: Option<TcpListener>,
    /// PASV/EPSV answered so far.
    passives: usize,
    /// Commands that arrived during a transfer, answered after it.
    pending: VecDeque<String>,
}

impl Control {
    fn new(stream: TcpStream, behaviour: Behaviour, log: Log, index: usize) -> Control {
        Control {
            stream,
            buffer: Vec::new(),
            behaviour,
            log,
            index,
            logged_in: false,
            passive: None,
            passives: 0,
            pending: VecDeque::new(),
        }
    }

    async fn serve(mut self) {
        let _ = self.run().await;
    }

    async fn run(&mut self) -> io::Result<()> {
        match self.behaviour {
            Behaviour::NeverGreet => {
                while self.next_line().await.is_some() {}
                return Ok(());
            }
            Behaviour::Busy421 => return self.reply("421 Too many connected users").await,
            Behaviour::Greet120Forever => loop {
                self.reply("120 Service ready in 1 minute.").await?;
                tokio::time::sleep(Duration::from_secs(1)).await;
            },
            Behaviour::FirstTimesOut if with_log(&self.log, |o| o.control_connections) == 1 => {
                self.reply("220 fake backend ready").await?;
                tokio::time::sleep(Duration::from_millis(100)).await;
                return self.reply("421 Timeout.").await;
            }
            _ => self.reply("220 fake backend ready").await?,
        }
        loop {
            let line = match self.pending.pop_front() {
                Some(line) => line,
                None => match self.next_line().await {
                    Some(line) => line,
                    None => return Ok(()),
                },
            };
            if !self.command(&line).await? {
                return Ok(());
            }
        }
    }

    /// The next command line, recorded; `None` when the peer is gone. Cancel-safe: bytes
    /// read stay in `buffer`.
    async fn next_line(&mut self) -> Option<String> {
        loop {
            if let Some(at) = self.buffer.iter().position(|&b| b == b'\n') {
                let raw: Vec<u8> = self.buffer.drain(..=at).collect();
                let line = String::from_utf8_lossy(&raw).trim().to_string();
                with_log(&self.log, |o| {
                    o.abor |= line.eq_ignore_ascii_case("ABOR");
                    o.commands.push(line.clone());
                    o.per_connection[self.index].push(line.clone());
                });
                return Some(line);
            }
            self.stream.readable().await.ok()?;
            let mut chunk = [0u8; 4096];
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buffer.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => return None,
            }
        }
    }

    async fn reply(&mut self, text: &str) -> io::Result<()> {
        let wire = format!("{text}\r\n");
        if self.behaviour != Behaviour::SlowReplies || !self.logged_in {
            return self.stream.write_all(wire.as_bytes()).await;
        }
        for byte in wire.bytes() {
            self.stream.write_all(&[byte]).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        Ok(())
    }

    /// Answers one command; false ends the connection.
    async fn command(&mut self, line: &str) -> io::Result<bool> {
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        let text = match (verb.as_str(), self.behaviour) {
            ("USER", _) => "331 Password please.",
            ("PASS", Behaviour::RejectPasswords) => "530 Login incorrect.",
            ("PASS", _) => {
                self.reply("230 Logged in.").await?;
                self.logged_in = true;
                return Ok(true);
            }
            ("REIN", _) => {
                self.logged_in = false;
                "220 Ready for a new user."
            }
            ("QUIT", behaviour) => {
                if behaviour == Behaviour::SlowQuit {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                }
                self.reply("221 Goodbye.").await?;
                return Ok(false);
            }
            ("PWD", Behaviour::HugeReplyLine) => {
                let junk = vec![b'x'; CHUNK];
                for _ in 0..(10 * 1024 * 1024 / CHUNK) {
                    self.stream.write_all(&junk).await?;
                }
                return Ok(true);
            }
            ("PWD", _) => "257 \"/\" is the current directory.",
            ("STAT", Behaviour::EndlessMultiline) => {
                self.stream.write_all(b"211-Status follows\r\n").await?;
                for n in 0u64.. {
                    let batch: String = (0..1000)
                        .map(|i| format!("211-status line {}\r\n", n * 1000 + i))
                        .collect();
                    self.stream.write_all(batch.as_bytes()).await?;
                }
                return Ok(true);
            }
            ("STAT", _) => "211 Fake backend status: fine.",
            ("TYPE", _) => "200 Type set.",
            ("SYST", _) => "215 UNIX Type: L8",
            ("NOOP", _) => "200 NOOP ok.",
            ("FEAT", Behaviour::LateFeatArgument) if line.trim().len() > 4 => {
                tokio::time::sleep(Duration::from_secs(4)).await;
                "502 Late answer."
            }
            ("FEAT", _) => "211 No features.",
            ("OPTS", _) => "200 Option set.",
            ("ABOR", _) => "225 No transfer to abort.",
            ("PASV", Behaviour::MalformedPasv) => "227 Entering Passive Mode (1,2,3).",
            ("PASV" | "EPSV", _) => {
                let listener = TcpListener::bind("127.0.0.1:0").await?;
                let port = listener.local_addr()?.port();
                self.passives += 1;
                match self.behaviour {
                    Behaviour::DropFirstPassive { .. } if self.passives == 1 => {
                        tokio::spawn(async move { drop(listener.accept().await) });
                    }
                    _ => self.passive = Some(listener),
                }
                let text = match verb.as_str() {
                    "EPSV" => format!("229 Entering Extended Passive Mode (|||{port}|)."),
                    _ => format!(
                        "227 Entering Passive Mode (127,0,0,1,{},{}).",
                        port >> 8,
                        port & 0xff
                    ),
                };
                self.reply(&text).await?;
                return Ok(true);
            }
            ("RETR" | "LIST" | "NLST" | "MLSD" | "STOR" | "APPE" | "STOU", _) => {
                return self.transfer(&verb, line).await;
            }
            _ => "502 Command not implemented.",
        };
        self.reply(text).await?;
        Ok(true)
    }

    /// One transfer: accept on the passive listener, then send (RETR) or receive (STOR)
    /// while still reading the control connection, so an ABOR is seen mid-transfer.
    async fn transfer(&mut self, verb: &str, line: &str) -> io::Result<bool> {
        let Some(listener) = self.passive.take() else {
            self.reply("425 Use PASV or EPSV first.").await?;
            return Ok(true);
        };
        let data = match tokio::time::timeout(Duration::from_secs(10), listener.accept()).await {
            Ok(Ok((data, _))) => data,
            _ => {
                self.reply("425 Can't open data connection.").await?;
                return Ok(true);
            }
        };
        let index = with_log(&self.log, |o| {
            o.data.push(DataConn {
                command: line.to_string(),
                received: 0,
                sent: 0,
                end: None,
                abor_while_open: false,
            });
            o.data.len() - 1
        });
        self.reply("150 Opening data connection.").await?;
        let upload = matches!(verb, "STOR" | "APPE" | "STOU");
        let (to_send, cut) = match (upload, self.behaviour) {
            (true, Behaviour::DieMidUpload { after }) => (0, Some(after)),
            (false, Behaviour::DieMidDownload { after })
            | (false, Behaviour::ResetDataMidDownload { after }) => (u64::MAX, Some(after)),
            (false, Behaviour::Normal { retr_bytes })
            | (false, Behaviour::DropFirstPassive { retr_bytes })
                if verb == "RETR" =>
            {
                (retr_bytes, None)
            }
            _ => (0, None),
        };
        let chunk: Vec<u8> = (0..CHUNK).map(|i| (i % 251) as u8).collect();
        let mut buffer = vec![0u8; CHUNK];
        let (mut sent, mut received) = (0u64, 0u64);
        let mut end: Option<DataEnd> = None;
        let mut write_error = false;
        let mut abor_deadline: Option<Instant> = None;
        loop {
            if abor_deadline.is_some() && end.is_some() {
                record_end(&self.log, index, end);
                self.reply("426 Transfer aborted.").await?;
                self.reply("226 ABOR command successful.").await?;
                return Ok(true);
            }
            if upload && end.is_some() {
                let text = match end {
                    Some(DataEnd::Fin) => "226 Transfer complete.",
                    Some(DataEnd::Reset) => "426 Connection reset; transfer aborted.",
                    _ => "451 Transfer failed: data connection error.",
                };
                record_end(&self.log, index, end);
                self.reply(text).await?;
                return Ok(true);
            }
            if !upload && abor_deadline.is_none() && (sent == to_send || write_error) {
                let text = if write_error {
                    "426 Connection closed; transfer aborted."
                } else {
                    finish_sending(&data);
                    "226 Transfer complete."
                };
                watch_end(data, self.log.clone(), index, received, end);
                self.reply(text).await?;
                return Ok(true);
            }
            if cut.is_some_and(|k| (if upload { received } else { sent }) >= k) {
                reset_on_close(&data);
                record_end(&self.log, index, Some(DataEnd::ClosedByServer("fault")));
                drop(data);
                if let Behaviour::ResetDataMidDownload { .. } = self.behaviour {
                    self.reply("226 Transfer complete.").await?;
                    return Ok(true);
                }
                reset_on_close(&self.stream);
                return Ok(false);
            }
            let want = (to_send - sent).min(cut.map_or(u64::MAX, |k| k - sent.min(k)));
            let sending = !upload && !write_error && abor_deadline.is_none() && want > 0;
            tokio::select! {
                ready = data.readable(), if end.is_none() => {
                    if ready.is_ok() {
                        end = read_some(&data, &mut buffer, &mut received);
                        with_log(&self.log, |o| o.data[index].received = received);
                    }
                }
                ready = data.writable(), if sending => {
                    if ready.is_ok() {
                        let n = (want as usize).min(CHUNK);
                        match data.try_write(&chunk[..n]) {
                            Ok(n) => sent += n as u64,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            Err(_) => write_error = true,
                        }
                        with_log(&self.log, |o| o.data[index].sent = sent);
                    }
                }
                line = self.next_line(), if abor_deadline.is_none() => match line {
                    None => {
                        watch_end(data, self.log.clone(), index, received, end);
                        return Ok(false);
                    }
                    Some(line) if line.eq_ignore_ascii_case("ABOR") => {
                        with_log(&self.log, |o| o.data[index].abor_while_open = true);
                        abor_deadline = Some(Instant::now() + ABOR_GRACE);
                    }
                    Some(line) => self.pending.push_back(line),
                },
                _ = sleep_until(abor_deadline), if abor_deadline.is_some() && end.is_none() => {
                    reset_on_close(&data);
                    end = Some(DataEnd::ClosedByServer("ABOR"));
                }
            }
        }
    }
}

/// FIN after the last byte of a download, keeping the read side open to watch the end.
fn finish_sending(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// SO_LINGER 0: closing sends RST instead of FIN.
fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

fn record_end(log: &Log, index: usize, end: Option<DataEnd>) {
    with_log(log, |o| {
        let conn = &mut o.data[index];
        if conn.end.is_none() {
            conn.end = end;
        }
    });
}

/// Reads what is there; `Some` once the connection has ended.
fn read_some(data: &TcpStream, buffer: &mut [u8], received: &mut u64) -> Option<DataEnd> {
    match data.try_read(buffer) {
        Ok(0) => Some(DataEnd::Fin),
        Ok(n) => {
            *received += n as u64;
            None
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => Some(DataEnd::Reset),
        Err(e) => Some(DataEnd::Error(e.to_string())),
    }
}

/// Keeps reading a data connection in the background until the peer ends it, then records
/// how.
fn watch_end(data: TcpStream, log: Log, index: usize, mut received: u64, end: Option<DataEnd>) {
    tokio::spawn(async move {
        let mut buffer = vec![0u8; CHUNK];
        let mut end = end;
        while end.is_none() {
            if data.readable().await.is_err() {
                break;
            }
            end = read_some(&data, &mut buffer, &mut received);
            with_log(&log, |o| o.data[index].received = received);
        }
        record_end(&log, index, end);
    });
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
