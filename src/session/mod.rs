//! One client control session: greeting, pre-login commands, login at the chosen backend,
//! the command/reply relay, and the proxy's own handling of data-connection commands.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use tracing::{debug, info, warn};

use crate::backend::{self, BackendLeg, Router};
use crate::bans::{self, Bans};
use crate::config::{BackendConfig, Config};
use crate::conn::{BackendControl, BackendLegError, LineConn};
use crate::data::ClientData;
use crate::features::{self, FeatureCache, Learnt, Lookup};
use crate::ftp::addr::{self, EpsvArg};
use crate::ftp::{args, Command, LineEvent, OptsArg, Reply, Verb};
use crate::metrics::{labels, Metrics};
use crate::ports::{canonical_ip, PortPool};
use crate::shutdown;
use crate::tls::{BackendTlsConfig, ClientTls};

mod events;
mod gates;
mod keepalive;
mod run_loop;
mod security;
mod transfer;

use events::{SessionEvent, Side};
use run_loop::{Pending, Phase};

/// What every session shares: configuration, metrics, the port pool and the router.
pub struct Shared {
    pub config: Arc<Config>,
    pub bans: Arc<Bans>,
    pub features: FeatureCache,
    pub metrics: Arc<Metrics>,
    pub pool: PortPool,
    pub router: Router,
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
    backend: Option<BackendLeg>,
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
            backend: None,
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

    /// A session whose control connection arrived over implicit FTPS.
    pub fn with_implicit_tls(mut self) -> Session {
        self.control_tls = true;
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
                        421,
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
        self.client.shutdown().await;
        outcome
    }

