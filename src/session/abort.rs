//! ABOR during a transfer: a download's ABOR passed on in the client's form and its replies
//! relayed as they come; an upload's (or a markless urgent one's) ending the transfer at
//! once by resetting the data connections; bringing the backend back in step afterwards.

use tracing::debug;

use super::events::{TransferEnd, TransferResult};
use super::running::RunningTransfer;
use super::{Flow, Outcome, Session, SessionError};
use crate::conn::BackendLegError;
use crate::ftp::codes;
use crate::ftp::command::TransferDirection;
use crate::ftp::{Command, Reply};

/// How long a backend may take to notice that ftpfront closed a transfer's data connection.
const ABANDONED_TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the data connection of an aborted download may stay open: servers that
/// honour ABOR only once the client closes it (vsftpd and proftpd with a plain ABOR,
/// libunftp) would otherwise hold a client that keeps it open forever. Clients close it
/// within a second of their ABOR; they never see this.
pub(super) const ABOR_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// How long after an aborted download's data connection closed its replies may still come
/// before ftpfront looks for their end (`await_abor_replies`).
const ABOR_REPLIES_WAIT: std::time::Duration = std::time::Duration::from_millis(300);

impl Session {
    /// ABOR during a transfer. A download goes on until its data connection is done
    /// (`pass_abor_on`), so that the server answers as it would without ftpfront. An
    /// upload ends at once (`abort_by_reset`), and so does a download aborted with urgent
    /// data but no Telnet marks (Python's ftplib): servers misread that form (vsftpd: 500,
    /// proftpd merges it with the next line, libunftp loses it), so it is not passed on.
    /// `Some` when the transfer ended.
    pub(super) async fn abort_transfer(
        &mut self,
        run: &mut RunningTransfer,
        command: &Command,
    ) -> Result<Option<Flow>, SessionError> {
        let urgent_without_marks = self.client.take_urgent_seen() && !command.telnet_prefixed;
        if run.direction == TransferDirection::Upload || urgent_without_marks {
            return self.abort_by_reset(run).await.map(Some);
        }
        self.pass_abor_on(run, command).await?;
        Ok(None)
    }

    /// ABOR during a download goes to the backend in the client's form: with Telnet marks
    /// as RFC 959 urgent data (`send_urgent_abor`), or as a plain line. The backend
    /// then reacts as it would to the client itself: servers that honour an urgent ABOR
    /// end the transfer at once, the others when the client closes its data connection.
    /// Until then the bytes keep flowing, and every backend reply is relayed as it comes
    /// (`relay_after_abor`); `finish_abort` ends it when the data connection is done.
    async fn pass_abor_on(
        &mut self,
        run: &mut RunningTransfer,
        command: &Command,
    ) -> Result<(), SessionError> {
        run.aborting = true;
        run.abor_grace_ends = Some(tokio::time::Instant::now() + ABOR_GRACE);
        // The backend finished before the ABOR: the client hears that first, as directly.
        if let Some(reply) = run.final_reply.take() {
            run.finals_after_abor = 1;
            self.send(&reply).await?;
        }
        let phase = "passing ABOR on";
        let Some(leg) = self.backend.as_mut() else {
            return Ok(());
        };
        if command.telnet_prefixed {
            leg.control.send_urgent_abor(phase).await?;
        } else {
            leg.control.send(&Command::new("ABOR", None), phase).await?;
        }
        Ok(())
    }

    /// A backend reply after ABOR, relayed at once; `Some` ends the session (421).
    pub(super) async fn relay_after_abor(
        &mut self,
        reply: &Reply,
    ) -> Result<Option<Flow>, SessionError> {
        self.send(reply).await?;
        Ok((reply.code == codes::SERVICE_NOT_AVAILABLE).then_some(Flow::Close(Outcome::Error)))
    }

    /// The data connection of an aborted download is done: the backend's remaining
    /// replies (up to the marker of `sync_marker`) reach the client, the transfer is
    /// counted as aborted.
    pub(super) async fn finish_abort(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        if let Some(flow) = self.await_abor_replies(run).await? {
            return Ok(flow);
        }
        for reply in self.sync_marker().await? {
            if let Some(flow) = self.relay_after_abor(&reply).await? {
                return Ok(flow);
            }
        }
        Ok(self.aborted_by_client(run, moved))
    }

