//! One client control session: its state, the command dispatch (`handle`: the gates, then
//! the handler in the room of the verb) and the way replies leave. The handlers live in the
//! files next to this one, one per concern (see ARCHITECTURE.md).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::backend::{BackendLeg, Router};
use crate::bans::Bans;
use crate::config::Config;
use crate::conn::{BackendLegError, LineConn};
use crate::data::ClientData;
use crate::features::FeatureCache;
use crate::ftp::codes;
use crate::ftp::{Command, CommandError, LineEvent, Reply, Verb};
use crate::metrics::{labels, Metrics};
use crate::net::canonical_ip;
use crate::ports::PortPool;
use crate::shutdown;
use crate::tls::{BackendTlsConfig, ClientTls};

mod abort;
mod data_setup;
mod early;
mod events;
mod gates;
mod keepalive;
mod local;
mod login;
mod relay;
mod run_loop;
mod running;
mod security;
mod transfer;

use events::{SessionEvent, Side};
use run_loop::{Pending, Phase};

/// How long a session's backend gets to answer its QUIT when the session ends.
const BACKEND_QUIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Polls `future` once: its output when it is ready now, else `None` (the future is
/// dropped). Only for cancel-safe reads, which lose nothing when dropped.
async fn poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match future.as_mut().poll(cx) {
            std::task::Poll::Ready(output) => Some(output),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// What every session shares: configuration, metrics, the port pool and the router.
pub struct Shared {
    pub config: Arc<Config>,
    pub bans: Arc<Bans>,
    pub features: FeatureCache,
    pub metrics: Arc<Metrics>,
    pub pool: PortPool,
    pub router: Router,
    /// Each backend's up/down state (probes and session connects).
    pub health: Arc<crate::backend::Health>,
    /// TLS towards clients, when `[tls]` is on.
    pub client_tls: Option<Arc<ClientTls>>,
    /// TLS towards each backend that uses it, by backend name.
    pub backend_tls: Arc<HashMap<String, BackendTlsConfig>>,
}

/// How a session ended, for `ftpfront_sessions_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Ok => labels::OK,
            Outcome::Error => labels::ERROR,
        }
    }
}

