//! FTPS towards clients, end to end on loopback: real clients (curl, lftp, Python's
//! `ftplib.FTP_TLS`) with certificates made by the test (rcgen), through ftpfront, to the
//! in-process libunftp backend (a plain FTP server).
//!
//! Explicit FTPS (AUTH TLS on the control port) and implicit FTPS (`listen.implicit_tls`);
//! listing, downloads and uploads with SHA-256 checks; `tls.mode = required` refusing a
//! plaintext login and a clear-text transfer; garbage instead of a ClientHello; the PROT/CCC
//! replies; `tls.require_data_session_reuse`.
//!
//! Skipped with a printed reason (failed under `FTP_TESTS_REQUIRE_EXTERNAL=1`) when curl,
//! lftp or python3 is missing. `RUST_LOG=debug cargo test --test tls -- NAME` shows the
//! proxy's log with a failure.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::tls::*;
use ftpfront::config::{Config, TlsMode};
use ftpfront::server::RunningProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIG_LEN: usize = 8 * 1024 * 1024 + 5;
const UPLOAD_LEN: usize = 5 * 1024 * 1024 + 3;
const PROGRAM_TIMEOUT: Duration = Duration::from_secs(120);

/// The TLS versions every client scenario runs on.
const VERSIONS: [&str; 2] = ["1.2", "1.3"];

/// libunftp (user alice, `big.bin`, writable `upload/`) behind ftpfront with client-side TLS
/// (the PKI's server certificate) and an implicit FTPS listener.
struct Fixture {
    backend: TestBackend,
    pki: TestPki,
    proxy: RunningProxy,
    /// SHA-256 of `big.bin`.
    big: String,
    /// Local scratch space (downloads, upload sources).
    dir: tempfile::TempDir,
}

