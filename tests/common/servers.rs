//! Real FTP servers on loopback for the comparison suites: vsftpd (through
//! [`super::vsftpd`]), pure-ftpd and proftpd, behind one [`FtpServer`] type so a scenario can
//! run against each of them.
//!
//! ```ignore
//! let Some(server) = FtpServer::start(ServerKind::PureFtpd, ServerOptions::default()) else {
//!     return; // skipped: program missing or not root
//! };
//! std::fs::write(server.root.join("hello.txt"), b"hi")?;
//! let client = server.login(server.addr, loopback(1)).await;
//! ```
//!
//! Each server listens on 127.0.0.1 at a free port, serves a fresh temporary root (with a
//! world-writable `upload` directory) and runs as root, as the test environment notes of
//! DESIGN.md describe. pure-ftpd logs in a virtual user (puredb, made with `pure-pw`),
//! proftpd and vsftpd an anonymous one. The programs are found like every outside program
//! ([`external::find_program`], `FTP_TESTS_EXTRA_PATH`); a missing one is a skip (or a failure
//! under `FTP_TESTS_REQUIRE_EXTERNAL=1`).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::external;
use super::ftp_client::FtpClient;
use super::harness::free_port_block;
use super::vsftpd::{Vsftpd, VsftpdOptions};

/// Which server program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerKind {
    Vsftpd,
    PureFtpd,
    Proftpd,
}

impl ServerKind {
    pub const ALL: [ServerKind; 3] = [
        ServerKind::Vsftpd,
        ServerKind::PureFtpd,
        ServerKind::Proftpd,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ServerKind::Vsftpd => "vsftpd",
            ServerKind::PureFtpd => "pure-ftpd",
            ServerKind::Proftpd => "proftpd",
        }
    }
}

/// What to configure beyond the defaults (writable `upload`, no connection limit).
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {
    /// At most this many simultaneous clients (vsftpd `max_clients`, pure-ftpd `-c`,
    /// proftpd `MaxClients`).
    pub max_clients: Option<u32>,
    /// Extra raw configuration: vsftpd.conf lines, pure-ftpd arguments or proftpd.conf lines.
    pub extra: Vec<String>,
}

/// A running server of any kind; stopped (with its session processes) on drop.
pub struct FtpServer {
    pub kind: ServerKind,
    pub addr: SocketAddr,
    /// The directory clients start in; tests may add files at any time.
    pub root: PathBuf,
    /// The login it accepts.
    pub user: &'static str,
    pub password: &'static str,
    _process: Process,
}

enum Process {
    Vsftpd(Box<Vsftpd>),
    Spawned(Spawned),
}

