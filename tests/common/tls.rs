//! FTPS test helpers: a throw-away PKI made with rcgen, the TLS metrics, bytes that are not
//! a ClientHello, and a runner for external clients (curl, lftp, Python) with a timeout and
//! a readable transcript. The FTP client that speaks TLS is `ftp_client.rs`'s.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use ftpfront::config::{Config, TlsMode};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::ftp_client::closes_within;
use super::metrics::metric;

/// A test CA and certificates it signed, as PEM files in a temporary directory.
pub struct TestPki {
    /// The CA certificate: what clients trust (`--cacert`, `ssl:ca-file`, `cafile=`).
    pub ca: PathBuf,
    /// The CA's key: with [`TestPki::ca`] as a server's own certificate it makes the
    /// self-signed, CA:TRUE certificate `openssl req -x509` gives a legacy server.
    pub ca_key: PathBuf,
    /// For `localhost` and IP 127.0.0.1, valid now.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// For `localhost` and 127.0.0.1, but valid only in the year 2000.
    pub expired_cert: PathBuf,
    pub expired_key: PathBuf,
    /// Valid now, but only for [`WRONG_HOST`].
    pub wrong_host_cert: PathBuf,
    pub wrong_host_key: PathBuf,
    pub dir: tempfile::TempDir,
}

/// The only name in [`TestPki::wrong_host_cert`].
pub const WRONG_HOST: &str = "wrong.example";

impl TestPki {
    pub fn generate() -> TestPki {
        let dir = tempfile::Builder::new()
            .prefix("ftpfront-pki-")
            .tempdir()
            .expect("tempdir");
        let write = |name: &str, pem: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, pem).unwrap_or_else(|e| panic!("write {name}: {e}"));
            path
        };

        let ca_key = KeyPair::generate().expect("CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ftpfront test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");

        let leaf = |names: &[&str], expired: bool| {
            let key = KeyPair::generate().expect("leaf key");
            let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
            params.subject_alt_names = names
                .iter()
                .map(|n| match n.parse::<IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName((*n).try_into().expect("DNS name")),
                })
                .collect();
            params.distinguished_name.push(DnType::CommonName, names[0]);
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.use_authority_key_identifier_extension = true;
            if expired {
                params.not_before = rcgen::date_time_ymd(2000, 1, 1);
                params.not_after = rcgen::date_time_ymd(2001, 1, 1);
            } else {
                params.not_before = rcgen::date_time_ymd(2020, 1, 1);
                params.not_after = rcgen::date_time_ymd(2099, 1, 1);
            }
            let cert = params
                .signed_by(&key, &ca_cert, &ca_key)
                .expect("sign leaf certificate");
            (cert.pem(), key.serialize_pem())
        };

        let ca = write("ca.pem", ca_cert.pem());
        let ca_key_path = write("ca.key", ca_key.serialize_pem());
        let (cert, key) = leaf(&["localhost", "127.0.0.1"], false);
        let server_cert = write("server.pem", cert);
        let server_key = write("server.key", key);
        let (cert, key) = leaf(&["localhost", "127.0.0.1"], true);
        let expired_cert = write("expired.pem", cert);
        let expired_key = write("expired.key", key);
        let (cert, key) = leaf(&[WRONG_HOST], false);
        let wrong_host_cert = write("wrong-host.pem", cert);
        let wrong_host_key = write("wrong-host.key", key);
        TestPki {
            ca,
            ca_key: ca_key_path,
            server_cert,
            server_key,
            expired_cert,
            expired_key,
            wrong_host_cert,
            wrong_host_key,
            dir,
        }
    }

    /// A rustls client configuration that trusts only the test CA.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in ftpfront::pem::load_certs(&self.ca).expect("CA PEM") {
            roots.add(cert).expect("CA certificate");
        }
        let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

/// Client-facing TLS on `config` with the PKI's server certificate: `mode`, plus an implicit
/// FTPS listener on a free loopback port.
pub fn enable_client_tls(config: &mut Config, pki: &TestPki, mode: TlsMode) {
    config.tls.mode = mode;
    config.tls.cert = Some(pki.server_cert.clone());
    config.tls.key = Some(pki.server_key.clone());
    config.listen.implicit_tls = Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
}

/// Installs a tracing subscriber writing to the test's captured output when `RUST_LOG` is set
/// (`RUST_LOG=debug cargo test --test tls -- NAME` shows the proxy's log of a failing test).
pub fn init_test_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

// ---------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------

/// `ftpfront_tls_handshakes_total{side,result}`.
pub fn handshakes(scrape: &str, side: &str, result: &str) -> f64 {
    metric(
        scrape,
        "ftpfront_tls_handshakes_total",
        &[("side", side), ("result", result)],
    )
}

/// `ftpfront_tls_plaintext_refused_total{what}`.
pub fn plaintext_refused(scrape: &str, what: &str) -> f64 {
    metric(
        scrape,
        "ftpfront_tls_plaintext_refused_total",
        &[("what", what)],
    )
}

/// Connects to `addr`, writes `garbage` instead of a ClientHello, and reports whether the
/// server closed the connection within `within`.
pub async fn garbage_on_fresh_connection(
    addr: SocketAddr,
    garbage: &[u8],
    within: Duration,
) -> bool {
    let mut tcp = TcpStream::connect(addr).await.expect("connect");
    // The server may close before reading everything: a failed write is a close too.
    if tcp.write_all(garbage).await.is_err() {
        return true;
    }
    closes_within(&mut tcp, within).await
}

/// Bytes that are not a TLS ClientHello: an HTTP request, then binary noise.
pub fn not_a_client_hello() -> Vec<u8> {
    let mut bytes = b"GET / HTTP/1.1\r\nHost: ftpfront\r\n\r\n".to_vec();
    bytes.extend((0..600u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    bytes
}

// ---------------------------------------------------------------------------
// External programs
// ---------------------------------------------------------------------------

/// A finished run of an external client.
pub struct Run {
    pub output: Output,
    /// The program and its arguments, for failure messages.
    pub command: String,
}

impl Run {
    pub fn success(&self) -> bool {
        self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Command, exit status, stdout (tail) and stderr, for failure messages.
    pub fn report(&self) -> String {
        format!(
            "{}: {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.command,
            self.output.status,
            tail(&self.stdout(), 60),
            tail(&self.stderr(), 120)
        )
    }
}

pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Runs `program` with `args` under a timeout; never hangs the test. The child is killed when
/// the timeout expires.
pub async fn run(program: &Path, args: &[String], timeout: Duration) -> Run {
    let command = format!("{} {}", program.display(), shell_words(args));
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(timeout, child)
        .await
        .unwrap_or_else(|_| panic!("{command} still running after {timeout:?}"))
        .unwrap_or_else(|e| panic!("{command}: {e}"));
    Run { output, command }
}

fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The arguments that start an `ops` session of the Python client (then `--mode`...).
pub fn ftp_client_ops() -> Vec<String> {
    vec![super::external::ftp_client_script().into(), "ops".into()]
}

/// A local file of `len` pseudo-random bytes (in `dir`), and its SHA-256.
pub fn local_file(dir: &Path, name: &str, len: usize, seed: u32) -> (PathBuf, String) {
    let bytes = super::harness::sample_bytes(len, seed);
    let path = dir.join(name);
    std::fs::write(&path, &bytes).expect("write local file");
    (path, super::harness::sha256(&bytes))
}

pub fn utf8(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}
