//! Relaying: a command passed to the backend and its replies passed back, refusals of the
//! backend relayed as they are, and backend replies nobody asked for.

use tracing::{info, warn};

use super::events::{SessionEvent, Side};
use super::{Flow, Outcome, Session, SessionError};
use crate::conn::{BackendControl, BackendLegError};
use crate::ftp::codes;
use crate::ftp::{Command, Reply, Verb};

impl Session {
    /// Sends a command to the backend and relays every reply up to the final one.
    pub(super) async fn relay(&mut self, command: &Command) -> Result<Flow, SessionError> {
        let Some(leg) = self.backend.as_mut() else {
            self.reply(codes::NOT_LOGGED_IN, "Please login with USER and PASS.")
                .await?;
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
            if reply.code == codes::SERVICE_NOT_AVAILABLE {
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
    pub(super) async fn passive_with_stray_argument(
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
    pub(super) async fn relay_refusal(&mut self, reply: &Reply) -> Result<Flow, SessionError> {
        self.send(reply).await?;
        Ok(match reply.code {
            codes::SERVICE_NOT_AVAILABLE => Flow::Close(Outcome::Error),
            _ => Flow::Continue,
        })
    }

    pub(super) async fn on_unsolicited_reply(
        &mut self,
        reply: Result<Reply, BackendLegError>,
    ) -> Result<Flow, SessionError> {
        match reply {
            Ok(reply) if reply.code == codes::SERVICE_NOT_AVAILABLE => {
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
}

/// The next reply of the backend leg, or never when there is no backend.
pub(super) async fn next_backend_reply(
    backend: Option<&mut BackendControl>,
) -> Result<Reply, BackendLegError> {
    match backend {
        Some(control) => control.next_reply("waiting for the backend").await,
        None => std::future::pending().await,
    }
}
