//! Python's ftplib, a real client with its own habits (PASV only on IPv4, ABOR as urgent
//! data), through ftpfront to the in-process libunftp backend.

mod common;

use std::time::Duration;

use common::external::{ftp_client_script, require_program};
use common::harness::*;
use common::metrics::*;

fn upload_bytes(seed: u32, len: usize) -> Vec<u8> {
    // The same generator as tests/clients/ftp_client.py.
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7FFF_FFFF;
            (state >> 16) as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftplib_transfers_resumes_and_aborts() {
    let Some(python) = require_program("python3") else {
        return;
    };
    let backend = TestBackend::start().await;
    let digest = backend.put_file("big.bin", 24 * 1024 * 1024, 17);
    let proxy = start_proxy(proxy_config(backend.server.addr, 2)).await;
    let run = tokio::process::Command::new(python)
        .args([ftp_client_script(), "ftplib-checks"])
        .args([
            "127.0.0.1",
            &proxy.control_addr.port().to_string(),
            USER,
            PASSWORD,
            &digest,
            "5",
        ])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("ftplib finished in time (an ABOR sent as urgent data must not hang)")
        .expect("python runs");
    assert!(
        output.status.success(),
        "ftplib session failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let stored = read_file(&backend.path("upload/py.bin"));
    assert_eq!(sha256(&stored), sha256(&upload_bytes(5, 3 * 1024 * 1024)));
    let scrape = scrape(&proxy).await;
    assert_eq!(
        metric_value(
            &scrape,
            r#"ftpfront_transfers_total{backend="main",direction="download",result="aborted"}"#
        ),
        1.0,
        "{scrape}"
    );
    proxy.shutdown().await;
}
