//! What ftpfront answers itself before login, when no backend is chosen yet (HELP, ACCT,
//! SYST, NOOP, OPTS, FEAT, REIN, QUIT): as the default backend would, from what
//! `features.rs` learnt.

use super::{Flow, Outcome, Session, SessionError, Shared};
use crate::features::{self, BeforeLogin, Learnt, Lookup};
use crate::ftp::codes;
use crate::ftp::{args, Command, OptsArg, Reply, Verb};

impl Session {
    /// HELP before login as the default backend answers it (vsftpd: 530, pure-ftpd and
    /// proftpd: their own lists), learnt by the feature probe; `HELP <verb>` gets that
    /// refusal too, else ftpfront's word on the verb. When nothing was learnt: ftpfront's
    /// own list of what a client may send now (RFC 959 214).
    pub(super) async fn help_before_login(
        &mut self,
        command: &Command,
    ) -> Result<Flow, SessionError> {
        let topic = command.arg_str().trim();
        let refused_or_listed = |help: &Reply| topic.is_empty() || help.is_permanent_error();
        self.answer_as_learnt(
            |learnt| learnt.help.filter(refused_or_listed),
            || own_help_before_login(topic),
        )
        .await
    }

    /// ACCT before USER, as the default backend answers it (vsftpd 530, pure-ftpd 202,
    /// proftpd 502), learnt by the feature probe; 503 when that is unknown.
    pub(super) async fn acct_before_user(&mut self) -> Result<Flow, SessionError> {
        self.answer_as_learnt(
            |learnt| learnt.acct,
            || Reply::new(codes::BAD_SEQUENCE, "Login with USER first."),
        )
        .await
    }

    /// SYST before login as the default backend answers it (vsftpd: 530, others: 215),
    /// learnt by the feature probe; 530 when that is unknown.
    pub(super) async fn syst_before_login(&mut self) -> Result<Flow, SessionError> {
        self.answer_as_learnt(
            |learnt| learnt.syst,
            || Reply::new(codes::NOT_LOGGED_IN, "Please login with USER and PASS."),
        )
        .await
    }

    /// NOOP before login as the default backend answers it (vsftpd: 530, others: 200).
    pub(super) async fn noop_before_login(&mut self) -> Result<Flow, SessionError> {
        self.answer_as_learnt(
            |learnt| learnt.noop.filter(|r| r.code == codes::NOT_LOGGED_IN),
            || Reply::new(codes::COMMAND_OK, "NOOP ok."),
        )
        .await
    }

    /// Answers with what `pick` takes of the default backend's replies before login, else
    /// with `fallback`. Deferred: these answers touch nothing, so a burst of them is one
    /// write.
    async fn answer_as_learnt(
        &mut self,
        pick: impl FnOnce(BeforeLogin) -> Option<Reply>,
        fallback: impl FnOnce() -> Reply,
    ) -> Result<Flow, SessionError> {
        let shared = self.shared.clone();
        let learnt = *default_backend_learnt(&shared).await.before_login;
        let reply = pick(learnt).unwrap_or_else(fallback);
        self.answer_reply(&reply).await?;
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

    /// Before login there is no backend to ask: OPTS UTF8 is answered as the default
    /// backend answers that form before login (learnt by the feature probe), and one it
    /// took is replayed to the backend after login (`replay_utf8`); when that is unknown,
    /// ftpfront takes every form itself. After login OPTS goes to the backend.
    pub(super) async fn opts_before_login(
        &mut self,
        command: Command,
    ) -> Result<Flow, SessionError> {
        let Ok(OptsArg::Utf8(on)) = args::parse_opts(command.arg_str()) else {
            self.reply(
                codes::SYNTAX_ERROR_ARGS,
                "Option not understood before login.",
            )
            .await?;
            return Ok(Flow::Continue);
        };
        let bare = command.arg_str().split_whitespace().count() == 1;
        let shared = self.shared.clone();
        let utf8 = default_backend_learnt(&shared).await.before_login.utf8;
        let learnt = match (bare, on) {
            (true, _) => utf8.bare,
            (false, true) => utf8.on,
            (false, false) => utf8.off,
        };
        let reply = learnt.unwrap_or_else(|| match on {
            true => Reply::new(codes::COMMAND_OK, "UTF8 mode on."),
            false => Reply::new(codes::COMMAND_OK, "UTF8 mode off."),
        });
        if reply.is_completion() {
            self.utf8_requested = on;
        }
        self.send(&reply).await?;
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

/// ftpfront's HELP before login: the commands a client may use now, `HELP <verb>` for one
/// of them, 502 for a command ftpfront does not know.
fn own_help_before_login(topic: &str) -> Reply {
    const BEFORE_LOGIN: &str =
        " USER PASS ACCT AUTH PBSZ PROT HOST FEAT OPTS SYST NOOP HELP QUIT REIN";
    if topic.is_empty() {
        let lines = vec![
            "The following commands are recognized before login.".to_string(),
            BEFORE_LOGIN.to_string(),
            "Help OK.".to_string(),
        ];
        return Reply::multiline(codes::HELP_MESSAGE, lines);
    }
    let verb = topic.to_ascii_uppercase();
    if Verb::from_name(topic) == Verb::Other {
        Reply::new(codes::NOT_IMPLEMENTED, format!("Unknown command {verb}."))
    } else {
        Reply::new(
            codes::HELP_MESSAGE,
            format!("{verb} is recognized; log in for details."),
        )
    }
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
