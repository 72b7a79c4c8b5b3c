//! One transfer's lifecycle inside a session: both data legs, the relayed command, the
//! pump running while the control connection stays answered, ABOR, stalls, and the
//! backend's final reply held until the last byte is through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::{debug, warn};

use super::events::{SessionEvent, Side, TransferEnd, TransferFacts, TransferResult};
use super::run_loop::AwaitingData;
use super::{Flow, Outcome, Phase, Session, SessionError};
use crate::backend::{open_backend_data, BackendData, BackendDataError, DataError};
use crate::conn::BackendLegError;
use crate::data::{self, client_data_stream, DataStream};
use crate::ftp::command::TransferDirection;
use crate::ftp::{Command, Reply};
use crate::tls;
use tokio_rustls::rustls::HandshakeKind;

/// How long a backend may take to notice that ftpfront closed a transfer's data connection.
const ABANDONED_TRANSFER_WAIT: std::time::Duration = std::time::Duration::from_secs(3);
/// How long the data connection of an aborted download may stay open: servers that
/// honour ABOR only once the client closes it (vsftpd and proftpd with a plain ABOR,
/// libunftp) would otherwise hold a client that keeps it open forever. Clients close it
/// within a second of their ABOR; they never see this.
const ABOR_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// How long after an aborted download's data connection closed its replies may still come
/// before ftpfront looks for their end (`await_abor_replies`).
const ABOR_REPLIES_WAIT: std::time::Duration = std::time::Duration::from_millis(300);
/// How long a stopped pump may take to reset its data connections.
const PUMP_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a running transfer is checked for progress.
const STALL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
    /// A transfer command: its data connection is awaited in `Phase::AwaitingData`, with
    /// the control connection still answered (an ABOR or QUIT sent meanwhile is not stuck
    /// behind the accept timeout); `on_client_data` goes on from there.
    pub(super) async fn transfer(&mut self, command: Command) -> Result<Flow, SessionError> {
        // The gates made sure there is one (`gates::data_prepared`).
        let Some(setup) = self.data.take() else {
            self.reply(425, "Use PASV or EPSV (or PORT) first.").await?;
            return Ok(Flow::Continue);
        };
        let timeout = self.shared.config.limits.data_accept_timeout;
        let connecting = Box::pin(client_data_stream(setup, self.local.ip(), timeout));
        self.phase = Phase::AwaitingData(AwaitingData {
            command,
            connecting,
        });
        Ok(Flow::Continue)
    }

    /// The client's data connection is there (or failed): connect the backend's, relay the
    /// transfer command, and start the pump (`Phase::Transferring`). The backend's final
    /// reply is held until the last byte has been relayed.
    pub(super) async fn on_client_data(
        &mut self,
        command: Command,
        connected: Result<tokio::net::TcpStream, Reply>,
    ) -> Result<Flow, SessionError> {
        let direction = command
            .verb
            .transfer_direction()
            .unwrap_or(TransferDirection::Listing);
        let client_stream = match connected {
            Ok(stream) => stream,
            Err(reply) => {
                self.send(&reply).await?;
                return Ok(Flow::Continue);
            }
        };
        let Some(leg) = self.backend.as_mut() else {
            self.reply(530, "Please login with USER and PASS.").await?;
            return Ok(Flow::Continue);
        };
        let backend_data = match open_backend_data(leg).await {
            Ok(data) => data,
            Err(BackendDataError::Leg(e)) => return Err(e.into()),
            Err(BackendDataError::Setup(reason)) => {
                warn!(
                    reason = reason.as_str(),
                    "cannot open the backend data connection"
                );
                // The reason names the backend's addresses: the log has it, not the client.
                self.reply(425, "Can't open data connection.").await?;
                return Ok(Flow::Continue);
            }
        };
        // REST must be the last command before the transfer (RFC 3659 5.3): it goes after
        // the backend's PASV/PORT, right before the transfer command.
        if let Some(rest) = self.pending_rest.take() {
            let reply = leg.control.command(&rest, "sending REST").await?;
            if reply.code != 350 {
                self.send(&reply).await?;
                self.record(SessionEvent::TransferNotStarted { direction });
                return Ok(Flow::Continue);
            }
        }
        let first = leg.control.command(&command, "starting a transfer").await?;
        if first.is_error() || first.is_intermediate() {
            self.send(&first).await?;
            self.record(SessionEvent::TransferNotStarted { direction });
            return Ok(Flow::Continue);
        }
        let mut held_final = None;
        if first.is_preliminary() {
            self.send(&first).await?;
        } else {
            held_final = Some(first);
        }
        let backend_stream = match self.backend_data_stream(backend_data).await {
            Ok(stream) => stream,
            Err(e) => {
                warn!(
                    error = e.to_string().as_str(),
                    "backend data connection failed"
                );
                self.finish_failed_start(held_final.is_none()).await?;
                self.reply(425, "Can't open data connection.").await?;
                self.record(SessionEvent::TransferNotStarted { direction });
                return Ok(Flow::Continue);
            }
        };
        self.record(SessionEvent::DataConnectionsOpened);
        // TLS on the data legs starts after the 150: clients begin their handshake only then.
        let upload = direction == TransferDirection::Upload;
        let (client_leg, backend_leg) = match self
            .secure_data_legs(client_stream, backend_stream, upload)
            .await
        {
            Ok(legs) => legs,
            Err(refusal) => {
                warn!(reason = refusal.text.as_str(), "data connection TLS failed");
                self.reply(refusal.code, &refusal.text).await?;
                self.resync_backend(held_final.is_none()).await?;
                self.record(SessionEvent::TransferNotStarted { direction });
                return Ok(Flow::Continue);
            }
        };
        let progress = Arc::new(AtomicU64::new(0));
        let (from, to, names) = match direction {
            TransferDirection::Upload => (client_leg, backend_leg, ["client", "backend"]),
            _ => (backend_leg, client_leg, ["backend", "client"]),
        };
        let pump = Pump::start(from, to, progress.clone(), names);
        let run = RunningTransfer {
            direction,
            path: command.arg_str().to_string(),
            started: Instant::now(),
            progress,
            pump,
            pump_result: None,
            final_reply: held_final,
            last_progress: (0, Instant::now()),
            reply_deadline: None,
            counted: std::cell::Cell::new(0),
            stall_check: stall_check_interval(),
            aborting: false,
            abor_grace_ends: None,
            finals_after_abor: 0,
            _active: ActiveTransfer::start(self.shared.metrics.clone()),
        };
        self.phase = Phase::Transferring(Box::new(run));
        Ok(Flow::Continue)
    }

    /// After a failed backend data connection, the backend still owes the transfer's reply.
    async fn finish_failed_start(&mut self, reply_pending: bool) -> Result<(), SessionError> {
        if let (true, Some(leg)) = (reply_pending, self.backend.as_mut()) {
            let reply = leg
                .control
                .read_reply("waiting for a failed transfer's reply")
                .await?;
            debug!(
                code = reply.code,
                "backend reply to the failed transfer dropped"
            );
        }
        Ok(())
    }

    async fn backend_data_stream(
        &mut self,
        data: BackendData,
    ) -> Result<tokio::net::TcpStream, DataError> {
        match data {
            BackendData::Connected(stream) => Ok(stream),
            BackendData::Listening(listener) => {
                let backend_ip = self.backend.as_ref().map(|leg| leg.control.peer().ip());
                let Some(backend_ip) = backend_ip else {
                    return Err(DataError::AcceptTimeout(std::time::Duration::ZERO));
                };
                listener
                    .accept_from(backend_ip, self.shared.config.limits.data_accept_timeout)
                    .await
            }
        }
    }

    /// A backend reply during a transfer: after ABOR relayed at once, before it see
    /// `on_reply_while_transferring`.
    pub(super) async fn on_transfer_reply(
        &mut self,
        run: &mut RunningTransfer,
        reply: Result<Reply, BackendLegError>,
    ) -> Result<Option<Flow>, SessionError> {
        match reply {
            Ok(reply) if run.aborting => {
                run.finals_after_abor += u8::from(!reply.is_preliminary());
                self.relay_after_abor(&reply).await
            }
            Ok(reply) => self.on_reply_while_transferring(reply, run).await,
            Err(e) => Err(self.backend_lost(run, e).await),
        }
    }

    /// The data is through and the backend's final reply did not come in time.
    pub(super) async fn final_reply_overdue(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Option<Flow>, SessionError> {
        let peer = self
            .backend
            .as_ref()
            .map(|leg| leg.control.peer())
            .unwrap_or(self.local);
        let timeout = self.reply_timeout();
        let phase = "waiting for the transfer's final reply";
        let e = BackendLegError::Timeout {
            peer,
            phase,
            timeout,
        };
        Err(self.backend_lost(run, e).await)
    }

    /// A stalled data connection ends the transfer instead of pinning the session.
    pub(super) async fn on_stall_check(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Option<Flow>, SessionError> {
        match self.check_stall(run) {
            Some(reason) => self.give_up(run, &reason).await.map(Some),
            None => Ok(None),
        }
    }

    /// The data is through and the backend has answered (or, after ABOR, the data
    /// connection is done): the transfer ends.
    pub(super) async fn end_transfer(
        &mut self,
        mut run: Box<RunningTransfer>,
    ) -> Result<Flow, SessionError> {
        if run.aborting {
            return self.finish_abort(&mut run).await;
        }
        let pumped = run
            .pump_result
            .clone()
            .unwrap_or_else(|| Err("data pump still running".to_string()));
        self.complete(*run, pumped).await
    }

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

    /// The client vanished mid-transfer: end the backend's side the way the client's own
    /// disappearance would have (data connection reset, ABOR), then close.
    pub(super) async fn client_gone(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        self.record_end(run, moved, TransferResult::Aborted, TransferEnd::Abandoned);
        self.send_backend_abor().await;
        Ok(Flow::Close(Outcome::Ok))
    }

    /// The backend's control connection failed mid-transfer: the client hears that its
    /// transfer failed (426) before the session ends with 421, and the data connection is
    /// reset so that a client which ignores the control reply cannot take it as complete.
    async fn backend_lost(
        &mut self,
        run: &mut RunningTransfer,
        e: BackendLegError,
    ) -> SessionError {
        let moved = run.stop().await;
        let error = e.to_string();
        let end = TransferEnd::BackendLost { error: &error };
        self.record_end(run, moved, TransferResult::Error, end);
        let _ = self
            .reply(
                426,
                "Connection closed; transfer aborted (the server's connection failed).",
            )
            .await;
        e.into()
    }

    /// The grace of a shutdown is over: cut the transfer, tell the client, count it.
    pub(super) async fn cut_for_shutdown(
        &mut self,
        run: &mut RunningTransfer,
    ) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        let end = TransferEnd::CutForShutdown;
        self.record_end(run, moved, TransferResult::Aborted, end);
        self.send_backend_abor().await;
        self.reply(
            421,
            "Service shutting down; transfer cut at the end of the shutdown grace.",
        )
        .await?;
        Ok(Flow::Close(Outcome::Ok))
    }

    /// ftpfront gave up on a transfer (stalled): reset the data connections, bring the
    /// backend back in step with ABOR, tell the client 426.
    async fn give_up(
        &mut self,
        run: &mut RunningTransfer,
        reason: &str,
    ) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        self.resync_backend(run.final_reply.is_none()).await?;
        self.reply(426, &format!("Data connection {reason}; transfer aborted."))
            .await?;
        let end = TransferEnd::GaveUp { reason };
        self.record_end(run, moved, TransferResult::Error, end);
        Ok(Flow::Continue)
    }

    /// Best effort, for a session about to close: the backend learns the transfer is over.
    async fn send_backend_abor(&mut self) {
        if let Some(leg) = self.backend.as_mut() {
            let abor = Command::new("ABOR", None);
            let sent = leg.control.send(&abor, "sending ABOR");
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), sent).await;
        }
    }

    pub(super) fn reply_timeout(&self) -> std::time::Duration {
        self.backend
            .as_ref()
            .map(|leg| leg.config.reply_timeout)
            .unwrap_or(self.shared.config.limits.idle_timeout)
    }

    /// A backend reply during a transfer. An error ends the transfer at once (waiting for a
    /// data connection the backend has given up on would pin the session); a 2xx is held
    /// until the pump has delivered every byte.
    async fn on_reply_while_transferring(
        &mut self,
        reply: Reply,
        run: &mut RunningTransfer,
    ) -> Result<Option<Flow>, SessionError> {
        if reply.is_preliminary() {
            self.send(&reply).await?;
            return Ok(None);
        }
        if reply.code == 421 {
            run.pump.stop_and_wait().await;
            self.send(&reply).await?;
            let moved = run.progress.load(Ordering::Relaxed);
            let end = TransferEnd::ClosedByBackend;
            self.record_end(run, moved, TransferResult::Error, end);
            return Ok(Some(Flow::Close(Outcome::Error)));
        }
        if reply.is_error() && run.pump_result.is_none() {
            run.pump.stop_and_wait().await;
            run.pump_result = Some(Err(format!("backend reported {}", reply.code)));
        }
        run.final_reply = Some(reply);
        Ok(None)
    }

    /// Why the pump should be given up: it moved no byte for `limits.idle_timeout`.
    fn check_stall(&self, run: &mut RunningTransfer) -> Option<String> {
        self.count_progress(run);
        let moved = run.progress.load(Ordering::Relaxed);
        let (last, since) = run.last_progress;
        if moved != last {
            run.last_progress = (moved, Instant::now());
            return None;
        }
        let limit = self.shared.config.limits.idle_timeout;
        (since.elapsed() >= limit)
            .then(|| format!("stalled: no data moved for {}s", limit.as_secs()))
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
    async fn relay_after_abor(&mut self, reply: &Reply) -> Result<Option<Flow>, SessionError> {
        self.send(reply).await?;
        Ok((reply.code == 421).then_some(Flow::Close(Outcome::Error)))
    }

    /// The data connection of an aborted download is done: the backend's remaining
    /// replies (up to the marker of `sync_marker`) reach the client, the transfer is
    /// counted as aborted.
    async fn finish_abort(&mut self, run: &mut RunningTransfer) -> Result<Flow, SessionError> {
        let moved = run.stop().await;
        if let Some(flow) = self.await_abor_replies(run).await? {
            return Ok(flow);
        }
        for reply in self.sync_marker().await? {
            if let Some(flow) = self.relay_after_abor(&reply).await? {
                return Ok(flow);
            }
        }
        self.record_end(
            run,
            moved,
            TransferResult::Aborted,
            TransferEnd::AbortedByClient,
        );
        Ok(Flow::Continue)
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
                self.reply(426, "Connection closed; transfer aborted.")
                    .await?;
                self.reply(226, "ABOR command successful.").await?;
            }
        }
        self.record_end(
            run,
            moved,
            TransferResult::Aborted,
            TransferEnd::AbortedByClient,
        );
        Ok(Flow::Continue)
    }

    /// Ends the backend's side of a transfer that was cut (its data connection is reset by
    /// now), as a client aborting it directly would: ABOR. The backend usually answers the
    /// broken transfer by itself first, so that reply is awaited (briefly): sending ABOR at
    /// once races with it, and some servers (libunftp) then answer ABOR and the next command
    /// before the transfer. A PWD after ABOR marks where those replies end: its 257 is a
    /// code neither a transfer nor ABOR produces.
    /// Returns the backend's final replies before the 257, in order (the broken transfer's,
    /// then ABOR's, when the server answers both).
    async fn resync_backend(
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
            if reply.code == 257 {
                return Ok(before);
            }
            debug!(code = reply.code, "backend reply after ABOR");
            before.push(reply);
        }
    }

    /// Wraps the data legs in TLS where the session uses it: towards the client after PROT
    /// P (ftpfront is the TLS server, resuming the control session), towards a TLS backend
    /// always (ftpfront is the TLS client). Both handshakes run at once.
    async fn secure_data_legs(
        &mut self,
        client: tokio::net::TcpStream,
        backend: tokio::net::TcpStream,
        upload: bool,
    ) -> Result<(DataStream, DataStream), DataRefusal> {
        let acceptor = match (&self.shared.client_tls, self.prot_private) {
            (Some(tls), true) => Some(tls.data_acceptor(upload)),
            _ => None,
        };
        let connector = self.backend.as_ref().and_then(|leg| leg.tls.clone());
        let require_reuse = self.shared.config.tls.require_data_session_reuse;
        let client_side = async {
            let Some(acceptor) = acceptor else {
                return Ok(DataStream::Plain(client));
            };
            let secured = tls::accept(&acceptor, client)
                .await
                .map_err(|e| DataRefusal {
                    code: 425,
                    text: format!("Can't open data connection: TLS handshake failed ({e})."),
                })?;
            let resumed = secured.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
            if require_reuse && !resumed {
                return Err(DataRefusal {
                    code: 522,
                    text: "Data connection must resume the control connection's TLS session."
                        .into(),
                });
            }
            Ok(DataStream::ClientTls(Box::new(secured)))
        };
        let backend_side = async {
            let Some(connector) = connector else {
                return Ok(DataStream::Plain(backend));
            };
            let secured = connector.connect(backend).await.map_err(|e| {
                warn!(error = %e, "TLS handshake on the backend data connection failed");
                DataRefusal {
                    code: 425,
                    text: "Can't open data connection: TLS handshake failed.".to_string(),
                }
            })?;
            Ok(DataStream::BackendTls(Box::new(secured)))
        };
        let (client_leg, backend_leg) = tokio::join!(client_side, backend_side);
        self.count_data_handshakes(&client_leg, &backend_leg);
        Ok((client_leg?, backend_leg?))
    }

    fn count_data_handshakes(
        &self,
        client: &Result<DataStream, DataRefusal>,
        backend: &Result<DataStream, DataRefusal>,
    ) {
        for (side, leg) in [(Side::Client, client), (Side::Backend, backend)] {
            match leg {
                Ok(DataStream::Plain(_)) => {}
                leg => self.record(SessionEvent::TlsHandshake {
                    side,
                    ok: leg.is_ok(),
                }),
            }
        }
    }

    /// Both the pump and the backend are done: the client gets the backend's final reply,
    /// unless the data connection broke, which a 2xx from the backend cannot excuse.
    async fn complete(
        &mut self,
        mut run: RunningTransfer,
        pumped: Result<u64, String>,
    ) -> Result<Flow, SessionError> {
        let final_reply = run
            .final_reply
            .take()
            .unwrap_or_else(|| Reply::new(451, "Transfer status unknown."));
        let data_error = pumped.as_ref().err().cloned();
        let (reply, result, bytes) = match pumped {
            Ok(bytes) if final_reply.is_completion() => (final_reply, TransferResult::Ok, bytes),
            Ok(bytes) => (final_reply, TransferResult::Failed, bytes),
            Err(reason) if final_reply.is_completion() => (
                Reply::new(
                    426,
                    format!("Data connection broken ({reason}); transfer incomplete."),
                ),
                TransferResult::Error,
                run.progress.load(Ordering::Relaxed),
            ),
            Err(_) => (
                final_reply,
                TransferResult::Failed,
                run.progress.load(Ordering::Relaxed),
            ),
        };
        self.send(&reply).await?;
        let end = TransferEnd::Completed {
            reply: reply.code,
            data_error: data_error.as_deref(),
        };
        self.record_end(&run, bytes, result, end);
        Ok(Flow::Continue)
    }

    /// A running transfer ended: its bytes went into the counter as they moved
    /// (`count_progress`), only the rest is added now.
    fn record_end(
        &self,
        run: &RunningTransfer,
        bytes: u64,
        result: TransferResult,
        end: TransferEnd<'_>,
    ) {
        let transfer = TransferFacts {
            direction: run.direction,
            path: &run.path,
            started: run.started,
            bytes,
            uncounted: bytes.saturating_sub(run.counted.get()),
        };
        self.record(SessionEvent::TransferEnded {
            transfer,
            result,
            end,
        });
    }

    /// Adds the bytes moved since the last call, so throughput graphs follow long transfers
    /// instead of jumping when they end.
    fn count_progress(&self, run: &RunningTransfer) {
        let moved = run.progress.load(Ordering::Relaxed);
        let bytes = moved.saturating_sub(run.counted.replace(moved));
        let direction = run.direction;
        self.record(SessionEvent::TransferProgress { direction, bytes });
    }
}

