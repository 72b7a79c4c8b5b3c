//! The tests' one FTP control client: it picks its source address, shows every reply
//! (parsed by the crate's own codec, `ftpfront::ftp::ReplyParser`), can switch to TLS
//! (AUTH TLS or implicit FTPS) and can misbehave on purpose (urgent data, a reset).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ftpfront::ftp::{addr, Reply, ReplyParser};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, ReadBuf,
};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use super::harness::{PASSWORD, USER};
use super::tls::TestPki;

/// How long [`FtpClient::reply`] waits for one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

/// One FTP reply as the client saw it.
#[derive(Clone)]
pub struct RawReply {
    pub code: u16,
    /// Every line as received, terminators included.
    pub text: String,
    /// The same reply as the crate's codec reads it (for its PASV/EPSV parsers).
    pub parsed: Reply,
}

// Code and text only: the parsed copy would repeat the text in every failure message.
impl std::fmt::Debug for RawReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawReply")
            .field("code", &self.code)
            .field("text", &self.text)
            .finish()
    }
}

/// How [`FtpClient::reply_within`] ended.
#[derive(Debug)]
pub enum Awaited {
    Reply(RawReply),
    /// The connection closed or failed first (or sent a line that is not UTF-8): why.
    Closed(String),
    TimedOut,
}

/// The control connection under the client: TCP, or TLS over it. An enum rather than a
/// boxed stream so the TCP socket stays reachable for urgent data and SO_LINGER.
enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// A TCP connection to `target` from `source` (port chosen by the kernel).
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

/// A minimal FTP client for what real clients cannot express: chosen source addresses,
/// exact replies, TLS upgrades by hand, urgent data.
pub struct FtpClient {
    stream: Option<BufReader<Conn>>,
    /// Trusted for AUTH TLS ([`FtpClient::explicit`] sets it).
    tls: Option<Arc<ClientConfig>>,
    pub source: IpAddr,
    /// Every line sent and received, for failure messages.
    pub transcript: Vec<String>,
}

impl FtpClient {
    fn on(tcp: TcpStream, source: IpAddr) -> FtpClient {
        FtpClient {
            stream: Some(BufReader::new(Conn::Plain(tcp))),
            tls: None,
            source,
            transcript: Vec::new(),
        }
    }

    /// A client from `source` to `proxy`, whose greeting must be 220.
    pub async fn connect(source: IpAddr, proxy: SocketAddr) -> FtpClient {
        let stream = connect_from(source, proxy).await.expect("connect to proxy");
        FtpClient::over(stream, source).await
    }

    /// A client on an open connection (after a PROXY header, say); reads the greeting.
    pub async fn over(stream: TcpStream, source: IpAddr) -> FtpClient {
        let mut client = FtpClient::on(stream, source);
        let greeting = client.reply().await;
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        client
    }

    /// A client at `addr` and its first reply, whatever it is (a full server greets with
    /// 421, say), or how the wait for it ended.
    pub async fn connect_unchecked(source: IpAddr, addr: SocketAddr) -> (FtpClient, Awaited) {
        let stream = connect_from(source, addr).await.expect("connect");
        let mut client = FtpClient::on(stream, source);
        let first = client.reply_within(Duration::from_secs(10)).await;
        (client, first)
    }

    /// Connected from `source`, logged in as the test user, in binary mode.
    pub async fn login(source: IpAddr, proxy: SocketAddr) -> FtpClient {
        let mut client = FtpClient::connect(source, proxy).await;
        assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
        let reply = client.cmd(&format!("PASS {PASSWORD}")).await;
        assert_eq!(reply.code, 230, "login: {reply:?}");
        assert_eq!(client.cmd("TYPE I").await.code, 200);
        client
    }

    /// Plain TCP to `addr`, ready for AUTH TLS trusting the test CA; the client and the
    /// greeting (unchecked).
    pub async fn explicit(addr: SocketAddr, pki: &TestPki) -> (FtpClient, RawReply) {
        let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
        let source = tcp.local_addr().expect("local address").ip();
        let mut client = FtpClient::on(tcp, source);
        client.tls = Some(pki.client_config());
        let greeting = client.reply().await;
        (client, greeting)
    }

