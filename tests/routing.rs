//! Routing by user name, glob pattern, HOST and TLS server name (SNI) with real servers
//! behind ftpfront (vsftpd, proftpd and libunftp, each serving a `marker.txt` naming it),
//! driven by real clients: raw FTP, Python's ftplib (HOST before login), curl and lftp
//! (explicit and implicit FTPS with a server name). Every route is checked by the marker
//! bytes downloaded and by `ftpfront_login_routes_total{step}`.
//! Needs vsftpd, proftpd, curl, lftp and python3; skips without them unless
//! FTP_TESTS_REQUIRE_EXTERNAL=1. (lftp sends HOST by itself when FEAT lists it.)

mod common;

use std::path::Path;
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::members::*;
use common::metrics::*;
use common::servers::ServerKind;
use common::tls::*;
use ftpfront::config::{Config, TlsMode};
use ftpfront::server::RunningProxy;

const PROGRAM_TIMEOUT: Duration = Duration::from_secs(60);
/// libunftp's own users besides anonymous.
const LIBUNFTP_USERS: [(&str, &str); 2] = [("alice", "secret"), ("partner-1", "secret")];

/// The three members, and the `[routing]` under test: exact `alice` before the pattern
/// `a*`; `partner-*` before `p*` in the file (sorted, `p*` would come first); hosts.
const ROUTING: &str = r#"
[routing]
default = "vsftpd"
hosts = { "ftp.example.test" = "vsftpd", "localhost" = "libunftp", "*.partners.test" = "libunftp" }

[routing.users]
alice = "libunftp"
"partner-*" = "libunftp"
"p*" = "proftpd"
"a*" = "proftpd"
"#;

struct Site {
    python: std::path::PathBuf,
    members: Vec<Member>,
    proxy: RunningProxy,
    pki: TestPki,
}

async fn members() -> Option<Vec<Member>> {
    let vsftpd = Member::program(ServerKind::Vsftpd).await?;
    let proftpd = Member::program(ServerKind::Proftpd).await?;
    let libunftp = Member::libunftp_for(&LIBUNFTP_USERS).await;
    Some(vec![vsftpd, proftpd, libunftp])
}

/// The members behind a proxy with `routing` and client TLS (optional, implicit listener).
fn config(members: &[Member], routing: &str, pki: &TestPki) -> Config {
    let ports = free_port_block(8);
    let mut text = format!(
        "[listen]\ncontrol = \"127.0.0.1:0\"\n[passive]\nports = \"{ports}-{}\"\npublic_address = \"127.0.0.1\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n[limits]\ndata_accept_timeout = \"5s\"\n{routing}\n",
        ports + 7
    );
    for member in members {
        text.push_str(&format!(
            "\n[[backends]]\nname = \"{}\"\naddress = \"{}\"\nconnect_timeout = \"3s\"\n",
            member.name, member.addr
        ));
    }
    let mut config =
        Config::from_toml_str(&text).unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
    enable_client_tls(&mut config, pki, TlsMode::Optional);
    config
}

impl Site {
    async fn start(routing: &str) -> Option<Site> {
        init_test_logging();
        let python = require_program("python3")?;
        let members = members().await?;
        let pki = TestPki::generate();
        let proxy = start_proxy(config(&members, routing, &pki)).await;
        Some(Site {
            python,
            members,
            proxy,
            pki,
        })
    }

    fn implicit_port(&self) -> u16 {
        self.proxy.implicit_addr.expect("implicit listener").port()
    }

    async fn routes(&self, step: &str) -> f64 {
        let text = scrape(&self.proxy).await;
        metric(&text, "ftpfront_login_routes_total", &[("step", step)])
    }

    /// A plain session as `user` (after `HOST host` if given): the marker it reads.
    async fn marker_of(&self, host: Option<&str>, user: &str, password: &str) -> String {
        let mut client = FtpClient::connect(loopback(1), self.proxy.control_addr).await;
        if let Some(host) = host {
            client.expect(&format!("HOST {host}"), 220).await;
        }
        let mut client = login_on(client, user, password).await;
        let name = marker(&mut client).await;
        client.expect("QUIT", 221).await;
        name
    }