/// pure-ftpd or proftpd in its own process group, with its temporary directory.
struct Spawned {
    child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl FtpServer {
    /// Starts `kind` and waits for its 220. `None`: skip (program missing or not root).
    pub fn start(kind: ServerKind, opts: ServerOptions) -> Option<FtpServer> {
        match kind {
            ServerKind::Vsftpd => start_vsftpd(opts),
            ServerKind::PureFtpd | ServerKind::Proftpd => start_spawned(kind, &opts),
        }
    }

    /// A raw client connected to `addr` (this server, or a proxy in front of it) from
    /// `source`, logged in as this server's user.
    pub async fn login(&self, addr: SocketAddr, source: IpAddr) -> FtpClient {
        let mut client = FtpClient::connect(source, addr).await;
        let user = client.cmd(&format!("USER {}", self.user)).await;
        if user.code == 331 {
            let pass = client.cmd(&format!("PASS {}", self.password)).await;
            assert_eq!(pass.code, 230, "{} login: {pass:?}", self.kind.name());
        } else {
            assert_eq!(user.code, 230, "{} login: {user:?}", self.kind.name());
        }
        client
    }

    /// `ftp://USER:PASSWORD@ADDR/PATH` for `addr` (this server or a proxy), the password's
    /// `@` percent-encoded.
    pub fn url(&self, addr: SocketAddr, path: &str) -> String {
        format!(
            "ftp://{}:{}@{addr}/{}",
            self.user,
            self.password.replace('@', "%40"),
            path.trim_start_matches('/')
        )
    }
}

/// The server programs' own start, `spawn_blocking`-friendly: run from async tests with
/// [`start_async`].
pub async fn start_async(kind: ServerKind, opts: ServerOptions) -> Option<FtpServer> {
    tokio::task::spawn_blocking(move || FtpServer::start(kind, opts))
        .await
        .expect("server start task")
}

fn start_vsftpd(opts: ServerOptions) -> Option<FtpServer> {
    let mut extra = opts.extra;
    if let Some(max) = opts.max_clients {
        extra.push(format!("max_clients={max}"));
    }
    let server = Vsftpd::start(VsftpdOptions {
        writable: true,
        extra_config: extra,
        ..Default::default()
    })?;
    Some(FtpServer {
        kind: ServerKind::Vsftpd,
        addr: server.addr,
        root: server.root.clone(),
        user: "anonymous",
        password: "guest@",
        _process: Process::Vsftpd(Box::new(server)),
    })
}

fn program_of(kind: ServerKind) -> Option<PathBuf> {
    let found = external::find_program(kind.name());
    let reason = format!("the `{}` program", kind.name());
    if !external::external_available(found.is_some(), &reason) {
        return None;
    }
    if !external::external_available(external::is_root(), &format!("root (to run {reason})")) {
        return None;
    }
    found
}

fn start_spawned(kind: ServerKind, opts: &ServerOptions) -> Option<FtpServer> {
    let program = program_of(kind)?;
    // The port is found free then handed over: another process may take it in between.
    let mut last_error = String::new();
    for _ in 0..5 {
        match try_start_spawned(kind, &program, opts) {
            Ok(server) => return Some(server),
            Err(e) => last_error = e,
        }
    }
    panic!("{} did not start: {last_error}", kind.name());
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// `base/root` (0755) with `upload` (0777) inside, `base` searchable by everyone.
fn make_root(base: &Path) -> PathBuf {
    set_mode(base, 0o755);
    let root = base.join("root");
    fs::create_dir_all(root.join("upload")).expect("mkdir root/upload");
    set_mode(&root, 0o755);
    set_mode(&root.join("upload"), 0o777);
    root
}

fn try_start_spawned(
    kind: ServerKind,
    program: &Path,
    opts: &ServerOptions,
) -> Result<FtpServer, String> {
    let dir = tempfile::Builder::new()
        .prefix(&format!("ftpfront-{}-", kind.name()))
        .tempdir()
        .map_err(|e| format!("tempdir: {e}"))?;
    let root = make_root(dir.path());
    let port = free_port_block(1);
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let (args, user, password) = match kind {
        ServerKind::PureFtpd => (
            pure_ftpd_args(dir.path(), &root, port, opts)?,
            "tester",
            "secret",
        ),
        _ => (
            proftpd_args(dir.path(), &root, port, opts)?,
            "anonymous",
            "guest@",
        ),
    };
    let stderr_path = dir.path().join("stderr.log");
    let stderr = fs::File::create(&stderr_path).map_err(|e| format!("stderr log: {e}"))?;
    let child = Command::new(program)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr))
        // Its own process group, so that Drop also ends the session processes it forks.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", program.display()))?;
    let mut spawned = Spawned {
        child,
        stderr_path,
        _dir: dir,
    };
    spawned.wait_ready(addr, Duration::from_secs(10))?;
    Ok(FtpServer {
        kind,
        addr,
        root,
        user,
        password,
        _process: Process::Spawned(spawned),
    })
}

