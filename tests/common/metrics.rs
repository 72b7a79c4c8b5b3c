//! The tests' one reader of the metrics endpoint: an HTTP GET (`/metrics`, `/readyz`...)
//! and the value of one series in a Prometheus scrape.

use std::net::SocketAddr;

use ftpfront::server::RunningProxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path` from the HTTP endpoint at `addr` with extra header lines (each ending in
/// CRLF); the whole response, status line included, or the error (a listener not up yet).
pub async fn try_http_get_at(
    addr: SocketAddr,
    path: &str,
    headers: &str,
) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n{headers}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await?;
    Ok(out)
}

/// [`try_http_get_at`] that must succeed (a [`super::harness::BinaryProxy`]'s fixed port, say).
pub async fn http_get_at(addr: SocketAddr, path: &str, headers: &str) -> String {
    try_http_get_at(addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {addr}: {e}"))
}

/// GET `path` from the proxy's metrics endpoint; the whole response, status line included.
pub async fn http_get(proxy: &RunningProxy, path: &str) -> String {
    http_get_with(proxy, path, "").await
}

/// GET with extra header lines (each ending in CRLF), e.g. an `Authorization` header.
pub async fn http_get_with(proxy: &RunningProxy, path: &str, headers: &str) -> String {
    let addr = proxy.metrics_addr.expect("metrics enabled");
    http_get_at(addr, path, headers).await
}

/// The proxy's `/metrics` response, headers included.
pub async fn scrape(proxy: &RunningProxy) -> String {
    http_get(proxy, "/metrics").await
}

/// The value of the sample `name{labels}` in a Prometheus scrape, whatever the order of the
/// labels in the text (the exposition sorts them by name); 0 when absent.
pub fn metric(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut want: Vec<(&str, &str)> = labels.to_vec();
    want.sort();
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once('}')?,
                None if rest.starts_with(' ') => ("", rest),
                None => return None,
            };
            let mut found = parse_labels(label_text);
            found.sort();
            (found == want).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}

/// [`metric`] with the series written as in the exposition: `name{a="x",b="y"}` or `name`.
pub fn metric_value(scrape: &str, series: &str) -> f64 {
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, rest.strip_suffix('}').expect("series ends with }")),
        None => (series, ""),
    };
    metric(scrape, name, &parse_labels(labels))
}

/// `a="x",b="y"` as pairs (the values have no commas or quotes in these tests).
fn parse_labels(text: &str) -> Vec<(&str, &str)> {
    text.split(',')
        .filter(|s| !s.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim(), v.trim().trim_matches('"')))
        })
        .collect()
}

/// Every sample line of the scrape that mentions `needle` (for failure messages).
pub fn lines_with(scrape: &str, needle: &str) -> String {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}
