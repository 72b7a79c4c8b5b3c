//! The `ftpfront` command line: `run` (default), `check`, `healthcheck` and `demo` (the
//! last only in a build with the `demo` feature, the default; the production build, as the
//! Dockerfile makes it, leaves libunftp out).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ftpfront::config::Config;
use ftpfront::{logging, server};

const DEFAULT_CONFIG: &str = "/etc/ftpfront/ftpfront.toml";

/// The first example of `--help`, in a build that has the demo.
#[cfg(feature = "demo")]
const DEMO_EXAMPLE: &str =
    "  ftpfront demo                                  try it: embedded FTP server + proxy on loopback\n";
#[cfg(not(feature = "demo"))]
const DEMO_EXAMPLE: &str = "";

/// The rest of `--help` after "Examples:" and [`DEMO_EXAMPLE`].
const HELP_FOOTER: &str = "\
  ftpfront check -c /etc/ftpfront/ftpfront.toml  validate; print the effective settings
  ftpfront run -c /etc/ftpfront/ftpfront.toml    serve (run is the default command)
  FTPFRONT_PASSIVE__PUBLIC_ADDRESS=203.0.113.10 ftpfront run

Configuration: TOML, then FTPFRONT_<SECTION>__<KEY> environment variables (double
underscore). Every key with its default: config/ftpfront.toml in the source tree.

Signals: SIGTERM/SIGINT stop accepting, tell idle sessions 421 and let transfers finish
within [shutdown] grace (30 s), then cut the rest with 421; a second SIGTERM/SIGINT exits
at once (status 1); SIGHUP re-reads the whole configuration file (backends, pools, routing, limits,
health, TLS); an invalid file keeps the running configuration.

Logs go to stderr (log.format = text | json; RUST_LOG overrides log.filter).
Metrics: http://127.0.0.1:9477/metrics, /healthz, /readyz (metrics.listen).";

#[derive(Parser)]
#[command(
    name = "ftpfront",
    version,
    about = "FTP reverse proxy for servers behind NAT",
    long_about = "FTP reverse proxy for servers behind NAT.\n\n\
        Terminates client control sessions (plain FTP, AUTH TLS, implicit FTPS), answers \
        every PASV/EPSV with the configured public address and a port from one fixed, \
        forwarded range (shared between client addresses), logs in to a backend FTP server \
        and relays commands, replies and data in both directions.",
    after_long_help = format!("Examples:\n{DEMO_EXAMPLE}{HELP_FOOTER}")
)]
struct Cli {
    /// Configuration file (TOML); FTPFRONT_<SECTION>__<KEY> variables override it.
    #[arg(long, short, global = true, default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    #[command(subcommand)]
    command: Option<Commands>,
}

#[derive(Subcommand)]
enum Commands {
    /// Run the proxy (the default).
    Run,
    /// Validate the configuration and print the effective settings.
    Check,
    /// Exit 0 when the metrics endpoint answers /healthz (for container HEALTHCHECKs).
    Healthcheck {
        /// Address of the metrics endpoint.
        #[arg(long, default_value = "127.0.0.1:9477")]
        address: String,
    },
    /// Start an embedded FTP server and the proxy on loopback, and print commands to try.
    // Parsed (and hidden) in a build without the demo too, to say why it is missing.
    #[cfg_attr(not(feature = "demo"), command(hide = true))]
    Demo {
        /// Control port of the demo proxy.
        #[arg(long, default_value_t = 2121)]
        port: u16,
        /// Passive port range of the demo proxy.
        #[arg(long, default_value = "30000-30009")]
        passive_ports: String,
        /// Port of the demo's /metrics endpoint.
        #[arg(long, default_value_t = 9477)]
        metrics_port: u16,
    },
}

