//! FTPS through ftpfront with a real vsftpd as the backend: the matrix client leg
//! {plain, explicit, implicit} x backend leg {plain, explicit, implicit}, each cell on TLS 1.2
//! and on TLS 1.3, with ONE Python ftplib session per cell doing seven mixed transfers (LIST,
//! RETR, STOR, RETR of the upload, LIST, STOR, RETR) with SHA-256 checks; and backend
//! certificate verification (expired, wrong host, `tls_verify = false`, `tls_server_name`).
//!
//! vsftpd runs as a strict FTPS server: `ssl_enable=YES`, `require_ssl_reuse=YES` (every data
//! connection must resume the control connection's TLS session), TLS forced on logins and
//! data, `implicit_ssl=YES` for the implicit leg, the test CA's certificate for 127.0.0.1, and
//! a wrong `pasv_address` (as behind a second NAT). Its `debug_ssl` log shows the TLS version
//! and resumption of every backend connection, which the cells check.
//!
//! Skipped with a printed reason (failed under `FTP_TESTS_REQUIRE_EXTERNAL=1`) without
//! python3, vsftpd or root. `RUST_LOG=debug` adds the proxy's log to a failure.

mod common;

use std::path::Path;
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::tls::*;
use common::vsftpd::{Vsftpd, VsftpdOptions, VsftpdTls, WRONG_PASV_ADDRESS};
use ftpfront::config::{BackendTls, Config, TlsMode, TlsVersion};
use ftpfront::server::RunningProxy;

const BIG_LEN: usize = 3 * 1024 * 1024 + 17;
const UPLOAD_LEN: usize = 2 * 1024 * 1024 + 9;
const README: &[u8] = b"hello from vsftpd over TLS\n";
const SESSION_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Plain,
    Explicit,
    Implicit,
}

impl Leg {
    fn name(self) -> &'static str {
        match self {
            Leg::Plain => "plain",
            Leg::Explicit => "explicit",
            Leg::Implicit => "implicit",
        }
    }
}

fn tls_version(version: &str) -> TlsVersion {
    match version {
        "1.2" => TlsVersion::V1_2,
        _ => TlsVersion::V1_3,
    }
}

/// vsftpd (anonymous, writable `upload/`, `big.bin` and `readme.txt`, wrong pasv_address)
/// with FTPS per `leg` and the certificate `cert`/`key`. `None`: skipped.
async fn start_vsftpd(leg: Leg, cert: &Path, key: &Path, big: &[u8]) -> Option<Vsftpd> {
    let tls = match leg {
        Leg::Plain => None,
        Leg::Explicit => Some(VsftpdTls::new(cert, key)),
        Leg::Implicit => Some(VsftpdTls::new(cert, key).implicit(true)),
    };
    let files = vec![
        ("big.bin".to_string(), big.to_vec()),
        ("readme.txt".to_string(), README.to_vec()),
    ];
    tokio::task::spawn_blocking(move || {
        Vsftpd::start(VsftpdOptions {
            pasv_address: Some(WRONG_PASV_ADDRESS.into()),
            writable: true,
            files,
            tls,
            ..Default::default()
        })
    })
    .await
    .expect("vsftpd start task")
}

/// The harness's proxy config in front of `server` (backend `vsftpd`, passive sockets on
/// loopback), its backend leg per `backend` trusting the test CA.
fn proxy_to(server: &Vsftpd, pki: &TestPki, backend: Leg, version: Option<&str>) -> Config {
    let mut config = proxy_config(server.addr, 6);
    config.passive.bind = loopback(1);
    let b = &mut config.backends[0];
    b.name = "vsftpd".into();
    b.tls = match backend {
        Leg::Plain => BackendTls::None,
        Leg::Explicit => BackendTls::Explicit,
        Leg::Implicit => BackendTls::Implicit,
    };
    if backend != Leg::Plain {
        b.tls_ca_file = Some(pki.ca.clone());
        b.tls_max_version = version.map(tls_version);
    }
    config
}