impl Fixture {
    async fn start(mode: TlsMode, tune: impl FnOnce(&mut Config)) -> Fixture {
        init_test_logging();
        let backend = TestBackend::start().await;
        let big = backend.put_file("big.bin", BIG_LEN, 21);
        let pki = TestPki::generate();
        let mut config = proxy_config(backend.server.addr, 4);
        enable_client_tls(&mut config, &pki, mode);
        tune(&mut config);
        config.validate().expect("test config is valid");
        let proxy = start_proxy(config).await;
        Fixture {
            backend,
            pki,
            proxy,
            big,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    fn control_port(&self) -> u16 {
        self.proxy.control_addr.port()
    }

    fn implicit_addr(&self) -> SocketAddr {
        self.proxy
            .implicit_addr
            .expect("the proxy exposes its implicit FTPS listener")
    }

    /// `ftp://alice:secret@127.0.0.1:PORT/path` (explicit FTPS with `--ssl-reqd`).
    fn explicit_url(&self, path: &str) -> String {
        format!(
            "ftp://{USER}:{PASSWORD}@127.0.0.1:{}/{path}",
            self.control_port()
        )
    }

    /// `ftps://alice:secret@127.0.0.1:IMPLICIT/path`.
    fn implicit_url(&self, path: &str) -> String {
        format!(
            "ftps://{USER}:{PASSWORD}@127.0.0.1:{}/{path}",
            self.implicit_addr().port()
        )
    }

    fn scratch(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// curl trusting only the test CA, with `args`.
    async fn curl(&self, curl: &Path, args: &[&str]) -> Run {
        let mut all: Vec<String> = [
            "-sS",
            "--connect-timeout",
            "10",
            "--max-time",
            "90",
            "--cacert",
            utf8(&self.pki.ca),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        run(curl, &all, PROGRAM_TIMEOUT).await
    }

    /// The Python FTPS session driver against the proxy as alice.
    async fn ftplib(
        &self,
        python: &Path,
        mode: &str,
        tls: &str,
        extra: &[&str],
        ops: &[String],
    ) -> Run {
        let port = match mode {
            "implicit" => self.implicit_addr().port(),
            _ => self.control_port(),
        };
        let mut args = ftp_client_ops();
        args.extend([
            "--mode".into(),
            mode.into(),
            "--host".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--ca".into(),
            utf8(&self.pki.ca).into(),
            "--tls".into(),
            tls.into(),
            "--user".into(),
            USER.into(),
            "--password".into(),
            PASSWORD.into(),
        ]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.extend(ops.iter().cloned());
        run(python, &args, PROGRAM_TIMEOUT).await
    }

    /// The file the backend stored at `upload/name` has SHA-256 `want`.
    fn assert_uploaded(&self, name: &str, want: &str, what: &str) {
        let stored = read_file(&self.backend.path(&format!("upload/{name}")));
        assert_eq!(sha256(&stored), want, "{what}: stored upload/{name}");
    }

    async fn scrape(&self) -> String {
        scrape(&self.proxy).await
    }

    async fn shutdown(self) {
        tokio::time::timeout(Duration::from_secs(40), self.proxy.shutdown())
            .await
            .expect("proxy shutdown in time");
    }
}

fn assert_run(run: &Run, what: &str) {
    assert!(run.success(), "{what} failed:\n{}", run.report());
}

/// curl options pinning TLS `version` ("1.2" or "1.3").
fn curl_version(version: &str) -> Vec<&'static str> {
    match version {
        "1.2" => vec!["--tlsv1.2", "--tls-max", "1.2"],
        _ => vec!["--tlsv1.3"],
    }
}

/// curl's `-v` trace shows the negotiated version and, for explicit FTPS, PROT P.
fn assert_curl_trace(run: &Run, version: &str, explicit: bool, what: &str) {
    let trace = run.stderr();
    assert!(
        trace.contains(&format!("SSL connection using TLSv{version}")),
        "{what}: no TLSv{version} connection in curl's trace:\n{}",
        run.report()
    );
    if explicit {
        assert!(
            trace.contains("< 234"),
            "{what}: no 234 to AUTH:\n{}",
            run.report()
        );
    }
    assert!(
        trace.contains("> PROT P") && trace.contains("> PBSZ 0"),
        "{what}: curl sent no PBSZ 0 / PROT P:\n{}",
        run.report()
    );
}

/// LIST, a multi-MiB download and an upload with curl, explicit (`--ssl-reqd ftp://`) or
/// implicit (`ftps://`), on TLS 1.2 and 1.3.
async fn curl_list_get_put(f: &Fixture, curl: &Path, implicit: bool) {
    let kind = if implicit { "implicit" } else { "explicit" };
    for version in VERSIONS {
        let url = |path: &str| {
            if implicit {
                f.implicit_url(path)
            } else {
                f.explicit_url(path)
            }
        };
        let mut base = curl_version(version);
        if !implicit {
            base.push("--ssl-reqd");
        }
        let what = format!("curl {kind} FTPS, TLS {version}");

        let root = url("");
        let list = f.curl(curl, &[&base[..], &["-v", &root]].concat()).await;
        assert_run(&list, &format!("{what}: LIST"));
        assert!(
            list.stdout().contains("big.bin"),
            "{what}: LIST lacks big.bin:\n{}",
            list.report()
        );
        assert_curl_trace(&list, version, !implicit, &format!("{what}: LIST"));

        let out = f.scratch(&format!("curl-{kind}-{version}.bin"));
        let big = url("big.bin");
        let get = f
            .curl(curl, &[&base[..], &["-v", &big, "-o", utf8(&out)]].concat())
            .await;
        assert_run(&get, &format!("{what}: RETR"));
        assert_curl_trace(&get, version, !implicit, &format!("{what}: RETR"));
        assert_eq!(
            sha256(&read_file(&out)),
            f.big,
            "{what}: downloaded big.bin"
        );

        let name = format!("curl-{kind}-{version}.bin");
        let (local, digest) = local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 5);
        let target = url(&format!("upload/{name}"));
        let put = f
            .curl(
                curl,
                &[&base[..], &["-v", "-T", utf8(&local), &target]].concat(),
            )
            .await;
        assert_run(&put, &format!("{what}: STOR"));
        assert_curl_trace(&put, version, !implicit, &format!("{what}: STOR"));
        f.assert_uploaded(&name, &digest, &what);
    }
    let scrape = f.scrape().await;
    assert!(
        handshakes(&scrape, "client", "ok") >= 12.0,
        "3 sessions x 2 versions x (control + data) handshakes:\n{}",
        lines_with(&scrape, "tls")
    );
    assert_eq!(
        handshakes(&scrape, "client", "error"),
        0.0,
        "{}",
        lines_with(&scrape, "tls")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_explicit_ftps_lists_downloads_uploads() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    curl_list_get_put(&f, &curl, false).await;
    f.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_implicit_ftps_lists_downloads_uploads() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    curl_list_get_put(&f, &curl, true).await;
    f.shutdown().await;
}

/// An lftp run against the proxy as alice: explicit FTPS (`ftp:ssl-force`,
/// `ftp:ssl-protect-data`) or implicit (`ftps://`), verifying the certificate against the
/// test CA, optionally pinned to one TLS version (a GnuTLS priority string), then `commands`.
async fn lftp(
    f: &Fixture,
    lftp: &Path,
    implicit: bool,
    version: Option<&str>,
    commands: &str,
) -> Run {
    let priority = match version {
        Some("1.2") => "set ssl:priority NORMAL:-VERS-ALL:+VERS-TLS1.2; ",
        Some(_) => "set ssl:priority NORMAL:-VERS-ALL:+VERS-TLS1.3; ",
        None => "",
    };
    let script = format!(
        "debug 5; set cmd:fail-exit yes; set net:max-retries 1; set net:timeout 10; \
         set net:reconnect-interval-base 1; set ftp:passive-mode on; set xfer:clobber on; \
         set ftp:ssl-force true; set ftp:ssl-protect-data true; set ftp:ssl-protect-list true; \
         set ssl:ca-file {ca}; set ssl:verify-certificate yes; set ssl:check-hostname yes; \
         {priority}{commands}; bye",
        ca = utf8(&f.pki.ca),
    );
    let target = if implicit {
        format!("ftps://127.0.0.1:{}", f.implicit_addr().port())
    } else {
        format!("ftp://127.0.0.1:{}", f.control_port())
    };
    let args: Vec<String> = vec![
        "-e".into(),
        script,
        "-u".into(),
        format!("{USER},{PASSWORD}"),
        target,
    ];
    run(lftp, &args, PROGRAM_TIMEOUT).await
}

/// lftp with `ftp:ssl-force` and `ftp:ssl-protect-data` (explicit), and with `ftps://`
/// (implicit): ls, get, put, verifying the certificate against the test CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lftp_ftps_lists_gets_puts() {
    let Some(lftp_bin) = require_program("lftp") else {
        return;
    };
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    for implicit in [false, true] {
        let kind = if implicit { "implicit" } else { "explicit" };
        let what = format!("lftp {kind} FTPS");
        let out = f.scratch(&format!("lftp-{kind}.bin"));
        let name = format!("lftp-{kind}.bin");
        let (local, digest) = local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 6);
        let commands = format!(
            "ls; get big.bin -o {out}; put {local} -o upload/{name}",
            out = utf8(&out),
            local = utf8(&local),
        );
        let run = lftp(&f, &lftp_bin, implicit, None, &commands).await;
        assert_run(&run, &what);
        assert!(
            run.stdout().contains("big.bin"),
            "{what}: listing lacks big.bin:\n{}",
            run.report()
        );
        if !implicit {
            assert!(
                run.stderr().contains("---> AUTH TLS") && run.stderr().contains("---> PROT P"),
                "{what}: no AUTH TLS / PROT P in lftp's debug output:\n{}",
                run.report()
            );
        }
        assert_eq!(sha256(&read_file(&out)), f.big, "{what}: get big.bin");
        f.assert_uploaded(&name, &digest, &what);
    }
    f.shutdown().await;
}

/// rclone (Go's crypto/tls; it offers the control connection's session on every data
/// connection), explicit (`explicit_tls`) and implicit (`tls`), trusting only the test CA:
/// upload, listing, download.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_ftps_puts_lists_gets() {
    let Some(rclone) = require_program("rclone") else {
        return;
    };
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    let obscured = run(&rclone, &["obscure".into(), PASSWORD.into()], RCLONE_WAIT).await;
    assert_run(&obscured, "rclone obscure");
    for (kind, port, option) in [
        ("explicit", f.control_port(), "explicit_tls"),
        ("implicit", f.implicit_addr().port(), "tls"),
    ] {
        let what = format!("rclone {kind} FTPS");
        let remote = format!(
            ":ftp,host=127.0.0.1,port={port},user={USER},pass={},{option}=true:",
            obscured.stdout().trim()
        );
        let name = format!("rclone-{kind}.bin");
        let (local, digest) = local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 8);
        let out = f.scratch(&format!("big-{name}"));
        let steps = [
            vec![
                "copyto".into(),
                utf8(&local).into(),
                format!("{remote}upload/{name}"),
            ],
            vec!["lsf".into(), remote.clone()],
            vec![
                "copyto".into(),
                format!("{remote}big.bin"),
                utf8(&out).into(),
            ],
        ];
        let mut listing = String::new();
        for step in steps {
            // rclone's FTP backend ignores `--ca-cert`; Go reads the roots from SSL_CERT_FILE.
            let mut args = vec![
                format!("SSL_CERT_FILE={}", utf8(&f.pki.ca)),
                utf8(&rclone).into(),
            ];
            args.extend(["--config", "/dev/null", "--retries", "1"].map(String::from));
            args.extend(["--low-level-retries", "1"].map(String::from));
            args.extend(step);
            let step_run = run(Path::new("env"), &args, RCLONE_WAIT).await;
            assert_run(&step_run, &what);
            listing.push_str(&step_run.stdout());
        }
        assert!(
            listing.contains("big.bin"),
            "{what}: listing lacks big.bin: {listing}"
        );
        f.assert_uploaded(&name, &digest, &what);
        assert_eq!(sha256(&read_file(&out)), f.big, "{what}: copyto big.bin");
    }
    f.shutdown().await;
}