    /// Python's ftplib: `--pre` lines before login, then the marker must be `want`'s.
    async fn ftplib(&self, mode: &str, host: &str, pre: &[&str], want: &str) {
        let port = match mode {
            "implicit" => self.implicit_port(),
            _ => self.proxy.control_addr.port(),
        };
        let mut args = ftp_client_ops();
        for (flag, value) in [
            ("--mode", mode),
            ("--host", host),
            ("--port", &port.to_string()),
            ("--ca", utf8(&self.pki.ca)),
            ("--user", LOGIN.0),
            ("--password", LOGIN.1),
        ] {
            args.extend([flag.to_string(), value.to_string()]);
        }
        for line in pre {
            args.extend(["--pre".to_string(), line.to_string()]);
        }
        args.push(format!("retr:marker.txt:{}", sha256(want.as_bytes())));
        let run = run(&self.python, &args, PROGRAM_TIMEOUT).await;
        assert!(run.success(), "ftplib, want {want}:\n{}", run.report());
    }
}

/// lftp's download of marker.txt from `localhost` (FEAT, AUTH TLS when `tls`, HOST
/// localhost, USER anonymous): the bytes it got.
async fn lftp_marker(lftp: &Path, site: &Site, tls: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("marker.txt");
    let script = format!(
        "set ssl:ca-file {}; set ftp:ssl-allow {tls}; set ftp:ssl-force {tls}; set net:max-retries 1; get marker.txt -o {}; bye",
        utf8(&site.pki.ca),
        utf8(&out)
    );
    let port = site.proxy.control_addr.port().to_string();
    let args = [
        "-u",
        "anonymous,guest@",
        "-p",
        &port,
        "-e",
        &script,
        "localhost",
    ];
    let args: Vec<String> = args.map(String::from).to_vec();
    let run = run(lftp, &args, PROGRAM_TIMEOUT).await;
    assert!(run.success(), "lftp:\n{}", run.report());
    String::from_utf8(read_file(&out)).expect("marker text")
}

/// curl's download of `url`'s marker.txt (extra `args` first): the bytes it got.
async fn curl_marker(curl: &Path, pki: &TestPki, args: &[&str], url: &str) -> String {
    let mut all: Vec<String> = ["-sS", "--max-time", "30", "--cacert", utf8(&pki.ca)]
        .iter()
        .chain(args)
        .map(|s| s.to_string())
        .collect();
    all.push(url.to_string());
    let run = run(curl, &all, PROGRAM_TIMEOUT).await;
    assert!(run.success(), "curl {url}:\n{}", run.report());
    run.stdout()
}

/// Exact names win over patterns, patterns are asked in the file's order, the rest goes
/// to the default; with rules and no default, a user no rule names gets 530 (no_route).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_exact_then_patterns_in_file_order_then_the_default() {
    let Some(site) = Site::start(ROUTING).await else {
        return;
    };
    let cases = [
        (
            "alice",
            "secret",
            "libunftp",
            "exact alice, not the pattern a*",
        ),
        (
            "partner-1",
            "secret",
            "libunftp",
            "partner-* comes before p* in the file",
        ),
        (LOGIN.0, LOGIN.1, "proftpd", "anonymous by the pattern a*"),
        ("ftp", LOGIN.1, "vsftpd", "ftp by the default"),
    ];
    for (user, password, want, why) in cases {
        assert_eq!(site.marker_of(None, user, password).await, want, "{why}");
    }
    assert_eq!(site.routes("user").await, 1.0);
    assert_eq!(site.routes("pattern").await, 2.0);
    assert_eq!(site.routes("default").await, 1.0);
    site.proxy.shutdown().await;

    let no_default = ROUTING.replace("default = \"vsftpd\"\n", "");
    let pki = TestPki::generate();
    let proxy = start_proxy(config(&site.members, &no_default, &pki)).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let refused = client.cmd("USER ftp").await;
    assert_eq!(refused.code, 530, "{refused:?}");
    assert!(
        refused.text.contains("No backend serves this user"),
        "{refused:?}"
    );
    let client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let mut client = login_on(client, "alice", "secret").await;
    assert_eq!(marker(&mut client).await, "libunftp", "rules still apply");
    let text = scrape(&proxy).await;
    let failures = [("reason", "no_route")];
    assert_eq!(
        metric(&text, "ftpfront_login_routing_failures_total", &failures),
        1.0
    );
    proxy.shutdown().await;
}