/// The Python session driver as `anonymous` against the proxy's control (plain, explicit) or
/// implicit port.
async fn ftplib_session(
    python: &Path,
    proxy: &RunningProxy,
    pki: &TestPki,
    client: Leg,
    version: Option<&str>,
    ops: &[String],
) -> Run {
    let port = match client {
        Leg::Implicit => proxy.implicit_addr.expect("implicit listener").port(),
        _ => proxy.control_addr.port(),
    };
    let mut args = ftp_client_ops();
    args.extend([
        "--mode".into(),
        client.name().into(),
        "--host".into(),
        "127.0.0.1".into(),
        "--port".into(),
        port.to_string(),
        "--ca".into(),
        utf8(&pki.ca).into(),
        "--tls".into(),
        version.unwrap_or("any").into(),
    ]);
    args.extend(ops.iter().cloned());
    run(python, &args, SESSION_TIMEOUT).await
}

/// The `debug_ssl` lines of vsftpd's log: one "SSL version: ..., reused|not reused" per TLS
/// connection (control and data).
fn vsftpd_tls_lines(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("SSL version:"))
        .map(|l| l.split("DEBUG:").nth(1).unwrap_or(l).trim().to_string())
        .collect()
}

/// One cell of the matrix: a single ftplib session through the proxy doing seven transfers.
async fn cell(client: Leg, backend: Leg, version: Option<&str>) {
    init_test_logging();
    let cell = format!(
        "cell client={} backend={} TLS {}",
        client.name(),
        backend.name(),
        version.unwrap_or("-")
    );
    let Some(python) = require_program("python3") else {
        return;
    };
    let pki = TestPki::generate();
    let big = sample_bytes(BIG_LEN, 31);
    let big_sha = sha256(&big);
    let Some(server) = start_vsftpd(backend, &pki.server_cert, &pki.server_key, &big).await else {
        return;
    };
    let mut config = proxy_to(&server, &pki, backend, version);
    if client != Leg::Plain {
        enable_client_tls(&mut config, &pki, TlsMode::Required);
        config.tls.max_version = version.map(tls_version);
    }
    config
        .validate()
        .unwrap_or_else(|e| panic!("{cell}: config invalid: {e}"));
    let proxy = start_proxy(config).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let (a, a_sha) = local_file(dir.path(), "a.bin", UPLOAD_LEN, 41);
    let (b, b_sha) = local_file(dir.path(), "b.bin", UPLOAD_LEN + 1000, 42);
    let ops = vec![
        "list:big.bin".to_string(),
        format!("retr:big.bin:{big_sha}"),
        format!("stor:upload/a.bin:{}", utf8(&a)),
        format!("retr:upload/a.bin:{a_sha}"),
        "list:readme.txt".to_string(),
        format!("stor:upload/b.bin:{}", utf8(&b)),
        format!("retr:big.bin:{big_sha}"),
    ];
    let transfers = ops.len();
    let session = ftplib_session(&python, &proxy, &pki, client, version, &ops).await;
    let scrape = scrape(&proxy).await;
    let context = || {
        format!(
            "{}\n--- vsftpd log (tail) ---\n{}\n--- proxy TLS metrics ---\n{}",
            session.report(),
            tail(&server.log(), 40),
            lines_with(&scrape, "tls")
        )
    };
    assert!(
        session.success(),
        "{cell}: the session failed:\n{}",
        context()
    );
    for (name, want) in [("a.bin", &a_sha), ("b.bin", &b_sha)] {
        let stored = read_file(&server.upload_dir.join(name));
        assert_eq!(
            &sha256(&stored),
            want,
            "{cell}: upload/{name} on vsftpd's disk\n{}",
            context()
        );
    }

    if backend != Leg::Plain {
        let lines = vsftpd_tls_lines(&server.log());
        assert!(
            lines.len() > transfers,
            "{cell}: vsftpd saw {} TLS connections, expected control + {transfers} data:\n{}",
            lines.len(),
            context()
        );
        if let Some(v) = version {
            let want = format!("SSL version: TLSv{v},");
            assert!(
                lines.iter().all(|l| l.contains(&want)),
                "{cell}: backend leg not on TLS {v}:\n{}\n{}",
                lines.join("\n"),
                context()
            );
        }
        let reused = lines.iter().filter(|l| l.contains(", reused")).count();
        assert!(
            reused >= transfers,
            "{cell}: {reused} of vsftpd's TLS connections resumed, expected every data \
             connection ({transfers}):\n{}\n{}",
            lines.join("\n"),
            context()
        );
        assert!(
            handshakes(&scrape, "backend", "ok") >= (transfers + 1) as f64,
            "{cell}: backend handshakes\n{}",
            context()
        );
    }
    if client != Leg::Plain {
        assert!(
            handshakes(&scrape, "client", "ok") >= (transfers + 1) as f64,
            "{cell}: client handshakes\n{}",
            context()
        );
        let stdout = session.stdout();
        assert!(
            stdout.matches("data TLS:").count() >= transfers,
            "{cell}: the client's data connections were not all TLS\n{}",
            context()
        );
    }
    for side in ["client", "backend"] {
        assert_eq!(
            handshakes(&scrape, side, "error"),
            0.0,
            "{cell}: {side} handshake errors\n{}",
            context()
        );
    }
    tokio::time::timeout(Duration::from_secs(40), proxy.shutdown())
        .await
        .unwrap_or_else(|_| panic!("{cell}: proxy shutdown took more than 40 s"));
}

