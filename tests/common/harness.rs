//! A proxy in front of an embedded libunftp backend, plus a raw FTP client that can pick
//! its source address, for the integration tests.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use ftpfront::config::Config;
use ftpfront::demo::{start_embedded_backend, EmbeddedBackend, StaticUsers};
use ftpfront::server::{self, RunningProxy};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

pub const USER: &str = "alice";
pub const PASSWORD: &str = "secret";

/// Deterministic pseudo-random bytes (xorshift), so checksums are stable.
pub fn sample_bytes(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// Ports below Linux's ephemeral range (32768+), distinct per test and per process.
pub fn free_port_block(len: u16) -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20000 + (std::process::id() % 60) as u16 * 200;
    loop {
        let offset = NEXT.fetch_add(len, Ordering::SeqCst);
        let start = 20000 + (base - 20000 + offset) % 12000;
        let all_free =
            (start..start + len).all(|p| std::net::TcpListener::bind(("0.0.0.0", p)).is_ok());
        if all_free {
            return start;
        }
    }
}

/// An embedded FTP backend with a user and a few files.
pub struct TestBackend {
    pub server: EmbeddedBackend,
    pub root: tempfile::TempDir,
}

impl TestBackend {
    pub async fn start() -> TestBackend {
        // Generous: libunftp answers 425 to PASV when its own range runs out.
        TestBackend::with_passive_ports(60).await
    }

    /// A backend whose own passive range has `ports` ports. libunftp picks a port at random
    /// and gives up after 9 taken ones, so concurrent transfers need many times as many.
    pub async fn with_passive_ports(ports: u16) -> TestBackend {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("hello.txt"), b"hello through the proxy\n").expect("write");
        std::fs::create_dir_all(root.path().join("upload")).expect("mkdir");
        let users = StaticUsers(HashMap::from([(USER.to_string(), PASSWORD.to_string())]));
        let first = free_port_block(ports);
        let server = start_embedded_backend(root.path(), users, first..=first + ports - 1)
            .await
            .expect("embedded backend");
        TestBackend { server, root }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.root.path().join(name)
    }

    /// Writes a file of `len` pseudo-random bytes and returns its SHA-256.
    pub fn put_file(&self, name: &str, len: usize, seed: u32) -> String {
        let bytes = sample_bytes(len, seed);
        std::fs::write(self.path(name), &bytes).expect("write sample");
        sha256(&bytes)
    }
}

