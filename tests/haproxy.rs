//! Scale-out behind a real load balancer: HAProxy (TCP mode, `send-proxy-v2`) balances the
//! control port over two ftpfront instances, and forwards each instance's own passive
//! sub-range to it alone. Also: ftpfront sending a PROXY header to a backend (HAProxy with
//! `accept-proxy` in front of the FTP server, logging the client address it learnt).
//!
//! Addresses (all loopback): HAProxy listens on 127.0.0.10 and connects from 127.0.0.9;
//! instance A on 127.0.0.11, instance B on 127.0.0.12; clients from 127.0.0.2 and .3, a
//! thief from .4, a direct (untrusted) peer from .5.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::process::wait_until_listening;
use common::tls::TestPki;
use ftpfront::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const LB: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10));
const LB_SOURCE: &str = "127.0.0.9";
const PORTS_PER_INSTANCE: u16 = 8;

/// HAProxy running a config in a temporary directory; killed on drop.
struct Haproxy {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    async fn start(program: &Path, config: &str, wait_for: SocketAddr) -> Haproxy {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).expect("write haproxy.cfg");
        let log = dir.path().join("haproxy.log");
        let check = std::process::Command::new(program)
            .args(["-c", "-f"])
            .arg(&path)
            .output()
            .expect("haproxy -c");
        assert!(
            check.status.success(),
            "haproxy rejects the config: {}\n{config}",
            String::from_utf8_lossy(&check.stderr)
        );
        let child = Command::new(program)
            .args(["-db", "-f"])
            .arg(&path)
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log")))
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("haproxy.err")).expect("err"),
            ))
            .kill_on_drop(true)
            .spawn()
            .expect("start haproxy");
        wait_until_listening(wait_for).await;
        Haproxy {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!("HAProxy's log:\n{}", self.log());
        }
    }
}

/// One ftpfront instance behind the balancer: its own address, control port and passive
/// sub-range, trusting PROXY headers from the balancer's source address only.
fn instance_config(
    backend: SocketAddr,
    pki: &TestPki,
    address: &str,
    [control, implicit]: [u16; 2],
    first_port: u16,
) -> Config {
    let last_port = first_port + PORTS_PER_INSTANCE - 1;
    let (cert, key) = (pki.server_cert.display(), pki.server_key.display());
    let text = format!(
        r#"
[listen]
control = "{address}:{control}"
implicit_tls = "{address}:{implicit}"
proxy_protocol = true
proxy_protocol_from = ["{LB_SOURCE}/32"]

[passive]
ports = "{first_port}-{last_port}"
bind = "{address}"
public_address = "{LB}"

[[backends]]
name = "main"
address = "{backend}"

[metrics]
listen = "127.0.0.1:0"

[limits]
data_accept_timeout = "10s"

[tls]
mode = "optional"
cert = "{cert}"
key = "{key}"
"#
    );
    Config::from_toml_str(&text).unwrap_or_else(|e| panic!("instance config: {e}\n{text}"))
}

struct Ports {
    lb_control: u16,
    lb_implicit: u16,
    /// Per instance: control and implicit FTPS ports.
    control: [[u16; 2]; 2],
    passive: [u16; 2],
}

fn balancer_config(ports: &Ports) -> String {
    // Control connections (plain or implicit FTPS) go to either instance.
    let control_section = |name: &str, port: u16, which: usize| {
        let (a, b) = (ports.control[0][which], ports.control[1][which]);
        format!(
            "frontend {name}\n    bind {LB}:{port}\n    default_backend {name}\n\
             backend {name}\n    balance roundrobin\n    source {LB_SOURCE}\n\
             \x20   server a 127.0.0.11:{a} send-proxy-v2\n    server b 127.0.0.12:{b} send-proxy-v2\n"
        )
    };
    let data_section = |name: &str, instance: &str, first: u16| {
        let last = first + PORTS_PER_INSTANCE - 1;
        // No port on the server line: HAProxy keeps the port the client connected to.
        format!(
            "frontend data_{name}\n    bind {LB}:{first}-{last}\n    default_backend data_{name}\n\
             backend data_{name}\n    source {LB_SOURCE}\n    server {name} {instance} send-proxy-v2\n"
        )
    };
    format!(
        "global\n    log stdout format raw local0 info\n\
         defaults\n    mode tcp\n    log global\n    option tcplog\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         {control}{implicit}{da}{db}",
        control = control_section("control", ports.lb_control, 0),
        implicit = control_section("implicit", ports.lb_implicit, 1),
        da = data_section("a", "127.0.0.11", ports.passive[0]),
        db = data_section("b", "127.0.0.12", ports.passive[1]),
    )
}

/// Where clients reach the balancer, and the CA that signed the instances' certificate.
struct Entry {
    control: SocketAddr,
    implicit: SocketAddr,
    ca: PathBuf,
}

