//! The benchmark's floor: a bare TCP relay that copies bytes and nothing else, so the cost of
//! one more hop (a second TCP connection per connection, one more wake-up per message) can be
//! told from the cost of what ftpfront does on top of it (FTP, policies, metrics, logs).
//!
//! It knows no FTP. It relays one control port and a range of data ports, each to the same
//! port on another address: the benchmark starts a vsftpd that listens on that address and
//! announces the relay's address in its 227 and 229 replies, so clients connect every data
//! connection through the relay too. Like ftpfront's copy, each direction reads into a buffer
//! of up to 1 MiB (for data ports; 16 KiB for the control port) and writes what it read.
//!
//! `bare-relay LISTEN_IP UPSTREAM_IP CONTROL_PORT UPSTREAM_CONTROL_PORT DATA_LOW DATA_HIGH`
//! (built by benches/run.sh: `cargo build --release --manifest-path benches/bare-relay/Cargo.toml`).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const DATA_BUFFER: usize = 1024 * 1024;
const CONTROL_BUFFER: usize = 16 * 1024;

struct Plan {
    listen: IpAddr,
    upstream: IpAddr,
    control: (u16, u16),
    data: (u16, u16),
}

fn parse(args: &[String]) -> Result<Plan, String> {
    let [listen, upstream, control, upstream_control, low, high] = args else {
        return Err(format!("expected 6 arguments, got {}", args.len()));
    };
    let ip = |s: &str| s.parse::<IpAddr>().map_err(|e| format!("{s}: {e}"));
    let port = |s: &str| s.parse::<u16>().map_err(|e| format!("{s}: {e}"));
    let plan = Plan {
        listen: ip(listen)?,
        upstream: ip(upstream)?,
        control: (port(control)?, port(upstream_control)?),
        data: (port(low)?, port(high)?),
    };
    if plan.data.0 > plan.data.1 {
        return Err(format!("empty data range {low}-{high}"));
    }
    Ok(plan)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let plan = match parse(&args) {
        Ok(plan) => plan,
        Err(problem) => {
            eprintln!("bare-relay: {problem}\nusage: bare-relay LISTEN_IP UPSTREAM_IP CONTROL_PORT UPSTREAM_CONTROL_PORT DATA_LOW DATA_HIGH");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("bare-relay: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(plan)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bare-relay: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(plan: Plan) -> io::Result<()> {
    let mut listeners = vec![(plan.control, CONTROL_BUFFER)];
    listeners.extend((plan.data.0..=plan.data.1).map(|p| ((p, p), DATA_BUFFER)));
    let mut tasks = tokio::task::JoinSet::new();
    for ((port, upstream_port), buffer) in listeners {
        let listener = TcpListener::bind(SocketAddr::new(plan.listen, port))
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("bind {}:{port}: {e}", plan.listen)))?;
        let upstream = SocketAddr::new(plan.upstream, upstream_port);
        tasks.spawn(accept_loop(listener, upstream, buffer));
    }
    while let Some(done) = tasks.join_next().await {
        done.map_err(io::Error::other)??;
    }
    Ok(())
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, buffer: usize) -> io::Result<()> {
    loop {
        let (client, _) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(e) = relay(client, upstream, buffer).await {
                eprintln!("bare-relay: {upstream}: {e}");
            }
        });
    }
}

async fn relay(client: TcpStream, upstream: SocketAddr, buffer: usize) -> io::Result<()> {
    let server = TcpStream::connect(upstream).await?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    // The first failure ends both directions (a reset peer must not leave the other waiting).
    tokio::try_join!(
        copy(client_read, server_write, buffer),
        copy(server_read, client_write, buffer)
    )?;
    Ok(())
}

/// Reads into spare capacity (never zeroed, so a control message touches one page, not
/// the whole buffer) and writes what it read; passes the end of the stream on.
async fn copy(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, capacity: usize) -> io::Result<()> {
    let mut buffer = Vec::with_capacity(capacity);
    loop {
        buffer.clear();
        if from.read_buf(&mut buffer).await? == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buffer).await?;
    }
}