/// How long one rclone step may take.
const RCLONE_WAIT: Duration = Duration::from_secs(60);

/// Python's `ftplib.FTP_TLS` with `prot_p()` (explicit) and an implicit subclass, on TLS 1.2
/// and 1.3: list, download, upload, download the upload again, list. ftplib does not resume
/// TLS sessions on data connections; with `--reuse` the script offers the control session on
/// every data connection (accepted or not: resumption is not required here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftplib_ftp_tls_prot_p_lists_gets_puts() {
    let Some(python) = require_program("python3") else {
        return;
    };
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    for mode in ["explicit", "implicit"] {
        for version in VERSIONS {
            for reuse in [false, true] {
                let name = format!("py-{mode}-{version}-{reuse}.bin");
                let what = format!("ftplib {mode} FTPS, TLS {version}, resume on data: {reuse}");
                let (local, digest) =
                    local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 7);
                let ops = vec![
                    "list:big.bin".to_string(),
                    format!("retr:big.bin:{}", f.big),
                    format!("stor:upload/{name}:{}", utf8(&local)),
                    format!("retr:upload/{name}:{digest}"),
                    format!("nlst:upload:{name}"),
                ];
                let extra: &[&str] = if reuse { &["--reuse"] } else { &[] };
                let run = f.ftplib(&python, mode, version, extra, &ops).await;
                assert_run(&run, &what);
                f.assert_uploaded(&name, &digest, &what);
            }
        }
    }
    f.shutdown().await;
}

