//! The session's event sink: handlers say what happened ([`SessionEvent`]), and this one
//! place updates the metrics and writes the log line, with label values as enums.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::gates::Plaintext;
use super::Session;
use crate::ftp::codes;
use crate::ftp::command::TransferDirection;
use crate::ftp::Command;
use crate::metrics::{labels, RouteStep, RoutingFailure};

/// Which leg of the session something happened on (the `side` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client,
    Backend,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Backend => "backend",
        }
    }
}

/// How a transfer ended: the `result` label of `ftpfront_transfers_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TransferResult {
    /// Every byte through and a 2xx from the backend.
    Ok,
    /// The backend refused or failed it.
    Failed,
    /// A data or control connection broke.
    Error,
    /// ABOR, or the client went away, or the shutdown cut it.
    Aborted,
}

impl TransferResult {
    pub(super) fn label(self) -> &'static str {
        match self {
            TransferResult::Ok => labels::OK,
            TransferResult::Failed => labels::FAILED,
            TransferResult::Error => labels::ERROR,
            TransferResult::Aborted => labels::ABORTED,
        }
    }
}

/// Why a running transfer ended, for its log line.
#[derive(Debug, Clone, Copy)]
pub(super) enum TransferEnd<'a> {
    /// The data and the final reply are in: the `transfer` line.
    Completed {
        reply: u16,
        data_error: Option<&'a str>,
    },
    AbortedByClient,
    /// The client closed its control connection.
    Abandoned,
    BackendLost {
        error: &'a str,
    },
    CutForShutdown,
    /// ftpfront gave up on it (stalled).
    GaveUp {
        reason: &'a str,
    },
    /// The backend ended the session (421) mid-transfer.
    ClosedByBackend,
}

/// A running transfer, as its events describe it.
#[derive(Debug, Clone, Copy)]
pub(super) struct TransferFacts<'a> {
    pub direction: TransferDirection,
    pub path: &'a str,
    pub started: Instant,
    /// Every byte it moved.
    pub bytes: u64,
    /// The bytes not yet added to `ftpfront_transfer_bytes_total` (see `TransferProgress`).
    pub uncounted: u64,
}

/// Something that happened in a session.
#[derive(Debug, Clone, Copy)]
pub(super) enum SessionEvent<'a> {
    /// A transfer that failed before its bytes could flow (the handler logged why).
    TransferNotStarted {
        direction: TransferDirection,
    },
    /// A running transfer ended.
    TransferEnded {
        transfer: TransferFacts<'a>,
        result: TransferResult,
        end: TransferEnd<'a>,
    },
    /// Bytes a running transfer moved since the last report: throughput graphs follow
    /// long transfers instead of jumping when they end.
    TransferProgress {
        direction: TransferDirection,
        bytes: u64,
    },
    /// Both data connections of a transfer are open.
    DataConnectionsOpened,
    TlsHandshake {
        side: Side,
        ok: bool,
    },
    /// `tls.mode = "required"` refused a plaintext login or data connection.
    PlaintextRefused(Plaintext),
    ProtocolError {
        side: Side,
        kind: &'static str,
    },
    LoginOk {
        user: &'a str,
        started: Instant,
    },
    /// A command line from the client, parsed.
    CommandReceived {
        command: &'a Command,
    },
    /// The backend refused a login step (`code`: its reply).
    LoginRefused {
        user: &'a str,
        code: u16,
    },
    /// This session's failed login started a ban of its client's address.
    AddressBanned,
    /// USER reached no backend.
    LoginNotRouted(RoutingFailure),
    /// USER was routed to `target` by `step` of `[routing]`.
    LoginRouted {
        step: RouteStep,
        target: &'a str,
    },
}