pub(super) struct RunningTransfer {
    direction: TransferDirection,
    path: String,
    started: Instant,
    progress: Arc<AtomicU64>,
    pump: Pump,
    pump_result: Option<Result<u64, String>>,
    final_reply: Option<Reply>,
    /// Bytes moved at the last stall check, and when that count last changed.
    last_progress: (u64, Instant),
    /// Set when the data is done: the backend then has `reply_timeout` for its final reply.
    reply_deadline: Option<tokio::time::Instant>,
    /// Bytes already added to `ftpfront_transfer_bytes_total`.
    counted: std::cell::Cell<u64>,
    /// The client sent ABOR and the backend has it (see `pass_abor_on`).
    aborting: bool,
    /// When ftpfront resets the data connections of an aborted download ([`ABOR_GRACE`]).
    abor_grace_ends: Option<tokio::time::Instant>,
    /// Final (not 1xx) backend replies since ABOR.
    finals_after_abor: u8,
    /// When the next progress check is due (see `check_stall`).
    stall_check: tokio::time::Interval,
    _active: ActiveTransfer,
}

impl RunningTransfer {
    /// Stops the pump (both data connections reset) and returns the bytes it moved.
    async fn stop(&mut self) -> u64 {
        self.pump.stop_and_wait().await;
        self.progress.load(Ordering::Relaxed)
    }

