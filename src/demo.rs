//! `ftpfront demo`: an embedded FTP backend (libunftp serving a temporary directory) plus
//! the proxy on loopback, so the proxy can be tried with nothing installed.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libunftp::auth::{AuthenticationError, Authenticator, Credentials, DefaultUser, Principal};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use unftp_sbe_fs::Filesystem;

use crate::config::Config;
use crate::server::{self, RunningProxy};

/// The log targets of the embedded backend (libunftp and its filesystem back end), which
/// `ftpfront demo` turns down to WARN ([`crate::logging::init_quieting`]).
pub const QUIET_LOG_TARGETS: &[&str] = &["libunftp", "unftp_sbe_fs"];

/// Users and passwords of the embedded backend.
#[derive(Debug, Clone)]
pub struct StaticUsers(pub HashMap<String, String>);

#[async_trait::async_trait]
impl Authenticator for StaticUsers {
    async fn authenticate(
        &self,
        username: &str,
        creds: &Credentials,
    ) -> Result<Principal, AuthenticationError> {
        match (self.0.get(username), creds.password.as_deref()) {
            (Some(expected), Some(given)) if expected == given => Ok(Principal {
                username: username.to_string(),
            }),
            (Some(_), _) => Err(AuthenticationError::BadPassword),
            (None, _) => Err(AuthenticationError::BadUser),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot prepare the demo directory: {0}")]
    Files(std::io::Error),
    #[error("the embedded FTP backend failed to start: {0}")]
    Backend(String),
    #[error("invalid demo configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Proxy(#[from] server::ServerError),
}

/// A running embedded FTP server (libunftp) on loopback.
pub struct EmbeddedBackend {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EmbeddedBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts libunftp on 127.0.0.1 serving `root`, with the given users and passive ports.
pub async fn start_embedded_backend(
    root: &Path,
    users: StaticUsers,
    passive_ports: std::ops::RangeInclusive<u16>,
) -> Result<EmbeddedBackend, DemoError> {
    let root: PathBuf = root.to_path_buf();
    let storage = Box::new(move || {
        Filesystem::new(root.clone()).unwrap_or_else(|e| panic!("demo root unusable: {e}"))
    });
    let server = libunftp::ServerBuilder::<Filesystem, DefaultUser>::with_authenticator(
        storage,
        Arc::new(users),
    )
    .greeting("embedded libunftp backend ready")
    .passive_ports(passive_ports)
    .active_passive_mode(libunftp::options::ActivePassiveMode::ActiveAndPassive)
    .build()
    .map_err(|e| DemoError::Backend(e.to_string()))?;
    let addr = free_loopback_port().map_err(DemoError::Files)?;
    let task = tokio::spawn(async move {
        if let Err(e) = server.listen(addr.to_string()).await {
            tracing::error!(error = %e, "embedded backend stopped");
        }
    });
    wait_until_listening(addr).await?;
    Ok(EmbeddedBackend { addr, task })
}

fn free_loopback_port() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

async fn wait_until_listening(addr: SocketAddr) -> Result<(), DemoError> {
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            quit(stream).await;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(DemoError::Backend(format!("nothing listens on {addr}")))
}

/// Ends the readiness probe's FTP session politely: greeting read, QUIT, 221 read. Closed
/// with the greeting unread, the connection would be reset, which libunftp logs as two
/// WARN lines at every start of the demo.
async fn quit(stream: TcpStream) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = BufReader::new(stream);
    let mut line = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        stream.read_line(&mut line).await?;
        stream.get_mut().write_all(b"QUIT\r\n").await?;
        stream.read_line(&mut line).await
    })
    .await;
}

/// Writes the demo's sample files.
fn write_sample_files(root: &Path) -> std::io::Result<()> {
    std::fs::write(
        root.join("hello.txt"),
        "Hello from the backend, through ftpfront!\n",
    )?;
    std::fs::create_dir_all(root.join("upload"))?;
    let mut big = std::fs::File::create(root.join("sample-8MiB.bin"))?;
    let mut state: u32 = 0x2545_f491;
    let mut chunk = vec![0u8; 1 << 20];
    for _ in 0..8 {
        for byte in chunk.iter_mut() {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            *byte = state as u8;
        }
        big.write_all(&chunk)?;
    }
    Ok(())
}

/// Where the demo listens; every port on 127.0.0.1.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub control_port: u16,
    pub passive_ports: String,
    pub metrics_port: u16,
}

fn demo_config(options: &DemoOptions, backend: SocketAddr) -> Result<Config, DemoError> {
    let DemoOptions {
        control_port,
        passive_ports,
        metrics_port,
    } = options;
    let text = format!(
        r#"
[listen]
control = "127.0.0.1:{control_port}"

[passive]
ports = "{passive_ports}"
public_address = "127.0.0.1"

[[backends]]
name = "demo"
address = "{backend}"

[metrics]
listen = "127.0.0.1:{metrics_port}"
"#
    );
    Config::from_toml_str(&text).map_err(|e| DemoError::Config(e.to_string()))
}

/// Runs the demo until Ctrl-C.
pub async fn run(options: DemoOptions) -> Result<(), DemoError> {
    let dir = tempfile::tempdir().map_err(DemoError::Files)?;
    write_sample_files(dir.path()).map_err(DemoError::Files)?;
    let users = StaticUsers(HashMap::from([("demo".to_string(), "demo".to_string())]));
    let backend = start_embedded_backend(dir.path(), users, 31000..=31099).await?;
    let proxy = server::start(demo_config(&options, backend.addr)?).await?;
    print_instructions(&proxy, &options, backend.addr, dir.path());
    let _ = tokio::signal::ctrl_c().await;
    println!("\nstopping the demo");
    proxy.shutdown().await;
    drop(backend);
    Ok(())
}

fn print_instructions(
    proxy: &RunningProxy,
    options: &DemoOptions,
    backend: SocketAddr,
    root: &Path,
) {
    let port = proxy.control_addr.port();
    let passive = &options.passive_ports;
    let metrics = proxy
        .metrics_addr
        .map(|a| a.to_string())
        .unwrap_or_default();
    println!(
        r#"ftpfront demo
  embedded FTP backend (libunftp) on {backend}, serving {root}
  ftpfront on 127.0.0.1:{port}, passive ports {passive}, user demo / password demo

Try, in another terminal:
  curl -v --user demo:demo ftp://127.0.0.1:{port}/
  curl --user demo:demo ftp://127.0.0.1:{port}/hello.txt
  curl --user demo:demo -o /tmp/sample.bin ftp://127.0.0.1:{port}/sample-8MiB.bin
  curl --user demo:demo -T /etc/hostname ftp://127.0.0.1:{port}/upload/
  curl -v --disable-epsv --no-ftp-skip-pasv-ip --user demo:demo ftp://127.0.0.1:{port}/   (shows the 227 reply)
  lftp -u demo,demo -e 'ls; get hello.txt -o /tmp/hello.txt; bye' ftp://127.0.0.1:{port}
  curl http://{metrics}/metrics

Press Ctrl-C to stop."#,
        root = root.display()
    );
}