macro_rules! matrix {
    ($($name:ident: $client:ident -> $backend:ident, $version:expr;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            cell(Leg::$client, Leg::$backend, $version).await;
        }
    )*};
}

matrix! {
    plain_to_plain: Plain -> Plain, None;
    plain_to_explicit_tls12: Plain -> Explicit, Some("1.2");
    plain_to_explicit_tls13: Plain -> Explicit, Some("1.3");
    plain_to_implicit_tls12: Plain -> Implicit, Some("1.2");
    plain_to_implicit_tls13: Plain -> Implicit, Some("1.3");
    explicit_to_plain_tls12: Explicit -> Plain, Some("1.2");
    explicit_to_plain_tls13: Explicit -> Plain, Some("1.3");
    explicit_to_explicit_tls12: Explicit -> Explicit, Some("1.2");
    explicit_to_explicit_tls13: Explicit -> Explicit, Some("1.3");
    explicit_to_implicit_tls12: Explicit -> Implicit, Some("1.2");
    explicit_to_implicit_tls13: Explicit -> Implicit, Some("1.3");
    implicit_to_plain_tls12: Implicit -> Plain, Some("1.2");
    implicit_to_plain_tls13: Implicit -> Plain, Some("1.3");
    implicit_to_explicit_tls12: Implicit -> Explicit, Some("1.2");
    implicit_to_explicit_tls13: Implicit -> Explicit, Some("1.3");
    implicit_to_implicit_tls12: Implicit -> Implicit, Some("1.2");
    implicit_to_implicit_tls13: Implicit -> Implicit, Some("1.3");
}

