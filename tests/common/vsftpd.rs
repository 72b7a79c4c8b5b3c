//! A real vsftpd on loopback, configured in a temporary directory, for integration tests.
//!
//! ```ignore
//! let Some(ftpd) = Vsftpd::start(VsftpdOptions::default()) else { return }; // skipped
//! std::fs::write(ftpd.root.join("hello.txt"), b"hi")?;
//! // ftp://{ftpd.addr}/hello.txt, anonymous
//! ```
//!
//! vsftpd needs root here (it checks the effective uid even with `run_as_launching_user`), so
//! [`Vsftpd::start`] returns `None` (a printed skip, or a panic under
//! `FTP_TESTS_REQUIRE_EXTERNAL=1`) when the program or the privilege is missing.
//!
//! With `run_as_launching_user=YES` vsftpd does no chroot and no privilege drop: sessions run
//! as the launching user (root) with `anon_root` as their starting directory. This is only
//! acceptable because it listens on 127.0.0.1 and lives for one test.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::external;
use super::harness::free_port_block;

/// A private-looking but WRONG passive address for a backend's 227 replies, used to prove
/// that the proxy never passes the backend's address through.
///
/// It is a loopback address (not 10.x or 192.168.x) on purpose: a client that wrongly uses it
/// gets "connection refused" at once (vsftpd binds its passive sockets to 127.0.0.1 only),
/// and no packet ever leaves this machine, even when the code under test is broken.
pub const WRONG_PASV_ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 111, 111, 111);

/// How clients log in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VsftpdLogin {
    /// `anonymous` / `ftp` with any password, served from [`Vsftpd::root`].
    #[default]
    Anonymous,
    /// System users through PAM (`local_enable=YES`). Needs a real account with a password on
    /// this machine; with `run_as_launching_user=YES` sessions do not switch to that user.
    /// The tests here use anonymous logins.
    Local,
}

/// What to configure. `Default` is anonymous, read-only, no `pasv_address`, any passive port.
#[derive(Debug, Clone, Default)]
pub struct VsftpdOptions {
    pub login: VsftpdLogin,
    /// Written into vsftpd's 227 replies (`pasv_address=`, with `pasv_addr_resolve=NO`).
    /// `None`: vsftpd names its own control address (127.0.0.1).
    pub pasv_address: Option<IpAddr>,
    /// `pasv_min_port`/`pasv_max_port` (inclusive); `None` lets the kernel choose.
    pub pasv_ports: Option<(u16, u16)>,
    /// Allow uploads and directory creation by anonymous users (`write_enable`,
    /// `anon_upload_enable`, `anon_mkdir_write_enable`, `anon_umask=022`). Upload into the
    /// `upload` directory, which is then world-writable: the root itself stays 0755, as a
    /// normally privileged vsftpd refuses a writable anonymous root. (Here sessions run as
    /// root, so an upload elsewhere would not be refused: tests must not rely on a refusal.)
    pub writable: bool,
    /// Files created under the root before the server starts: (relative path, contents).
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra raw `key=value` lines appended to vsftpd.conf.
    pub extra_config: Vec<String>,
    /// FTPS (`ssl_enable=YES`); `None`, the default, is plain FTP only.
    pub tls: Option<VsftpdTls>,
}

/// vsftpd's FTPS settings. [`VsftpdTls::new`] gives explicit FTPS (AUTH TLS) with
/// `require_ssl_reuse=YES` and TLS forced on logins and data, as a strict real server.
///
/// Debian's vsftpd 3.0.3 has no per-version switches for TLS 1.2/1.3 (only `ssl_sslv2`,
/// `ssl_sslv3`, `ssl_tlsv1`): it offers every TLS version OpenSSL allows, 1.3 included, so a
/// test pins the version on the client side. Its default `ssl_ciphers=DES-CBC3-SHA` is refused
/// by OpenSSL 3 and by rustls, which leaves TLS 1.2 with no cipher at all ("handshake
/// failure"); TLS 1.3 suites are not governed by `ssl_ciphers`. Hence `ciphers = "HIGH"`.
#[derive(Debug, Clone)]
pub struct VsftpdTls {
    /// PEM certificate chain (`rsa_cert_file`; an ECDSA certificate works too).
    pub cert: PathBuf,
    /// PEM private key (`rsa_private_key_file`).
    pub key: PathBuf,
    /// `implicit_ssl=YES`: TLS from the first byte (FTPS on a "990"-style port).
    pub implicit: bool,
    /// `require_ssl_reuse`: data connections must resume the control connection's session.
    pub require_ssl_reuse: bool,
    /// `force_{anon,local}_{logins,data}_ssl`: refuse plaintext logins and data.
    pub force: bool,
    /// `ssl_ciphers` (TLS 1.2 and below).
    pub ciphers: String,
}

impl VsftpdTls {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> VsftpdTls {
        VsftpdTls {
            cert: cert.into(),
            key: key.into(),
            implicit: false,
            require_ssl_reuse: true,
            force: true,
            ciphers: "HIGH".to_string(),
        }
    }

    pub fn implicit(mut self, implicit: bool) -> VsftpdTls {
        self.implicit = implicit;
        self
    }
}

