//! A running transfer: its state (`RunningTransfer`), the pump task, the backend's replies
//! while it runs, stalls, the final reply held until the last byte, and every way it ends
//! (completed, client gone, backend lost, stalled, cut by a shutdown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::{CancellationToken, DropGuard};

use super::events::{SessionEvent, TransferEnd, TransferFacts, TransferResult};
use super::{Flow, Outcome, Session, SessionError};
use crate::config::PumpMode;
use crate::conn::BackendLegError;
use crate::data::{self, DataStream};
use crate::ftp::codes;
use crate::ftp::command::TransferDirection;
use crate::ftp::{Command, Reply};
use crate::metrics::Metrics;

/// How long a stopped pump may take to reset its data connections.
const PUMP_STOP_WAIT: std::time::Duration = std::time::Duration::from_secs(2);
/// How often a running transfer is checked for progress.
const STALL_CHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

impl Session {
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
                codes::TRANSFER_ABORTED,
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
            codes::SERVICE_NOT_AVAILABLE,
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
        self.reply(
            codes::TRANSFER_ABORTED,
            &format!("Data connection {reason}; transfer aborted."),
        )
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
        if reply.code == codes::SERVICE_NOT_AVAILABLE {
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
            .unwrap_or_else(|| Reply::new(codes::LOCAL_ERROR, "Transfer status unknown."));
        let data_error = pumped.as_ref().err().cloned();
        let (reply, result, bytes) = match pumped {
            Ok(bytes) if final_reply.is_completion() => (final_reply, TransferResult::Ok, bytes),
            Ok(bytes) => (final_reply, TransferResult::Failed, bytes),
            Err(reason) if final_reply.is_completion() => (
                Reply::new(
                    codes::TRANSFER_ABORTED,
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
    pub(super) fn record_end(
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
    pub(super) direction: TransferDirection,
    path: String,
    started: Instant,
    progress: Arc<AtomicU64>,
    pump: Pump,
    pump_result: Option<Result<u64, String>>,
    pub(super) final_reply: Option<Reply>,
    /// Bytes moved at the last stall check, and when that count last changed.
    last_progress: (u64, Instant),
    /// Set when the data is done: the backend then has `reply_timeout` for its final reply.
    reply_deadline: Option<tokio::time::Instant>,
    /// Bytes already added to `ftpfront_transfer_bytes_total`.
    counted: std::cell::Cell<u64>,
    /// The client sent ABOR and the backend has it (see `pass_abor_on`).
    pub(super) aborting: bool,
    /// When ftpfront resets the data connections of an aborted download ([`ABOR_GRACE`]).
    pub(super) abor_grace_ends: Option<tokio::time::Instant>,
    /// Final (not 1xx) backend replies since ABOR.
    pub(super) finals_after_abor: u8,
    /// When the next progress check is due (see `check_stall`).
    stall_check: tokio::time::Interval,
    _active: ActiveTransfer,
}

/// One data leg of a transfer, named by its side for the pump's error messages.
pub(super) enum Leg {
    Client(DataStream),
    Backend(DataStream),
}

impl Leg {
    fn into_parts(self) -> (DataStream, &'static str) {
        match self {
            Leg::Client(stream) => (stream, "client"),
            Leg::Backend(stream) => (stream, "backend"),
        }
    }
}

impl RunningTransfer {
    /// Starts the pump from `from` to `to`; `held_final` is a final reply the backend sent
    /// before its data connection was up (held until the data is through).
    pub(super) fn start(
        direction: TransferDirection,
        path: String,
        from: Leg,
        to: Leg,
        held_final: Option<Reply>,
        metrics: Arc<Metrics>,
        mode: PumpMode,
    ) -> RunningTransfer {
        let progress = Arc::new(AtomicU64::new(0));
        let (from, from_name) = from.into_parts();
        let (to, to_name) = to.into_parts();
        let pump = Pump::start(from, to, progress.clone(), [from_name, to_name], mode);
        RunningTransfer {
            direction,
            path,
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
            _active: ActiveTransfer::start(metrics),
        }
    }

    /// Stops the pump (both data connections reset) and returns the bytes it moved.
    pub(super) async fn stop(&mut self) -> u64 {
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
        mode: PumpMode,
    ) -> Pump {
        let stop = CancellationToken::new();
        let pump = data::pump_legs(from, to, progress, names, mode, stop.clone());
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
struct ActiveTransfer(Arc<Metrics>);

impl ActiveTransfer {
    fn start(metrics: Arc<Metrics>) -> ActiveTransfer {
        metrics.transfers_active.inc();
        ActiveTransfer(metrics)
    }
}

impl Drop for ActiveTransfer {
    fn drop(&mut self) {
        self.0.transfers_active.dec();
    }
}
