//! PROXY protocol v1/v2: reading the header a load balancer puts ahead of a client
//! connection (control, implicit FTPS and passive listeners), and writing one for a backend.
//!
//! Behind a load balancer every connection comes from the balancer's address. The header
//! restores the real client address, which the passive port sharing, the data connection
//! anti-theft check, the per-IP limits, logs and metrics all key on. Only peers listed in
//! `listen.proxy_protocol_from` may connect at all while it is on: anyone else could
//! otherwise claim any client address.
//!
//! Parsing is the `ppp` crate's; this module decides how many bytes to read (never one
//! past the header, since the client's first bytes follow it) and what to trust.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::v2;
use ppp::{v1, HeaderResult};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::{BackendProxyProtocol, ListenConfig};

/// The shortest header of either version: `PROXY UNKNOWN\r\n` (v1) is 15 bytes and a v2
/// header at least 16, so 15 bytes can always be read without waiting for client data.
const SHORTEST_HEADER: usize = 15;
/// v1 headers are at most 107 bytes (spec section 2.1).
const V1_MAX: usize = 107;
/// v2 allows 64 KiB of TLVs; balancers send a few dozen bytes, so cap the memory a
/// trusted-but-broken peer can make us hold.
const V2_MAX: usize = 4096;
const V1_PREFIX: &[u8] = b"PROXY ";
/// Signature, version/command, family/protocol and the 16-bit length of what follows.
const V2_FIXED_PART: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    #[error("{0} may not connect: it is not in listen.proxy_protocol_from")]
    UntrustedPeer(IpAddr),
    #[error("no complete PROXY header within {0:?}")]
    Timeout(Duration),
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
    #[error("connection closed inside the PROXY header")]
    Closed,
    #[error("reading the PROXY header: {0}")]
    Io(io::Error),
}

impl ProxyHeaderError {
    /// The `reason` label of `ftpfront_proxy_protocol_errors_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyHeaderError::UntrustedPeer(_) => "untrusted_peer",
            ProxyHeaderError::Timeout(_) => "timeout",
            ProxyHeaderError::Malformed(_) => "malformed",
            ProxyHeaderError::Closed | ProxyHeaderError::Io(_) => "closed",
        }
    }
}

/// Every `reason` label value, for initialising the series at zero.
pub const ERROR_REASONS: [&str; 4] = ["untrusted_peer", "timeout", "malformed", "closed"];

/// The two ends of a client connection as the client sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    /// The real client (from the header, else the TCP peer).
    pub client: SocketAddr,
    /// The address the client connected to (the balancer's, from the header, else ours).
    pub local: SocketAddr,
}

/// `listen.proxy_protocol*`: who must send a header and how long they may take.
#[derive(Debug, Clone)]
pub struct ProxyPolicy {
    trusted: Vec<IpNet>,
    timeout: Duration,
}

impl ProxyPolicy {
    /// `None` when the listeners take plain connections.
    pub fn from_config(listen: &ListenConfig) -> Option<ProxyPolicy> {
        listen.proxy_protocol.then(|| ProxyPolicy {
            trusted: listen.proxy_protocol_from.clone(),
            timeout: listen.proxy_protocol_timeout,
        })
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// Refuses untrusted peers, then reads exactly the header from `stream` and returns
    /// the endpoints it names (the TCP ones for `LOCAL`/`UNKNOWN` headers, which balancers
    /// send for their own health checks).
    pub async fn accept<S: AsyncRead + Unpin>(
        &self,
        stream: &mut S,
        peer: SocketAddr,
        local: SocketAddr,
    ) -> Result<Endpoints, ProxyHeaderError> {
        if !self.trusts(peer.ip()) {
            return Err(ProxyHeaderError::UntrustedPeer(peer.ip()));
        }
        let header = tokio::time::timeout(self.timeout, read_header(stream))
            .await
            .map_err(|_| ProxyHeaderError::Timeout(self.timeout))??;
        let endpoints = parse_header(&header)?.unwrap_or(Endpoints {
            client: peer,
            local,
        });
        Ok(endpoints)
    }
}

/// How much of a header `buf` holds so far.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// The header is `buf[..n]`.
    Complete(usize),
    /// At least this many bytes in all are needed before deciding again.
    NeedTotal(usize),
}

