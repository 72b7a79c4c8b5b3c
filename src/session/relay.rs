//! Relaying: a command passed to the backend and its replies passed back, refusals of the
//! backend relayed as they are, and backend replies nobody asked for.

use tracing::{info, warn};

use super::events::{SessionEvent, Side};
use super::{Flow, Outcome, Session, SessionError};
use crate::conn::{BackendControl, BackendLegError, ReplyPart};
use crate::ftp::codes;
use crate::ftp::{Command, Reply, Verb};

impl Session {
    /// Sends a command to the backend and relays every reply up to the final one.
    pub(super) async fn relay(&mut self, command: &Command) -> Result<Flow, SessionError> {
        self.relay_to_the_end(command).await.map(|(flow, _)| flow)
    }

    /// [`Session::relay`], also returning the final reply (`None` without a backend).
    pub(super) async fn relay_to_the_end(
        &mut self,
        command: &Command,
    ) -> Result<(Flow, Option<Reply>), SessionError> {
        let Some(leg) = self.backend.as_mut() else {
            self.reply(codes::NOT_LOGGED_IN, "Please login with USER and PASS.")
                .await?;
            return Ok((Flow::Continue, None));
        };
        if command.verb == Verb::Abor {
            self.data = None;
            // Its urgent data must not make a later ABOR urgent (see `pass_abor_on`).
            self.client.take_urgent_seen();
        }
        let phase = "relaying a command";
        leg.control.send(command, phase).await?;
        loop {
            let Some(reply) = self.relay_one_reply(phase).await? else {
                return Ok((Flow::Continue, None));
            };
            if reply.code == codes::SERVICE_NOT_AVAILABLE {
                return Ok((Flow::Close(Outcome::Error), Some(reply)));
            }
            if !reply.is_preliminary() {
                return Ok((Flow::Continue, Some(reply)));
            }
        }
    }

    /// Passes the backend's next reply to the client, a long one piece by piece as it
    /// arrives (a STAT listing of a big directory is not held whole, however slowly the
    /// client reads it); returns its end (the code and the last bytes), `None` without a
    /// backend.
    async fn relay_one_reply(
        &mut self,
        phase: &'static str,
    ) -> Result<Option<Reply>, SessionError> {
        let mut started: Option<u16> = None;
        loop {
            let Some(leg) = self.backend.as_mut() else {
                return Ok(None);
            };
            match leg.control.read_relayed_part(phase).await {
                Ok(ReplyPart::Piece(bytes)) => {
                    started = started.or_else(|| reply_code_of(&bytes));
                    self.send_bytes(&bytes).await?;
                }
                Ok(ReplyPart::End(reply)) => {
                    self.send(&reply).await?;
                    return Ok(Some(reply));
                }
                Err(e) => {
                    let hung_up = matches!(e, BackendLegError::Closed { .. });
                    if let Some(code) = started.filter(|_| !hung_up) {
                        // The client's parser is inside the multi-line reply: end it, so
                        // that the 421 that follows reads as a reply of its own.
                        let _ = self.send(&Reply::new(code, "Reply cut short.")).await;
                    }
                    return Err(e.into());
                }
            }
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
        self.relay_verdict(&verdict).await
    }

    /// The backend's verdict on a command ftpfront also handles itself (a refusal of PASV's
    /// argument, its answer to REST), passed on as it is.
    pub(super) async fn relay_verdict(&mut self, reply: &Reply) -> Result<Flow, SessionError> {
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

/// The reply code a relayed piece starts with (the first piece starts the reply).
fn reply_code_of(piece: &[u8]) -> Option<u16> {
    let digits = std::str::from_utf8(piece.get(..3)?).ok()?;
    digits.parse().ok()
}
