//! Logs as a pipeline reads them: with `log.format = "json"` every line of the running
//! binary is a JSON object, each transfer has one xferlog-like line, and the password is
//! nowhere; `ftpfront demo` logs ftpfront's lines without its embedded libunftp's.

mod common;

use std::time::Duration;

use common::external::require_program;
use common::ftp_client::FtpClient;
use common::harness::*;
use common::process::{run_binary, signal, spawn_demo, Demo};

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
