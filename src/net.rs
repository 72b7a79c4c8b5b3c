//! TCP plumbing shared by every leg: address canonicalisation, listener binding, outgoing
//! connects with a timeout, and the socket options of control and data connections.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

/// Client addresses are compared after unmapping IPv4-mapped IPv6 addresses, because a
/// dual-stack listener reports IPv4 peers as `::ffff:a.b.c.d`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// `0.0.0.0` and `::` both mean "every address": bind a dual-stack socket so IPv6 clients
/// can connect too, falling back to IPv4 where IPv6 is disabled.
pub fn bind_listener(bind: IpAddr, port: u16) -> io::Result<TcpListener> {
    if bind.is_unspecified() {
        let any6 = SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port);
        match bind_socket(any6, Some(false)) {
            Ok(listener) => return Ok(listener),
            Err(e) if bind.is_ipv6() => return Err(e),
            Err(_) => {}
        }
    }
    bind_socket(SocketAddr::new(bind, port), None)
}

fn bind_socket(addr: SocketAddr, only_v6: Option<bool>) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    if let Some(only) = only_v6 {
        socket.set_only_v6(only)?;
    }
    // A restarted proxy must rebind its ports while old data connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// An outgoing connection that could not be made; `role` names the leg for the log.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect to {peer} ({role}): {source}")]
    Failed {
        peer: SocketAddr,
        role: &'static str,
        source: io::Error,
    },
    #[error("connecting to {peer} ({role}) timed out after {timeout:?}")]
    Timeout {
        peer: SocketAddr,
        role: &'static str,
        timeout: Duration,
    },
}

/// Connects with a timeout, from `local_ip` when it is of the peer's family (a client's
/// active-mode data connection must come from the address it sent PORT to).
pub async fn connect(
    peer: SocketAddr,
    local_ip: Option<IpAddr>,
    timeout: Duration,
    role: &'static str,
) -> Result<TcpStream, ConnectError> {
    let attempt = async {
        let socket = match peer {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }?;
        if let Some(ip) = local_ip.filter(|ip| ip.is_ipv4() == peer.is_ipv4()) {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        socket.connect(peer).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(stream)) => {
            let _ = stream.set_nodelay(true);
            Ok(stream)
        }
        Ok(Err(source)) => Err(ConnectError::Failed { peer, role, source }),
        Err(_) => Err(ConnectError::Timeout {
            peer,
            role,
            timeout,
        }),
    }
}

/// Control legs: keepalive, because NATs drop idle control connections during long
/// transfers and then the final 226 is lost; no Nagle delay on short command lines.
pub fn tune_control(stream: &TcpStream) {
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(15));
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot enable TCP keepalive");
    }
    let _ = stream.set_nodelay(true);
}

/// Makes the next close send RST instead of FIN, so the peer cannot mistake a broken
/// transfer for a complete one (a plain upload's end is nothing but a FIN).
pub fn reset_on_close(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).set_linger(Some(Duration::ZERO));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_the_same_address() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connect_names_the_peer_and_the_role() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = listener.local_addr().unwrap();
        drop(listener);
        let error = connect(peer, None, Duration::from_secs(5), "backend data")
            .await
            .unwrap_err();
        let text = error.to_string();
        assert!(
            text.contains(&peer.to_string()) && text.contains("backend data"),
            "{text}"
        );
    }
}