/// HOST (RFC 7151) names a host of `routing.hosts` (case and a trailing dot aside; `*.`
/// covers one label) and decides before the user rules; an unknown host gets 504 and
/// routing goes on without it; with no host table HOST is accepted as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_before_users_and_unknown_hosts_get_504() {
    let Some(lftp) = require_program("lftp") else {
        return;
    };
    let Some(site) = Site::start(ROUTING).await else {
        return;
    };
    // lftp sends HOST when FEAT lists it, as ftpfront's does: localhost's target.
    assert_eq!(lftp_marker(&lftp, &site, false).await, "libunftp");
    site.ftplib(
        "plain",
        "127.0.0.1",
        &["220:HOST FTP.Example.TEST."],
        "vsftpd",
    )
    .await;
    site.ftplib(
        "plain",
        "127.0.0.1",
        &["220:HOST x.partners.test"],
        "libunftp",
    )
    .await;
    // Rejected, the host counts for nothing: anonymous goes by the pattern a*.
    site.ftplib("plain", "127.0.0.1", &["504:HOST nope.test"], "proftpd")
        .await;
    let host = Some("ftp.example.test");
    assert_eq!(site.marker_of(host, LOGIN.0, LOGIN.1).await, "vsftpd");
    assert_eq!(site.routes("host").await, 4.0);
    assert_eq!(site.routes("pattern").await, 1.0);
    let mut client = FtpClient::connect(loopback(1), site.proxy.control_addr).await;
    let deep = client.cmd("HOST a.b.partners.test").await;
    assert_eq!(deep.code, 504, "*. covers one label only: {deep:?}");
    assert!(deep.text.contains("\"a.b.partners.test\""), "{deep:?}");
    site.proxy.shutdown().await;

    let pki = TestPki::generate();
    let only_default = "[routing]\ndefault = \"vsftpd\"\n";
    let proxy = start_proxy(config(&site.members, only_default, &pki)).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    let accepted = client.cmd("HOST nope.test").await;
    assert_eq!(accepted.code, 220, "{accepted:?}");
    assert!(accepted.text.contains("Host accepted."), "{accepted:?}");
    let mut client = login_on(client, LOGIN.0, LOGIN.1).await;
    assert_eq!(
        marker(&mut client).await,
        "vsftpd",
        "the only route: default"
    );
    proxy.shutdown().await;
}

/// The TLS server name of explicit (AUTH TLS) and implicit FTPS clients routes like HOST;
/// HOST wins over it; a name no key matches falls through to the user rules.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_name_routes_explicit_and_implicit_clients() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let Some(lftp) = require_program("lftp") else {
        return;
    };
    let Some(site) = Site::start(ROUTING).await else {
        return;
    };
    let (control, implicit) = (site.proxy.control_addr.port(), site.implicit_port());
    let login = "anonymous:guest%40";
    // Explicit, SNI localhost (the certificate's name, verified): libunftp, not a*.
    let explicit = format!("ftp://{login}@localhost:{control}/marker.txt");
    let got = curl_marker(&curl, &site.pki, &["--ssl-reqd"], &explicit).await;
    assert_eq!(got, "libunftp", "curl, AUTH TLS, SNI localhost");
    // Implicit, a partner's name (the test certificate does not cover it: -k).
    let name = format!("x.partners.test:{implicit}:127.0.0.1:{implicit}");
    let url = format!("ftps://{login}@x.partners.test:{implicit}/marker.txt");
    let got = curl_marker(&curl, &site.pki, &["-k", "--connect-to", &name], &url).await;
    assert_eq!(got, "libunftp", "curl, implicit, SNI x.partners.test");
    // Two labels below the wildcard match nothing: anonymous goes by a*.
    let name = format!("a.b.partners.test:{implicit}:127.0.0.1:{implicit}");
    let url = format!("ftps://{login}@a.b.partners.test:{implicit}/marker.txt");
    let got = curl_marker(&curl, &site.pki, &["-k", "--connect-to", &name], &url).await;
    assert_eq!(
        got, "proftpd",
        "curl, implicit, unmatched SNI falls through"
    );
    assert_eq!(site.routes("sni").await, 2.0);

    // lftp sends HOST localhost (ftpfront's FEAT lists HOST), which decides first.
    assert_eq!(lftp_marker(&lftp, &site, true).await, "libunftp");

    // ftplib: SNI localhost (libunftp), but HOST (sent before AUTH TLS) names vsftpd's.
    site.ftplib(
        "explicit",
        "localhost",
        &["220:HOST ftp.example.test"],
        "vsftpd",
    )
    .await;
    site.ftplib("implicit", "localhost", &[], "libunftp").await;
    assert_eq!(site.routes("sni").await, 3.0);
    assert_eq!(site.routes("host").await, 2.0);
    site.proxy.shutdown().await;
}
