//! The session's one loop: the phase it is in, the one `select!` that waits for the next
//! event (client, backend, timer, shutdown, data connection, pump), and where each event
//! goes. ABOR, NOOP/STAT during a transfer, the queue of pipelined commands and shutdown
//! are decided here, once for every phase.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::relay::next_backend_reply;
use super::running::RunningTransfer;
use super::{ClientInput, Flow, Outcome, Session, SessionError};
use crate::conn::BackendLegError;
use crate::data::ClientConn;
use crate::ftp::codes;
use crate::ftp::{Command, LineEvent, Reply, Verb};
use crate::shutdown;

/// Replies a client's pipelined input may wait for during a transfer. With this many
/// queued, ftpfront stops reading the client until the transfer ends (as a server that
/// reads no command during a transfer does): keepalive NOOPs queued behind a command over
/// a long transfer must not cost the session.
pub(super) const MAX_QUEUED: usize = 32;

/// What the session is doing between two events.
#[derive(Default)]
pub(super) enum Phase {
    /// Between commands.
    #[default]
    Idle,
    /// A transfer command waits for the client's data connection.
    AwaitingData(AwaitingData),
    /// A transfer's bytes flow (or its last replies are due).
    Transferring(Box<RunningTransfer>),
}

/// The client's data connection being accepted (passive) or made (active).
pub(super) type Connecting = Pin<Box<dyn Future<Output = Result<ClientConn, Reply>> + Send>>;

pub(super) struct AwaitingData {
    pub(super) command: Command,
    pub(super) connecting: Connecting,
}

/// Client input that waits its turn while the session is busy: replies leave in the order
/// of the commands they answer (RFC 959), whoever produces them.
pub(super) enum Pending {
    Command(Command),
    /// ftpfront's own answer to a line it could not take (too long, malformed).
    Reply(Reply),
}

/// One thing that happened, for the phase to handle.
enum Event {
    Client(std::io::Result<Option<LineEvent>>),
    Backend(Result<Reply, BackendLegError>),
    Timer(Timer),
    /// The proxy is stopping: idle sessions end now, busy ones at the cut.
    Shutdown,
    ClientData(Result<ClientConn, Reply>),
    PumpDone(Result<std::io::Result<u64>, tokio::task::JoinError>),
    StallCheck,
}

/// Which deadline of the phase came.
#[derive(Clone, Copy)]
enum Timer {
    Idle(Duration),
    Keepalive,
    FinalReply,
    /// An aborted download's data connection is still open.
    AborGrace,
}

/// Runs `$body` on the running transfer (bound to `$run`, taken out of the phase): an
/// `Ok(Some(flow))` ends the transfer, `Ok(None)` puts it back.
macro_rules! with_transfer {
    ($session:ident, $run:ident => $body:expr) => {
        match $session.take_transfer() {
            Some(mut $run) => {
                let ended = $body?;
                Ok($session.resume($run, ended))
            }
            None => Ok(Flow::Continue),
        }
    };
}

impl Session {
    /// The session from its greeting to its end.
    pub(super) async fn serve(&mut self) -> Result<Outcome, SessionError> {
        self.early = super::early::EarlyBackend::start(&self.shared, self.client.peer());
        self.send(&Reply::new(
            codes::SERVICE_READY,
            "ftpfront FTP proxy ready.",
        ))
        .await?;
        loop {
            let flow = match self.settle().await? {
                Some(flow) => flow,
                None => {
                    let event = self.next_event().await;
                    self.on_event(event).await?
                }
            };
            if let Flow::Close(outcome) = flow {
                return Ok(outcome);
            }
        }
    }

    /// Work the phase can do without waiting: a queued command once idle, the end of a
    /// transfer whose data and final reply are both in, a draining proxy's goodbye.
    async fn settle(&mut self) -> Result<Option<Flow>, SessionError> {
        let reply_timeout = self.reply_timeout();
        match &mut self.phase {
            Phase::Idle => {
                // Between commands a draining proxy ends the session (a transfer that was
                // running when the signal came has just finished). A command the client
                // sent before is served first: a transfer it starts gets the grace.
                if shutdown::is_stopping(&self.shutdown) {
                    if let Some(event) = super::poll_once(self.client.next_event()).await {
                        return self.on_event(Event::Client(event)).await.map(Some);
                    }
                    return self
                        .close_for_shutdown()
                        .await
                        .map(|o| Some(Flow::Close(o)));
                }
                match self.queued.pop_front() {
                    Some(Pending::Command(command)) => self.handle(command).await.map(Some),
                    Some(Pending::Reply(reply)) => {
                        self.send(&reply).await?;
                        Ok(Some(Flow::Continue))
                    }
                    None => Ok(None),
                }
            }
            Phase::Transferring(run) if run.is_settled() => match self.take_transfer() {
                Some(run) => self.end_transfer(run).await.map(Some),
                None => Ok(None),
            },
            Phase::Transferring(run) => {
                run.start_reply_deadline(reply_timeout);
                Ok(None)
            }
            Phase::AwaitingData(_) => Ok(None),
        }
    }

