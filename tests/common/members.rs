//! Real servers behind ftpfront that say who they are: vsftpd, proftpd and libunftp, each
//! serving a `marker.txt` holding its name; logging in through the proxy and reading it.

use std::collections::HashMap;
use std::net::SocketAddr;

use ftpfront::demo::{start_embedded_backend, StaticUsers};
use ftpfront::server::RunningProxy;

use super::ftp_client::FtpClient;
use super::harness::{free_port_block, loopback};
use super::servers::{start_async, ServerKind, ServerOptions};

/// The login every member accepts (vsftpd's and proftpd's anonymous user).
pub const LOGIN: (&str, &str) = ("anonymous", "guest@");

/// A second user every member accepts (vsftpd's and proftpd's other anonymous name), with
/// the password of [`LOGIN`].
pub const SECOND_USER: &str = "ftp";

/// One backend: a running server and the name its marker file holds.
pub struct Member {
    pub name: &'static str,
    pub addr: SocketAddr,
    /// What keeps the server running (stopped when the member is dropped).
    _server: Box<dyn std::any::Any + Send>,
}

impl Member {
    pub async fn program(kind: ServerKind) -> Option<Member> {
        let server = start_async(kind, ServerOptions::default()).await?;
        assert_eq!(server.user, LOGIN.0, "{} login", kind.name());
        std::fs::write(server.root.join("marker.txt"), kind.name()).expect("marker");
        Some(Member {
            name: kind.name(),
            addr: server.addr,
            _server: Box::new(server),
        })
    }

    /// libunftp accepting [`LOGIN`] and [`SECOND_USER`].
    pub async fn libunftp() -> Member {
        Member::libunftp_for(&[(SECOND_USER, LOGIN.1)]).await
    }

    /// libunftp accepting [`LOGIN`] and the `(user, password)` pairs of `more`.
    pub async fn libunftp_for(more: &[(&str, &str)]) -> Member {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::write(root.path().join("marker.txt"), "libunftp").expect("marker");
        let logins = more.iter().chain([&LOGIN]);
        let users = StaticUsers(HashMap::from_iter(
            logins.map(|(user, password)| (user.to_string(), password.to_string())),
        ));
        let first = free_port_block(40);
        let server = start_embedded_backend(root.path(), users, first..=first + 39)
            .await
            .expect("libunftp");
        Member {
            name: "libunftp",
            addr: server.addr,
            _server: Box::new((server, root)),
        }
    }
}

/// vsftpd, proftpd and libunftp, or `None` (skip) when the programs are missing.
pub async fn three_members() -> Option<Vec<Member>> {
    let vsftpd = Member::program(ServerKind::Vsftpd).await?;
    let proftpd = Member::program(ServerKind::Proftpd).await?;
    Some(vec![vsftpd, proftpd, Member::libunftp().await])
}

/// Logs in through the proxy as `user` (password of [`LOGIN`]), with TYPE I.
pub async fn login_as(proxy: &RunningProxy, user: &str) -> FtpClient {
    let client = FtpClient::connect(loopback(1), proxy.control_addr).await;
    login_on(client, user, LOGIN.1).await
}

/// Logs `client` in as `user` with `password`, then TYPE I.
pub async fn login_on(mut client: FtpClient, user: &str, password: &str) -> FtpClient {
    let reply = client.cmd(&format!("USER {user}")).await;
    // Some servers log anonymous in at USER already.
    if reply.code != 230 {
        assert_eq!(reply.code, 331, "USER {user}: {reply:?}");
        let pass = client.cmd(&format!("PASS {password}")).await;
        assert_eq!(pass.code, 230, "PASS for {user}: {pass:?}");
    }
    client.expect("TYPE I", 200).await;
    client
}

/// Which member served `client`: the content of its marker file.
pub async fn marker(client: &mut FtpClient) -> String {
    let data = client.pasv().await.expect("PASV");
    let (bytes, last) = client.retr("marker.txt", data).await;
    assert_eq!(last.code, 226, "{last:?}");
    String::from_utf8(bytes).expect("marker text")
}