/// Decides from the bytes so far how long the header is, without parsing addresses.
fn header_progress(buf: &[u8]) -> Result<Progress, ProxyHeaderError> {
    let malformed = |what: &str| ProxyHeaderError::Malformed(what.to_string());
    if buf.len() < SHORTEST_HEADER {
        // Fail on the first wrong byte rather than wait for bytes a client never sends.
        let could_be = |prefix: &[u8]| prefix.starts_with(&buf[..buf.len().min(prefix.len())]);
        if !could_be(v2::PROTOCOL_PREFIX) && !could_be(V1_PREFIX) {
            return Err(malformed(
                "the connection does not start with a PROXY header",
            ));
        }
        return Ok(Progress::NeedTotal(SHORTEST_HEADER));
    }
    if buf.starts_with(v2::PROTOCOL_PREFIX) {
        if buf.len() < V2_FIXED_PART {
            return Ok(Progress::NeedTotal(V2_FIXED_PART));
        }
        let length = V2_FIXED_PART + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if length > V2_MAX {
            return Err(malformed("v2 header longer than 4096 bytes"));
        }
        return Ok(if buf.len() >= length {
            Progress::Complete(length)
        } else {
            Progress::NeedTotal(length)
        });
    }
    if !buf.starts_with(V1_PREFIX) {
        return Err(malformed(
            "the connection does not start with a PROXY header",
        ));
    }
    match buf.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => Ok(Progress::Complete(end + 2)),
        None if buf.len() >= V1_MAX => Err(malformed("v1 header without CRLF in 107 bytes")),
        // One byte at a time: the client's own bytes may follow the CRLF at once.
        None => Ok(Progress::NeedTotal(buf.len() + 1)),
    }
}

/// Reads the header's bytes and not one more.
async fn read_header<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, ProxyHeaderError> {
    let mut buf = Vec::with_capacity(64);
    loop {
        match header_progress(&buf)? {
            Progress::Complete(length) => {
                buf.truncate(length);
                return Ok(buf);
            }
            Progress::NeedTotal(total) => {
                let have = buf.len();
                buf.resize(total, 0);
                let read = stream
                    .read(&mut buf[have..])
                    .await
                    .map_err(ProxyHeaderError::Io)?;
                if read == 0 {
                    return Err(ProxyHeaderError::Closed);
                }
                buf.truncate(have + read);
            }
        }
    }
}

/// The endpoints a complete header names; `None` for `LOCAL` (v2) and `UNKNOWN` (v1).
fn parse_header(header: &[u8]) -> Result<Option<Endpoints>, ProxyHeaderError> {
    let malformed = |e: &dyn std::fmt::Display| ProxyHeaderError::Malformed(e.to_string());
    match HeaderResult::parse(header) {
        HeaderResult::V1(Ok(parsed)) => Ok(match parsed.addresses {
            v1::Addresses::Tcp4(a) => Some(v4_endpoints(&a)),
            v1::Addresses::Tcp6(a) => Some(v6_endpoints(&a)),
            v1::Addresses::Unknown => None,
        }),
        HeaderResult::V2(Ok(parsed)) if parsed.command == v2::Command::Local => Ok(None),
        HeaderResult::V2(Ok(parsed)) => Ok(match parsed.addresses {
            v2::Addresses::IPv4(a) => Some(v4_endpoints(&a)),
            v2::Addresses::IPv6(a) => Some(v6_endpoints(&a)),
            v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
        }),
        HeaderResult::V1(Err(e)) => Err(malformed(&e)),
        HeaderResult::V2(Err(e)) => Err(malformed(&e)),
    }
}

fn v4_endpoints(a: &v2::IPv4) -> Endpoints {
    Endpoints {
        client: SocketAddr::from((a.source_address, a.source_port)),
        local: SocketAddr::from((a.destination_address, a.destination_port)),
    }
}

fn v6_endpoints(a: &v2::IPv6) -> Endpoints {
    Endpoints {
        client: SocketAddr::from((a.source_address, a.source_port)),
        local: SocketAddr::from((a.destination_address, a.destination_port)),
    }
}