    /// The one wait of a session. Every phase reads the client and the backend; the
    /// timers, the shutdown level and the phase's own futures depend on the phase.
    async fn next_event(&mut self) -> Event {
        let timer = self.next_timer();
        let busy = !matches!(self.phase, Phase::Idle);
        let reads_client = self.queued.len() < MAX_QUEUED;
        let Session {
            client,
            backend,
            phase,
            shutdown,
            ..
        } = self;
        let (wants_backend, connecting, pump, stall) = match phase {
            Phase::Idle => (true, None, None, None),
            Phase::AwaitingData(waiting) => (true, Some(&mut waiting.connecting), None, None),
            Phase::Transferring(run) => {
                let wants = run.wants_backend_reply();
                let (pump, stall) = run.pump_and_stall_check();
                (wants, None, pump, Some(stall))
            }
        };
        let backend = backend.as_mut().map(|leg| &mut leg.control);
        tokio::select! {
            event = client.next_event(), if reads_client => Event::Client(event),
            reply = next_backend_reply(backend), if wants_backend => Event::Backend(reply),
            timer = sleep_until(timer) => Event::Timer(timer),
            _ = shutdown_reached(shutdown, busy) => Event::Shutdown,
            result = maybe(connecting) => Event::ClientData(result),
            joined = maybe(pump) => Event::PumpDone(joined),
            _ = tick(stall.flatten()) => Event::StallCheck,
        }
    }

    /// The deadline the phase waits for: the idle timeout between commands, the
    /// backend's keepalive while a data connection is awaited, the final reply once the
    /// data is through.
    fn next_timer(&self) -> Option<(Instant, Timer)> {
        match &self.phase {
            Phase::Idle => {
                let idle = self.shared.config.limits.idle_timeout;
                Some((Instant::now() + idle, Timer::Idle(idle)))
            }
            Phase::AwaitingData(_) => self
                .keepalive_due_in()
                .map(|due| (Instant::now() + due, Timer::Keepalive)),
            Phase::Transferring(run) => {
                let final_reply = run.reply_deadline().map(|at| (at, Timer::FinalReply));
                let abor_grace = run.abor_grace_ends().map(|at| (at, Timer::AborGrace));
                final_reply.or(abor_grace)
            }
        }
    }

    async fn on_event(&mut self, event: Event) -> Result<Flow, SessionError> {
        let transferring = matches!(self.phase, Phase::Transferring(_));
        match event {
            Event::Client(event) => self.on_client(event).await,
            Event::Backend(reply) if transferring => {
                with_transfer!(self, run => self.on_transfer_reply(&mut run, reply).await)
            }
            Event::Backend(reply) => self.on_unsolicited_reply(reply).await,
            Event::Timer(Timer::Idle(idle)) => {
                info!(timeout = ?idle, "idle timeout");
                let text = format!(
                    "Idle timeout ({}s): closing control connection.",
                    idle.as_secs()
                );
                self.reply(codes::SERVICE_NOT_AVAILABLE, &text).await?;
                Ok(Flow::Close(Outcome::Ok))
            }
            // The client waits for its transfer: the backend must not idle out meanwhile.
            Event::Timer(Timer::Keepalive) => {
                Ok(self.keep_backend_alive().await?.unwrap_or(Flow::Continue))
            }
            Event::Timer(Timer::FinalReply) => {
                with_transfer!(self, run => self.final_reply_overdue(&mut run).await)
            }
            Event::Timer(Timer::AborGrace) => with_transfer!(self, run => {
                run.reset_after_abor().await;
                Ok::<_, SessionError>(None)
            }),
            Event::Shutdown => match std::mem::take(&mut self.phase) {
                // `settle` says goodbye.
                Phase::Idle => Ok(Flow::Continue),
                Phase::AwaitingData(_) => self.close_for_shutdown().await.map(Flow::Close),
                Phase::Transferring(mut run) => self.cut_for_shutdown(&mut run).await,
            },
            Event::ClientData(connected) => match std::mem::take(&mut self.phase) {
                Phase::AwaitingData(waiting) => {
                    self.on_client_data(waiting.command, connected).await
                }
                other => {
                    self.phase = other;
                    Ok(Flow::Continue)
                }
            },
            Event::PumpDone(joined) => with_transfer!(self, run => {
                run.pump_done(joined);
                Ok::<_, SessionError>(None)
            }),
            Event::StallCheck => with_transfer!(self, run => self.on_stall_check(&mut run).await),
        }
    }