impl Entry {
    /// Every fifth session uses explicit FTPS and every fifth implicit FTPS; the name
    /// `localhost` (in the certificate) is pinned to the balancer's address.
    fn curl_args(&self, index: usize) -> (String, Vec<String>) {
        let pin = |addr: SocketAddr| {
            let port = addr.port();
            vec![
                "--cacert".to_string(),
                self.ca.display().to_string(),
                "--connect-to".to_string(),
                format!("localhost:{port}:{}:{port}", addr.ip()),
            ]
        };
        match index % 5 {
            3 => {
                let mut args = pin(self.control);
                args.push("--ssl-reqd".to_string());
                let port = self.control.port();
                (format!("ftp://{USER}:{PASSWORD}@localhost:{port}"), args)
            }
            4 => {
                let port = self.implicit.port();
                let url = format!("ftps://{USER}:{PASSWORD}@localhost:{port}");
                (url, pin(self.implicit))
            }
            _ => (
                format!("ftp://{USER}:{PASSWORD}@{}", self.control),
                Vec::new(),
            ),
        }
    }
}

/// One curl session from `source` through the balancer: a download or an upload, plain
/// or FTPS, checked by checksum against the backend's files.
async fn curl_session(
    curl: &Path,
    source: &str,
    entry: &Entry,
    backend: &TestBackend,
    index: usize,
    work: &Path,
) {
    let (url, mut args) = entry.curl_args(index);
    args.extend(["--interface", source].map(String::from));
    let path_text = |path: &Path| path.to_str().expect("UTF-8 temp path").to_string();
    if index % 2 == 0 {
        let name = format!("down{index}.bin");
        let digest = backend.put_file(&name, 700_000 + index * 1000, index as u32);
        let out = work.join(&name);
        args.extend([format!("{url}/{name}"), "-o".to_string(), path_text(&out)]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_ok(
            &run_curl(curl, &args).await,
            &format!("curl download {index}"),
        );
        assert_eq!(sha256(&read_file(&out)), digest, "download {index}");
    } else {
        let name = format!("up{index}.bin");
        let bytes = sample_bytes(500_000 + index * 1000, 1000 + index as u32);
        let local = work.join(&name);
        std::fs::write(&local, &bytes).expect("write upload");
        args.extend([
            "-T".to_string(),
            path_text(&local),
            format!("{url}/upload/{name}"),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_ok(
            &run_curl(curl, &args).await,
            &format!("curl upload {index}"),
        );
        let stored = read_file(&backend.path(&format!("upload/{name}")));
        assert_eq!(sha256(&stored), sha256(&bytes), "upload {index}");
    }
}

fn sum_over(scrapes: &[String], series: &str) -> f64 {
    scrapes.iter().map(|s| metric_value(s, series)).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_behind_haproxy_share_the_load_and_refuse_strangers() {
    let (Some(haproxy), Some(curl)) = (require_program("haproxy"), require_program("curl")) else {
        return;
    };
    common::tls::init_test_logging();
    let backend = TestBackend::start().await;
    let pki = TestPki::generate();
    let block = free_port_block(2 * PORTS_PER_INSTANCE + 6);
    let ports = Ports {
        lb_control: block,
        lb_implicit: block + 1,
        control: [[block + 2, block + 3], [block + 4, block + 5]],
        passive: [block + 6, block + 6 + PORTS_PER_INSTANCE],
    };
    let mut instances = Vec::new();
    for (i, address) in ["127.0.0.11", "127.0.0.12"].into_iter().enumerate() {
        let config = instance_config(
            backend.server.addr,
            &pki,
            address,
            ports.control[i],
            ports.passive[i],
        );
        instances.push(start_proxy(config).await);
    }
    let lb = SocketAddr::new(LB, ports.lb_control);
    let entry = Entry {
        control: lb,
        implicit: SocketAddr::new(LB, ports.lb_implicit),
        ca: pki.ca.clone(),
    };
    let balancer = Haproxy::start(&haproxy, &balancer_config(&ports), lb).await;

    // 20 sessions from two client addresses, in two waves of ten at once; eight of them
    // FTPS (explicit and implicit), whose TLS data connections follow a PROXY header too.
    let work = tempfile::tempdir().expect("tempdir");
    for wave in 0..2 {
        let sessions = (0..10).map(|i| {
            let index = wave * 10 + i;
            let source = if (index / 2) % 2 == 0 {
                "127.0.0.2"
            } else {
                "127.0.0.3"
            };
            curl_session(&curl, source, &entry, &backend, index, work.path())
        });
        futures::future::join_all(sessions).await;
    }

    // A third address connecting to a port reserved for another client is refused, and
    // the owner's transfer on that port still works.
    backend.put_file("owned.bin", 300_000, 77);
    let mut owner = FtpClient::login(loopback(2), lb).await;
    let data_addr = owner.pasv().await.expect("227");
    assert_eq!(data_addr.ip(), LB, "227 names the balancer");
    let mut thief = connect_from(loopback(4), data_addr)
        .await
        .expect("thief connects to the balancer");
    let mut stolen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), thief.read_to_end(&mut stolen)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the thief got data: {read:?}"
    );
    let (bytes, done) = owner.retr("owned.bin", data_addr).await;
    assert_eq!(done.code, 226, "{done:?}");
    assert_eq!(bytes.len(), 300_000);
    owner.cmd("QUIT").await;

    // Bypassing the balancer: the instances refuse peers outside proxy_protocol_from.
    let mut direct = connect_from(
        loopback(5),
        SocketAddr::from(([127, 0, 0, 11], ports.control[0][0])),
    )
    .await
    .expect("direct connect");
    let mut refusal = String::new();
    let _ =
        tokio::time::timeout(Duration::from_secs(10), direct.read_to_string(&mut refusal)).await;
    assert!(refusal.starts_with("421 "), "direct peer got {refusal:?}");
    let direct_data = SocketAddr::from(([127, 0, 0, 12], ports.passive[1]));
    let mut direct = connect_from(loopback(5), direct_data)
        .await
        .expect("direct data connect");
    let _ = direct.write_all(b"data").await;
    let mut nothing = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), direct.read_to_end(&mut nothing)).await;

    tokio::time::sleep(Duration::from_millis(300)).await;
    let scrapes = [scrape(&instances[0]).await, scrape(&instances[1]).await];
    let log = balancer.log();
    for (name, text) in ["a", "b"].iter().zip(&scrapes) {
        let sessions = metric_value(text, "ftpfront_sessions_total{result=\"ok\"}");
        assert!(
            sessions >= 5.0,
            "instance {name} served {sessions} sessions:\n{text}\n{log}"
        );
    }
    // 20 curl sessions, the owner's, and the connection that waited for HAProxy to listen;
    // four of the curl sessions came in on the implicit FTPS listener.
    let total = |series: &str| sum_over(&scrapes, series);
    assert_eq!(total("ftpfront_sessions_total{result=\"ok\"}"), 22.0);
    let proxied = |listener: &str| {
        total(&format!(
            "ftpfront_proxy_protocol_total{{listener=\"{listener}\",result=\"ok\"}}"
        ))
    };
    assert_eq!(proxied("control"), 18.0);
    assert_eq!(proxied("implicit_tls"), 4.0);
    assert_eq!(
        total("ftpfront_tls_handshakes_total{result=\"ok\",side=\"client\"}"),
        16.0,
        "8 FTPS sessions: a control and a data handshake each"
    );
    assert_eq!(
        sum_over(
            &scrapes,
            "ftpfront_proxy_protocol_total{listener=\"passive\",result=\"ok\"}"
        ),
        22.0,
        "20 curl transfers, the owner's and the thief's connection"
    );
    assert_eq!(
        sum_over(
            &scrapes,
            "ftpfront_data_connections_rejected_total{reason=\"foreign_ip\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &scrapes[0],
            "ftpfront_proxy_protocol_total{listener=\"control\",result=\"untrusted_peer\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &scrapes[1],
            "ftpfront_proxy_protocol_total{listener=\"passive\",result=\"untrusted_peer\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &scrapes[1],
            "ftpfront_data_connections_rejected_total{reason=\"proxy_protocol\"}"
        ),
        1.0
    );
    assert_eq!(
        sum_over(&scrapes, "ftpfront_passive_port_exhausted_total"),
        0.0
    );
    drop(balancer);
    for proxy in instances {
        proxy.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_receives_the_client_address_in_a_proxy_header() {
    let Some(haproxy) = require_program("haproxy") else {
        return;
    };
    let backend = TestBackend::start().await;
    let digest = backend.put_file("file.bin", 200_000, 5);
    let front = free_port_block(1);
    let front_addr = SocketAddr::from(([127, 0, 0, 13], front));
    let config = format!(
        "global\n    log stdout format raw local0 info\n\
         defaults\n    mode tcp\n    log global\n    option logasap\n\
         \x20   log-format \"client=%ci backend_conn_from=%bi\"\n\
         \x20   timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend ftp\n    bind {front_addr} accept-proxy\n    default_backend ftp\n\
         backend ftp\n    server ftp {}\n",
        backend.server.addr
    );
    let balancer = Haproxy::start(&haproxy, &config, front_addr).await;
    for version in ["v1", "v2"] {
        let mut config = proxy_config(front_addr, 2);
        config.backends[0].proxy_protocol = match version {
            "v1" => ftpfront::config::BackendProxyProtocol::V1,
            _ => ftpfront::config::BackendProxyProtocol::V2,
        };
        // Data goes straight to the server's own 227 address, not through HAProxy.
        config.backends[0].use_control_address = false;
        let proxy = start_proxy(config).await;
        let mut client = FtpClient::login(loopback(7), proxy.control_addr).await;
        let data_addr = client.pasv().await.expect("227");
        let (bytes, done) = client.retr("file.bin", data_addr).await;
        assert_eq!(done.code, 226, "{version}: {done:?}");
        assert_eq!(sha256(&bytes), digest, "{version}");
        client.cmd("QUIT").await;
        proxy.shutdown().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let log = balancer.log();
    let from_client = log.matches("client=127.0.0.7 ").count();
    assert_eq!(
        from_client, 2,
        "HAProxy should log both sessions from 127.0.0.7:\n{log}"
    );
}
