//! Fuzzes the PROXY v1/v2 header reader (`ProxyPolicy::accept` over an in-memory stream): no panic, never a byte read past the header.
#![no_main]

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use ftpfront::config::{BackendProxyProtocol, ListenConfig};
use ftpfront::proxy_protocol::{encode_header, Endpoints, ProxyHeaderError, ProxyPolicy};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The reader may always take this much: no valid header of either version is shorter.
const SHORTEST_HEADER: usize = 15;
const V1_MAX: usize = 107;
const V2_MAX: usize = 4096;

/// A stream that hands out at most `chunk` bytes per read and counts what was taken.
struct Trickle<'a> {
    data: &'a [u8],
    consumed: usize,
    chunk: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let rest = &self.data[self.consumed..];
        let n = rest.len().min(buf.remaining()).min(self.chunk);
        buf.put_slice(&rest[..n]);
        self.consumed += n;
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("tokio runtime")
    })
}

fn policy() -> &'static ProxyPolicy {
    static POLICY: OnceLock<ProxyPolicy> = OnceLock::new();
    POLICY.get_or_init(|| {
        let listen = ListenConfig {
            proxy_protocol: true,
            proxy_protocol_from: vec!["127.0.0.1/32".parse().expect("CIDR")],
            proxy_protocol_timeout: Duration::from_secs(5),
            ..ListenConfig::default()
        };
        ProxyPolicy::from_config(&listen).expect("proxy_protocol is on")
    })
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 21))
}

/// Runs `accept` on `data`; the result and how many bytes it read.
fn accept(
    data: &[u8],
    chunk: usize,
    peer: SocketAddr,
) -> (Result<Endpoints, ProxyHeaderError>, usize) {
    let mut stream = Trickle {
        data,
        consumed: 0,
        chunk,
    };
    let result = runtime().block_on(policy().accept(&mut stream, peer, local()));
    (result, stream.consumed)
}

/// Where the header of `data` ends, worked out from the specs alone; `None` when it
/// cannot be a header.
fn header_end(data: &[u8]) -> Option<usize> {
    if data.starts_with(V2_SIGNATURE) {
        let length = 16 + usize::from(u16::from_be_bytes([*data.get(14)?, *data.get(15)?]));
        (length <= V2_MAX).then_some(length)
    } else if data.starts_with(b"PROXY ") {
        let window = &data[..data.len().min(V1_MAX)];
        window
            .windows(2)
            .position(|pair| pair == b"\r\n")
            .map(|at| at + 2)
    } else {
        None
    }
}

/// The most a reader may take before it knows the header is bad or complete.
fn read_bound(data: &[u8]) -> usize {
    let bound = if data.starts_with(V2_SIGNATURE) {
        header_end(data).unwrap_or(16)
    } else if data.starts_with(b"PROXY ") {
        header_end(data).unwrap_or(V1_MAX)
    } else {
        SHORTEST_HEADER
    };
    bound.max(SHORTEST_HEADER)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// Our own encoder's headers for these endpoints read back to the same endpoints.
fn check_encoder_round_trip(endpoints: Endpoints, trusted: SocketAddr) {
    for version in [BackendProxyProtocol::V1, BackendProxyProtocol::V2] {
        let header = encode_header(version, Some(endpoints.client), endpoints.local)
            .expect("a header when on");
        let (result, consumed) = accept(&header, usize::MAX, trusted);
        let back = result.unwrap_or_else(|e| panic!("{version:?} {endpoints:?}: {e}"));
        assert_eq!(consumed, header.len());
        assert_eq!(
            (canonical(back.client), canonical(back.local)),
            (canonical(endpoints.client), canonical(endpoints.local)),
            "{version:?}"
        );

        let header = encode_header(version, None, endpoints.local).expect("a header when on");
        let (result, consumed) = accept(&header, usize::MAX, trusted);
        let back = result.unwrap_or_else(|e| panic!("{version:?} without client: {e}"));
        assert_eq!(consumed, header.len());
        assert_eq!(
            back,
            Endpoints {
                client: trusted,
                local: local()
            }
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, stream)) = data.split_first() else {
        return;
    };
    let chunk = match usize::from(mode & 0x0F) {
        0 => usize::MAX,
        n => n,
    };
    let peer_ip: IpAddr = match mode >> 4 & 3 {
        0 => [127, 0, 0, 1].into(),
        1 => "::ffff:127.0.0.1".parse().expect("IPv6"),
        2 => [10, 0, 0, 1].into(),
        _ => "::1".parse().expect("IPv6"),
    };
    let peer = SocketAddr::new(peer_ip, 40000);
    let trusted = peer_ip.to_canonical() == IpAddr::from([127, 0, 0, 1]);

    let (result, consumed) = accept(stream, chunk, peer);
    if !trusted {
        assert!(matches!(result, Err(ProxyHeaderError::UntrustedPeer(_))));
        assert_eq!(consumed, 0, "read from an untrusted peer");
        return;
    }
    assert!(
        consumed <= read_bound(stream),
        "read {consumed} bytes, bound {}",
        read_bound(stream)
    );
    match result {
        Ok(endpoints) => {
            assert_eq!(
                Some(consumed),
                header_end(stream),
                "not exactly the header was read"
            );
            let fallback = Endpoints {
                client: peer,
                local: local(),
            };
            // A header's two addresses are of one family (LOCAL/UNKNOWN keep the TCP ones).
            if endpoints != fallback {
                assert_eq!(endpoints.client.is_ipv4(), endpoints.local.is_ipv4());
            }
            if mode & 0x40 != 0 {
                check_encoder_round_trip(endpoints, peer);
            }
        }
        Err(ProxyHeaderError::Closed) => assert_eq!(consumed, stream.len()),
        Err(ProxyHeaderError::UntrustedPeer(ip)) => panic!("trusted peer {ip} refused"),
        Err(ProxyHeaderError::Timeout(_)) => panic!("timeout on a stream that never waits"),
        Err(error) => {
            let _ = (error.reason(), error.to_string());
        }
    }
});