/// A running vsftpd; killed (with the session processes it forked) on drop.
pub struct Vsftpd {
    /// Where the control connection listens (127.0.0.1:free port).
    pub addr: SocketAddr,
    /// The anonymous root (world-readable); tests may add files at any time.
    pub root: PathBuf,
    /// `root/upload`, world-writable when [`VsftpdOptions::writable`] (exists in any case).
    pub upload_dir: PathBuf,
    /// The generated vsftpd.conf.
    pub config_path: PathBuf,
    /// vsftpd's own log (`vsftpd_log_file`), handy when a test fails.
    pub log_path: PathBuf,
    /// Implicit FTPS (`implicit_ssl=YES`): the control connection starts with TLS.
    pub implicit_tls: bool,
    child: Child,
    stderr_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn vsftpd_program() -> Option<PathBuf> {
    external::find_program("vsftpd").or_else(|| {
        let default = PathBuf::from("/usr/sbin/vsftpd");
        default.is_file().then_some(default)
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "YES"
    } else {
        "NO"
    }
}

impl Vsftpd {
    /// Starts vsftpd and waits until it greets with 220. `None` means "skip this test"
    /// (vsftpd missing or not root; see [`external::external_available`]). Panics when vsftpd
    /// is there but does not come up.
    pub fn start(opts: VsftpdOptions) -> Option<Vsftpd> {
        let program = vsftpd_program();
        if !external::external_available(program.is_some(), "the `vsftpd` program") {
            return None;
        }
        if !external::external_available(external::is_root(), "root (to run vsftpd)") {
            return None;
        }
        let program = program.unwrap();
        // The port is found free then handed over, so another process may take it in
        // between: try a few times.
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::try_start(&program, &opts) {
                Ok(server) => return Some(server),
                Err(e) => last_error = e,
            }
        }
        panic!("vsftpd did not start: {last_error}");
    }

    fn try_start(program: &Path, opts: &VsftpdOptions) -> Result<Vsftpd, String> {
        let dir = tempfile::Builder::new()
            .prefix("ftpfront-vsftpd-")
            .tempdir()
            .map_err(|e| format!("tempdir: {e}"))?;
        let base = dir.path().to_path_buf();
        let set_mode = |path: &Path, mode: u32| {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()))
        };
        // Anonymous sessions must be able to reach the root: make the chain world-searchable.
        set_mode(&base, 0o755);
        let root = base.join("root");
        let upload_dir = root.join("upload");
        let empty = base.join("empty");
        for d in [&root, &upload_dir, &empty] {
            fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        }
        set_mode(&root, 0o755);
        set_mode(&empty, 0o755);
        set_mode(&upload_dir, if opts.writable { 0o777 } else { 0o755 });
        for (rel, contents) in &opts.files {
            let path = root.join(rel.trim_start_matches('/'));
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent).map_err(|e| format!("mkdir: {e}"))?;
            }
            fs::write(&path, contents).map_err(|e| format!("write {}: {e}", path.display()))?;
            set_mode(&path, 0o644);
        }

        let port = free_port_block(1);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let log_path = base.join("vsftpd.log");
        let stderr_path = base.join("stderr.log");
        let config_path = base.join("vsftpd.conf");

        let anonymous = opts.login == VsftpdLogin::Anonymous;
        let mut conf = vec![
            "listen=YES".to_string(),
            "listen_ipv6=NO".to_string(),
            "listen_address=127.0.0.1".to_string(),
            format!("listen_port={port}"),
            "background=NO".to_string(),
            "seccomp_sandbox=NO".to_string(),
            "run_as_launching_user=YES".to_string(),
            format!("secure_chroot_dir={}", empty.display()),
            "tcp_wrappers=NO".to_string(),
            "connect_from_port_20=NO".to_string(),
            "pasv_enable=YES".to_string(),
            "port_enable=YES".to_string(),
            "use_localtime=NO".to_string(),
            "ftpd_banner=vsftpd test server".to_string(),
            format!("vsftpd_log_file={}", log_path.display()),
            "xferlog_enable=YES".to_string(),
            "dual_log_enable=NO".to_string(),
            "xferlog_std_format=NO".to_string(),
            "log_ftp_protocol=YES".to_string(),
            "idle_session_timeout=120".to_string(),
            "data_connection_timeout=60".to_string(),
            format!("anonymous_enable={}", yes_no(anonymous)),
            format!("local_enable={}", yes_no(!anonymous)),
            format!("write_enable={}", yes_no(opts.writable)),
        ];
        if anonymous {
            conf.extend([
                "ftp_username=nobody".to_string(),
                format!("anon_root={}", root.display()),
                "no_anon_password=YES".to_string(),
                format!("anon_upload_enable={}", yes_no(opts.writable)),
                format!("anon_mkdir_write_enable={}", yes_no(opts.writable)),
                "anon_other_write_enable=NO".to_string(),
                "anon_umask=022".to_string(),
                "anon_world_readable_only=YES".to_string(),
            ]);
        } else {
            conf.extend([
                format!("local_root={}", root.display()),
                "local_umask=022".to_string(),
                "pam_service_name=vsftpd".to_string(),
                "check_shell=NO".to_string(),
            ]);
        }
        if let Some(ip) = opts.pasv_address {
            conf.push("pasv_addr_resolve=NO".to_string());
            conf.push(format!("pasv_address={ip}"));
        }
        if let Some((min, max)) = opts.pasv_ports {
            conf.push(format!("pasv_min_port={min}"));
            conf.push(format!("pasv_max_port={max}"));
        }
        if let Some(tls) = &opts.tls {
            let force = yes_no(tls.force);
            conf.extend([
                "ssl_enable=YES".to_string(),
                "allow_anon_ssl=YES".to_string(),
                format!("rsa_cert_file={}", tls.cert.display()),
                format!("rsa_private_key_file={}", tls.key.display()),
                format!("implicit_ssl={}", yes_no(tls.implicit)),
                format!("require_ssl_reuse={}", yes_no(tls.require_ssl_reuse)),
                format!("force_anon_logins_ssl={force}"),
                format!("force_anon_data_ssl={force}"),
                format!("force_local_logins_ssl={force}"),
                format!("force_local_data_ssl={force}"),
                "ssl_sslv2=NO".to_string(),
                "ssl_sslv3=NO".to_string(),
                "ssl_tlsv1=YES".to_string(),
                format!("ssl_ciphers={}", tls.ciphers),
                // Logs each TLS handshake (and session reuse) to vsftpd_log_file.
                "debug_ssl=YES".to_string(),
            ]);
        }
        conf.extend(opts.extra_config.iter().cloned());
        let mut text = conf.join("\n");
        text.push('\n');
        fs::write(&config_path, text).map_err(|e| format!("write config: {e}"))?;
        // vsftpd refuses a config file that is not owned by the launching user or is writable by others.
        set_mode(&config_path, 0o600);

        let stderr = fs::File::create(&stderr_path).map_err(|e| format!("stderr log: {e}"))?;
        let child = Command::new(program)
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            // Its own process group, so that Drop also ends the session processes it forks.
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", program.display()))?;
        let mut server = Vsftpd {
            addr,
            root,
            upload_dir,
            config_path,
            log_path,
            implicit_tls: opts.tls.as_ref().is_some_and(|t| t.implicit),
            child,
            stderr_path,
            _dir: dir,
        };
        server.wait_ready(Duration::from_secs(10))?;
        Ok(server)
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "vsftpd exited with {status} at start: {}",
                    self.stderr_text().trim()
                ));
            }
            if let Ok(stream) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(500)) {
                if self.implicit_tls {
                    // No plaintext greeting to read: the server waits for a ClientHello.
                    // Accepting the connection while still running is the readiness signal.
                    drop(stream);
                    std::thread::sleep(Duration::from_millis(100));
                    if let Ok(Some(status)) = self.child.try_wait() {
                        return Err(format!(
                            "vsftpd exited with {status} at start: {}",
                            self.stderr_text().trim()
                        ));
                    }
                    return Ok(());
                }
                let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                let mut line = String::new();
                let read = BufReader::new(&stream).read_line(&mut line);
                // Say goodbye politely so that the session process ends now.
                let _ = std::io::Write::write_all(&mut &stream, b"QUIT\r\n");
                match read {
                    Ok(_) if line.starts_with("220") => return Ok(()),
                    // Someone else's server on this port (lost the race), or an error banner.
                    Ok(_) => {
                        return Err(format!(
                            "{} answered {:?} instead of 220 ({})",
                            self.addr,
                            line.trim(),
                            self.stderr_text().trim()
                        ))
                    }
                    Err(_) => {}
                }
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no 220 from {} within {timeout:?}: {}",
                    self.addr,
                    self.stderr_text().trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stderr_text(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// vsftpd's protocol and transfer log so far (for failure messages).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// A directory `rel` under the root holding empty files with long names, so that its
    /// listing (`STAT rel` on the control connection) is about `listing_bytes` long; the
    /// number of files made.
    pub fn fill_directory(&self, rel: &str, listing_bytes: usize) -> usize {
        const NAME_LEN: usize = 200;
        // vsftpd's line: "-rw-r--r--    1 0        0               0 Dec 03 10:47 " + name.
        const LINE_LEN: usize = 56 + NAME_LEN + 2;
        let dir = self.root.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let files = listing_bytes.div_ceil(LINE_LEN);
        for index in 0..files {
            let name = format!("{index:08}-{}", "n".repeat(NAME_LEN - 9));
            fs::write(dir.join(name), b"").unwrap_or_else(|e| panic!("file {index}: {e}"));
        }
        files
    }

    /// `ftp://127.0.0.1:PORT/` + `path` (no leading slash needed); `ftps://` for implicit FTPS.
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.implicit_tls { "ftps" } else { "ftp" };
        format!("{scheme}://{}/{}", self.addr, path.trim_start_matches('/'))
    }
}

impl Drop for Vsftpd {
    fn drop(&mut self) {
        let pid = self.child.id();
        // The whole process group: the listener and any session processes it forked.
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
