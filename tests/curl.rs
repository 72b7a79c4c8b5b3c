//! The relay core driven by the `curl` binary, against the in-process libunftp backend and
//! against the `ftpfront demo` command of the README.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::external::require_program;
use common::ftp_client::*;
use common::harness::*;
use common::metrics::*;
use common::process::spawn_demo;

/// The 227 lines curl printed in verbose mode.
fn pasv_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("< 227"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_lists_downloads_and_uploads_with_pasv_and_epsv() {
    let Some(curl_bin) = require_program("curl") else {
        return;
    };
    let backend = TestBackend::start().await;
    let digest = backend.put_file("data.bin", 8 * 1024 * 1024 + 5, 42);
    let config = proxy_config(backend.server.addr, 3);
    let range = config.passive.ports;
    let proxy = start_proxy(config).await;
    let base = format!(
        "ftp://{USER}:{PASSWORD}@127.0.0.1:{}",
        proxy.control_addr.port()
    );
    let out_dir = tempfile::tempdir().expect("tempdir");

    // PASV, trusting the address in the 227 reply, so the reply must be right.
    let listing = run_curl(
        &curl_bin,
        &[
            "-v",
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            &format!("{base}/"),
        ],
    )
    .await;
    assert_ok(&listing, "LIST over PASV");
    assert!(String::from_utf8_lossy(&listing.stdout).contains("data.bin"));
    let replies = pasv_lines(&listing.stderr);
    assert!(!replies.is_empty(), "curl saw a 227 reply");
    for line in replies {
        let announced = parse_227(&line);
        assert_eq!(announced.ip(), loopback(1), "{line}");
        assert!(range.contains(announced.port()), "{line} outside {range}");
    }

    let pasv_file = out_dir.path().join("pasv.bin");
    let pasv = run_curl(
        &curl_bin,
        &[
            "--disable-epsv",
            "--no-ftp-skip-pasv-ip",
            "-o",
            path_str(&pasv_file),
            &format!("{base}/data.bin"),
        ],
    )
    .await;
    assert_ok(&pasv, "RETR over PASV");
    assert_eq!(sha256(&read_file(&pasv_file)), digest);

    // EPSV (curl's default).
    let epsv_file = out_dir.path().join("epsv.bin");
    let epsv = run_curl(
        &curl_bin,
        &[
            "-v",
            "-o",
            path_str(&epsv_file),
            &format!("{base}/data.bin"),
        ],
    )
    .await;
    assert_ok(&epsv, "RETR over EPSV");
    assert!(
        String::from_utf8_lossy(&epsv.stderr).contains("< 229"),
        "curl used EPSV"
    );
    assert_eq!(sha256(&read_file(&epsv_file)), digest);

    // Upload, then a ranged download (REST) of what was uploaded.
    let upload = sample_bytes(7 * 1024 * 1024, 77);
    let upload_file = out_dir.path().join("up.bin");
    std::fs::write(&upload_file, &upload).expect("write");
    let put = run_curl(
        &curl_bin,
        &[
            "-T",
            path_str(&upload_file),
            &format!("{base}/upload/up.bin"),
        ],
    )
    .await;
    assert_ok(&put, "STOR");
    assert_eq!(
        sha256(&read_file(&backend.path("upload/up.bin"))),
        sha256(&upload)
    );
    let ranged = run_curl(
        &curl_bin,
        &["-C", "1048576", "-o", "-", &format!("{base}/upload/up.bin")],
    )
    .await;
    assert_ok(&ranged, "REST + RETR");
    assert_eq!(ranged.stdout, upload[1_048_576..]);

    // NLST through curl's list-only mode.
    let names = run_curl(&curl_bin, &["--list-only", &format!("{base}/")]).await;
    assert_ok(&names, "NLST");
    assert!(String::from_utf8_lossy(&names.stdout).contains("hello.txt"));

    let scrape = scrape(&proxy).await;
    assert!(
        metric_value(
            &scrape,
            r#"ftpfront_transfers_total{backend="main",direction="listing",result="ok"}"#
        ) >= 2.0,
        "{scrape}"
    );
    assert!(
        metric_value(&scrape, r#"ftpfront_sessions_total{result="ok"}"#) >= 5.0,
        "{scrape}"
    );
    proxy.shutdown().await;
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("utf-8 temp path")
}

/// The README's run command: `ftpfront demo` serves files that curl can fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_command_serves_the_printed_curl_commands() {
    let Some(curl_bin) = require_program("curl") else {
        return;
    };
    let mut demo = spawn_demo(Stdio::null(), Stdio::null()).await;
    let url = format!("ftp://demo:demo@{}/hello.txt", demo.control);
    let mut fetched = None;
    for _ in 0..100 {
        let out = run_curl(&curl_bin, &[&url]).await;
        if out.status.success() {
            fetched = Some(out.stdout);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = demo.child.start_kill();
    let text = String::from_utf8(fetched.expect("demo answered")).expect("utf-8");
    assert!(text.contains("through ftpfront"), "{text}");
}