    /// Implicit FTPS to `addr` (TLS handshake first, verifying the certificate for
    /// 127.0.0.1 against the test CA); the client and the greeting (unchecked).
    pub async fn implicit(addr: SocketAddr, pki: &TestPki) -> (FtpClient, RawReply) {
        let tcp = TcpStream::connect(addr).await.expect("connect to proxy");
        let source = tcp.local_addr().expect("local address").ip();
        let tls = pki.client_config();
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        let stream = handshake(&tls, name, tcp)
            .await
            .expect("implicit TLS handshake");
        let mut client = FtpClient {
            stream: Some(BufReader::new(stream)),
            tls: Some(tls),
            source,
            transcript: vec!["(implicit TLS handshake ok)".into()],
        };
        let greeting = client.reply().await;
        (client, greeting)
    }

    fn reader(&mut self) -> &mut BufReader<Conn> {
        self.stream.as_mut().expect("connection in use")
    }

    fn tcp(&self) -> &TcpStream {
        self.stream
            .as_ref()
            .expect("connection in use")
            .get_ref()
            .tcp()
    }

    /// The next reply; panics on timeout or a closed connection, with the transcript.
    pub async fn reply(&mut self) -> RawReply {
        match self.reply_within(REPLY_TIMEOUT).await {
            Awaited::Reply(reply) => reply,
            Awaited::Closed(why) => panic!("read reply: {why}\n{}", self.transcript.join("\n")),
            Awaited::TimedOut => panic!(
                "no reply within {REPLY_TIMEOUT:?}\n{}",
                self.transcript.join("\n")
            ),
        }
    }

    /// The next reply, or how the wait ended instead (a timeout may lose a partly read
    /// reply: use it last, or for peers that must not stay silent).
    pub async fn reply_within(&mut self, limit: Duration) -> Awaited {
        tokio::time::timeout(limit, self.read_reply())
            .await
            .unwrap_or(Awaited::TimedOut)
    }

    /// Lines until the codec has a whole reply. The text keeps each line as received; a
    /// line that is not UTF-8 ends the read as a close would (the reply is unreadable).
    async fn read_reply(&mut self) -> Awaited {
        let mut parser = ReplyParser::new(usize::MAX);
        let mut text = String::new();
        loop {
            let mut line = Vec::new();
            match self.reader().read_until(b'\n', &mut line).await {
                Ok(0) if text.is_empty() => return Awaited::Closed("connection closed".into()),
                Ok(0) => {
                    return Awaited::Closed("connection closed inside a multi-line reply".into())
                }
                Ok(_) => {}
                Err(e) => return Awaited::Closed(e.to_string()),
            }
            let Ok(line_text) = String::from_utf8(line) else {
                return Awaited::Closed("stream did not contain valid UTF-8".into());
            };
            self.transcript.push(format!("< {}", line_text.trim_end()));
            text.push_str(&line_text);
            match parser.push_line(line_text.as_bytes()) {
                Ok(Some(parsed)) => {
                    let code = parsed.code;
                    return Awaited::Reply(RawReply { code, text, parsed });
                }
                Ok(None) => {}
                Err(e) => panic!("bad reply line {line_text:?}: {e}"),
            }
        }
    }

