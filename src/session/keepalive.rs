//! Keeps the backend's idle timer in step with the client's activity: commands ftpfront
//! answers itself (PASV, EPSV, REST, PROT ...) and the wait for a client's data connection
//! are invisible to the backend, which would otherwise end a busy client's session with
//! its own idle timeout. After a quiet spell the backend hears a NOOP of ours; a client
//! that sends nothing makes ftpfront send nothing, so the backend's timer still fires.

use std::time::Duration;

use tracing::info;

use super::{Flow, Outcome, Session, SessionError};
use crate::ftp::codes;
use crate::ftp::{Command, Verb};

/// How long the backend may hear nothing while the client is active. Short, because the
/// backend's idle timeout is unknown (vsftpd's can be set to seconds); the cost is at most
/// one NOOP per second per busy session.
pub(super) const KEEPALIVE_AFTER: Duration = Duration::from_secs(1);

/// Commands ftpfront answers itself once logged in: the backend never hears them.
pub(super) fn answered_without_backend(verb: Verb) -> bool {
    matches!(
        verb,
        Verb::Pasv
            | Verb::Epsv
            | Verb::Port
            | Verb::Eprt
            | Verb::Lprt
            | Verb::Lpsv
            | Verb::Rest
            | Verb::Pbsz
            | Verb::Prot
            | Verb::Auth
            | Verb::Ccc
            | Verb::Adat
            | Verb::Pret
            | Verb::Host
    )
}

impl Session {
    /// How long until the backend is due a keepalive (zero: now); `None` without a
    /// logged-in backend.
    pub(super) fn keepalive_due_in(&self) -> Option<Duration> {
        if !self.logged_in() {
            return None;
        }
        let quiet = self.backend.as_ref()?.control.quiet_for();
        Some(KEEPALIVE_AFTER.saturating_sub(quiet))
    }

    /// Sends the backend a NOOP if it has heard nothing for [`KEEPALIVE_AFTER`]. Its reply
    /// is ours, not the client's; a `421` (the backend gave up anyway) is relayed and
    /// ends the session.
    pub(super) async fn keep_backend_alive(&mut self) -> Result<Option<Flow>, SessionError> {
        if self.keepalive_due_in() != Some(Duration::ZERO) {
            return Ok(None);
        }
        let Some(leg) = self.backend.as_mut() else {
            return Ok(None);
        };
        let noop = Command::new("NOOP", None);
        let reply = leg
            .control
            .command(&noop, "keeping the backend alive")
            .await?;
        if reply.code == codes::SERVICE_NOT_AVAILABLE {
            info!(reply = reply.text().as_str(), "backend closed the session");
            self.send(&reply).await?;
            return Ok(Some(Flow::Close(Outcome::Error)));
        }
        Ok(None)
    }
}