    /// Nothing more to wait for: the data is through, and the final reply is in (or,
    /// after ABOR, the backend's remaining replies are left to `finish_abort`).
    pub(super) fn is_settled(&self) -> bool {
        self.pump_result.is_some() && (self.aborting || self.final_reply.is_some())
    }

    pub(super) fn is_aborting(&self) -> bool {
        self.aborting
    }

    /// Once the data is through, the backend has `timeout` for its final reply.
    pub(super) fn start_reply_deadline(&mut self, timeout: std::time::Duration) {
        if self.pump_result.is_some() && self.reply_deadline.is_none() {
            self.reply_deadline = Some(tokio::time::Instant::now() + timeout);
        }
    }

    /// The final reply's deadline; none after ABOR (`finish_abort` has its own timeouts).
    pub(super) fn reply_deadline(&self) -> Option<tokio::time::Instant> {
        self.reply_deadline.filter(|_| !self.aborting)
    }

    /// When an aborted download's data connections are reset, if they are still open.
    pub(super) fn abor_grace_ends(&self) -> Option<tokio::time::Instant> {
        self.abor_grace_ends.filter(|_| self.pump_result.is_none())
    }

    /// [`ABOR_GRACE`] is over: the data connections are reset, which every server takes
    /// as the end of the aborted transfer.
    pub(super) async fn reset_after_abor(&mut self) {
        self.pump.stop_and_wait().await;
        self.pump_result = Some(Err("reset after ABOR".to_string()));
    }