    /// The replies to an aborted transfer and to ABOR (two, where servers send both) come
    /// moments after its data connection closed; the marker waits for them that long, as
    /// some servers (libunftp) would otherwise answer the marker first.
    async fn await_abor_replies(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Option<Flow>, SessionError> {
        let until = tokio::time::Instant::now() + ABOR_REPLIES_WAIT;
        while run.finals_after_abor < 2 {
            let Some(leg) = self.backend.as_mut() else {
                return Ok(None);
            };
            let next = leg.control.next_reply("waiting for the replies to ABOR");
            let Ok(reply) = tokio::time::timeout_at(until, next).await else {
                return Ok(None);
            };
            let reply = reply?;
            run.finals_after_abor += u8::from(!reply.is_preliminary());
            if let Some(flow) = self.relay_after_abor(&reply).await? {
                return Ok(Some(flow));
            }
        }
        Ok(None)
    }

    /// ABOR that ends the transfer at once: stop the pump (resetting both data
    /// connections; for an upload, what the client still sends must not reach the backend
    /// as a complete file), bring the backend back in step (`resync_backend`) and answer
    /// as the backend did: its reply to the broken transfer, then its reply to ABOR (RFC
    /// 959). When the backend's last word is not a completion, the client gets ftpfront's
    /// own 426 and 226 instead.
    async fn abort_by_reset(&mut self, run: &mut RunningTransfer) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        let answered = self.resync_backend(run.final_reply.is_none()).await?;
        match answered.last() {
            // vsftpd and proftpd: 426 for the transfer, then 225/226 for ABOR; pure-ftpd
            // answers both with one 226.
            Some(last) if last.is_completion() => {
                for reply in &answered {
                    self.send(reply).await?;
                }
            }
            _ => {
                self.reply(
                    codes::TRANSFER_ABORTED,
                    "Connection closed; transfer aborted.",
                )
                .await?;
                self.reply(codes::CLOSING_DATA, "ABOR command successful.")
                    .await?;
            }
        }
        Ok(self.aborted_by_client(run, moved))
    }

    /// Ends the backend's side of a transfer that was cut (its data connection is reset by
    /// now), as a client aborting it directly would: ABOR. The backend usually answers the
    /// broken transfer by itself first, so that reply is awaited (briefly): sending ABOR at
    /// once races with it, and some servers (libunftp) then answer ABOR and the next command
    /// before the transfer. A PWD after ABOR marks where those replies end: its 257 is a
    /// code neither a transfer nor ABOR produces.
    /// Returns the backend's final replies before the 257, in order (the broken transfer's,
    /// then ABOR's, when the server answers both).
    pub(super) async fn resync_backend(
        &mut self,
        transfer_reply_pending: bool,
    ) -> Result<Vec<Reply>, SessionError> {
        let mut answered = Vec::new();
        let Some(leg) = self.backend.as_mut() else {
            return Ok(answered);
        };
        if transfer_reply_pending {
            let settle = async {
                loop {
                    let reply = leg
                        .control
                        .next_reply("ending an abandoned transfer")
                        .await?;
                    debug!(code = reply.code, "backend reply to the abandoned transfer");
                    if !reply.is_preliminary() {
                        return Ok::<_, BackendLegError>(Some(reply));
                    }
                }
            };
            match tokio::time::timeout(ABANDONED_TRANSFER_WAIT, settle).await {
                Ok(settled) => answered.extend(settled?),
                Err(_) => debug!("backend silent about the abandoned transfer"),
            }
        }
        leg.control
            .send(&Command::new("ABOR", None), "sending ABOR")
            .await?;
        let replies = self.sync_marker().await?;
        answered.extend(replies.into_iter().filter(|reply| !reply.is_preliminary()));
        Ok(answered)
    }

    /// Sends PWD and returns the backend's replies before its 257, in order: after ABOR
    /// the number of replies differs between servers, and 257 is a code neither a
    /// transfer nor ABOR produces.
    async fn sync_marker(&mut self) -> Result<Vec<Reply>, SessionError> {
        let mut before = Vec::new();
        let Some(leg) = self.backend.as_mut() else {
            return Ok(before);
        };
        let phase = "synchronising after ABOR";
        leg.control.send(&Command::new("PWD", None), phase).await?;
        loop {
            let reply = leg.control.read_reply(phase).await?;
            if reply.code == codes::PATHNAME_CREATED {
                return Ok(before);
            }
            debug!(code = reply.code, "backend reply after ABOR");
            before.push(reply);
        }
    }

    /// The client's ABOR ended the transfer: counted, and the session goes on.
    fn aborted_by_client(&self, run: &RunningTransfer, moved: u64) -> Flow {
        let end = TransferEnd::AbortedByClient;
        self.record_end(run, moved, TransferResult::Aborted, end);
        Flow::Continue
    }
}