/// FEAT before login names the TLS commands; AUTH SSL is an alias of AUTH TLS; PBSZ 0, PROT
/// P/C are accepted, PROT S/E get 536 and CCC 533; a login over TLS works, and in `optional`
/// mode a plaintext login still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_pbsz_prot_ccc_replies() {
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    let (mut c, greeting) = FtpClient::explicit(f.proxy.control_addr, &f.pki).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let feat = c.expect("FEAT", 211).await;
    for needed in ["AUTH TLS", "PBSZ", "PROT"] {
        assert!(
            feat.text.lines().any(|l| l.trim().starts_with(needed)),
            "pre-login FEAT lacks {needed}:\n{}",
            feat.text
        );
    }
    c.auth("AUTH SSL").await;
    c.expect("PBSZ 0", 200).await;
    c.expect("PROT S", 536).await;
    c.expect("PROT E", 536).await;
    c.expect("PROT C", 200).await;
    c.expect("PROT P", 200).await;
    c.expect("CCC", 533).await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("PWD", 257).await;
    c.expect("QUIT", 221).await;

    // Implicit: TLS from the first byte, then the same commands.
    let (mut c, greeting) = FtpClient::implicit(f.implicit_addr(), &f.pki).await;
    assert_eq!(greeting.code, 220, "{greeting:?}");
    c.expect("PBSZ 0", 200).await;
    c.expect("PROT P", 200).await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("QUIT", 221).await;

    // Optional: a plaintext client still logs in.
    let mut plain = FtpClient::login(loopback(1), f.proxy.control_addr).await;
    assert_eq!(plain.cmd("QUIT").await.code, 221);
    let scrape = f.scrape().await;
    assert!(
        handshakes(&scrape, "client", "ok") >= 2.0,
        "{}",
        lines_with(&scrape, "tls")
    );
    f.shutdown().await;
}