    /// Writes `bytes` as they are; the error too (a peer may have closed already).
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let writer = self.reader().get_mut();
        writer.write_all(bytes).await?;
        writer.flush().await
    }

    /// Writes `bytes` as they are, in one write (several command lines, say).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.send_raw(bytes).await.expect("send");
    }

    /// Sends one command line (CRLF added); PASS is masked in the transcript.
    pub async fn send(&mut self, line: &str) {
        let shown = if line.starts_with("PASS ") {
            "PASS ****"
        } else {
            line
        };
        self.transcript.push(format!("> {shown}"));
        self.send_raw(format!("{line}\r\n").as_bytes())
            .await
            .unwrap_or_else(|e| panic!("send {shown:?}: {e}\n{}", self.transcript.join("\n")));
    }

    pub async fn cmd(&mut self, line: &str) -> RawReply {
        self.send(line).await;
        self.reply().await
    }

    /// Sends `line` and asserts the reply code, naming the transcript on failure.
    pub async fn expect(&mut self, line: &str, code: u16) -> RawReply {
        let reply = self.cmd(line).await;
        assert_eq!(
            reply.code,
            code,
            "{line:?} -> {reply:?}\n{}",
            self.transcript.join("\n")
        );
        reply
    }

    /// `AUTH TLS` (or `verb`), which must get 234, then the TLS handshake.
    pub async fn auth(&mut self, verb: &str) {
        self.expect(verb, 234).await;
        self.upgrade().await;
    }

    /// The TLS handshake on the current connection (after a 234), verifying the
    /// certificate for 127.0.0.1.
    pub async fn upgrade(&mut self) {
        let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
        self.try_upgrade(name).await.unwrap_or_else(|e| {
            panic!(
                "TLS handshake after AUTH: {e}\n{}",
                self.transcript.join("\n")
            )
        });
    }

    /// The TLS handshake after a 234, verifying the certificate for `name`; its error (a
    /// certificate for another name, say), after which the connection is gone.
    pub async fn try_upgrade(&mut self, name: ServerName<'static>) -> io::Result<()> {
        let reader = self.stream.take().expect("connection in use");
        assert!(
            reader.buffer().is_empty(),
            "bytes after the 234 reply before the handshake"
        );
        let Conn::Plain(tcp) = reader.into_inner() else {
            panic!("TLS already");
        };
        let tls = self
            .tls
            .clone()
            .expect("a client made by FtpClient::explicit");
        let stream = handshake(&tls, name, tcp).await?;
        self.transcript.push("(TLS handshake ok)".into());
        self.stream = Some(BufReader::new(stream));
        Ok(())
    }

    /// Everything the peer sends until it closes the connection (`None` if it does not
    /// within `within`): how many bytes, and the last `tail` of them.
    pub async fn read_until_closed(
        &mut self,
        within: Duration,
        tail: usize,
    ) -> Option<(usize, Vec<u8>)> {
        let reader = self.reader();
        let drain = async {
            let (mut total, mut last) = (0usize, Vec::new());
            let mut buf = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => return (total, last),
                    Ok(n) => {
                        total += n;
                        last.extend_from_slice(&buf[..n]);
                        let cut = last.len().saturating_sub(tail);
                        last.drain(..cut);
                    }
                }
            }
        };
        tokio::time::timeout(within, drain).await.ok()
    }

    /// True when the peer closes the connection (EOF or reset) within `within`, reading and
    /// discarding anything it sends first.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        closes_within(self.reader(), within).await
    }

    /// Sends ABOR the RFC 959 way: Telnet IP, then Synch (IAC DM, the DM urgent: MSG_OOB),
    /// then the command. vsftpd reads commands mid-transfer only so (`async_abor_enable`).
    pub fn send_urgent_abor(&mut self) {
        self.send_parts(&[
            (&b"\xff\xf4\xff"[..], false),
            (b"\xf2", true),
            (b"ABOR\r\n", false),
        ]);
    }

    /// Sends raw byte strings in order, each as one send on the TCP socket; the `true` ones
    /// as urgent data (MSG_OOB: the last byte of it is the urgent mark).
    pub fn send_parts(&mut self, parts: &[(&[u8], bool)]) {
        let socket = socket2::SockRef::from(self.tcp());
        for (bytes, urgent) in parts {
            let sent = if *urgent {
                socket.send_out_of_band(bytes)
            } else {
                socket.send(bytes)
            };
            assert_eq!(sent.expect("send"), bytes.len(), "{bytes:?} sent whole");
        }
    }

    /// Ends the control connection like a killed process: RST (SO_LINGER 0), no FIN.
    pub fn kill(self) {
        let _ = socket2::SockRef::from(self.tcp()).set_linger(Some(Duration::ZERO));
        // Closing the socket (no shutdown first) with linger 0 sends the RST.
        drop(self);
    }

    /// PASV; returns the announced address.
    pub async fn pasv(&mut self) -> Result<SocketAddr, RawReply> {
        let reply = self.cmd("PASV").await;
        if reply.code != 227 {
            return Err(reply);
        }
        Ok(pasv_address(&reply))
    }

    /// EPSV; returns the announced port.
    pub async fn epsv(&mut self) -> Result<u16, RawReply> {
        let reply = self.cmd("EPSV").await;
        if reply.code != 229 {
            return Err(reply);
        }
        Ok(addr::parse_epsv_reply(&reply.parsed)
            .unwrap_or_else(|e| panic!("229 format: {e}: {reply:?}")))
    }

    /// Connects to `data_addr` from the client's address, then sends `command`, whose
    /// first reply must be 150 or 125; the data connection.
    pub async fn start_transfer(&mut self, command: &str, data_addr: SocketAddr) -> TcpStream {
        let data = connect_from(self.source, data_addr)
            .await
            .expect("data connect");
        self.send(command).await;
        let first = self.reply().await;
        assert!(
            first.code == 150 || first.code == 125,
            "{command} start: {first:?}"
        );
        data
    }

    /// RETR over an already announced passive address; returns the bytes and final reply.
    pub async fn retr(&mut self, path: &str, data_addr: SocketAddr) -> (Vec<u8>, RawReply) {
        let mut data = self
            .start_transfer(&format!("RETR {path}"), data_addr)
            .await;
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).await.expect("read data");
        let last = self.reply().await;
        (bytes, last)
    }

    /// STOR `bytes` as `path` over an already announced passive address; the final reply.
    pub async fn stor(&mut self, path: &str, data_addr: SocketAddr, bytes: &[u8]) -> RawReply {
        let mut data = self
            .start_transfer(&format!("STOR {path}"), data_addr)
            .await;
        data.write_all(bytes).await.expect("write data");
        data.shutdown().await.expect("close data");
        drop(data);
        self.reply().await
    }

    /// RETR in active mode: `announce` (a PORT or EPRT line naming `listener`) first, then
    /// the server connects to `listener`; returns the bytes and the final reply.
    pub async fn retr_active(
        &mut self,
        announce: &str,
        path: &str,
        listener: &TcpListener,
    ) -> (Vec<u8>, RawReply) {
        let reply = self.cmd(announce).await;
        assert_eq!(reply.code, 200, "{announce}: {reply:?}");
        self.send(&format!("RETR {path}")).await;
        let accepted = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
        let Ok(Ok((mut data, _))) = accepted else {
            let reply = self.reply().await;
            panic!("the proxy did not connect to {announce}: {reply:?}");
        };
        assert_eq!(self.reply().await.code, 150);
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).await.expect("data");
        (bytes, self.reply().await)
    }
}

