//! The relay core end to end on loopback: a real FTP server (libunftp, in process) behind
//! ftpfront, driven by a real client library (suppaftp) and by a raw client that shows
//! every reply.

mod common;

use std::io::Cursor;
use std::net::SocketAddr;

use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use suppaftp::types::{FileType, Mode};
use suppaftp::FtpStream;

/// Runs a blocking suppaftp session against the proxy.
async fn with_ftp<T: Send + 'static>(
    proxy: SocketAddr,
    mode: Mode,
    body: impl FnOnce(&mut FtpStream) -> T + Send + 'static,
) -> T {
    tokio::task::spawn_blocking(move || {
        let mut ftp = FtpStream::connect(proxy).expect("connect");
        ftp.login(USER, PASSWORD).expect("login");
        ftp.set_mode(mode);
        ftp.transfer_type(FileType::Binary).expect("TYPE I");
        let out = body(&mut ftp);
        let _ = ftp.quit();
        out
    })
    .await
    .expect("client thread")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_library_lists_downloads_uploads_and_resumes() {
    let backend = TestBackend::start().await;
    let digest = backend.put_file("big.bin", 6 * 1024 * 1024 + 123, 7);
    let proxy = start_proxy(proxy_config(backend.server.addr, 4)).await;
    let addr = proxy.control_addr;

    for mode in [Mode::Passive, Mode::ExtendedPassive] {
        let (listing, names, mlsd, downloaded) = with_ftp(addr, mode, |ftp| {
            let listing = ftp.list(None).expect("LIST");
            let names = ftp.nlst(None).expect("NLST");
            let mlsd = ftp.mlsd(None).expect("MLSD");
            let downloaded = ftp.retr_as_buffer("big.bin").expect("RETR").into_inner();
            (listing, names, mlsd, downloaded)
        })
        .await;
        assert!(listing.iter().any(|l| l.contains("big.bin")), "{listing:?}");
        assert!(names.iter().any(|n| n.ends_with("hello.txt")), "{names:?}");
        assert!(mlsd.iter().any(|l| l.contains("big.bin")), "{mlsd:?}");
        assert_eq!(sha256(&downloaded), digest, "{mode:?} download intact");
    }

    let upload = sample_bytes(5 * 1024 * 1024 + 7, 99);
    let upload_digest = sha256(&upload);
    let tail = with_ftp(addr, Mode::Passive, move |ftp| {
        let mut reader = Cursor::new(upload);
        ftp.put_file("upload/up.bin", &mut reader).expect("STOR");
        ftp.resume_transfer(1_000_000).expect("REST");
        ftp.retr_as_buffer("big.bin")
            .expect("RETR after REST")
            .into_inner()
    })
    .await;
    assert_eq!(
        sha256(&read_file(&backend.path("upload/up.bin"))),
        upload_digest
    );
    let original = read_file(&backend.path("big.bin"));
    assert_eq!(tail, original[1_000_000..], "REST resumes at the offset");

    let scrape = scrape(&proxy).await;
    assert!(
        metric_value(
            &scrape,
            r#"ftpfront_transfers_total{backend="main",direction="download",result="ok"}"#
        ) >= 3.0,
        "{scrape}"
    );
    assert!(
        metric_value(
            &scrape,
            r#"ftpfront_transfer_bytes_total{backend="main",direction="upload"}"#
        ) >= 5.0 * 1024.0 * 1024.0
    );
    assert_eq!(
        metric_value(&scrape, "ftpfront_passive_reservations_active"),
        0.0
    );
    assert_eq!(metric_value(&scrape, "ftpfront_transfers_active"), 0.0);
    for side in ["client", "backend"] {
        let series = format!(r#"ftpfront_data_connections_total{{side="{side}"}}"#);
        assert!(metric_value(&scrape, &series) >= 8.0, "{series}: {scrape}");
    }
    assert!(
        metric_value(
            &scrape,
            r#"ftpfront_backend_login_duration_seconds_count{backend="main"}"#
        ) >= 3.0,
        "{scrape}"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_sessions_transfer_at_once() {
    let backend = TestBackend::start().await;
    let digest = backend.put_file("shared.bin", 2 * 1024 * 1024, 3);
    // Twenty pending reservations from one address need twenty ports (DESIGN.md).
    let proxy = start_proxy(proxy_config(backend.server.addr, 20)).await;
    let addr = proxy.control_addr;
    let mut clients = Vec::new();
    for i in 0..20u32 {
        clients.push(tokio::spawn(with_ftp(
            addr,
            Mode::ExtendedPassive,
            move |ftp| {
                let down = ftp.retr_as_buffer("shared.bin").expect("RETR").into_inner();
                let up = sample_bytes(256 * 1024, 1000 + i);
                ftp.put_file(format!("upload/c{i}.bin"), &mut Cursor::new(up.clone()))
                    .expect("STOR");
                (down, sha256(&up))
            },
        )));
    }
    for (i, client) in clients.into_iter().enumerate() {
        let (down, up_digest) = client.await.expect("client");
        assert_eq!(sha256(&down), digest, "client {i} download");
        let stored = read_file(&backend.path(&format!("upload/c{i}.bin")));
        assert_eq!(sha256(&stored), up_digest, "client {i} upload");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_and_counted() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(client.cmd("PASS wrong").await.code, 530);
    assert_eq!(client.cmd("LIST").await.code, 530, "still not logged in");
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"ftpfront_logins_total{backend="main",result="failed"}"#
        ),
        1.0,
        "{scrape}"
    );
    // A second USER starts over and can succeed.
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(client.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_down_gives_421() {
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = unused.local_addr().expect("addr");
    drop(unused);
    let proxy = start_proxy(proxy_config(dead, 2)).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    assert_eq!(
        client.cmd("FEAT").await.code,
        211,
        "pre-login commands work without a backend"
    );
    let reply = client.cmd("USER alice").await;
    assert_eq!(reply.code, 421, "{reply:?}");
    let scrape = scrape(&proxy).await;
    // The FEAT probe of the default backend's features, USER, and the health probe.
    assert!(
        metric_value(
            &scrape,
            r#"ftpfront_backend_connect_errors_total{backend="main",reason="connect_failed"}"#
        ) >= 2.0,
        "{scrape}"
    );
    assert_eq!(
        metric_value(&scrape, r#"ftpfront_backend_up{backend="main"}"#),
        0.0
    );
    assert!(
        wait_for_readyz(&proxy, 503).await,
        "not ready without a live backend"
    );
    assert!(http_get(&proxy, "/healthz")
        .await
        .starts_with("HTTP/1.1 200"));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_probe_marks_a_live_backend_up_and_ready() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    assert!(
        wait_for_readyz(&proxy, 200).await,
        "ready once the probe found the backend"
    );
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(&scrape, r#"ftpfront_backend_up{backend="main"}"#),
        1.0,
        "{scrape}"
    );
    // Series known at start exist before any traffic (no dead panels or alerts).
    for series in [
        r#"ftpfront_logins_total{backend="main",result="failed"} 0"#,
        r#"ftpfront_transfers_total{backend="main",direction="upload",result="error"} 0"#,
        r#"ftpfront_data_connections_rejected_total{reason="foreign_ip"} 0"#,
    ] {
        assert!(scrape.contains(series), "{series} missing:\n{scrape}");
    }
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_port_serves_two_client_addresses_at_once() {
    let backend = TestBackend::start().await;
    let first = backend.put_file("a.bin", 3 * 1024 * 1024, 11);
    let second = backend.put_file("b.bin", 3 * 1024 * 1024, 12);
    let proxy = start_proxy(proxy_config(backend.server.addr, 1)).await;
    let addr = proxy.control_addr;

    let mut a = FtpClient::login(loopback(1), addr).await;
    let mut b = FtpClient::login(loopback(2), addr).await;
    let data_a = a.pasv().await.expect("PASV a");
    let data_b = b.pasv().await.expect("PASV b");
    assert_eq!(data_a, data_b, "both addresses share the single port");
    assert_eq!(data_a.ip(), loopback(1), "227 names the public address");

    // A second pending reservation from the same address cannot share the port.
    let mut a2 = FtpClient::login(loopback(1), addr).await;
    let refused = a2.pasv().await.expect_err("same address, port busy");
    assert_eq!(refused.code, 425, "{refused:?}");

    // A third address connecting to the port gets nothing and is counted.
    let mut stray = connect_from(loopback(3), data_a)
        .await
        .expect("stray connects");
    let mut buf = Vec::new();
    let n = tokio::io::AsyncReadExt::read_to_end(&mut stray, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0);

    let (bytes_a, bytes_b) = tokio::join!(a.retr("a.bin", data_a), b.retr("b.bin", data_b));
    assert_eq!(bytes_a.1.code, 226);
    assert_eq!(bytes_b.1.code, 226);
    assert_eq!(sha256(&bytes_a.0), first);
    assert_eq!(sha256(&bytes_b.0), second);

    // Once the first reservation is used, the port is free again for its address.
    let again = a2.pasv().await.expect("free again");
    let (bytes, done) = a2.retr("a.bin", again).await;
    assert_eq!(done.code, 226);
    assert_eq!(sha256(&bytes), first);

    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"ftpfront_data_connections_rejected_total{reason="foreign_ip"}"#
        ),
        1.0,
        "{scrape}"
    );
    assert_eq!(
        metric_value(&scrape, "ftpfront_passive_port_exhausted_total"),
        1.0
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_multiplexing_a_second_address_gets_425() {
    let backend = TestBackend::start().await;
    let mut config = proxy_config(backend.server.addr, 1);
    config.passive.multiplex = false;
    let proxy = start_proxy(config).await;
    let mut a = FtpClient::login(loopback(1), proxy.control_addr).await;
    let mut b = FtpClient::login(loopback(2), proxy.control_addr).await;
    let data_a = a.pasv().await.expect("PASV a");
    assert_eq!(b.pasv().await.expect_err("port taken").code, 425);
    let (_, done) = a.retr("hello.txt", data_a).await;
    assert_eq!(done.code, 226);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_pasv_replaces_the_reservation() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 1)).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let _first = client.pasv().await.expect("PASV 1");
    let second = client.pasv().await.expect("PASV 2 on a one-port range");
    let (bytes, done) = client.retr("hello.txt", second).await;
    assert_eq!(done.code, 226);
    assert_eq!(bytes, b"hello through the proxy\n");
    proxy.shutdown().await;
}

/// An 8 MiB download through a fresh ftpfront, its 150 read, its data not yet: the
/// proxy, the client and its data connection.
async fn download_started(
    backend: &TestBackend,
) -> (
    ftpfront::server::RunningProxy,
    FtpClient,
    tokio::net::TcpStream,
) {
    backend.put_file("big.bin", 8 * 1024 * 1024, 9);
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let data_addr = client.pasv().await.expect("PASV");
    let data = connect_from(loopback(1), data_addr).await.expect("data");
    client.send("RETR big.bin").await;
    assert_eq!(client.reply().await.code, 150);
    (proxy, client, data)
}

/// Reads the whole 8 MiB download of [`download_started`], then the codes of `replies`.
async fn finish_download(
    client: &mut FtpClient,
    data: &mut tokio::net::TcpStream,
    replies: usize,
) -> Vec<u16> {
    let mut bytes = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(data, &mut bytes)
        .await
        .expect("the download");
    assert_eq!(bytes.len(), 8 * 1024 * 1024);
    let mut codes = Vec::new();
    for _ in 0..replies {
        codes.push(client.reply().await.code);
    }
    codes
}

/// Replies leave in the order of the commands they answer (RFC 959), whoever produces
/// them: during a download, a relayed PWD, ftpfront's own 500 for an overlong line and a
/// NOOP pipelined behind them are answered after the transfer, in that order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_during_a_download_keep_the_order_of_their_commands() {
    let backend = TestBackend::start().await;
    let (proxy, mut client, mut data) = download_started(&backend).await;
    let mut burst = b"PWD\r\n".to_vec();
    burst.extend(std::iter::repeat_n(b'x', 5000));
    burst.extend_from_slice(b"\r\nNOOP\r\n");
    client.send_bytes(&burst).await;
    let codes = finish_download(&mut client, &mut data, 4).await;
    assert_eq!(codes, [226, 257, 500, 200], "replies in command order");
    proxy.shutdown().await;
}

/// A client's keepalive NOOPs queued behind a command over a long download (here PWD and
/// 40 NOOPs in one write, more than the 32 replies ftpfront queues) must not cost the
/// session: ftpfront stops reading the client instead, and after the transfer's 226 every
/// command is answered in order, as vsftpd answers them. It used to close the session with
/// `421 Too many commands during a transfer` and no 226.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_keepalives_queued_during_a_download_wait_their_turn() {
    const NOOPS: usize = 40;
    let backend = TestBackend::start().await;
    let (proxy, mut client, mut data) = download_started(&backend).await;
    let mut burst = b"PWD\r\n".to_vec();
    burst.extend(b"NOOP\r\n".repeat(NOOPS));
    client.send_bytes(&burst).await;
    // The download holds still meanwhile: the commands are all in before it ends.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let codes = finish_download(&mut client, &mut data, NOOPS + 2).await;
    let mut expected = vec![226, 257];
    expected.extend([200; NOOPS]);
    assert_eq!(codes, expected, "every command answered, in order");
    assert_eq!(client.cmd("PWD").await.code, 257, "the session goes on");
    proxy.shutdown().await;
}

/// A download of `huge.bin` at `addr`, then ABOR while the client holds its data
/// connection without reading; with `close_data` the client closes it right after ABOR (as
/// lftp and curl do). Returns the codes of the two replies to ABOR, then PWD's.
async fn abor_mid_download(addr: SocketAddr, close_data: bool) -> Vec<u16> {
    let mut client = FtpClient::login(loopback(1), addr).await;
    let data_addr = client.pasv().await.expect("PASV");
    let mut data = Some(connect_from(loopback(1), data_addr).await.expect("data"));
    client.send("RETR huge.bin").await;
    assert_eq!(client.reply().await.code, 150);
    let mut buf = vec![0u8; 64 * 1024];
    if let Some(data) = data.as_mut() {
        let n = tokio::io::AsyncReadExt::read(data, &mut buf)
            .await
            .expect("some data");
        assert!(n > 0);
    }
    client.send("ABOR").await;
    if close_data {
        data = None;
    }
    let mut codes = vec![client.reply().await.code, client.reply().await.code];
    drop(data);
    codes.push(client.cmd("PWD").await.code);
    codes
}

/// ABOR mid-download followed by the client closing its data connection: the same replies
/// as straight to the server (libunftp answers after the close, 226 and 426), and the
/// session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_mid_download_gets_the_servers_replies_and_the_session_goes_on() {
    let backend = TestBackend::start().await;
    backend.put_file("huge.bin", 64 * 1024 * 1024, 5);
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut direct = abor_mid_download(backend.server.addr, true).await;
    let mut proxied = abor_mid_download(proxy.control_addr, true).await;
    // libunftp's data and control tasks race: its 226 and 426 come in either order, straight
    // to it as through ftpfront (seen both ways in either case).
    direct[..2].sort();
    proxied[..2].sort();
    assert_eq!(proxied, direct, "through ftpfront as directly");
    assert_eq!(proxied[2], 257, "session continues after ABOR");
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let again = client.pasv().await.expect("PASV after ABOR");
    let (bytes, done) = client.retr("hello.txt", again).await;
    assert_eq!(done.code, 226);
    assert_eq!(bytes, b"hello through the proxy\n");
    proxy.shutdown().await;
}

/// A client that sends ABOR and keeps its data connection open (unread) is not held:
/// libunftp, like vsftpd and proftpd with a plain ABOR, would wait for the close forever;
/// ftpfront resets the data connections after its grace (3 s) and the server's replies
/// come.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abor_with_the_data_connection_left_open_still_ends_the_transfer() {
    let backend = TestBackend::start().await;
    backend.put_file("huge.bin", 64 * 1024 * 1024, 5);
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let started = std::time::Instant::now();
    let codes = abor_mid_download(proxy.control_addr, false).await;
    let mut finals = codes[..2].to_vec();
    finals.sort();
    assert_eq!(
        finals,
        [226, 426],
        "the server's replies to the aborted transfer: {codes:?}"
    );
    assert_eq!(codes[2], 257, "session continues after ABOR");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(15),
        "ended by the grace"
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_client_lists_and_downloads_through_epsv() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        let _ = common::external::external_available(false, "an IPv6 loopback address (::1)");
        return;
    };
    drop(probe);
    let backend = TestBackend::start().await;
    let digest = backend.put_file("six.bin", 1024 * 1024, 6);
    let mut config = proxy_config(backend.server.addr, 2);
    config.listen.control = "[::1]:0".parse().expect("addr");
    config.passive.public_address = None;
    config.passive.bind = "::".parse().expect("ip");
    let proxy = start_proxy(config).await;
    let six: std::net::IpAddr = "::1".parse().expect("ip");
    let mut client = FtpClient::login(six, proxy.control_addr).await;
    let refused = client.cmd("PASV").await;
    assert_eq!(refused.code, 522, "PASV cannot carry IPv6: {refused:?}");
    let port = client.epsv().await.expect("EPSV");
    let (bytes, done) = client.retr("six.bin", SocketAddr::new(six, port)).await;
    assert_eq!(done.code, 226);
    assert_eq!(sha256(&bytes), digest);
    let port = client.epsv().await.expect("EPSV");
    let mut data = connect_from(six, SocketAddr::new(six, port))
        .await
        .expect("data");
    client.send("LIST").await;
    assert_eq!(client.reply().await.code, 150);
    let mut listing = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut data, &mut listing)
        .await
        .expect("listing");
    assert_eq!(client.reply().await.code, 226);
    assert!(listing.contains("six.bin"), "{listing}");

    // Active mode over IPv6: EPRT |2| to the client's own address.
    let listener = tokio::net::TcpListener::bind("[::1]:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let announce = format!("EPRT |2|::1|{port}|");
    let (bytes, done) = client.retr_active(&announce, "six.bin", &listener).await;
    assert_eq!(done.code, 226);
    assert_eq!(sha256(&bytes), digest);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_active_mode_policy() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let refused = client.cmd("PORT 127,0,0,9,200,10").await;
    assert_eq!(refused.code, 501, "foreign address refused: {refused:?}");
    let refused = client.cmd("PORT 127,0,0,1,0,21").await;
    assert_eq!(refused.code, 501, "privileged port refused: {refused:?}");
    let refused = client.cmd("EPRT |3|x|1|").await;
    assert_eq!(refused.code, 522);

    // An accepted PORT: ftpfront connects to the client's listener.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listen");
    let port = listener.local_addr().expect("addr").port();
    let announce = format!("PORT 127,0,0,1,{},{}", port / 256, port % 256);
    let (bytes, done) = client.retr_active(&announce, "hello.txt", &listener).await;
    assert_eq!(done.code, 226);
    assert_eq!(bytes, b"hello through the proxy\n");
    proxy.shutdown().await;

    let mut config = proxy_config(backend.server.addr, 2);
    config.limits.client_active_mode = ftpfront::config::ClientActiveMode::Deny;
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    assert_eq!(client.cmd("PORT 127,0,0,1,200,10").await.code, 502);
    assert_eq!(client.cmd("EPRT |1|127.0.0.1|51210|").await.code, 502);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_mode_towards_the_backend() {
    let backend = TestBackend::start().await;
    let digest = backend.put_file("act.bin", 2 * 1024 * 1024, 21);
    let mut config = proxy_config(backend.server.addr, 2);
    let start = free_port_block(3);
    config.backends[0].data_mode = ftpfront::config::DataMode::Active;
    config.backends[0].active_ports = Some(ftpfront::config::PortRange {
        start,
        end: start + 2,
    });
    let proxy = start_proxy(config).await;
    let (down, listing) = with_ftp(proxy.control_addr, Mode::Passive, |ftp| {
        let down = ftp.retr_as_buffer("act.bin").expect("RETR").into_inner();
        let listing = ftp.list(None).expect("LIST");
        ftp.put_file("upload/act-up.bin", &mut Cursor::new(vec![42u8; 100_000]))
            .expect("STOR");
        (down, listing)
    })
    .await;
    assert_eq!(sha256(&down), digest);
    assert!(listing.iter().any(|l| l.contains("act.bin")));
    assert_eq!(
        read_file(&backend.path("upload/act-up.bin")),
        vec![42u8; 100_000]
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_handles_its_own_commands_and_bad_input() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    // FEAT before login (lftp decides MLSD vs LIST from it) names the backend's features.
    let early = client.cmd("FEAT").await;
    assert!(
        early.text.contains(" SIZE") && early.text.contains(" MLST"),
        "{early:?}"
    );
    // SYST before login is answered as the backend answers it before login.
    let mut direct = FtpClient::connect(loopback(1), backend.server.addr).await;
    assert_eq!(client.cmd("SYST").await.text, direct.cmd("SYST").await.text);
    // So is OPTS UTF8 ON. libunftp ends a connection after three refusals before login,
    // so the probe learns no more, and ftpfront takes OFF itself.
    let on = "OPTS UTF8 ON";
    assert_eq!(client.cmd(on).await.text, direct.cmd(on).await.text);
    assert_eq!(
        client.cmd("OPTS UTF8 OFF").await.text,
        "200 UTF8 mode off.\r\n"
    );
    assert_eq!(client.cmd("OPTS UTF8X").await.code, 501);
    assert_eq!(client.cmd("HOST ftp.example.com").await.code, 220);
    assert_eq!(client.cmd("NOOP").await.code, 200);
    let long = format!("USER {}", "x".repeat(10_000));
    assert_eq!(client.cmd(&long).await.code, 500, "overlong line refused");
    assert_eq!(client.cmd("RETR x").await.code, 530, "nothing before login");
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(client.cmd("HOST late.example.com").await.code, 503);
    assert_eq!(client.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    let feat = client.cmd("FEAT").await;
    assert_eq!(feat.code, 211);
    assert!(
        feat.text.contains("EPSV") && feat.text.contains("SIZE"),
        "{feat:?}"
    );
    assert!(!feat.text.to_lowercase().contains("libunftp"));
    assert_eq!(client.cmd("PRET RETR hello.txt").await.code, 200);
    assert_eq!(client.cmd("EPSV ALL").await.code, 200);
    assert_eq!(
        client.cmd("PASV").await.code,
        503,
        "PASV refused after EPSV ALL"
    );
    assert_eq!(client.cmd("LIST").await.code, 425, "no data setup yet");
    // libunftp does not implement REIN: its refusal is relayed and the login stands.
    assert_eq!(client.cmd("REIN").await.code, 500);
    assert_eq!(
        client.cmd("PWD").await.code,
        257,
        "a refused REIN logs nobody out"
    );
    assert_eq!(client.cmd("QUIT").await.code, 221);
    let scrape = scrape(&proxy).await;
    assert!(
        metric_value(&scrape, r#"ftpfront_commands_total{command="user"}"#) >= 1.0,
        "{scrape}"
    );
    assert!(!scrape.contains(PASSWORD));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_upload_ends_with_426_instead_of_pinning_the_session() {
    let backend = TestBackend::start().await;
    let mut config = proxy_config(backend.server.addr, 2);
    config.limits.idle_timeout = std::time::Duration::from_secs(2);
    let proxy = start_proxy(config).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let data_addr = client.pasv().await.expect("PASV");
    let mut data = connect_from(loopback(1), data_addr).await.expect("data");
    client.send("STOR upload/stalled.bin").await;
    assert_eq!(client.reply().await.code, 150);
    tokio::io::AsyncWriteExt::write_all(&mut data, &[7u8; 1000])
        .await
        .expect("some bytes");
    // Then nothing: neither more data nor a close.
    let started = std::time::Instant::now();
    let reply = client.reply().await;
    assert_eq!(reply.code, 426, "{reply:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert_eq!(client.cmd("PWD").await.code, 257, "the session survives");
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"ftpfront_transfers_total{backend="main",direction="upload",result="error"}"#
        ),
        1.0,
        "{scrape}"
    );
    drop(data);
    proxy.shutdown().await;
}

/// A trusted balancer that sends garbage, or nothing, instead of a PROXY header gets a 421
/// and a count, while a good one opens a session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_protocol_headers_name_the_client_and_bad_ones_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let backend = TestBackend::start().await;
    let mut config = proxy_config(backend.server.addr, 2);
    config.listen.proxy_protocol = true;
    config.listen.proxy_protocol_from = vec!["127.0.0.9/32".parse().expect("cidr")];
    config.listen.proxy_protocol_timeout = std::time::Duration::from_millis(300);
    config.passive.public_address = None;
    let proxy = start_proxy(config).await;
    let addr = proxy.control_addr;

    let refused = |mut stream: tokio::net::TcpStream| async move {
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text).await;
        text
    };
    let mut garbage = connect_from(loopback(9), addr).await.expect("connect");
    garbage.write_all(b"USER alice\r\n").await.expect("send");
    assert!(refused(garbage)
        .await
        .starts_with("421 Service not available: bad PROXY"));
    let silent = connect_from(loopback(9), addr).await.expect("connect");
    assert!(refused(silent).await.starts_with("421 "));

    // A good v1 header from the balancer, naming a client and a balancer address that is
    // not on this host: 227 announces the balancer (no public_address is set), and active
    // mode still leaves from our own address.
    let mut lb = connect_from(loopback(9), addr).await.expect("connect");
    let header = format!(
        "PROXY TCP4 127.0.0.2 203.0.113.10 40000 {}\r\n",
        addr.port()
    );
    lb.write_all(header.as_bytes()).await.expect("header");
    let mut client = FtpClient::over(lb, loopback(2)).await;
    assert_eq!(client.cmd(&format!("USER {USER}")).await.code, 331);
    assert_eq!(client.cmd(&format!("PASS {PASSWORD}")).await.code, 230);
    let reply = client.cmd("PASV").await;
    assert!(reply.text.contains("(203,0,113,10,"), "{reply:?}");
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0")
        .await
        .expect("active listener");
    let port = listener.local_addr().expect("addr").port();
    let announce = format!("PORT 127,0,0,2,{},{}", port / 256, port % 256);
    let (bytes, done) = client.retr_active(&announce, "hello.txt", &listener).await;
    assert_eq!(done.code, 226, "{done:?}");
    assert_eq!(bytes, b"hello through the proxy\n");

    let text = scrape(&proxy).await;
    let series = |result: &str| {
        format!("ftpfront_proxy_protocol_total{{listener=\"control\",result=\"{result}\"}}")
    };
    assert_eq!(metric_value(&text, &series("malformed")), 1.0, "{text}");
    assert_eq!(metric_value(&text, &series("timeout")), 1.0, "{text}");
    assert_eq!(metric_value(&text, &series("ok")), 1.0, "{text}");
    assert_eq!(
        metric_value(&text, "ftpfront_sessions_total{result=\"rejected\"}"),
        2.0
    );
    client.cmd("QUIT").await;
    proxy.shutdown().await;
}

/// An embedding program that stops a proxy gets its passive ports back at once: the pool's
/// listeners stop with the shutdown instead of at their next accept (which, with nobody
/// connecting, could be never).
#[tokio::test]
async fn shutdown_frees_the_passive_ports_at_once() {
    let backend = TestBackend::start().await;
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let mut client = FtpClient::login(loopback(1), proxy.control_addr).await;
    let port = client.pasv().await.expect("227").port();
    assert_eq!(client.cmd("QUIT").await.code, 221);
    proxy.shutdown().await;
    let freed = async {
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    assert!(
        tokio::time::timeout(std::time::Duration::from_secs(2), freed)
            .await
            .is_ok(),
        "passive port {port} is still bound after the shutdown"
    );
}