enum Flow {
    Continue,
    Close(Outcome),
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("client {peer}: write failed: {source}")]
    ClientWrite {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("client {peer}: read failed: {source}")]
    ClientRead {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Backend(#[from] BackendLegError),
}

enum Login {
    None,
    UserSent { user: String, started: Instant },
    LoggedIn { user: String },
}

pub struct Session {
    shared: Arc<Shared>,
    client: LineConn,
    client_ip: IpAddr,
    /// Our end of the control connection: active-mode data connections leave from it.
    local: SocketAddr,
    /// The address the client connected to: `local`, or the load balancer's address a
    /// PROXY header names. Announced in 227 when no public address is configured.
    reached_at: SocketAddr,
    login: Login,
    host: Option<String>,
    /// The TLS server name the client asked for (AUTH TLS or implicit FTPS).
    sni: Option<String>,
    backend: Option<BackendLeg>,
    /// The backend connection opened when the client connected, until USER takes it.
    early: Option<early::EarlyBackend>,
    data: Option<ClientData>,
    epsv_all: bool,
    utf8_requested: bool,
    /// REST is held and sent right before the transfer command (see `transfer`).
    pending_rest: Option<Command>,
    /// The control connection runs over TLS (after AUTH TLS, or implicit FTPS).
    control_tls: bool,
    /// PROT P: data connections are TLS.
    prot_private: bool,
    /// What the session is doing (see `run_loop`).
    phase: Phase,
    /// Client input waiting for the session to be idle again (see `run_loop`).
    queued: VecDeque<Pending>,
    span: tracing::Span,
    /// The span carries `user` and `backend` (see `name_span`).
    span_named: bool,
    /// Failed logins on this connection (`limits.max_login_attempts`).
    failed_logins: u32,
    shutdown: shutdown::Receiver,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        client: LineConn,
        [local, reached_at]: [SocketAddr; 2],
        span: tracing::Span,
        shutdown: shutdown::Receiver,
    ) -> Session {
        let client_ip = canonical_ip(client.peer().ip());
        Session {
            shared,
            client,
            client_ip,
            local,
            reached_at,
            login: Login::None,
            host: None,
            sni: None,
            backend: None,
            early: None,
            data: None,
            epsv_all: false,
            utf8_requested: false,
            pending_rest: None,
            control_tls: false,
            prot_private: false,
            phase: Phase::Idle,
            queued: VecDeque::new(),
            span,
            span_named: false,
            failed_logins: 0,
            shutdown,
        }
    }

    /// A session whose control connection arrived over implicit FTPS, asking for the
    /// TLS server name `sni`.
    pub fn with_implicit_tls(mut self, sni: Option<String>) -> Session {
        self.control_tls = true;
        self.sni = sni;
        self
    }

    /// Runs the session to its end; never panics on peer input.
    pub async fn run(mut self) -> Outcome {
        let outcome = match self.serve().await {
            Ok(outcome) => outcome,
            // The server hung up cleanly (its own login or idle limit, say): a client
            // connected to it directly would just see the connection close, and so it does.
            Err(SessionError::Backend(e @ BackendLegError::Closed { .. })) => {
                info!(
                    error = e.to_string().as_str(),
                    "backend closed the control connection"
                );
                Outcome::Ok
            }
            Err(SessionError::Backend(e)) => {
                warn!(
                    error = e.to_string().as_str(),
                    "backend control connection failed"
                );
                let (side, kind) = (Side::Backend, e.kind());
                self.record(SessionEvent::ProtocolError { side, kind });
                let _ = self
                    .send(&Reply::new(
                        codes::SERVICE_NOT_AVAILABLE,
                        "Backend connection failed; closing control connection.",
                    ))
                    .await;
                Outcome::Error
            }
            Err(e) => {
                debug!(error = %e, "client connection ended");
                Outcome::Ok
            }
        };
        self.close_backend().await;
        if let Some(early) = self.early.take() {
            early.close();
        }
        self.client.shutdown().await;
        outcome
    }

    async fn close_for_shutdown(&mut self) -> Result<Outcome, SessionError> {
        self.reply(
            codes::SERVICE_NOT_AVAILABLE,
            "Service shutting down; closing control connection.",
        )
        .await?;
        Ok(Outcome::Ok)
    }

    /// Turns a client line into a command, or into ftpfront's answer to a line it cannot
    /// take (sent by the caller, in order).
    fn parse_client_event(&mut self, event: Option<LineEvent>) -> ClientInput {
        match event {
            None => ClientInput::Gone,
            Some(LineEvent::TooLong) => {
                let side = Side::Client;
                self.record(SessionEvent::ProtocolError {
                    side,
                    kind: "line_too_long",
                });
                let limit = self.shared.config.limits.max_line_length;
                let text = format!("Command line too long (limit {limit} bytes).");
                ClientInput::Own(Reply::new(codes::SYNTAX_ERROR, text))
            }
            Some(LineEvent::Line(line)) => match Command::parse(&line) {
                Ok(command) => {
                    self.record(SessionEvent::CommandReceived { command: &command });
                    ClientInput::Command(command)
                }
                // vsftpd answers a blank line with nothing; so does ftpfront, else a
                // client reading replies in step takes the 500 for its next command's.
                Err(CommandError::Empty) => {
                    let side = Side::Client;
                    let kind = "empty_line";
                    self.record(SessionEvent::ProtocolError { side, kind });
                    ClientInput::Ignored
                }
                Err(e) => {
                    let side = Side::Client;
                    let kind = "malformed_command";
                    self.record(SessionEvent::ProtocolError { side, kind });
                    ClientInput::Own(Reply::new(codes::SYNTAX_ERROR, format!("{e}.")))
                }
            },
        }
    }

    async fn handle(&mut self, command: Command) -> Result<Flow, SessionError> {
        let silent = keepalive::answered_without_backend(command.verb);
        if silent || command.verb.is_transfer() {
            if let Some(flow) = self.keep_backend_alive().await? {
                return Ok(flow);
            }
        }
        if let Some(refusal) = gates::first_refusal(&self.view(), &command) {
            return self.refuse(refusal).await;
        }
        match command.verb {
            Verb::Quit => self.quit().await,
            Verb::User | Verb::Pass if self.logged_in() => self.relogin(command).await,
            Verb::User => self.user(command).await,
            Verb::Acct if self.logged_in() => self.relay(&command).await,
            Verb::Acct if self.backend.is_none() => self.acct_before_user().await,
            Verb::Pass | Verb::Acct => self.pass_or_acct(command).await,
            Verb::Rein => self.reinitialize(&command).await,
            Verb::Feat => self.feat(command).await,
            // After login the server's own HELP (what it supports); before, the default
            // backend's, as learnt.
            Verb::Help if self.logged_in() => self.relay(&command).await,
            Verb::Help => self.help_before_login(&command).await,
            // After login the backend hears NOOP: it keeps its idle timer in step.
            Verb::Noop if self.logged_in() => self.relay(&command).await,
            Verb::Noop => self.noop_before_login().await,
            Verb::Host => self.host(command).await,
            Verb::Opts if !self.logged_in() => self.opts_before_login(command).await,
            Verb::Auth => self.auth(command).await,
            Verb::Pbsz => self.pbsz(command).await,
            Verb::Prot => self.prot(command).await,
            Verb::Ccc => self
                .reply(
                    codes::PROTECTION_DENIED,
                    "CCC refused: the control connection stays encrypted.",
                )
                .await
                .map(|_| Flow::Continue),
            Verb::Adat => self
                .reply(
                    codes::NOT_IMPLEMENTED_PARAM,
                    "ADAT is not supported: use AUTH TLS.",
                )
                .await
                .map(|_| Flow::Continue),
            Verb::Pret => self
                .reply(codes::COMMAND_OK, "PRET accepted.")
                .await
                .map(|_| Flow::Continue),
            Verb::Syst if !self.logged_in() => self.syst_before_login().await,
            Verb::Pasv if !command.arg_str().trim().is_empty() => {
                self.passive_with_stray_argument(command).await
            }
            Verb::Pasv | Verb::Epsv => self.passive(command).await,
            Verb::Port | Verb::Eprt => self.active(command).await,
            Verb::Rest => self.rest(command).await,
            Verb::Lprt | Verb::Lpsv => self
                .reply(
                    codes::NOT_IMPLEMENTED,
                    "LPRT/LPSV are not supported: use EPRT/EPSV.",
                )
                .await
                .map(|_| Flow::Continue),
            verb if verb.is_transfer() => self.transfer(command).await,
            _ => self.relay(&command).await,
        }
    }

    fn logged_in(&self) -> bool {
        matches!(self.login, Login::LoggedIn { .. })
    }

    fn user_name(&self) -> &str {
        match &self.login {
            Login::LoggedIn { user } | Login::UserSent { user, .. } => user,
            Login::None => "",
        }
    }

    fn backend_name(&self) -> &str {
        self.backend
            .as_ref()
            .map(|leg| leg.config.name.as_str())
            .unwrap_or("")
    }

    /// What the gates see of this session.
    fn view(&self) -> gates::View {
        let config = &self.shared.config;
        gates::View {
            logged_in: self.logged_in(),
            tls_mode: config.tls.mode,
            control_tls: self.control_tls,
            prot_private: self.prot_private,
            epsv_all: self.epsv_all,
            data_prepared: self.data.is_some(),
            active_mode: config.limits.client_active_mode,
            client_ip: self.client_ip,
        }
    }

    /// A gate's refusal: counted, and answered.
    async fn refuse(&mut self, refusal: gates::Refusal) -> Result<Flow, SessionError> {
        if let Some(plaintext) = refusal.plaintext {
            self.record(SessionEvent::PlaintextRefused(plaintext));
        }
        self.answer_reply(&refusal.reply).await?;
        Ok(Flow::Continue)
    }

    async fn reply(&mut self, code: u16, text: &str) -> Result<(), SessionError> {
        self.send(&Reply::new(code, text)).await
    }

    /// A reply that ftpfront gives without touching anything else, so it may wait until
    /// the client's already buffered commands are answered too (one write for a burst).
    async fn answer_reply(&mut self, reply: &Reply) -> Result<(), SessionError> {
        let peer = self.client.peer();
        self.client
            .write_deferred(&reply.to_wire())
            .await
            .map_err(|source| SessionError::ClientWrite { peer, source })
    }

    async fn send(&mut self, reply: &Reply) -> Result<(), SessionError> {
        self.send_bytes(&reply.to_wire()).await
    }

    /// Writes reply bytes now (a reply, or a piece of a relayed one).
    async fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), SessionError> {
        let peer = self.client.peer();
        self.client
            .write_all(bytes)
            .await
            .map_err(|source| SessionError::ClientWrite { peer, source })
    }
}

enum ClientInput {
    Command(Command),
    /// A line ftpfront could not take, and its answer to it.
    Own(Reply),
    /// A line that gets no answer (a blank one).
    Ignored,
    Gone,
}