/// True when `stream` ends (EOF or an error such as a reset) within `within`; what it
/// sends first is read and dropped.
pub async fn closes_within<S: AsyncRead + Unpin>(stream: &mut S, within: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

async fn handshake(
    tls: &Arc<ClientConfig>,
    name: ServerName<'static>,
    tcp: TcpStream,
) -> io::Result<Conn> {
    let connector = TlsConnector::from(tls.clone());
    let connect = connector.connect(name, tcp);
    let tls = tokio::time::timeout(Duration::from_secs(20), connect)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "handshake timeout"))??;
    Ok(Conn::Tls(Box::new(tls)))
}

/// The address of a 227 reply, by the crate's parser; panics on a malformed one, and on
/// one without the parentheses of RFC 959's form (what the tests' own parser required).
pub fn pasv_address(reply: &RawReply) -> SocketAddr {
    assert!(reply.text.contains('('), "227 has parentheses: {reply:?}");
    let announced = addr::parse_pasv_reply(&reply.parsed)
        .unwrap_or_else(|e| panic!("227 format: {e}: {reply:?}"));
    SocketAddr::V4(announced)
}

/// The address in the text of a 227 reply as a program printed it (`< 227 ...` in curl's
/// verbose output, say), by the crate's parser; panics when there is none.
pub fn parse_227(text: &str) -> SocketAddr {
    assert!(text.contains('('), "227 has parentheses: {text}");
    let announced = addr::parse_pasv_reply(&Reply::new(227, text))
        .unwrap_or_else(|e| panic!("227 has six numbers: {e}: {text}"));
    SocketAddr::V4(announced)
}

/// The port in the text of a 229 reply as a program printed it, by the crate's parser.
pub fn parse_229(text: &str) -> Option<u16> {
    addr::parse_epsv_reply(&Reply::new(229, text)).ok()
}