    /// A client event in any phase. A command goes to `handle` between commands; while
    /// busy, ABOR acts on the phase and everything else waits its turn (`while_busy`).
    async fn on_client(
        &mut self,
        event: std::io::Result<Option<LineEvent>>,
    ) -> Result<Flow, SessionError> {
        let busy = !matches!(self.phase, Phase::Idle);
        let event = match event {
            Ok(event) => event,
            Err(source) if !busy => {
                let peer = self.client.peer();
                return Err(SessionError::ClientRead { peer, source });
            }
            Err(e) => {
                debug!(error = %e, "client control connection failed");
                None
            }
        };
        match self.parse_client_event(event) {
            ClientInput::Gone => match std::mem::take(&mut self.phase) {
                Phase::Transferring(mut run) => self.client_gone(&mut run).await,
                _ => Ok(Flow::Close(Outcome::Ok)),
            },
            ClientInput::Ignored => Ok(Flow::Continue),
            ClientInput::Own(reply) if busy => self.while_busy(Pending::Reply(reply)).await,
            ClientInput::Own(reply) => {
                self.answer_reply(&reply).await?;
                Ok(Flow::Continue)
            }
            ClientInput::Command(command) if busy && command.verb == Verb::Abor => {
                self.abort(command).await
            }
            ClientInput::Command(command) if busy => {
                self.while_busy(Pending::Command(command)).await
            }
            ClientInput::Command(command) => self.handle(command).await,
        }
    }

    /// ABOR while busy: before the data connection, ftpfront answers it (the backend has
    /// not heard the transfer command yet); during a transfer, see `transfer.rs`.
    async fn abort(&mut self, command: Command) -> Result<Flow, SessionError> {
        match std::mem::take(&mut self.phase) {
            Phase::AwaitingData(_) => {
                self.reply(
                    codes::CANT_OPEN_DATA,
                    "Transfer aborted before its data connection opened.",
                )
                .await?;
                self.reply(codes::CLOSING_DATA, "ABOR command successful.")
                    .await?;
                Ok(Flow::Continue)
            }
            Phase::Transferring(run) if run.is_aborting() => {
                self.phase = Phase::Transferring(run);
                self.while_busy(Pending::Command(command)).await
            }
            Phase::Transferring(mut run) => {
                let ended = self.abort_transfer(&mut run, &command).await?;
                if ended.is_none() {
                    self.phase = Phase::Transferring(run);
                }
                Ok(ended.unwrap_or(Flow::Continue))
            }
            Phase::Idle => self.handle(command).await,
        }
    }

    /// Input while busy: NOOP and STAT are answered at once, and ftpfront's own replies
    /// sent at once, only when nothing waits before them; the rest waits its turn
    /// (bounded by [`MAX_QUEUED`]: `next_event` reads no more client input past it).
    async fn while_busy(&mut self, input: Pending) -> Result<Flow, SessionError> {
        if self.queued.is_empty() {
            match &input {
                Pending::Reply(reply) => {
                    self.answer_reply(reply).await?;
                    return Ok(Flow::Continue);
                }
                Pending::Command(command) => {
                    if let Some(reply) = self.busy_status(command) {
                        self.send(&reply).await?;
                        return Ok(Flow::Continue);
                    }
                }
            }
        }
        self.queued.push_back(input);
        Ok(Flow::Continue)
    }

    /// NOOP and STAT (without argument) while busy: ftpfront's own answers, so that
    /// keepalives never wait for a long transfer.
    fn busy_status(&self, command: &Command) -> Option<Reply> {
        match command.verb {
            Verb::Noop => Some(Reply::new(codes::COMMAND_OK, "NOOP ok.")),
            Verb::Stat if command.arg_str().is_empty() => {
                let status = match &self.phase {
                    Phase::Transferring(run) => run.status_line(),
                    _ => " waiting for the data connection".to_string(),
                };
                let lines = vec![
                    "ftpfront status:".to_string(),
                    status,
                    "End of status".to_string(),
                ];
                Some(Reply::multiline(codes::FILE_STATUS, lines))
            }
            _ => None,
        }
    }

    /// The running transfer, taken out of the phase while a handler works on it.
    fn take_transfer(&mut self) -> Option<Box<RunningTransfer>> {
        match std::mem::take(&mut self.phase) {
            Phase::Transferring(run) => Some(run),
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// After a transfer handler: `Some` ended the transfer (the phase stays idle), `None`
    /// puts it back.
    fn resume(&mut self, run: Box<RunningTransfer>, ended: Option<Flow>) -> Flow {
        match ended {
            Some(flow) => flow,
            None => {
                self.phase = Phase::Transferring(run);
                Flow::Continue
            }
        }
    }
}

/// Idle sessions end as soon as the proxy stops; busy ones get the grace, until the cut.
async fn shutdown_reached(receiver: &mut shutdown::Receiver, busy: bool) {
    if busy {
        shutdown::cut(receiver).await
    } else {
        shutdown::stopping(receiver).await
    }
}

async fn sleep_until(timer: Option<(Instant, Timer)>) -> Timer {
    match timer {
        Some((at, timer)) => {
            tokio::time::sleep_until(at).await;
            timer
        }
        None => std::future::pending().await,
    }
}

/// Awaits the future if there is one, or never.
async fn maybe<F: Future + Unpin>(future: Option<&mut F>) -> F::Output {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn tick(interval: Option<&mut tokio::time::Interval>) {
    match interval {
        Some(interval) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}