    async fn close_for_shutdown(&mut self) -> Result<Outcome, SessionError> {
        self.reply(421, "Service shutting down; closing control connection.")
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
                ClientInput::Own(Reply::new(500, text))
            }
            Some(LineEvent::Line(line)) => match Command::parse(&line) {
                Ok(command) => {
                    self.record(SessionEvent::CommandReceived { command: &command });
                    ClientInput::Command(command)
                }
                Err(e) => {
                    let side = Side::Client;
                    let kind = "malformed_command";
                    self.record(SessionEvent::ProtocolError { side, kind });
                    ClientInput::Own(Reply::new(500, format!("Syntax error: {e}.")))
                }
            },
        }
    }

    async fn on_unsolicited_reply(
        &mut self,
        reply: Result<Reply, BackendLegError>,
    ) -> Result<Flow, SessionError> {
        match reply {
            Ok(reply) if reply.code == 421 => {
                info!(reply = reply.text().as_str(), "backend closed the session");
                self.send(&reply).await?;
                Ok(Flow::Close(Outcome::Error))
            }
            Ok(reply) => {
                // Relaying it would shift every later reply by one: drop it, but say so.
                warn!(
                    code = reply.code,
                    text = reply.text().as_str(),
                    "unsolicited backend reply ignored"
                );
                let (side, kind) = (Side::Backend, "unsolicited_reply");
                self.record(SessionEvent::ProtocolError { side, kind });
                Ok(Flow::Continue)
            }
            Err(e) => Err(e.into()),
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
            Verb::User => self.user(command).await,
            Verb::Acct if self.logged_in() => self.relay(&command).await,
            Verb::Pass | Verb::Acct => self.pass_or_acct(command).await,
            Verb::Rein => self.reinitialize().await,
            Verb::Feat => self.feat(command).await,
            // After login the server's own HELP (what it supports); before, ftpfront's.
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
                .reply(533, "CCC refused: the control connection stays encrypted.")
                .await
                .map(|_| Flow::Continue),
            Verb::Adat => self
                .reply(504, "ADAT is not supported: use AUTH TLS.")
                .await
                .map(|_| Flow::Continue),
            Verb::Pret => self
                .reply(200, "PRET accepted.")
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
                .reply(502, "LPRT/LPSV are not supported: use EPRT/EPSV.")
                .await
                .map(|_| Flow::Continue),
            verb if verb.is_transfer() => self.transfer(command).await,
            _ => self.relay(&command).await,
        }
    }

    /// Before login there is no backend to ask: ftpfront answers OPTS UTF8 itself and tells
    /// the backend after login (`replay_utf8`). After login OPTS goes to the backend.
    async fn opts_before_login(&mut self, command: Command) -> Result<Flow, SessionError> {
        match args::parse_opts(command.arg_str()) {
            Ok(OptsArg::Utf8(true)) => {
                self.utf8_requested = true;
                self.reply(200, "UTF8 mode on.").await?;
            }
            Ok(OptsArg::Utf8(false)) => {
                self.utf8_requested = false;
                self.reply(200, "UTF8 mode off.").await?;
            }
            Err(_) => {
                self.reply(501, "Option not understood before login.")
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    /// REST is answered here and handed to the backend right before the transfer command,
    /// because ftpfront sends the backend PASV/PORT in between (RFC 3659 5.3: REST must be
    /// the last command before the transfer).
    async fn rest(&mut self, command: Command) -> Result<Flow, SessionError> {
        match args::parse_rest(command.arg_str()) {
            Ok(offset) => {
                self.pending_rest = Some(command);
                let text =
                    format!("Restarting at {offset}. Send STORE or RETRIEVE to initiate transfer.");
                self.reply(350, &text).await?;
            }
            Err(_) => self.reply(501, "REST needs a byte offset.").await?,
        }
        Ok(Flow::Continue)
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

    /// HELP before login: the commands a client may use now (RFC 959 214), `HELP <verb>`
    /// for one of them, 502 for a command ftpfront does not know.
    async fn help_before_login(&mut self, command: &Command) -> Result<Flow, SessionError> {
        const BEFORE_LOGIN: &str =
            " USER PASS ACCT AUTH PBSZ PROT HOST FEAT OPTS SYST NOOP HELP QUIT REIN";
        let topic = command.arg_str().trim();
        let reply = if topic.is_empty() {
            let lines = vec![
                "The following commands are recognized before login.".to_string(),
                BEFORE_LOGIN.to_string(),
                "Help OK.".to_string(),
            ];
            Reply::multiline(214, lines)
        } else if Verb::from_name(topic) == Verb::Other {
            Reply::new(
                502,
                format!("Unknown command {}.", topic.to_ascii_uppercase()),
            )
        } else {
            Reply::new(
                214,
                format!(
                    "{} is recognized; log in for details.",
                    topic.to_ascii_uppercase()
                ),
            )
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// SYST before login as the default backend answers it (vsftpd: 530, others: 215),
    /// learnt by the feature probe; 530 when that is unknown.
    async fn syst_before_login(&mut self) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        match default_backend_learnt(&shared).await.before_login.syst {
            Some(reply) => self.send(&reply).await?,
            None => self.answer(530, "Please login with USER and PASS.").await?,
        }
        Ok(Flow::Continue)
    }

    /// NOOP before login as the default backend answers it (vsftpd: 530, others: 200).
    async fn noop_before_login(&mut self) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        match default_backend_learnt(&shared).await.before_login.noop {
            Some(reply) if reply.code == 530 => self.send(&reply).await?,
            _ => self.answer(200, "NOOP ok.").await?,
        }
        Ok(Flow::Continue)
    }

    async fn quit(&mut self) -> Result<Flow, SessionError> {
        self.close_backend().await;
        self.reply(221, "Goodbye.").await?;
        Ok(Flow::Close(Outcome::Ok))
    }

    async fn host(&mut self, command: Command) -> Result<Flow, SessionError> {
        if self.backend.is_some() {
            self.reply(503, "HOST must come before USER.").await?;
        } else if command.arg_str().is_empty() {
            self.reply(501, "HOST needs a host name.").await?;
        } else {
            self.host = Some(command.arg_str().to_string());
            self.reply(220, "Host accepted.").await?;
        }
        Ok(Flow::Continue)
    }

    /// USER routes to a backend. Retries after a failed login reuse the backend connection
    /// (the server then counts its own failed logins, as without ftpfront); another
    /// backend, or a USER after a successful login, starts over on a fresh connection.
    async fn user(&mut self, command: Command) -> Result<Flow, SessionError> {
        let user = command.arg_str().to_string();
        if user.is_empty() {
            self.reply(501, "USER needs a user name.").await?;
            return Ok(Flow::Continue);
        }
        if self.is_banned() {
            return self.close_banned().await;
        }
        let Some(config) = self.shared.router.route(&user).cloned() else {
            self.reset_login_state();
            self.reply(530, "No backend serves this user.").await?;
            return Ok(Flow::Continue);
        };
        let started = Instant::now();
        let same_backend = |leg: &BackendLeg| leg.config.name == config.name;
        let reuse = !self.logged_in() && self.backend.as_ref().is_some_and(same_backend);
        self.reset_login_state();
        if !reuse {
            self.close_backend().await;
            if let Err(flow) = self.open_backend(config, &user).await? {
                return Ok(flow);
            }
        }
        let Some(leg) = self.backend.as_mut() else {
            return Ok(Flow::Close(Outcome::Error));
        };
        let reply = leg.control.command(&command, "sending USER").await?;
        self.send(&reply).await?;
        self.after_login_reply(&reply, user, started).await
    }

    /// Connects to `config`'s backend for `user`; `Err(flow)` when it failed (the client
    /// has its reply).
    async fn open_backend(
        &mut self,
        config: BackendConfig,
        user: &str,
    ) -> Result<Result<(), Flow>, SessionError> {
        let tls = self.shared.backend_tls.get(&config.name);
        let client = Some(self.client.peer());
        match backend::connect(&config, tls, &self.shared.metrics, client).await {
            Ok((control, tls)) => {
                self.backend = Some(BackendLeg {
                    control,
                    config,
                    tls,
                });
                Ok(Ok(()))
            }
            Err(e) => {
                warn!(user, error = e.to_string().as_str(), "backend unavailable");
                self.send(&e.client_reply()).await?;
                Ok(Err(Flow::Close(Outcome::Error)))
            }
        }
    }

    async fn pass_or_acct(&mut self, command: Command) -> Result<Flow, SessionError> {
        let (user, started) = match &self.login {
            Login::UserSent { user, started } => (user.clone(), *started),
            Login::LoggedIn { .. } => {
                self.reply(503, "Already logged in.").await?;
                return Ok(Flow::Continue);
            }
            Login::None => {
                self.reply(503, "Login with USER first.").await?;
                return Ok(Flow::Continue);
            }
        };
        let Some(leg) = self.backend.as_mut() else {
            self.reply(503, "Login with USER first.").await?;
            return Ok(Flow::Continue);
        };
        let reply = leg
            .control
            .command(&command, "sending the password")
            .await?;
        self.send(&reply).await?;
        self.after_login_reply(&reply, user, started).await
    }

    /// Tracks the login from the backend's reply to USER/PASS/ACCT.
    async fn after_login_reply(
        &mut self,
        reply: &Reply,
        user: String,
        started: Instant,
    ) -> Result<Flow, SessionError> {
        let backend_name = self.backend_name().to_string();
        match reply.code {
            230 => {
                self.record(SessionEvent::LoginOk {
                    user: &user,
                    started,
                });
                self.name_span(&user, &backend_name);
                self.login = Login::LoggedIn { user };
                self.replay_utf8().await?;
            }
            331 | 332 => self.login = Login::UserSent { user, started },
            code => {
                self.record(SessionEvent::LoginRefused { user: &user, code });
                self.login = Login::None;
                // 530 is "not logged in"; 503 (bad sequence) and the like are no guesses.
                if code == 530 {
                    return self.count_failed_login().await;
                }
            }
        }
        Ok(Flow::Continue)
    }

    fn is_banned(&self) -> bool {
        let bans = &self.shared.bans;
        bans.banned_for(self.client_ip, Instant::now()).is_some()
    }

    /// A failed login counts towards the connection's limit and the address's ban; the
    /// one that starts the ban closes this session too (others from the address are
    /// refused at their next USER).
    async fn count_failed_login(&mut self) -> Result<Flow, SessionError> {
        self.failed_logins += 1;
        let now = Instant::now();
        match self.shared.bans.record_failure(self.client_ip, now) {
            bans::Failure::Counted => self.check_login_attempts().await,
            bans::Failure::Untracked => {
                debug!("ban table full: failed login not tracked");
                self.check_login_attempts().await
            }
            bans::Failure::Banned => {
                let limits = &self.shared.config.limits;
                warn!(failures = limits.max_failed_logins, window = ?limits.failed_login_window, duration = ?limits.ban_duration, "address banned after failed logins");
                let metrics = &self.shared.metrics;
                metrics.bans_total.inc();
                metrics.bans_active.inc();
                self.close_banned().await
            }
        }
    }

    async fn check_login_attempts(&mut self) -> Result<Flow, SessionError> {
        let limit = self.shared.config.limits.max_login_attempts;
        if limit == 0 || self.failed_logins < limit {
            return Ok(Flow::Continue);
        }
        info!(
            attempts = self.failed_logins,
            "too many failed logins on one connection"
        );
        if self.backend_hangs_up().await {
            // The server enforces its own limit: end the session the way it does.
            return Ok(Flow::Close(Outcome::Ok));
        }
        self.close_backend().await;
        self.reply(421, "Too many failed logins; closing control connection.")
            .await?;
        Ok(Flow::Close(Outcome::Ok))
    }

    /// Whether the backend closes its control connection within a moment (servers close
    /// at once after their own last failed login).
    async fn backend_hangs_up(&mut self) -> bool {
        let Some(leg) = self.backend.as_mut() else {
            return false;
        };
        let next = leg.control.next_reply("waiting for the backend to hang up");
        let waited = tokio::time::timeout(std::time::Duration::from_millis(250), next).await;
        matches!(waited, Ok(Err(BackendLegError::Closed { .. })))
    }

    async fn close_banned(&mut self) -> Result<Flow, SessionError> {
        self.close_backend().await;
        self.reply(421, bans::BANNED_TEXT).await?;
        Ok(Flow::Close(Outcome::Ok))
    }

    /// OPTS UTF8 sent before login was answered by ftpfront; the backend hears it now.
    async fn replay_utf8(&mut self) -> Result<(), SessionError> {
        if !self.utf8_requested {
            return Ok(());
        }
        if let Some(leg) = self.backend.as_mut() {
            let reply = leg
                .control
                .command(
                    &Command::new("OPTS", Some("UTF8 ON")),
                    "replaying OPTS UTF8",
                )
                .await?;
            debug!(code = reply.code, "backend answered OPTS UTF8 ON");
        }
        Ok(())
    }

    /// Names the session span after its first login. Recorded once only: the text log
    /// appends every recording to the span, so recording each USER would let one client
    /// grow memory and every later log line without bound. Later logins of the same
    /// connection (REIN) are in their own "login ok" lines.
    fn name_span(&mut self, user: &str, backend: &str) {
        if !self.span_named {
            self.span_named = true;
            self.span.record("user", user);
            self.span.record("backend", backend);
        }
    }

    fn reset_login_state(&mut self) {
        self.login = Login::None;
        self.data = None;
        self.pending_rest = None;
        self.epsv_all = false;
    }

    async fn reinitialize(&mut self) -> Result<Flow, SessionError> {
        self.close_backend().await;
        self.reset_login_state();
        self.host = None;
        self.reply(220, "Service ready for new user.").await?;
        Ok(Flow::Continue)
    }

    /// Says goodbye to the backend (best effort: it may be the one that failed).
    async fn close_backend(&mut self) {
        if let Some(leg) = self.backend.take() {
            leg.control.quit(std::time::Duration::from_secs(2)).await;
        }
    }

    /// FEAT is built by ftpfront (see `features`): after login from the session's backend,
    /// before login from the default backend's cached features. After login the backend
    /// hears the client's own line, so a stray argument gets the server's verdict (proftpd:
    /// 501; vsftpd and pure-ftpd ignore it).
    async fn feat(&mut self, command: Command) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        let backend_features = match (self.logged_in(), self.backend.as_mut()) {
            (true, Some(leg)) => {
                let reply = leg.control.command(&command, "asking FEAT").await?;
                if !reply.is_completion() {
                    return self.relay_refusal(&reply).await;
                }
                let relayable = features::relayable(&reply);
                shared
                    .features
                    .store_features(&leg.config.name, relayable.clone());
                relayable
            }
            _ => {
                let learnt = default_backend_learnt(&shared).await;
                if let Some(refusal) = stray_argument_refused(&command, &learnt) {
                    self.send(&refusal).await?;
                    return Ok(Flow::Continue);
                }
                learnt.features
            }
        };
        let tls = self.shared.client_tls.is_some();
        self.send(&features::reply(backend_features, tls)).await?;
        Ok(Flow::Continue)
    }

    /// Sends a command to the backend and relays every reply up to the final one.
    async fn relay(&mut self, command: &Command) -> Result<Flow, SessionError> {
        let Some(leg) = self.backend.as_mut() else {
            self.reply(530, "Please login with USER and PASS.").await?;
            return Ok(Flow::Continue);
        };
        if command.verb == Verb::Abor {
            self.data = None;
            // Its urgent data must not make a later ABOR urgent (see `pass_abor_on`).
            self.client.take_urgent_seen();
        }
        let mut reply = leg.control.command(command, "relaying a command").await?;
        loop {
            self.send(&reply).await?;
            if reply.code == 421 {
                return Ok(Flow::Close(Outcome::Error));
            }
            if !reply.is_preliminary() {
                return Ok(Flow::Continue);
            }
            let Some(leg) = self.backend.as_mut() else {
                return Ok(Flow::Continue);
            };
            reply = leg.control.read_reply("relaying a command").await?;
        }
    }

    /// `PASV x`: servers differ (proftpd: 501, vsftpd and pure-ftpd ignore the argument),
    /// so the backend hears the client's line and a refusal of its own is relayed. When it
    /// accepts, its passive port is left unused: ftpfront asks again before each transfer.
    async fn passive_with_stray_argument(
        &mut self,
        command: Command,
    ) -> Result<Flow, SessionError> {
        let Some(leg) = self.backend.as_mut() else {
            return self.passive(command).await;
        };
        let verdict = leg
            .control
            .command(&command, "asking the backend about PASV's argument")
            .await?;
        if verdict.is_completion() {
            return self.passive(command).await;
        }
        self.relay_refusal(&verdict).await
    }

    /// The backend's refusal of a command ftpfront would otherwise answer itself.
    async fn relay_refusal(&mut self, reply: &Reply) -> Result<Flow, SessionError> {
        self.send(reply).await?;
        Ok(match reply.code {
            421 => Flow::Close(Outcome::Error),
            _ => Flow::Continue,
        })
    }

    /// PASV/EPSV are always answered by ftpfront, with a port of the pool.
    async fn passive(&mut self, command: Command) -> Result<Flow, SessionError> {
        let reply = self.passive_reply(&command);
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    fn passive_reply(&mut self, command: &Command) -> Reply {
        let extended = command.verb == Verb::Epsv;
        if extended {
            match addr::parse_epsv_arg(command.arg.as_deref()) {
                Ok(EpsvArg::All) => {
                    self.epsv_all = true;
                    return Reply::new(200, "EPSV ALL ok: only EPSV from now on.");
                }
                Ok(EpsvArg::Protocol(p)) if p != self.client_protocol() => {
                    return Reply::new(
                        522,
                        format!(
                            "Network protocol not supported, use ({})",
                            self.client_protocol()
                        ),
                    );
                }
                Ok(_) => {}
                Err(e) => return Reply::new(501, format!("Bad EPSV argument: {e}.")),
            }
        }
        let public = self.public_address();
        let IpAddr::V4(public_v4) = public else {
            if !extended {
                return Reply::new(522, "PASV cannot carry an IPv6 address: use EPSV.");
            }
            return self.reserve_passive(None);
        };
        if !extended && self.client_ip.is_ipv6() {
            return Reply::new(522, "PASV cannot carry an IPv6 address: use EPSV.");
        }
        self.reserve_passive(if extended { None } else { Some(public_v4) })
    }

    /// Reserves a port (replacing this session's previous reservation) and formats the
    /// 227 (with `pasv_ip`) or 229 reply.
    fn reserve_passive(&mut self, pasv_ip: Option<std::net::Ipv4Addr>) -> Reply {
        // Dropping the old reservation first lets a one-port range serve a repeated PASV.
        self.data = None;
        match self.shared.pool.reserve(self.client_ip) {
            Ok(reservation) => {
                let port = self.advertised_port(reservation.port());
                self.data = Some(ClientData::Passive(reservation));
                match pasv_ip {
                    Some(ip) => addr::format_pasv_reply(ip, port),
                    None => addr::format_epsv_reply(port),
                }
            }
            Err(e) => {
                warn!(error = %e, "passive port pool exhausted for this client address");
                Reply::new(
                    425,
                    format!("Can't open data connection: {e}. Try again when a transfer ends."),
                )
            }
        }
    }

    fn client_protocol(&self) -> u8 {
        if self.client_ip.is_ipv4() {
            1
        } else {
            2
        }
    }

    /// The address clients are told to connect to: split-horizon rules, then the configured
    /// public address, then the address the client reached us on.
    fn public_address(&self) -> IpAddr {
        self.shared
            .config
            .passive
            .public_address_for(self.client_ip)
            .unwrap_or_else(|| canonical_ip(self.reached_at.ip()))
    }

    /// The NAT may translate ports too: announce the matching port of `advertised_ports`.
    fn advertised_port(&self, port: u16) -> u16 {
        self.shared
            .config
            .passive
            .advertised_port(port)
            .unwrap_or(port)
    }

    /// Client PORT/EPRT under `limits.client_active_mode`: no bounce to other hosts or to
    /// privileged ports unless the policy is `any`.
    async fn active(&mut self, command: Command) -> Result<Flow, SessionError> {
        let reply = match gates::active_target(&self.view(), &command) {
            Ok(target) => {
                self.data = Some(ClientData::Active(target));
                Reply::new(200, format!("{} command successful.", command.verb_text))
            }
            Err(reply) => reply,
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
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
    async fn answer(&mut self, code: u16, text: &str) -> Result<(), SessionError> {
        self.answer_reply(&Reply::new(code, text)).await
    }

    async fn answer_reply(&mut self, reply: &Reply) -> Result<(), SessionError> {
        let peer = self.client.peer();
        self.client
            .write_deferred(&reply.to_wire())
            .await
            .map_err(|source| SessionError::ClientWrite { peer, source })
    }

    async fn send(&mut self, reply: &Reply) -> Result<(), SessionError> {
        let peer = self.client.peer();
        self.client
            .write_all(&reply.to_wire())
            .await
            .map_err(|source| SessionError::ClientWrite { peer, source })
    }
}

enum ClientInput {
    Command(Command),
    /// A line ftpfront could not take, and its answer to it.
    Own(Reply),
    Gone,
}

/// The next reply of the backend leg, or never when there is no backend.
async fn next_backend_reply(
    backend: Option<&mut BackendControl>,
) -> Result<Reply, BackendLegError> {
    match backend {
        Some(control) => control.next_reply("waiting for the backend").await,
        None => std::future::pending().await,
    }
}

/// Before login the backend is not chosen yet: the default backend's features stand in.
/// A FEAT with an argument before login, refused as the default backend refuses it.
fn stray_argument_refused(command: &Command, learnt: &Learnt) -> Option<Reply> {
    if command.arg_str().trim().is_empty() {
        return None;
    }
    let reply = learnt.before_login.feat_with_argument.as_ref()?;
    (500..=504).contains(&reply.code).then(|| reply.clone())
}

async fn default_backend_learnt(shared: &Shared) -> Learnt {
    let config = &shared.config;
    let Some(backend) = config
        .default_backend()
        .and_then(|name| config.backend(name))
    else {
        return Learnt::default();
    };
    let permit = match shared.features.lookup(&backend.name) {
        Lookup::Fresh(learnt) => return learnt,
        Lookup::Unknown => return Learnt::default(),
        Lookup::Probe(permit) => permit,
    };
    let tls = shared.backend_tls.get(&backend.name);
    let found = features::probe(backend, tls, &shared.metrics).await;
    match &found {
        Some(found) => shared.features.store(&backend.name, found.clone()),
        None => shared.features.store_failure(&backend.name),
    }
    drop(permit);
    found.unwrap_or_default()
}