/// Without `[tls]`, FEAT does not offer AUTH TLS and AUTH TLS is refused (not a 234 that
/// leads nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tls_auth_is_refused_and_not_advertised() {
    init_test_logging();
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut c = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let feat = c.cmd("FEAT").await;
    assert_eq!(feat.code, 211, "{feat:?}");
    assert!(!feat.text.contains("AUTH TLS"), "{}", feat.text);
    let auth = c.cmd("AUTH TLS").await;
    assert!(
        (500..600).contains(&auth.code),
        "AUTH TLS without TLS configured: {auth:?}"
    );
    assert_eq!(c.cmd("NOOP").await.code, 200, "the session goes on");
    proxy.shutdown().await;
}

/// `tls.mode = required`: a plaintext USER (and PASS) gets 530, a transfer without PROT P gets
/// 521 (raw client and curl's `--ftp-ssl-control`), both counted; with TLS everything works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_mode_refuses_plaintext_login_and_clear_data() {
    let curl = require_program("curl");
    let f = Fixture::start(TlsMode::Required, |_| {}).await;

    let mut plain = FtpClient::connect(loopback(1), f.proxy.control_addr).await;
    let feat = plain.cmd("FEAT").await;
    assert!(feat.text.contains("AUTH TLS"), "{feat:?}");
    let user = plain.cmd(&format!("USER {USER}")).await;
    assert_eq!(
        user.code, 530,
        "plaintext USER under tls.mode = required: {user:?}"
    );
    let pass = plain.cmd(&format!("PASS {PASSWORD}")).await;
    assert_eq!(
        pass.code, 530,
        "plaintext PASS under tls.mode = required: {pass:?}"
    );
    let list = plain.cmd("LIST").await;
    assert!(list.code >= 500, "not logged in: {list:?}");
    assert_eq!(plain.cmd("QUIT").await.code, 221);

    // Logged in over TLS, but PROT C: the transfer is refused with 521, the session goes on.
    let (mut c, _) = FtpClient::explicit(f.proxy.control_addr, &f.pki).await;
    c.auth("AUTH TLS").await;
    c.expect("PBSZ 0", 200).await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("PROT C", 200).await;
    c.expect("TYPE I", 200).await;
    c.expect("PASV", 227).await;
    let refused = c.cmd("RETR big.bin").await;
    assert_eq!(
        refused.code,
        521,
        "clear-text RETR under tls.mode = required:\n{}",
        c.transcript.join("\n")
    );
    c.expect("NOOP", 200).await;
    c.expect("QUIT", 221).await;

    let scrape = f.scrape().await;
    assert!(
        plaintext_refused(&scrape, "login") >= 1.0,
        "{}",
        lines_with(&scrape, "plaintext")
    );
    assert!(
        plaintext_refused(&scrape, "data") >= 1.0,
        "{}",
        lines_with(&scrape, "plaintext")
    );
    // The refused transfer's reservation is released with the session.
    let mut reservations = 1.0;
    for _ in 0..50 {
        reservations = metric_value(&f.scrape().await, "ftpfront_passive_reservations_active");
        if reservations == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reservations, 0.0, "a port reservation leaked");

    if let Some(curl) = curl {
        // A real client: TLS on control only (`--ftp-ssl-control`: PROT C for data).
        let root = f.explicit_url("");
        let run = f.curl(&curl, &["-v", "--ftp-ssl-control", &root]).await;
        assert!(!run.success(), "clear-text LIST worked:\n{}", run.report());
        assert!(
            run.stderr().lines().any(|l| l.starts_with("< 521")),
            "curl --ftp-ssl-control did not get 521:\n{}",
            run.report()
        );
        // And the same client with PROT P works.
        let run = f.curl(&curl, &["--ssl-reqd", &root]).await;
        assert_run(&run, "curl --ssl-reqd under tls.mode = required");
        assert!(run.stdout().contains("big.bin"), "{}", run.report());
        let scrape = f.scrape().await;
        assert!(
            plaintext_refused(&scrape, "data") >= 2.0,
            "{}",
            lines_with(&scrape, "plaintext")
        );
    }
    f.shutdown().await;
}