/// Sum of `ftpfront_backend_connect_errors_total{backend="vsftpd",reason=*}`.
fn backend_connect_errors(scrape: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with("ftpfront_backend_connect_errors_total{"))
        .filter(|l| l.contains(r#"backend="vsftpd""#))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A backend certificate that does not verify: the client's USER gets 421 and the failure is
/// counted; with `tls_verify = false` (or, for a wrong name, with `tls_server_name` set to the
/// name in the certificate) the same backend works.
async fn bad_backend_certificate(kind: &str, leg: Leg) {
    init_test_logging();
    let what = format!("{kind} certificate on a {} FTPS vsftpd", leg.name());
    let Some(python) = require_program("python3") else {
        return;
    };
    let pki = TestPki::generate();
    let (cert, key) = match kind {
        "expired" => (&pki.expired_cert, &pki.expired_key),
        _ => (&pki.wrong_host_cert, &pki.wrong_host_key),
    };
    let big = sample_bytes(64 * 1024, 51);
    let big_sha = sha256(&big);
    let Some(server) = start_vsftpd(leg, cert, key, &big).await else {
        return;
    };

    // Verification on (the default): refused at USER.
    let config = proxy_to(&server, &pki, leg, None);
    assert!(
        config.backends[0].tls_verify,
        "verification is on by default"
    );
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let reply = client.cmd("USER anonymous").await;
    let scrape_text = scrape(&proxy).await;
    assert_eq!(
        reply.code,
        421,
        "{what}: USER through a proxy that verifies: {reply:?}\n--- vsftpd log ---\n{}\n--- metrics ---\n{}",
        tail(&server.log(), 20),
        lines_with(&scrape_text, "backend")
    );
    let counted =
        handshakes(&scrape_text, "backend", "error") + backend_connect_errors(&scrape_text);
    assert!(
        counted >= 1.0,
        "{what}: the refusal is not counted:\n{}",
        lines_with(&scrape_text, "backend")
    );
    assert_eq!(
        handshakes(&scrape_text, "backend", "ok"),
        0.0,
        "{what}: a handshake succeeded"
    );
    proxy.shutdown().await;

    // The escape hatches: tls_verify = false, or the right tls_server_name for a wrong host.
    /// What a variant changes in the proxy config.
    type Tune = fn(&mut Config);
    let mut variants: Vec<(&str, Tune)> =
        vec![("tls_verify = false", |c| c.backends[0].tls_verify = false)];
    if kind == "wrong-host" {
        variants.push(("tls_server_name = the certificate's name", |c| {
            c.backends[0].tls_server_name = Some(WRONG_HOST.into())
        }));
    }
    for (variant, tune) in variants {
        let mut config = proxy_to(&server, &pki, leg, None);
        tune(&mut config);
        config
            .validate()
            .unwrap_or_else(|e| panic!("{what}, {variant}: config invalid: {e}"));
        let proxy = start_proxy(config).await;
        let ops = vec![
            "list:big.bin".to_string(),
            format!("retr:big.bin:{big_sha}"),
            format!("retr:readme.txt:{}", sha256(README)),
        ];
        let session = ftplib_session(&python, &proxy, &pki, Leg::Plain, None, &ops).await;
        assert!(
            session.success(),
            "{what}, {variant}: the session failed:\n{}\n--- vsftpd log (tail) ---\n{}",
            session.report(),
            tail(&server.log(), 30)
        );
        let scrape_text = scrape(&proxy).await;
        assert!(
            handshakes(&scrape_text, "backend", "ok") >= 3.0,
            "{what}, {variant}: {}",
            lines_with(&scrape_text, "tls")
        );
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_backend_certificate_is_refused_unless_verify_is_off() {
    bad_backend_certificate("expired", Leg::Explicit).await;
    bad_backend_certificate("expired", Leg::Implicit).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_host_backend_certificate_is_refused_unless_verify_is_off() {
    bad_backend_certificate("wrong-host", Leg::Explicit).await;
    bad_backend_certificate("wrong-host", Leg::Implicit).await;
}

/// vsftpd's own FTPS, straight (no proxy), with the harness's settings: curl lists and
/// downloads on TLS 1.2 and 1.3 and uploads on TLS 1.2, explicit and implicit, resuming every
/// data connection as `require_ssl_reuse=YES` demands. This checks the test setup itself
/// (certificates, ciphers), so that a matrix failure points at the proxy.
///
/// No TLS 1.3 upload here: curl before 8.9 closes the data connection of a TLS 1.3 upload
/// without waiting for the server's close_notify, and vsftpd 3.0.3 then sometimes answers
/// "426 Failure reading network stream" (curl/curl#13904, InfrastructureServices/vsftpd#7);
/// seen here about one run in three. The matrix covers TLS 1.3 uploads with the proxy as
/// vsftpd's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsftpd_ftps_works_directly_with_curl() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let pki = TestPki::generate();
    let big = sample_bytes(BIG_LEN, 61);
    for leg in [Leg::Explicit, Leg::Implicit] {
        let Some(server) = start_vsftpd(leg, &pki.server_cert, &pki.server_key, &big).await else {
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        for version in ["1.2", "1.3"] {
            let what = format!("curl straight to {} FTPS vsftpd, TLS {version}", leg.name());
            let out = dir.path().join(format!("{version}.bin"));
            let list_out = dir.path().join(format!("{version}.list"));
            let name = format!("direct-{version}.bin");
            let (local, digest) = local_file(dir.path(), &name, UPLOAD_LEN, 62);
            let mut args: Vec<String> = [
                "-sS",
                "-v",
                "--max-time",
                "60",
                "--cacert",
                utf8(&pki.ca),
                if version == "1.2" {
                    "--tls-max"
                } else {
                    "--tlsv1.3"
                },
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            if version == "1.2" {
                args.push("1.2".into());
            }
            if leg == Leg::Explicit {
                args.push("--ssl-reqd".into());
            }
            let mut list_get = args.clone();
            list_get.extend([
                server.url(""),
                "-o".into(),
                utf8(&list_out).into(),
                server.url("big.bin"),
                "-o".into(),
                utf8(&out).into(),
            ]);
            let run1 = run(&curl, &list_get, Duration::from_secs(90)).await;
            let mut put = args.clone();
            put.extend([
                "-T".into(),
                utf8(&local).into(),
                server.url(&format!("upload/{name}")),
            ]);
            let run2 = if version == "1.2" {
                Some(run(&curl, &put, Duration::from_secs(90)).await)
            } else {
                None
            };
            for r in std::iter::once(&run1).chain(run2.as_ref()) {
                assert!(
                    r.success(),
                    "{what}:\n{}\n--- vsftpd log ---\n{}",
                    r.report(),
                    tail(&server.log(), 30)
                );
                assert!(
                    r.stderr()
                        .contains(&format!("SSL connection using TLSv{version}")),
                    "{what}: {}",
                    r.report()
                );
            }
            let listing = String::from_utf8_lossy(&read_file(&list_out)).into_owned();
            assert!(listing.contains("big.bin"), "{what}: {listing}");
            assert_eq!(sha256(&read_file(&out)), sha256(&big), "{what}: download");
            if run2.is_some() {
                let stored = read_file(&server.upload_dir.join(&name));
                assert_eq!(sha256(&stored), digest, "{what}: upload");
            }
        }
        let lines = vsftpd_tls_lines(&server.log());
        assert!(
            lines.iter().filter(|l| l.contains(", reused")).count() >= 5,
            "data connections resumed:\n{}",
            lines.join("\n")
        );
    }
}

/// A legacy server's self-signed certificate (CA:TRUE, as `openssl req -x509` makes it, no
/// name of the server in it) given in `tls_ca_file` is pinned: that exact certificate is
/// accepted (it was refused as `CaUsedAsEndEntity`, and the client saw 421), while another
/// certificate from the same file's CA still has to verify.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_in_tls_ca_file_is_pinned() {
    init_test_logging();
    let Some(python) = require_program("python3") else {
        return;
    };
    let pki = TestPki::generate();
    let big = sample_bytes(64 * 1024, 52);
    for leg in [Leg::Explicit, Leg::Implicit] {
        let Some(server) = start_vsftpd(leg, &pki.ca, &pki.ca_key, &big).await else {
            return;
        };
        let proxy = start_proxy(proxy_to(&server, &pki, leg, None)).await;
        let ops = vec![format!("retr:readme.txt:{}", sha256(README))];
        let session = ftplib_session(&python, &proxy, &pki, Leg::Plain, None, &ops).await;
        assert!(
            session.success(),
            "{}: the session failed:\n{}\n--- vsftpd log (tail) ---\n{}",
            leg.name(),
            session.report(),
            tail(&server.log(), 30)
        );
        proxy.shutdown().await;
    }
}
