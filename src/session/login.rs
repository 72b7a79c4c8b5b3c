//! Login: HOST, USER routed to a backend (a fresh control connection or the one of a
//! failed attempt), PASS/ACCT relayed, failed logins counted per connection and per
//! address (bans), REIN, and the backend connection's end.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::early::{self, Attempt, Attempter};
use super::events::SessionEvent;
use super::{Flow, Login, Outcome, Session, SessionError};
use crate::backend::{self, BackendLeg, ClientNames, Route};
use crate::bans;
use crate::config::BackendConfig;
use crate::conn::BackendLegError;
use crate::ftp::codes;
use crate::ftp::{Command, Reply, Verb};
use crate::metrics::RoutingFailure;

impl Session {
    pub(super) async fn host(&mut self, command: Command) -> Result<Flow, SessionError> {
        if self.backend.is_some() {
            self.reply(codes::BAD_SEQUENCE, "HOST must come before USER.")
                .await?;
        } else if command.arg_str().is_empty() {
            self.reply(codes::SYNTAX_ERROR_ARGS, "HOST needs a host name.")
                .await?;
        } else if self.shared.router.has_hosts()
            && self.shared.router.host_target(command.arg_str()).is_none()
        {
            // RFC 7151: 504 for a host the server does not serve.
            let text = format!("Unknown host \"{}\".", shown(command.arg_str()));
            self.reply(codes::NOT_IMPLEMENTED_PARAM, &text).await?;
        } else {
            self.host = Some(command.arg_str().to_string());
            self.reply(codes::SERVICE_READY, "Host accepted.").await?;
        }
        Ok(Flow::Continue)
    }

    /// USER or PASS after a login: the backend answers, as it would without ftpfront
    /// (vsftpd: 530 "Can't change from guest user.", 230 "Already logged in."; proftpd
    /// 501 "Reauthentication not supported", pure-ftpd 530: a new login needs REIN).
    /// ftpfront follows only a backend that does start a new login (331/332 to USER);
    /// proftpd's 230 to USER of the same user is no new login.
    pub(super) async fn relogin(&mut self, command: Command) -> Result<Flow, SessionError> {
        let Some(leg) = self.backend.as_mut() else {
            return self.relay(&command).await;
        };
        let started = Instant::now();
        let reply = leg
            .control
            .command(&command, "relaying a new login")
            .await?;
        let new_login = command.verb == Verb::User
            && matches!(reply.code, codes::NEED_PASSWORD | codes::NEED_ACCOUNT);
        if !new_login {
            return self.relay_verdict(&reply).await;
        }
        self.send(&reply).await?;
        let user = command.arg_str().to_string();
        self.after_login_reply(&reply, user, started).await
    }

