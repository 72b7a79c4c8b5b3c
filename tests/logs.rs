//! Logs as a pipeline reads them: with `log.format = "json"` every line of the running
//! binary is a JSON object, each transfer has one xferlog-like line, and the password is
//! nowhere; `ftpfront demo` logs ftpfront's lines without its embedded libunftp's; a log
//! reader that stops reading costs log lines (counted), never a stalled session.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::FtpClient;
use common::harness::*;
use common::metrics::{http_get_at, metric_value};
use common::process::{run_binary, run_binary_logging_to, signal, spawn_demo, Demo};
use tokio::io::AsyncReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_transfer_line_and_no_password() {
    let Some(curl) = require_program("curl") else {
        return;
    };
    let backend = TestBackend::start().await;
    let digest = backend.put_file("logged.bin", 300_000, 8);
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port_block(1);
    let passive = free_port_block(2);
    let config = format!(
        r#"
[listen]
control = "127.0.0.1:{port}"
[passive]
ports = "{passive}-{}"
public_address = "127.0.0.1"
[[backends]]
name = "main"
address = "{}"
[metrics]
listen = "127.0.0.1:0"
[log]
format = "json"
filter = "info"
"#,
        passive + 1,
        backend.server.addr
    );
    let mut proxy = run_binary(dir.path(), port, &config).await;
    let url = format!("ftp://{USER}:{PASSWORD}@127.0.0.1:{port}/logged.bin");
    let mut body = None;
    for _ in 0..100 {
        let out = tokio::process::Command::new(&curl)
            .args(["-sS", "--max-time", "20", &url])
            .output()
            .await
            .expect("curl runs");
        if out.status.success() {
            body = Some(out.stdout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(sha256(&body.expect("download through the binary")), digest);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = proxy.child.start_kill();
    let _ = proxy.child.wait().await;

    let text = std::fs::read_to_string(&proxy.log).expect("read log");
    assert!(
        !text.contains(PASSWORD),
        "the password leaked into the log:\n{text}"
    );
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let transfers: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|l| l["fields"]["message"] == "transfer")
        .collect();
    assert_eq!(transfers.len(), 1, "one transfer line:\n{text}");
    let fields = &transfers[0]["fields"];
    assert!(transfers[0]["timestamp"].is_string(), "{text}");
    assert_eq!(fields["user"], USER);
    assert_eq!(fields["backend"], "main");
    assert_eq!(fields["direction"], "download");
    assert_eq!(fields["path"], "logged.bin");
    assert_eq!(fields["bytes"], 300_000);
    assert_eq!(fields["result"], "ok");
    assert!(fields["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("127.0.0.1")));
    assert!(fields["duration_ms"].is_u64());
}

/// `ftpfront demo` quiets its embedded libunftp (whose INFO lines dump whole structs, several
/// per command): a login through the demo logs ftpfront's own lines and not one of
/// libunftp's, neither at startup (its readiness probe ends with QUIT) nor for the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_logs_no_libunftp_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (stdout, stderr) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let file = |path: &std::path::Path| std::fs::File::create(path).expect("output file");
    let Demo {
        child: mut demo,
        control,
    } = spawn_demo(file(&stdout).into(), file(&stderr).into()).await;
    let mut client = FtpClient::connect(loopback(1), control).await;
    assert_eq!(client.cmd("USER demo").await.code, 331);
    assert_eq!(client.cmd("PASS demo").await.code, 230);
    assert_eq!(client.cmd("QUIT").await.code, 221);
    let log = || std::fs::read_to_string(&stderr).expect("read stderr");
    for _ in 0..100 {
        if log().contains("session end") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&demo, libc::SIGINT);
    if tokio::time::timeout(Duration::from_secs(10), demo.wait())
        .await
        .is_err()
    {
        let _ = demo.start_kill();
    }

    let text = log();
    for ours in ["ftpfront listening", "login ok", "session end"] {
        assert!(
            text.contains(ours),
            "ftpfront's INFO line {ours:?}:\n{text}"
        );
    }
    let libunftp: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("libunftp") || line.contains("unftp_sbe_fs"))
        .collect();
    assert!(
        libunftp.is_empty(),
        "{} lines of libunftp in the demo's log:\n{}",
        libunftp.len(),
        libunftp.join("\n")
    );
    // stdout: the instructions, which name libunftp, but no log line of its.
    let printed = std::fs::read_to_string(&stdout).expect("read stdout");
    assert!(printed.contains("ftpfront demo"), "{printed}");
    assert!(!printed.contains("libunftp::"), "{printed}");
}

/// The pipe under ftpfront's stderr made as small as Linux allows (one page), so that a few
/// sessions' log lines fill it.
fn shrink_pipe(pipe: &tokio::process::ChildStderr) {
    use std::os::fd::AsRawFd;
    // SAFETY: fcntl(2) on a descriptor this process owns; no memory is passed.
    let set = unsafe { libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, 4096) };
    assert!(
        set >= 0,
        "F_SETPIPE_SZ: {}",
        std::io::Error::last_os_error()
    );
}

/// A log reader that stops reading (a stuck log shipper, a full disk behind a pipe) fills
/// the pipe under ftpfront's stderr. ftpfront must go on serving sessions and drop log
/// lines, counted in `ftpfront_log_lines_dropped_total`, rather than block its workers on
/// the write; and once the reader reads again, new lines arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_reader_that_stops_reading_does_not_stall_sessions() {
    let backend = TestBackend::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (port, metrics) = (free_port_block(1), free_port_block(1));
    let config = format!(
        r#"
[listen]
control = "127.0.0.1:{port}"
[passive]
ports = "{p}-{p}"
public_address = "127.0.0.1"
[[backends]]
name = "main"
address = "{backend}"
[metrics]
listen = "127.0.0.1:{metrics}"
[log]
queue_lines = 64
"#,
        p = free_port_block(1),
        backend = backend.server.addr
    );
    let log = dir.path().join("(a pipe)");
    let mut proxy = run_binary_logging_to(dir.path(), port, &config, Stdio::piped(), log).await;
    let mut pipe = proxy.child.stderr.take().expect("stderr piped");
    shrink_pipe(&pipe);

    // About three lines a session: hundreds of lines against a 4 KiB pipe nobody reads.
    for n in 0..300 {
        let session = async {
            let mut client = FtpClient::login(loopback(1), proxy.control).await;
            assert_eq!(client.cmd("QUIT").await.code, 221);
        };
        if tokio::time::timeout(Duration::from_secs(10), session)
            .await
            .is_err()
        {
            panic!("session {n} stalled: ftpfront waits for the log pipe nobody reads");
        }
    }
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], metrics));
    let scrape = http_get_at(metrics, "/metrics", "").await;
    let dropped = metric_value(&scrape, "ftpfront_log_lines_dropped_total");
    assert!(dropped > 0.0, "dropped lines are counted:\n{scrape}");

    // The reader reads again: a later session's lines (from an address of its own) arrive.
    let reader = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = pipe.read_to_end(&mut text).await;
        String::from_utf8_lossy(&text).into_owned()
    });
    let mut client = FtpClient::login(loopback(77), proxy.control).await;
    assert_eq!(client.cmd("QUIT").await.code, 221);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = proxy.child.start_kill();
    let _ = proxy.child.wait().await;
    let text = reader.await.expect("reader");
    assert!(
        text.lines()
            .any(|l| l.contains("127.0.0.77") && l.contains("session end")),
        "the later session's lines reach the reader:\n{text}"
    );
}
