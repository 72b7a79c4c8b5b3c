//! What ftpfront answers itself before login, when no backend is chosen yet (HELP, SYST,
//! NOOP, OPTS, FEAT, QUIT): as the default backend would, from what `features.rs` learnt.

use super::{Flow, Outcome, Session, SessionError, Shared};
use crate::features::{self, Learnt, Lookup};
use crate::ftp::codes;
use crate::ftp::{args, Command, OptsArg, Reply, Verb};

impl Session {
    /// HELP before login: the commands a client may use now (RFC 959 214), `HELP <verb>`
    /// for one of them, 502 for a command ftpfront does not know.
    pub(super) async fn help_before_login(
        &mut self,
        command: &Command,
    ) -> Result<Flow, SessionError> {
        const BEFORE_LOGIN: &str =
            " USER PASS ACCT AUTH PBSZ PROT HOST FEAT OPTS SYST NOOP HELP QUIT REIN";
        let topic = command.arg_str().trim();
        let reply = if topic.is_empty() {
            let lines = vec![
                "The following commands are recognized before login.".to_string(),
                BEFORE_LOGIN.to_string(),
                "Help OK.".to_string(),
            ];
            Reply::multiline(codes::HELP_MESSAGE, lines)
        } else if Verb::from_name(topic) == Verb::Other {
            Reply::new(
                codes::NOT_IMPLEMENTED,
                format!("Unknown command {}.", topic.to_ascii_uppercase()),
            )
        } else {
            Reply::new(
                codes::HELP_MESSAGE,
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
    pub(super) async fn syst_before_login(&mut self) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        match default_backend_learnt(&shared).await.before_login.syst {
            Some(reply) => self.send(&reply).await?,
            None => {
                self.answer(codes::NOT_LOGGED_IN, "Please login with USER and PASS.")
                    .await?
            }
        }
        Ok(Flow::Continue)
    }

    /// NOOP before login as the default backend answers it (vsftpd: 530, others: 200).
    pub(super) async fn noop_before_login(&mut self) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        match default_backend_learnt(&shared).await.before_login.noop {
            Some(reply) if reply.code == codes::NOT_LOGGED_IN => self.send(&reply).await?,
            _ => self.answer(codes::COMMAND_OK, "NOOP ok.").await?,
        }
        Ok(Flow::Continue)
    }

    /// REIN before a backend is chosen, as the default backend answers it before login
    /// (vsftpd and pure-ftpd 530, proftpd 502), learnt by the feature probe; where it
    /// takes REIN or that is unknown, ftpfront starts over itself (220).
    pub(super) async fn rein_before_backend(&mut self) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        match default_backend_learnt(&shared).await.before_login.rein {
            Some(refusal) if refusal.is_permanent_error() => self.send(&refusal).await?,
            _ => {
                self.start_over();
                self.reply(codes::SERVICE_READY, "Service ready for new user.")
                    .await?;
            }
        }
        Ok(Flow::Continue)
    }

    /// Before login there is no backend to ask: ftpfront answers OPTS UTF8 itself and tells
    /// the backend after login (`replay_utf8`). After login OPTS goes to the backend.
    pub(super) async fn opts_before_login(
        &mut self,
        command: Command,
    ) -> Result<Flow, SessionError> {
        match args::parse_opts(command.arg_str()) {
            Ok(OptsArg::Utf8(true)) => {
                self.utf8_requested = true;
                self.reply(codes::COMMAND_OK, "UTF8 mode on.").await?;
            }
            Ok(OptsArg::Utf8(false)) => {
                self.utf8_requested = false;
                self.reply(codes::COMMAND_OK, "UTF8 mode off.").await?;
            }
            Err(_) => {
                self.reply(
                    codes::SYNTAX_ERROR_ARGS,
                    "Option not understood before login.",
                )
                .await?
            }
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn quit(&mut self) -> Result<Flow, SessionError> {
        // The client's goodbye first: waiting for the backend's would cost every session a
        // round trip, and up to 2 s with a backend slow to close.
        let replied = self.reply(codes::CLOSING_CONTROL, "Goodbye.").await;
        self.close_backend().await;
        replied?;
        Ok(Flow::Close(Outcome::Ok))
    }

    /// FEAT is built by ftpfront (see `features`): after login from the session's backend,
    /// before login from the default backend's cached features. After login the backend
    /// hears the client's own line, so a stray argument gets the server's verdict (proftpd:
    /// 501; vsftpd and pure-ftpd ignore it).
    pub(super) async fn feat(&mut self, command: Command) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        let backend_features = match (self.logged_in(), self.backend.as_mut()) {
            (true, Some(leg)) => {
                let reply = leg.control.command(&command, "asking FEAT").await?;
                if !reply.is_completion() {
                    return self.relay_verdict(&reply).await;
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

/// A default pool stands in with its first backend: a pool's members serve one site.
async fn default_backend_learnt(shared: &Shared) -> Learnt {
    let config = &shared.config;
    let first = |name| config.target_backends(name)?.first().copied();
    let Some(backend) = config.default_backend().and_then(first) else {
        return Learnt::default();
    };
    let permit = match shared.features.lookup(&backend.name) {
        Lookup::Fresh(learnt) => return learnt,
        Lookup::Unknown => return Learnt::default(),
        Lookup::Probe(permit) => permit,
    };
    let tls = shared.backend_tls.get(&backend.name);
    let found = features::probe(backend, tls, &shared.health).await;
    match &found {
        Some(found) => shared.features.store(&backend.name, found.clone()),
        None => shared.features.store_failure(&backend.name),
    }
    drop(permit);
    found.unwrap_or_default()
}