/// Garbage instead of a ClientHello on the implicit port, and after a 234 to AUTH TLS: the
/// connection is closed, `tls_handshakes_total{side="client",result="error"}` goes up, and
/// the proxy goes on serving the next client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_instead_of_client_hello_is_dropped_and_counted() {
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    let before = handshakes(&f.scrape().await, "client", "error");

    let closed = garbage_on_fresh_connection(
        f.implicit_addr(),
        &not_a_client_hello(),
        Duration::from_secs(20),
    )
    .await;
    assert!(
        closed,
        "the implicit listener kept a connection that sent garbage"
    );

    let (mut c, _) = FtpClient::explicit(f.proxy.control_addr, &f.pki).await;
    c.expect("AUTH TLS", 234).await;
    // The server may close before it has read everything: a failed write is a close too.
    let closed = match c.send_raw(&not_a_client_hello()).await {
        Ok(()) => c.closed_within(Duration::from_secs(20)).await,
        Err(_) => true,
    };
    assert!(
        closed,
        "the control connection survived garbage after AUTH TLS"
    );

    // A TLS record header that announces an absurd length, then silence.
    let closed = garbage_on_fresh_connection(
        f.implicit_addr(),
        &[0x16, 0x03, 0x01, 0xff, 0xff, 0x01],
        Duration::from_secs(30),
    )
    .await;
    assert!(
        closed,
        "a stalled, oversized ClientHello kept the connection"
    );

    let mut after = before;
    for _ in 0..50 {
        after = handshakes(&f.scrape().await, "client", "error");
        if after >= before + 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        after >= before + 3.0,
        "tls_handshakes_total{{side=\"client\",result=\"error\"}} went from {before} to {after}"
    );

    // The proxy still serves the next clients, explicit and implicit.
    let (mut c, _) = FtpClient::explicit(f.proxy.control_addr, &f.pki).await;
    c.auth("AUTH TLS").await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("QUIT", 221).await;
    let (mut c, _) = FtpClient::implicit(f.implicit_addr(), &f.pki).await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("QUIT", 221).await;

    let mut active = 1.0;
    for _ in 0..50 {
        active = metric_value(&f.scrape().await, "ftpfront_sessions_active");
        if active == 0.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        active, 0.0,
        "sessions left behind by the garbage connections"
    );
    f.shutdown().await;
}