/// glibc raises its mmap threshold after the first large block is freed, so later 256 KiB
/// to 1 MiB transfer buffers (`data::pump`) come from the heap and stay in RSS after their
/// transfers end (tests/soak.rs saw RSS wander 2 MiB over the warm-up). A fixed threshold
/// keeps them mmapped: each is returned to the system when its transfer ends.
fn return_large_buffers_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn main() -> ExitCode {
    return_large_buffers_to_the_system();
    let cli = Cli::parse();
    match cli.command.unwrap_or(Commands::Run) {
        Commands::Check => check(&cli.config),
        Commands::Healthcheck { address } => healthcheck(&address),
        Commands::Run => run(&cli.config),
        #[cfg(feature = "demo")]
        Commands::Demo {
            port,
            passive_ports,
            metrics_port,
        } => demo(ftpfront::demo::DemoOptions {
            control_port: port,
            passive_ports,
            metrics_port,
        }),
        #[cfg(not(feature = "demo"))]
        Commands::Demo { .. } => {
            eprintln!(
                "ftpfront demo: this binary was built without the `demo` feature \
                 (--no-default-features, as the container image is); \
                 `cargo run --release -- demo` in the source tree has it"
            );
            ExitCode::FAILURE
        }
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(path) {
        Ok(config) => {
            let text = format!(
                "# {}: configuration is valid\n\n{}\n{}",
                path.display(),
                config.render_effective(),
                config.render_routes()
            );
            match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
                // A closed pipe (`ftpfront check | head`) is not an error of the configuration.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("ftpfront check: cannot write to stdout: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// A plain HTTP/1.0 GET of /healthz: no runtime, no dependencies, for a HEALTHCHECK.
fn healthcheck(address: &str) -> ExitCode {
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;
    let timeout = std::time::Duration::from_secs(3);
    let answer = (|| -> std::io::Result<String> {
        let addr = address
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.0\r\n\r\n")?;
        let mut response = String::new();
        stream.take(4096).read_to_string(&mut response)?;
        Ok(response)
    })();
    match answer {
        Ok(response)
            if response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200") =>
        {
            ExitCode::SUCCESS
        }
        Ok(response) => {
            eprintln!("unhealthy: {}", response.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {address}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("ftpfront: cannot start the async runtime: {e}");
            None
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // Held to the end: dropping it flushes the lines still queued for stderr.
    let log_guard = logging::init(&config.log);
    match ftpfront::limits::raise_fd_limit() {
        Ok(limit) => tracing::info!(open_files = limit, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the file descriptor limit"),
    }
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    // None: a second signal, exit at once.
    let code = rt.block_on(async {
        let mut signals = match Signals::new() {
            Ok(signals) => signals,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for signals");
                return Some(ExitCode::FAILURE);
            }
        };
        let proxy = match server::start(config).await {
            Ok(proxy) => proxy,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                return Some(ExitCode::FAILURE);
            }
        };
        signals.wait_for_termination(&proxy, path).await;
        tracing::info!("shutting down: draining (a second signal exits at once)");
        tokio::select! {
            _ = proxy.shutdown() => {
                tracing::info!("shutdown complete");
                Some(ExitCode::SUCCESS)
            }
            _ = signals.termination() => {
                tracing::warn!("second signal: exiting without waiting for running transfers");
                None
            }
        }
    });
    code.unwrap_or_else(|| {
        // The queued log lines (the warning above among them) first, bounded by the
        // writer's own flush timeout; then exit with no runtime teardown waiting on anything.
        drop(log_guard);
        std::process::exit(1)
    })
}

#[cfg(feature = "demo")]
fn demo(options: ftpfront::demo::DemoOptions) -> ExitCode {
    // libunftp's INFO lines dump whole structs, several per command: WARN and up only,
    // unless RUST_LOG names it (RUST_LOG=info,libunftp=info).
    let _log = logging::init_quieting(
        &ftpfront::config::LogConfig::default(),
        ftpfront::demo::QUIET_LOG_TARGETS,
    );
    let Some(rt) = runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(ftpfront::demo::run(options)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ftpfront demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The SIGINT, SIGTERM and SIGHUP listeners, made once before the proxy starts: a tokio
/// listener sees only signals that arrive after it exists, so making a new one for the
/// second wait could miss a second signal sent right after the first.
#[cfg(unix)]
struct Signals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The next SIGINT or SIGTERM.
    async fn termination(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }

    /// SIGINT or SIGTERM (what container runtimes send) start a graceful shutdown; SIGHUP
    /// re-reads the configuration file `path` (an invalid one keeps the running one).
    async fn wait_for_termination(&mut self, proxy: &server::RunningProxy, path: &std::path::Path) {
        loop {
            tokio::select! {
                _ = self.terminate.recv() => return,
                _ = self.interrupt.recv() => return,
                _ = self.hangup.recv() => {
                    if let Err(e) = proxy.reload(path) {
                        for line in e.lines() {
                            tracing::error!(problem = %line, "configuration reload rejected; keeping the running configuration");
                        }
                    }
                }
            }
        }
    }
}

/// Without Unix signals only Ctrl-C stops the proxy.
#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals)
    }

    async fn termination(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }

    async fn wait_for_termination(
        &mut self,
        _proxy: &server::RunningProxy,
        _path: &std::path::Path,
    ) {
        self.termination().await;
    }
}