impl Session {
    /// The one place a session's events become metrics and log lines.
    pub(super) fn record(&self, event: SessionEvent<'_>) {
        let metrics = &self.shared.metrics;
        let backend = self.backend_name();
        match event {
            SessionEvent::TransferNotStarted { direction } => {
                self.count_transfer(direction, TransferResult::Failed, 0, None);
            }
            SessionEvent::TransferEnded {
                transfer,
                result,
                end,
            } => {
                let (direction, started) = (transfer.direction, Some(transfer.started));
                self.count_transfer(direction, result, transfer.uncounted, started);
                if matches!(end, TransferEnd::CutForShutdown) {
                    metrics.shutdown_cut_transfers_total.inc();
                }
                self.log_transfer_end(&transfer, result, end);
            }
            SessionEvent::TransferProgress { direction, bytes } => {
                metrics
                    .transfer_bytes_total
                    .with_label_values(&[backend, direction.as_str()])
                    .inc_by(bytes);
            }
            SessionEvent::DataConnectionsOpened => {
                let connections = &metrics.data_connections_total;
                connections.with_label_values(&["client"]).inc();
                connections.with_label_values(&["backend"]).inc();
            }
            SessionEvent::TlsHandshake { side, ok } => {
                metrics.count_tls_handshake(side.label(), ok);
            }
            SessionEvent::PlaintextRefused(what) => {
                metrics
                    .tls_plaintext_refused_total
                    .with_label_values(&[what.label()])
                    .inc();
            }
            SessionEvent::ProtocolError { side, kind } => {
                metrics.count_protocol_error(side.label(), kind);
            }
            SessionEvent::LoginOk { user, started } => {
                metrics
                    .logins_total
                    .with_label_values(&[backend, labels::OK])
                    .inc();
                metrics
                    .backend_login_duration_seconds
                    .with_label_values(&[backend])
                    .observe(started.elapsed().as_secs_f64());
                info!(user, backend, "login ok");
            }
            SessionEvent::CommandReceived { command } => {
                metrics
                    .commands_total
                    .with_label_values(&[command.verb.metric_label()])
                    .inc();
                debug!(command = command.log_line().as_str(), "client command");
            }
            SessionEvent::LoginRefused { user, code } => {
                metrics
                    .logins_total
                    .with_label_values(&[backend, labels::FAILED])
                    .inc();
                // 530 is "not logged in"; 503 (bad sequence) and the like are no guesses,
                // and not worth a line each (a client could repeat them without end).
                if code == codes::NOT_LOGGED_IN {
                    info!(user, backend, code, "login failed");
                } else {
                    debug!(user, backend, code, "login step refused");
                }
            }
            SessionEvent::AddressBanned => {
                let limits = &self.shared.config.limits;
                warn!(failures = limits.max_failed_logins, window = ?limits.failed_login_window, duration = ?limits.ban_duration, "address banned after failed logins");
                metrics.bans_total.inc();
                metrics.bans_active.inc();
            }
            SessionEvent::LoginNotRouted(reason) => {
                let label = reason.label();
                metrics
                    .login_routing_failures_total
                    .with_label_values(&[label])
                    .inc();
                info!(reason = label, "login reached no backend");
            }
            SessionEvent::LoginRouted { step, target } => {
                let label = step.label();
                metrics.login_routes_total.with_label_values(&[label]).inc();
                debug!(step = label, target, "login routed");
            }
        }
    }

    fn count_transfer(
        &self,
        direction: TransferDirection,
        result: TransferResult,
        bytes: u64,
        started: Option<Instant>,
    ) {
        let backend = self.backend_name();
        let metrics = &self.shared.metrics;
        metrics
            .transfers_total
            .with_label_values(&[backend, direction.as_str(), result.label()])
            .inc();
        metrics
            .transfer_bytes_total
            .with_label_values(&[backend, direction.as_str()])
            .inc_by(bytes);
        if let Some(started) = started {
            metrics
                .transfer_duration_seconds
                .with_label_values(&[direction.as_str()])
                .observe(started.elapsed().as_secs_f64());
        }
    }

    fn log_transfer_end(
        &self,
        t: &TransferFacts<'_>,
        result: TransferResult,
        end: TransferEnd<'_>,
    ) {
        let (direction, path, bytes) = (t.direction.as_str(), t.path, t.bytes);
        match end {
            TransferEnd::Completed { reply, data_error } => info!(
                client = %self.client_ip,
                user = self.user_name(),
                backend = self.backend_name(),
                direction,
                path,
                bytes,
                duration_ms = t.started.elapsed().as_millis() as u64,
                result = result.label(),
                reply,
                data_error,
                "transfer"
            ),
            TransferEnd::AbortedByClient => {
                info!(direction, path, bytes, "transfer aborted by the client")
            }
            TransferEnd::Abandoned => info!(
                direction,
                path, bytes, "transfer abandoned: the client closed its control connection"
            ),
            TransferEnd::BackendLost { error } => warn!(
                direction,
                path, bytes, error, "transfer failed: backend control connection lost"
            ),
            TransferEnd::ClosedByBackend => info!(
                direction,
                path, bytes, "transfer ended: the backend closed the session"
            ),
            TransferEnd::CutForShutdown => warn!(
                direction,
                path, bytes, "transfer cut at the end of the shutdown grace"
            ),
            TransferEnd::GaveUp { reason } => {
                warn!(
                    direction,
                    path, bytes, reason, "transfer aborted by ftpfront"
                )
            }
        }
    }
}