    /// Backend replies are read until the final one, and after ABOR all of them.
    pub(super) fn wants_backend_reply(&self) -> bool {
        self.final_reply.is_none() || self.aborting
    }

    /// The pump's handle and the progress check, both only while the pump runs.
    pub(super) fn pump_and_stall_check(
        &mut self,
    ) -> (
        Option<&mut tokio::task::JoinHandle<std::io::Result<u64>>>,
        Option<&mut tokio::time::Interval>,
    ) {
        let running = self.pump_result.is_none();
        let RunningTransfer {
            pump, stall_check, ..
        } = self;
        (
            running.then_some(&mut pump.handle),
            running.then_some(stall_check),
        )
    }

    pub(super) fn pump_done(
        &mut self,
        joined: Result<std::io::Result<u64>, tokio::task::JoinError>,
    ) {
        self.pump.finished = true;
        self.pump_result = Some(Pump::outcome(joined));
    }

    /// The line of STAT during the transfer.
    pub(super) fn status_line(&self) -> String {
        let moved = self.progress.load(Ordering::Relaxed);
        let direction = self.direction.as_str();
        format!(" {direction} in progress: {moved} bytes transferred")
    }
}

fn stall_check_interval() -> tokio::time::Interval {
    let mut interval = tokio::time::interval(STALL_CHECK_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval
}

/// The pump task of a transfer. Stopping it, explicitly or by dropping this (no early
/// return can leave a pump running without its session), resets both data connections.
struct Pump {
    handle: tokio::task::JoinHandle<std::io::Result<u64>>,
    stop: CancellationToken,
    _stop_on_drop: DropGuard,
    finished: bool,
}

impl Pump {
    fn start(
        from: DataStream,
        to: DataStream,
        progress: Arc<AtomicU64>,
        names: [&'static str; 2],
    ) -> Pump {
        let stop = CancellationToken::new();
        let pump = data::pump_legs(from, to, progress, names, stop.clone());
        Pump {
            handle: tokio::spawn(pump),
            _stop_on_drop: stop.clone().drop_guard(),
            stop,
            finished: false,
        }
    }

    fn outcome(
        joined: Result<std::io::Result<u64>, tokio::task::JoinError>,
    ) -> Result<u64, String> {
        match joined {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(format!("data pump failed: {e}")),
        }
    }

    /// Stops the pump and waits (briefly) until its data connections are reset, so the
    /// backend has seen the reset before it hears anything else from this session.
    async fn stop_and_wait(&mut self) {
        self.stop.cancel();
        if !self.finished {
            self.finished = true;
            let _ = tokio::time::timeout(PUMP_STOP_WAIT, &mut self.handle).await;
        }
    }
}

/// Keeps `ftpfront_transfers_active` right on every way a transfer can end.
struct ActiveTransfer(Arc<crate::metrics::Metrics>);

impl ActiveTransfer {
    fn start(metrics: Arc<crate::metrics::Metrics>) -> ActiveTransfer {
        metrics.transfers_active.inc();
        ActiveTransfer(metrics)
    }
}

impl Drop for ActiveTransfer {
    fn drop(&mut self) {
        self.0.transfers_active.dec();
    }
}

/// Why a data connection was refused after the backend started the transfer.
struct DataRefusal {
    code: u16,
    text: String,
}