/// The header ftpfront sends first on a backend control connection (`backends.proxy_protocol`),
/// naming the client and the backend address; `None` when off. Without a client (health
/// and feature probes) it is a v2 `LOCAL` or v1 `UNKNOWN` header, which servers expecting
/// one accept as "the proxy's own connection". A v1 header cannot mix families, so an
/// IPv4 end is written IPv4-mapped next to an IPv6 one.
pub fn encode_header(
    version: BackendProxyProtocol,
    client: Option<SocketAddr>,
    backend: SocketAddr,
) -> Option<Vec<u8>> {
    let pair = client.map(|client| same_family(client, backend));
    match (version, pair) {
        (BackendProxyProtocol::Off, _) => None,
        (BackendProxyProtocol::V1, None) => Some(b"PROXY UNKNOWN\r\n".to_vec()),
        (BackendProxyProtocol::V1, Some(pair)) => {
            Some(v1::Addresses::from(pair).to_string().into_bytes())
        }
        (BackendProxyProtocol::V2, None) => Some(local_v2_header()),
        (BackendProxyProtocol::V2, Some(pair)) => {
            let builder = v2::Builder::with_addresses(
                v2::Version::Two | v2::Command::Proxy,
                v2::Protocol::Stream,
                v2::Addresses::from(pair),
            );
            // Building into a Vec cannot fail; fall back to a LOCAL header if it ever did.
            Some(builder.build().unwrap_or_else(|_| local_v2_header()))
        }
    }
}

fn local_v2_header() -> Vec<u8> {
    let mut header = v2::PROTOCOL_PREFIX.to_vec();
    header.extend([0x20, 0x00, 0x00, 0x00]);
    header
}

fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let a = SocketAddr::new(a.ip().to_canonical(), a.port());
    let b = SocketAddr::new(b.ip().to_canonical(), b.port());
    if a.is_ipv4() == b.is_ipv4() {
        return (a, b);
    }
    let mapped = |s: SocketAddr| match s.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), s.port()),
        IpAddr::V6(_) => s,
    };
    (mapped(a), mapped(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("test address")
    }

    fn policy(trusted: &[&str]) -> ProxyPolicy {
        ProxyPolicy {
            trusted: trusted
                .iter()
                .map(|t| t.parse().expect("test CIDR"))
                .collect(),
            timeout: Duration::from_secs(1),
        }
    }

    async fn accept_bytes(
        policy: &ProxyPolicy,
        bytes: &[u8],
        peer: &str,
    ) -> (Result<Endpoints, ProxyHeaderError>, Vec<u8>) {
        let mut reader = bytes;
        let result = policy
            .accept(&mut reader, addr(peer), addr("10.0.0.1:21"))
            .await;
        (result, reader.to_vec())
    }

    #[tokio::test]
    async fn v1_header_gives_the_client_and_leaves_the_client_bytes() {
        let bytes = b"PROXY TCP4 198.51.100.7 203.0.113.10 40000 21\r\nUSER x\r\n";
        let (result, rest) = accept_bytes(&policy(&["10.0.0.0/8"]), bytes, "10.1.2.3:5000").await;
        let endpoints = result.expect("accepted");
        assert_eq!(endpoints.client, addr("198.51.100.7:40000"));
        assert_eq!(endpoints.local, addr("203.0.113.10:21"));
        assert_eq!(rest, b"USER x\r\n");
    }

    #[tokio::test]
    async fn v2_header_round_trips_through_our_encoder_for_both_families() {
        for (client, backend) in [
            ("198.51.100.7:40000", "203.0.113.10:30001"),
            ("[2001:db8::7]:40000", "[2001:db8::1]:21"),
        ] {
            let mut bytes =
                encode_header(BackendProxyProtocol::V2, Some(addr(client)), addr(backend))
                    .expect("v2");
            bytes.extend_from_slice(b"\x16\x03\x01 TLS follows");
            let (result, rest) =
                accept_bytes(&policy(&["127.0.0.1/32"]), &bytes, "127.0.0.1:1").await;
            let endpoints = result.expect("accepted");
            assert_eq!(endpoints.client, addr(client));
            assert_eq!(endpoints.local, addr(backend));
            assert_eq!(rest, b"\x16\x03\x01 TLS follows");
        }
    }

    #[tokio::test]
    async fn v1_encoder_output_parses_and_mixed_families_are_mapped() {
        let bytes = encode_header(
            BackendProxyProtocol::V1,
            Some(addr("[2001:db8::7]:40000")),
            addr("192.0.2.1:21"),
        )
        .expect("v1");
        let text = String::from_utf8(bytes.clone()).expect("ascii");
        assert_eq!(text, "PROXY TCP6 2001:db8::7 ::ffff:192.0.2.1 40000 21\r\n");
        let (result, _) = accept_bytes(&policy(&["127.0.0.0/8"]), &bytes, "127.0.0.1:1").await;
        assert_eq!(
            result.expect("accepted").client,
            addr("[2001:db8::7]:40000")
        );
        let (client, backend) = (Some(addr("1.2.3.4:5")), addr("1.2.3.4:6"));
        assert!(encode_header(BackendProxyProtocol::Off, client, backend).is_none());
        let probe = encode_header(BackendProxyProtocol::V1, None, backend);
        assert_eq!(probe.as_deref(), Some(b"PROXY UNKNOWN\r\n".as_slice()));
        let probe = encode_header(BackendProxyProtocol::V2, None, backend).expect("v2");
        assert_eq!(parse_header(&probe).ok(), Some(None), "a LOCAL header");
    }

    #[tokio::test]
    async fn local_and_unknown_headers_keep_the_tcp_endpoints() {
        let peer = "10.0.0.9:7000";
        for bytes in [b"PROXY UNKNOWN\r\n".to_vec(), local_v2_header()] {
            let (result, rest) = accept_bytes(&policy(&["10.0.0.9/32"]), &bytes, peer).await;
            let endpoints = result.expect("accepted");
            assert_eq!(endpoints.client, addr(peer));
            assert_eq!(endpoints.local, addr("10.0.0.1:21"));
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn untrusted_peers_are_refused_before_anything_is_read() {
        let bytes = b"PROXY TCP4 198.51.100.7 203.0.113.10 40000 21\r\n";
        let (result, rest) = accept_bytes(&policy(&["10.0.0.0/8"]), bytes, "192.0.2.1:5").await;
        assert_eq!(result.expect_err("refused").reason(), "untrusted_peer");
        assert_eq!(rest.len(), bytes.len());
        // A dual-stack listener reports IPv4 peers IPv4-mapped; the list still applies.
        let (result, _) =
            accept_bytes(&policy(&["10.0.0.0/8"]), bytes, "[::ffff:10.0.0.5]:5").await;
        assert!(result.is_ok());
    }

    #[tokio::test]
    async fn garbage_short_input_and_silence_are_errors_with_reasons() {
        let trusted = policy(&["127.0.0.0/8"]);
        let endless_v1 = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
        let cases: [(&[u8], &str); 5] = [
            (b"USER anonymous\r\nPASS x\r\n", "malformed"),
            (b"PROXY TCP4 not-an-address 1.2.3.4 1 2\r\n", "malformed"),
            (&endless_v1, "malformed"),
            (b"PROXY TCP4 1.2", "closed"),
            (b"", "closed"),
        ];
        for (bytes, reason) in cases {
            let (result, _) = accept_bytes(&trusted, bytes, "127.0.0.1:1").await;
            assert_eq!(result.expect_err("error").reason(), reason, "{bytes:?}");
        }
        let mut long = v2::PROTOCOL_PREFIX.to_vec();
        long.extend([0x21, 0x11, 0xff, 0xff]);
        let (result, _) = accept_bytes(&trusted, &long, "127.0.0.1:1").await;
        assert_eq!(result.expect_err("too long").reason(), "malformed");

        let (mut silent, _keep_open) = tokio::io::duplex(64);
        let quick = ProxyPolicy {
            timeout: Duration::from_millis(50),
            ..trusted
        };
        let result = quick
            .accept(&mut silent, addr("127.0.0.1:1"), addr("127.0.0.1:21"))
            .await;
        assert_eq!(result.expect_err("timeout").reason(), "timeout");
    }

    #[test]
    fn progress_never_asks_past_a_v1_line_end() {
        let line = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
        for cut in 0..line.len() {
            match header_progress(&line[..cut]).expect("valid prefix") {
                Progress::NeedTotal(total) => assert!(total <= line.len(), "{cut}: {total}"),
                Progress::Complete(_) => panic!("complete at {cut}"),
            }
        }
        assert_eq!(
            header_progress(line).ok(),
            Some(Progress::Complete(line.len()))
        );
    }
}