/// pure-ftpd with one virtual user (`tester`/`secret`, uid nobody, chrooted to `root`).
fn pure_ftpd_args(
    base: &Path,
    root: &Path,
    port: u16,
    opts: &ServerOptions,
) -> Result<Vec<String>, String> {
    let pdb = make_puredb(base, root)?;
    let max = opts.max_clients.unwrap_or(50).to_string();
    let mut args: Vec<String> = [
        "-S",
        &format!("127.0.0.1,{port}"),
        "-4",
        "-l",
        &format!("puredb:{}", pdb.display()),
        // No anonymous, no DNS, no per-IP limit below the total.
        "-E",
        "-H",
        "-c",
        &max,
        "-C",
        &max,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(opts.extra.iter().cloned());
    Ok(args)
}

/// `tester`'s line of a pure-ftpd passwd file: SHA-512 crypt of `secret` (made with
/// `openssl passwd -6 -salt ftpfronttest secret`), uid/gid nobody, `/./` = chrooted there.
/// Not `pure-pw useradd`: its argon2id hash (t=255) makes every login take seconds here.
const PURE_FTPD_HASH: &str =
    "$6$ftpfronttest$skPaSe3Heg1WbHSBHfdLtOHIPmegpkRFrHvUrW9wZ4vCf4V8.pYpGqyu6gnkHZVN2rz0XCN.4J1BJg7qMN/dQ.";

/// Writes the passwd file and runs `pure-pw mkdb` (found next to pure-ftpd: `usr/bin` of
/// the extracted package).
fn make_puredb(base: &Path, root: &Path) -> Result<PathBuf, String> {
    let pure_pw = external::find_program("pure-pw")
        .or_else(|| {
            let sbin = external::find_program("pure-ftpd")?;
            let bin = sbin.parent()?.parent()?.join("bin/pure-pw");
            bin.is_file().then_some(bin)
        })
        .ok_or("pure-pw not found next to pure-ftpd")?;
    let passwd = base.join("pureftpd.passwd");
    let pdb = base.join("pureftpd.pdb");
    let line = format!(
        "tester:{PURE_FTPD_HASH}:65534:65534::{}/./::::::::::::\n",
        root.display()
    );
    fs::write(&passwd, line).map_err(|e| format!("write passwd: {e}"))?;
    let out = Command::new(pure_pw)
        .arg("mkdb")
        .arg(&pdb)
        .arg("-f")
        .arg(&passwd)
        .output()
        .map_err(|e| format!("pure-pw: {e}"))?;
    if !out.status.success() {
        return Err(format!("pure-pw: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(pdb)
}

/// proftpd (foreground, `-n`) with an anonymous login (`anonymous` or `ftp`, any password) on `root`.
fn proftpd_args(
    base: &Path,
    root: &Path,
    port: u16,
    opts: &ServerOptions,
) -> Result<Vec<String>, String> {
    let mut conf = vec![
        "ServerName \"ftpfront test proftpd\"".to_string(),
        "ServerType standalone".to_string(),
        "DefaultServer on".to_string(),
        "UseIPv6 off".to_string(),
        "DefaultAddress 127.0.0.1".to_string(),
        "SocketBindTight on".to_string(),
        format!("Port {port}"),
        "User nobody".to_string(),
        "Group nogroup".to_string(),
        format!("PidFile {}/proftpd.pid", base.display()),
        format!("ScoreboardFile {}/proftpd.scoreboard", base.display()),
        "DelayTable none".to_string(),
        "WtmpLog off".to_string(),
        "UseReverseDNS off".to_string(),
        "AuthPAM off".to_string(),
        "AuthOrder mod_auth_unix.c".to_string(),
        "RequireValidShell off".to_string(),
        // `nobody`, the anonymous account here, is listed in Debian's /etc/ftpusers.
        "UseFtpUsers off".to_string(),
        "AllowOverwrite on".to_string(),
        "Umask 022".to_string(),
        "MaxInstances 50".to_string(),
    ];
    if let Some(max) = opts.max_clients {
        conf.push(format!("MaxClients {max}"));
    }
    conf.extend(opts.extra.iter().cloned());
    conf.extend([
        format!("<Anonymous {}>", root.display()),
        "  User nobody".to_string(),
        "  Group nogroup".to_string(),
        "  UserAlias anonymous nobody".to_string(),
        // `ftp` as well, as vsftpd has it: a second user for tests that tell users apart.
        "  UserAlias ftp nobody".to_string(),
        "  RequireValidShell off".to_string(),
        "  <Limit WRITE>".to_string(),
        "    AllowAll".to_string(),
        "  </Limit>".to_string(),
        "</Anonymous>".to_string(),
    ]);
    let path = base.join("proftpd.conf");
    fs::write(&path, conf.join("\n") + "\n").map_err(|e| format!("write config: {e}"))?;
    Ok(vec![
        "-n".to_string(),
        "-c".to_string(),
        path.display().to_string(),
    ])
}

impl Spawned {
    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    fn wait_ready(&mut self, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.stderr_text()));
            }
            if let Some(line) = greeting_of(addr) {
                return if line.starts_with("220") {
                    Ok(())
                } else {
                    Err(format!("{addr} answered {line:?} instead of 220"))
                };
            }
            if Instant::now() > deadline {
                return Err(format!("no 220 from {addr}: {}", self.stderr_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// The first line something listening on `addr` sends (then QUIT), `None` when nothing does.
fn greeting_of(addr: SocketAddr) -> Option<String> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line).ok()?;
    let _ = (&stream).write_all(b"QUIT\r\n");
    (!line.is_empty()).then_some(line)
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // The whole process group: the listener and every session process it forked.
        let pid = self.child.id();
        let group_killed = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !group_killed {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