/// `tls.require_data_session_reuse = true`: curl and lftp (which resume) do several transfers
/// in one session on TLS 1.2 and 1.3; so does ftplib when it resumes the control connection's
/// session on every data connection (as lftp and FileZilla do: the same session each time,
/// which TLS 1.3 servers with single-use tickets break after the first transfer); plain
/// ftplib (no resumption) gets 522 and its session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_session_reuse_works_with_resuming_clients() {
    let curl = require_program("curl");
    let lftp_bin = require_program("lftp");
    let python = require_program("python3");
    let f = Fixture::start(TlsMode::Optional, |c| {
        c.tls.require_data_session_reuse = true
    })
    .await;

    if let Some(lftp_bin) = &lftp_bin {
        for version in VERSIONS {
            let what = format!("lftp, TLS {version}, data sessions must resume");
            let name = format!("reuse-lftp-{version}.bin");
            let (local, digest) = local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 9);
            let out1 = f.scratch(&format!("reuse-lftp-{version}-1.bin"));
            let out2 = f.scratch(&format!("reuse-lftp-{version}-2.bin"));
            let commands = format!(
                "ls; get big.bin -o {out1}; put {local} -o upload/{name}; get big.bin -o {out2}; \
                 cache flush; ls upload",
                out1 = utf8(&out1),
                out2 = utf8(&out2),
                local = utf8(&local),
            );
            let run = lftp(&f, lftp_bin, false, Some(version), &commands).await;
            assert_run(&run, &what);
            assert!(
                !run.stderr().contains("522"),
                "{what}: a data connection was refused:\n{}",
                run.report()
            );
            assert_eq!(sha256(&read_file(&out1)), f.big, "{what}: first get");
            assert_eq!(sha256(&read_file(&out2)), f.big, "{what}: second get");
            f.assert_uploaded(&name, &digest, &what);
        }
    }

    if let Some(curl) = &curl {
        for version in VERSIONS {
            let what = format!("curl, TLS {version}, data sessions must resume");
            let outs: Vec<PathBuf> = (0..3)
                .map(|i| f.scratch(&format!("reuse-{version}-{i}.bin")))
                .collect();
            let root = f.explicit_url("");
            let big = f.explicit_url("big.bin");
            let list_out = f.scratch(&format!("reuse-{version}.list"));
            let mut args = curl_version(version);
            args.extend(["--ssl-reqd", "-v", &root, "-o", utf8(&list_out)]);
            for out in &outs {
                args.extend([big.as_str(), "-o", utf8(out)]);
            }
            let run = f.curl(curl, &args).await;
            assert_run(&run, &what);
            assert!(
                run.stderr().matches("Re-using existing connection").count() >= 3,
                "{what}: curl did not keep one session:\n{}",
                run.report()
            );
            let listing = String::from_utf8_lossy(&read_file(&list_out)).into_owned();
            assert!(listing.contains("big.bin"), "{what}: {listing}");
            for out in &outs {
                assert_eq!(sha256(&read_file(out)), f.big, "{what}: {}", out.display());
            }
            let name = format!("reuse-{version}.bin");
            let (local, digest) = local_file(f.dir.path(), &format!("src-{name}"), UPLOAD_LEN, 8);
            let target = f.explicit_url(&format!("upload/{name}"));
            let mut args = curl_version(version);
            args.extend(["--ssl-reqd", "-v", "-T", utf8(&local), &target]);
            let put = f.curl(curl, &args).await;
            assert_run(&put, &format!("{what}: upload"));
            f.assert_uploaded(&name, &digest, &what);
        }
    }

    if let Some(python) = &python {
        for version in VERSIONS {
            let what = format!("ftplib resuming, TLS {version}");
            let ops = vec![
                "list:big.bin".to_string(),
                format!("retr:big.bin:{}", f.big),
                "list:big.bin".to_string(),
                format!("retr:big.bin:{}", f.big),
            ];
            let run = f
                .ftplib(python, "explicit", version, &["--require-reuse"], &ops)
                .await;
            assert_run(&run, &what);

            let what = format!("ftplib not resuming, TLS {version}");
            let ops = vec![
                "fail:522:LIST".to_string(),
                "cmd:200:NOOP".to_string(),
                format!("fail:522:RETR:big.bin"),
                "cmd:257:PWD".to_string(),
            ];
            let run = f.ftplib(python, "explicit", version, &[], &ops).await;
            assert_run(&run, &what);
        }
    }
    f.shutdown().await;
}

/// An explicit FTPS session as alice, `PROT P`, binary type.
async fn logged_in_under_prot_p(f: &Fixture) -> FtpClient {
    let (mut c, _) = FtpClient::explicit(f.proxy.control_addr, &f.pki).await;
    c.auth("AUTH TLS").await;
    c.expect(&format!("USER {USER}"), 331).await;
    c.expect(&format!("PASS {PASSWORD}"), 230).await;
    c.expect("PBSZ 0", 200).await;
    c.expect("PROT P", 200).await;
    c.expect("TYPE I", 200).await;
    c
}

/// The data connection's TLS handshake, done by a client that begins it before it sends
/// the transfer command (curl 7.88, which reads no control reply until the server answers
/// its ClientHello): the handshake must finish with nothing else sent. The same client
/// config as the control connection's, so the data connection resumes its session.
async fn handshake_before_the_command(
    f: &Fixture,
    data_addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(data_addr)
        .await
        .expect("data connect");
    let connector = tokio_rustls::TlsConnector::from(f.pki.client_config());
    let name = tokio_rustls::rustls::pki_types::ServerName::IpAddress(
        std::net::Ipv4Addr::LOCALHOST.into(),
    );
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("the data handshake finishes before the transfer command is sent")
        .expect("data TLS handshake")
}

/// PASV, the data handshake before RETR (curl 7.88's order), then `big.bin`, checked; the
/// secured data connection (for its tickets).
async fn early_download(
    f: &Fixture,
    c: &mut FtpClient,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let data_addr = c.pasv().await.expect("227");
    let mut data = handshake_before_the_command(f, data_addr).await;
    c.expect("RETR big.bin", 150).await;
    let mut bytes = Vec::new();
    data.read_to_end(&mut bytes).await.expect("download");
    assert_eq!(c.reply().await.code, 226);
    assert_eq!(sha256(&bytes), f.big, "the download's bytes");
    data
}