/// A proxy config in front of `backend` with a fresh passive range of `ports` ports; tests
/// change fields of the returned value for their scenario.
pub fn proxy_config(backend: SocketAddr, ports: u16) -> Config {
    let start = free_port_block(ports);
    let end = start + ports - 1;
    let text = format!(
        r#"
[listen]
control = "127.0.0.1:0"

[passive]
ports = "{start}-{end}"
public_address = "127.0.0.1"

[[backends]]
name = "main"
address = "{backend}"
connect_timeout = "3s"

[metrics]
listen = "127.0.0.1:0"

[limits]
data_accept_timeout = "5s"
"#
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"))
}

pub async fn start_proxy(config: Config) -> RunningProxy {
    server::start(config).await.expect("proxy starts")
}

pub async fn scrape(proxy: &RunningProxy) -> String {
    http_get(proxy, "/metrics").await
}

/// GET `path` from the proxy's metrics endpoint; the whole response, status line included.
pub async fn http_get(proxy: &RunningProxy, path: &str) -> String {
    http_get_with(proxy, path, "").await
}

/// GET with extra header lines (each ending in CRLF), e.g. an `Authorization` header.
pub async fn http_get_with(proxy: &RunningProxy, path: &str, headers: &str) -> String {
    let addr = proxy.metrics_addr.expect("metrics enabled");
    http_get_at(addr, path, headers).await
}

/// GET `path` from a metrics endpoint at `addr` (a [`BinaryProxy`]'s fixed port, say).
pub async fn http_get_at(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect metrics");
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

/// Polls `/readyz` until it answers `status` (the health probe runs in the background).
pub async fn wait_for_readyz(proxy: &RunningProxy, status: u16) -> bool {
    let expected = format!("HTTP/1.1 {status}");
    for _ in 0..100 {
        if http_get(proxy, "/readyz").await.starts_with(&expected) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// The value of one sample line (`name{labels} value`) in a scrape, 0 when absent.
pub fn metric_value(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One FTP reply as seen by the raw client.
#[derive(Debug, Clone)]
pub struct RawReply {
    pub code: u16,
    pub text: String,
}

/// How [`RawClient::reply_within`] ended.
#[derive(Debug)]
pub enum Awaited {
    Reply(RawReply),
    /// The connection closed or failed first: what the read said.
    Closed(String),
    TimedOut,
}

/// A minimal FTP client that chooses its source address and shows every reply, for the
/// port-pool scenarios that real clients cannot express.
pub struct RawClient {
    reader: BufReader<tokio::net::tcp::OwnedReadHalf>,
    writer: tokio::net::tcp::OwnedWriteHalf,
    pub source: IpAddr,
}

pub async fn connect_from(source: IpAddr, target: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = if target.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(target).await
}

impl RawClient {
    pub async fn connect(source: IpAddr, proxy: SocketAddr) -> RawClient {
        let stream = connect_from(source, proxy).await.expect("connect to proxy");
        RawClient::over(stream, source).await
    }

    /// A client on an open connection (after a PROXY header, say); reads the greeting.
    pub async fn over(stream: TcpStream, source: IpAddr) -> RawClient {
        let (read, writer) = stream.into_split();
        let mut client = RawClient {
            reader: BufReader::new(read),
            writer,
            source,
        };
        let greeting = client.reply().await;
        assert_eq!(greeting.code, 220, "greeting: {greeting:?}");
        client
    }

    /// A client at `addr` and its first reply, whatever it is (a full server greets with
    /// 421, say), or how the wait for it ended.
    pub async fn connect_unchecked(source: IpAddr, addr: SocketAddr) -> (RawClient, Awaited) {
        let stream = connect_from(source, addr).await.expect("connect");
        let (read, writer) = stream.into_split();
        let mut client = RawClient {
            reader: BufReader::new(read),
            writer,
            source,
        };
        let first = client.reply_within(Duration::from_secs(10)).await;
        (client, first)
    }

    pub async fn login(source: IpAddr, proxy: SocketAddr) -> RawClient {
        let mut client = RawClient::connect(source, proxy).await;
        assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
        let reply = client.cmd(&format!("PASS {PASSWORD}")).await;
        assert_eq!(reply.code, 230, "login: {reply:?}");
        assert_eq!(client.cmd("TYPE I").await.code, 200);
        client
    }

    pub async fn reply(&mut self) -> RawReply {
        match self.reply_within(Duration::from_secs(20)).await {
            Awaited::Reply(reply) => reply,
            Awaited::Closed(why) => panic!("read reply: {why}"),
            Awaited::TimedOut => panic!("reply within 20s"),
        }
    }

    /// The next reply, or how the wait ended instead (a timeout may lose a partly read
    /// reply: use it last, or for peers that must not stay silent).
    pub async fn reply_within(&mut self, limit: Duration) -> Awaited {
        tokio::time::timeout(limit, self.read_reply())
            .await
            .unwrap_or(Awaited::TimedOut)
    }

    async fn read_reply(&mut self) -> Awaited {
        let mut text = String::new();
        let mut line = String::new();
        match self.reader.read_line(&mut line).await {
            Ok(0) => return Awaited::Closed("connection closed".into()),
            Ok(_) => {}
            Err(e) => return Awaited::Closed(e.to_string()),
        }
        assert!(line.len() >= 3, "short reply line {line:?}");
        let code: u16 = line[..3].parse().expect("reply code");
        text.push_str(&line);
        if line.as_bytes().get(3) == Some(&b'-') {
            loop {
                line.clear();
                match self.reader.read_line(&mut line).await {
                    Ok(0) => {
                        return Awaited::Closed(
                            "connection closed inside a multi-line reply".into(),
                        )
                    }
                    Ok(_) => {}
                    Err(e) => return Awaited::Closed(e.to_string()),
                }
                text.push_str(&line);
                if line.starts_with(&format!("{code} ")) {
                    break;
                }
            }
        }
        Awaited::Reply(RawReply { code, text })
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

    /// Sends raw byte strings in order, each as one send; the `true` ones as urgent data
    /// (MSG_OOB: the last byte of it is the urgent mark).
    pub fn send_parts(&mut self, parts: &[(&[u8], bool)]) {
        let socket = socket2::SockRef::from(self.writer.as_ref());
        for (bytes, urgent) in parts {
            let sent = if *urgent {
                socket.send_out_of_band(bytes)
            } else {
                socket.send(bytes)
            };
            assert_eq!(sent.expect("send"), bytes.len(), "{bytes:?} sent whole");
        }
    }

    /// Writes `bytes` as they are, in one write (several command lines, say).
    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.expect("send");
    }

    /// Ends the control connection like a killed process: RST (SO_LINGER 0), no FIN.
    pub fn kill(self) {
        let RawClient { reader, writer, .. } = self;
        let _ = socket2::SockRef::from(writer.as_ref()).set_linger(Some(Duration::ZERO));
        // Dropping the write half would shut it down (a FIN) first.
        writer.forget();
        drop(reader);
    }

    pub async fn send(&mut self, line: &str) {
        self.writer
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("send");
    }

    pub async fn cmd(&mut self, line: &str) -> RawReply {
        self.send(line).await;
        self.reply().await
    }

    /// PASV; returns the announced address.
    pub async fn pasv(&mut self) -> Result<SocketAddr, RawReply> {
        let reply = self.cmd("PASV").await;
        if reply.code != 227 {
            return Err(reply);
        }
        Ok(parse_227(&reply.text))
    }

    pub async fn epsv(&mut self) -> Result<u16, RawReply> {
        let reply = self.cmd("EPSV").await;
        if reply.code != 229 {
            return Err(reply);
        }
        let inner = reply.text.split("(|||").nth(1).expect("229 format");
        Ok(inner
            .split('|')
            .next()
            .expect("port")
            .parse()
            .expect("port number"))
    }

    /// RETR over an already announced passive address; returns the bytes and final reply.
    pub async fn retr(&mut self, path: &str, data_addr: SocketAddr) -> (Vec<u8>, RawReply) {
        let mut data = connect_from(self.source, data_addr)
            .await
            .expect("data connect");
        self.send(&format!("RETR {path}")).await;
        let first = self.reply().await;
        assert!(
            first.code == 150 || first.code == 125,
            "RETR start: {first:?}"
        );
        let mut bytes = Vec::new();
        data.read_to_end(&mut bytes).await.expect("read data");
        let last = self.reply().await;
        (bytes, last)
    }

    /// STOR `bytes` as `path` over an already announced passive address; the final reply.
    pub async fn stor(&mut self, path: &str, data_addr: SocketAddr, bytes: &[u8]) -> RawReply {
        let mut data = connect_from(self.source, data_addr)
            .await
            .expect("data connect");
        self.send(&format!("STOR {path}")).await;
        let first = self.reply().await;
        assert!(
            first.code == 150 || first.code == 125,
            "STOR start: {first:?}"
        );
        data.write_all(bytes).await.expect("write data");
        data.shutdown().await.expect("close data");
        drop(data);
        self.reply().await
    }
}

/// RETR in active mode: `announce` (a PORT or EPRT line naming `listener`) first, then
/// ftpfront connects to `listener`; returns the bytes and the final reply.
pub async fn retr_active(
    client: &mut RawClient,
    announce: &str,
    path: &str,
    listener: &tokio::net::TcpListener,
) -> (Vec<u8>, RawReply) {
    let reply = client.cmd(announce).await;
    assert_eq!(reply.code, 200, "{announce}: {reply:?}");
    client.send(&format!("RETR {path}")).await;
    let accepted = tokio::time::timeout(Duration::from_secs(20), listener.accept()).await;
    let Ok(Ok((mut data, _))) = accepted else {
        let reply = client.reply().await;
        panic!("the proxy did not connect to {announce}: {reply:?}");
    };
    assert_eq!(client.reply().await.code, 150);
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.expect("data");
    (bytes, client.reply().await)
}

pub fn parse_227(text: &str) -> SocketAddr {
    let inner = text
        .split('(')
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("227 has parentheses");
    let n: Vec<u16> = inner
        .split(',')
        .map(|x| x.trim().parse().expect("number"))
        .collect();
    assert_eq!(n.len(), 6, "227 has six numbers: {text}");
    let ip = std::net::Ipv4Addr::new(n[0] as u8, n[1] as u8, n[2] as u8, n[3] as u8);
    SocketAddr::new(IpAddr::V4(ip), n[4] * 256 + n[5])
}

pub fn loopback(last: u8) -> IpAddr {
    IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, last))
}

pub fn read_file(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Waits (up to 5 s) until something accepts TCP connections on `addr`: a program that
/// was just started. The caller's own checks report a program that never listens.
pub async fn wait_until_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The binary the process-level tests run: `FTP_TESTS_FTPFRONT_BINARY` (scripts/test.sh
/// points it at the release build it has just made from the same tree, so figures such as
/// CPU per MiB are the product's), else the debug build of this `cargo test`.
pub fn ftpfront_binary() -> PathBuf {
    std::env::var_os("FTP_TESTS_FTPFRONT_BINARY")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_ftpfront")))
}

/// The `ftpfront` binary itself, running a config written to a directory.
pub struct BinaryProxy {
    pub child: tokio::process::Child,
    /// Its stderr (the log).
    pub log: PathBuf,
    pub control: SocketAddr,
}

/// Writes `config` to `dir/ftpfront.toml`, starts `ftpfront run` on it (log in
/// `dir/ftpfront.log`, `RUST_LOG` cleared so the config's filter applies) and waits until
/// `control_port` accepts.
pub async fn run_binary(dir: &Path, control_port: u16, config: &str) -> BinaryProxy {
    let config_path = dir.join("ftpfront.toml");
    std::fs::write(&config_path, config).expect("write config");
    let log = dir.join("ftpfront.log");
    let child = tokio::process::Command::new(ftpfront_binary())
        .args(["run", "--config"])
        .arg(&config_path)
        .env_remove("RUST_LOG")
        .stderr(std::process::Stdio::from(
            std::fs::File::create(&log).expect("log file"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("start ftpfront");
    let control = SocketAddr::from(([127, 0, 0, 1], control_port));
    wait_until_listening(control).await;
    BinaryProxy {
        child,
        log,
        control,
    }
}

/// Runs curl with a timeout so a hanging transfer fails the test instead of CI.
pub async fn run_curl(curl: &Path, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(curl)
        .args(["--silent", "--show-error", "--max-time", "60"])
        .args(args)
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("curl finished")
        .expect("curl runs")
}

/// A program run that must have succeeded; its stderr in the panic.
pub fn assert_ok(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}