    /// USER routes to a backend. Retries after a failed login reuse the backend connection
    /// (the server then counts its own failed logins, as without ftpfront); another
    /// backend starts over on a fresh connection. After a login, see [`Session::relogin`].
    pub(super) async fn user(&mut self, command: Command) -> Result<Flow, SessionError> {
        let user = command.arg_str().to_string();
        if user.is_empty() {
            self.reply(codes::SYNTAX_ERROR_ARGS, "USER needs a user name.")
                .await?;
            return Ok(Flow::Continue);
        }
        if self.is_banned() {
            return self.close_banned().await;
        }
        let shared = self.shared.clone();
        let names = ClientNames {
            host: self.host.as_deref(),
            sni: self.sni.as_deref(),
        };
        let (target, login_name) = match shared.router.route(&user, names) {
            Route::To { target, user, step } => {
                self.record(SessionEvent::LoginRouted { step, target });
                (target, user)
            }
            Route::UnknownTarget(target) => {
                self.reset_login_state();
                self.record(SessionEvent::LoginNotRouted(RoutingFailure::UnknownTarget));
                let text = format!("No backend or pool named \"{}\" here.", shown(target));
                self.reply(codes::NOT_LOGGED_IN, &text).await?;
                return Ok(Flow::Continue);
            }
            Route::None => {
                self.reset_login_state();
                self.record(SessionEvent::LoginNotRouted(RoutingFailure::NoRoute));
                self.reply(codes::NOT_LOGGED_IN, "No backend serves this user.")
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        // The backend hears the name without its `@target`.
        let command = match login_name == user {
            true => command,
            false => Command::new("USER", Some(login_name)),
        };
        let user = login_name.to_string();
        let started = Instant::now();
        let same_target = |leg: &BackendLeg| shared.router.serves(target, &leg.config.name);
        let reuse = self.backend.as_ref().is_some_and(same_target);
        self.reset_login_state();
        if !reuse {
            self.close_backend().await;
            if let Err(flow) = self.connect_backend(target, &user).await? {
                return Ok(flow);
            }
        }
        let Some(leg) = self.backend.as_mut() else {
            return Ok(Flow::Close(Outcome::Error));
        };
        leg.sticky = shared.router.sticky_slot(target, &user);
        let reply = leg.control.command(&command, "sending USER").await?;
        self.send(&reply).await?;
        self.after_login_reply(&reply, user, started).await
    }

    /// The backend leg for a login routed to `target`: the one connected when the client
    /// connected (`early.rs`) when it is there and still quiet, else the first of the
    /// target's candidates that works (without the one the early connect found failing).
    async fn connect_backend(
        &mut self,
        target: &str,
        user: &str,
    ) -> Result<Result<(), Flow>, SessionError> {
        let early = match self.early.take() {
            Some(early) => early.take_for(target).await,
            None => None,
        };
        let (failed, early_error) = match early {
            Some(Attempt::Connected(leg)) => {
                debug!(
                    backend = leg.config.name.as_str(),
                    "early backend connection taken"
                );
                self.backend = Some(*leg);
                return Ok(Ok(()));
            }
            Some(Attempt::Failed { backend, error }) => {
                // Logged now, not when it happened: only a login makes it worth a line.
                log_unavailable(user, &backend, &error);
                (Some(backend), Some(error))
            }
            Some(Attempt::NoCandidate) | None => (None, None),
        };
        let mut candidates = self.shared.router.candidates(target, user);
        candidates.retain(|config| Some(&config.name) != failed.as_ref());
        self.open_backend(candidates, user, early_error).await
    }

    /// Connects to the first of `candidates` that answers with a working session (TCP,
    /// TLS, a 220 greeting), trying the next after each failure; `Err(flow)` when every
    /// one failed (`failed_before`: the early connect's failure, before these): the client
    /// has been told why the last one did (a backend's own 421 passed on as it said it)
    /// and the session ends. The client never sees a second greeting: the one it got was
    /// ftpfront's.
    async fn open_backend(
        &mut self,
        candidates: Vec<BackendConfig>,
        user: &str,
        failed_before: Option<backend::ConnectError>,
    ) -> Result<Result<(), Flow>, SessionError> {
        let client = self.client.peer();
        let mut all_full = failed_before.is_none();
        let mut last_error = failed_before;
        for config in candidates {
            match early::attempt(&self.shared, config, client, Attempter::Login).await {
                Attempt::Connected(leg) => {
                    self.backend = Some(*leg);
                    return Ok(Ok(()));
                }
                Attempt::Failed { backend, error } => {
                    all_full = false;
                    log_unavailable(user, &backend, &error);
                    last_error = Some(error);
                }
                Attempt::NoCandidate => {}
            }
        }
        let failure = match all_full {
            true => RoutingFailure::AllFull,
            false => RoutingFailure::AllFailed,
        };
        self.record(SessionEvent::LoginNotRouted(failure));
        let reply = match last_error {
            None if all_full => Reply::new(
                codes::SERVICE_NOT_AVAILABLE,
                "Too many users on this site; try again later. Closing control connection.",
            ),
            Some(e) => e.client_reply(),
            None => Reply::new(
                codes::SERVICE_NOT_AVAILABLE,
                "Service not available: no backend configured for this user; closing control connection.",
            ),
        };
        self.send(&reply).await?;
        Ok(Err(Flow::Close(Outcome::Error)))
    }

    pub(super) async fn pass_or_acct(&mut self, command: Command) -> Result<Flow, SessionError> {
        let (user, started) = match &self.login {
            Login::UserSent { user, started } => (user.clone(), *started),
            Login::LoggedIn { .. } => {
                self.reply(codes::BAD_SEQUENCE, "Already logged in.")
                    .await?;
                return Ok(Flow::Continue);
            }
            Login::None => {
                self.reply(codes::BAD_SEQUENCE, "Login with USER first.")
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        let Some(leg) = self.backend.as_mut() else {
            self.reply(codes::BAD_SEQUENCE, "Login with USER first.")
                .await?;
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
            codes::LOGGED_IN => {
                if let Some(leg) = self.backend.as_mut() {
                    leg.sticky.logged_in(&backend_name);
                }
                self.record(SessionEvent::LoginOk {
                    user: &user,
                    started,
                });
                self.name_span(&user, &backend_name);
                self.login = Login::LoggedIn { user };
                self.replay_utf8().await?;
            }
            codes::NEED_PASSWORD | codes::NEED_ACCOUNT => {
                self.login = Login::UserSent { user, started }
            }
            code => {
                self.record(SessionEvent::LoginRefused { user: &user, code });
                self.login = Login::None;
                // 530 is "not logged in"; 503 (bad sequence) and the like are no guesses.
                if code == codes::NOT_LOGGED_IN {
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
                self.record(SessionEvent::AddressBanned);
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
        self.reply(
            codes::SERVICE_NOT_AVAILABLE,
            "Too many failed logins; closing control connection.",
        )
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
        self.reply(codes::SERVICE_NOT_AVAILABLE, bans::BANNED_TEXT)
            .await?;
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

    /// REIN once a backend is chosen: the backend answers (vsftpd and proftpd 502,
    /// pure-ftpd 500: a client stays logged in, as it would directly). After a backend
    /// took it (2xx) the session starts over without that connection: the next USER routes
    /// afresh (HOST, sticky pools) and gets a backend connection with no state left over
    /// (a data connection opened ahead, PROT and TLS, which REIN resets differently on
    /// different servers).
    pub(super) async fn reinitialize(&mut self, command: &Command) -> Result<Flow, SessionError> {
        if self.backend.is_none() {
            return self.rein_before_backend().await;
        }
        let (flow, reply) = self.relay_to_the_end(command).await?;
        if reply.as_ref().is_some_and(Reply::is_completion) {
            self.close_backend().await;
            self.start_over();
        }
        Ok(flow)
    }

    /// What REIN resets: the login, data setup, REST, EPSV ALL and the HOST named.
    pub(super) fn start_over(&mut self) {
        self.reset_login_state();
        self.host = None;
    }

    /// Says goodbye to the backend (best effort: it may be the one that failed).
    pub(super) async fn close_backend(&mut self) {
        if let Some(leg) = self.backend.take() {
            leg.control.quit(super::BACKEND_QUIT_WAIT).await;
        }
    }
}

fn log_unavailable(user: &str, backend: &str, error: &backend::ConnectError) {
    let error = error.to_string();
    warn!(user, backend, error = error.as_str(), "backend unavailable");
}

/// A name the client sent, for a reply: bounded and without control bytes.
fn shown(name: &str) -> String {
    name.chars().filter(|c| !c.is_control()).take(64).collect()
}