/// curl 7.88 (Debian 12) opens the data connection after EPSV, sends its ClientHello and
/// then waits for the answer on that socket alone, reading the replies to TYPE and SIZE
/// only when its timers fire (200 ms, then 1 s), so a server that answers the ClientHello
/// only after RETR costs each FTPS transfer up to 1.4 s. ftpfront answers on arrival; a
/// download then issues TLS 1.3 tickets for the next data connection and an upload issues
/// none (an uploading client never reads them: a reset at its close).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_before_the_transfer_command_is_answered_on_arrival() {
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    let mut c = logged_in_under_prot_p(&f).await;

    let data = early_download(&f, &mut c).await;
    assert!(
        data.get_ref().1.tls13_tickets_received() > 0,
        "a download's data connection brings tickets for the next one"
    );

    let data_addr = c.pasv().await.expect("227");
    let mut data = handshake_before_the_command(&f, data_addr).await;
    c.expect("STOR upload/early.bin", 150).await;
    let upload: Vec<u8> = (0..UPLOAD_LEN).map(|i| (i % 253) as u8).collect();
    data.write_all(&upload).await.expect("upload");
    data.shutdown().await.expect("close_notify");
    let mut rest = Vec::new();
    let _ = data.read_to_end(&mut rest).await;
    assert_eq!(c.reply().await.code, 226);
    f.assert_uploaded(
        "early.bin",
        &sha256(&upload),
        "upload after an early handshake",
    );
    assert_eq!(
        data.get_ref().1.tls13_tickets_received(),
        0,
        "an upload's data connection issues no tickets"
    );
    c.expect("QUIT", 221).await;
    f.shutdown().await;
}

/// PROT applies to the transfer, not to the PASV before it: a port announced under PROT P
/// (its handshake waiting for the client's first byte) still carries plain data when the
/// client says PROT C before the transfer, both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prot_c_between_pasv_and_the_transfer_gets_plain_data() {
    let f = Fixture::start(TlsMode::Optional, |_| {}).await;
    let mut c = logged_in_under_prot_p(&f).await;

    let data_addr = c.pasv().await.expect("227");
    c.expect("PROT C", 200).await;
    let (bytes, last) = c.retr("big.bin", data_addr).await;
    assert_eq!(last.code, 226, "{last:?}");
    assert_eq!(sha256(&bytes), f.big, "a plain download after PROT C");

    c.expect("PROT P", 200).await;
    let data_addr = c.pasv().await.expect("227");
    c.expect("PROT C", 200).await;
    let upload: Vec<u8> = (0..UPLOAD_LEN).map(|i| (i % 241) as u8).collect();
    let last = c.stor("upload/plain-after-p.bin", data_addr, &upload).await;
    assert_eq!(last.code, 226, "{last:?}");
    f.assert_uploaded(
        "plain-after-p.bin",
        &sha256(&upload),
        "a plain upload after PROT C",
    );

    // An empty upload: the client closes its data connection right after the 150.
    c.expect("PROT P", 200).await;
    let data_addr = c.pasv().await.expect("227");
    c.expect("PROT C", 200).await;
    let last = c.stor("upload/empty-after-p.bin", data_addr, &[]).await;
    assert_eq!(last.code, 226, "{last:?}");
    f.assert_uploaded(
        "empty-after-p.bin",
        &sha256(&[]),
        "an empty upload after PROT C",
    );
    c.expect("QUIT", 221).await;
    f.shutdown().await;
}

/// A PASV under PROT P (its handshake task holding the reservation) replaced by another:
/// on a one-port range the second must get the same port at once, as without TLS
/// (`tests/proxy.rs repeated_pasv_replaces_the_reservation`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pasv_under_prot_p_reuses_a_one_port_range() {
    let f = Fixture::start(TlsMode::Optional, |c| {
        c.passive.ports.end = c.passive.ports.start
    })
    .await;
    let mut c = logged_in_under_prot_p(&f).await;
    for attempt in 1..=5 {
        let reply = c.cmd("PASV").await;
        assert_eq!(
            reply.code, 227,
            "PASV {attempt} on a one-port range: {reply:?}"
        );
    }
    early_download(&f, &mut c).await;
    c.expect("QUIT", 221).await;
    f.shutdown().await;
}
