//! Starting a transfer: the transfer command checked and parked until the client's data
//! connection arrives, then the backend's data connection, REST and the relayed command,
//! TLS on both data legs, and the pump handed to `running.rs`.

use std::sync::Arc;

use tracing::{debug, warn};

use super::events::{SessionEvent, Side};
use super::run_loop::AwaitingData;
use super::running::{Leg, RunningTransfer};
use super::{Flow, Phase, Session, SessionError};
use crate::backend::{open_backend_data, BackendData, BackendDataError, DataError};
use crate::data::{client_data_stream, ClientConn, DataStream, EarlyConn, GatedStream, TicketGate};
use crate::ftp::codes;
use crate::ftp::command::TransferDirection;
use crate::ftp::{Command, Reply};
use crate::tls;
use tokio_rustls::rustls::HandshakeKind;

impl Session {
    /// A transfer command: its data connection is awaited in `Phase::AwaitingData`, with
    /// the control connection still answered (an ABOR or QUIT sent meanwhile is not stuck
    /// behind the accept timeout); `on_client_data` goes on from there.
    pub(super) async fn transfer(&mut self, command: Command) -> Result<Flow, SessionError> {
        // The gates made sure there is one (`gates::data_prepared`).
        let Some(setup) = self.data.take() else {
            self.reply(codes::CANT_OPEN_DATA, "Use PASV or EPSV (or PORT) first.")
                .await?;
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
        connected: Result<ClientConn, Reply>,
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
        // Decided once, before the 150 lets an uploading client send (data/early_tls.rs).
        let (client_tls, tickets) = self.client_data_tls(direction == TransferDirection::Upload);
        if let ClientConn::EarlyTls(early) = &client_stream {
            early.decide(client_tls.is_some(), tickets);
        }
        let Some(leg) = self.backend.as_mut() else {
            self.reply(codes::NOT_LOGGED_IN, "Please login with USER and PASS.")
                .await?;
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
                self.reply(codes::CANT_OPEN_DATA, "Can't open data connection.")
                    .await?;
                return Ok(Flow::Continue);
            }
        };
        // REST must be the last command before the transfer (RFC 3659 5.3): it goes after
        // the backend's PASV/PORT, right before the transfer command.
        if let Some(rest) = self.pending_rest.take() {
            let reply = leg.control.command(&rest, "sending REST").await?;
            if reply.code != codes::FILE_ACTION_PENDING {
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
                self.reply(codes::CANT_OPEN_DATA, "Can't open data connection.")
                    .await?;
                self.record(SessionEvent::TransferNotStarted { direction });
                return Ok(Flow::Continue);
            }
        };
        self.record(SessionEvent::DataConnectionsOpened);
        // TLS on the data legs is finished after the 150: most clients begin their handshake
        // only then (one that began earlier was answered already, data/early_tls.rs).
        let client_side =
            secure_client_leg(client_stream, client_tls, tickets, self.require_reuse());
        let (client_leg, backend_leg) =
            match self.secure_data_legs(client_side, backend_stream).await {
                Ok(legs) => legs,
                Err(refusal) => {
                    warn!(reason = refusal.text.as_str(), "data connection TLS failed");
                    self.reply(refusal.code, &refusal.text).await?;
                    self.resync_backend(held_final.is_none()).await?;
                    self.record(SessionEvent::TransferNotStarted { direction });
                    return Ok(Flow::Continue);
                }
            };
        let (from, to) = match direction {
            TransferDirection::Upload => (Leg::Client(client_leg), Leg::Backend(backend_leg)),
            _ => (Leg::Backend(backend_leg), Leg::Client(client_leg)),
        };
        let metrics = self.shared.metrics.clone();
        let path = command.arg_str().to_string();
        let mode = self.shared.config.data.pump;
        let run = RunningTransfer::start(direction, path, from, to, held_final, metrics, mode);
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

    /// Wraps the data legs in TLS where the session uses it: towards the client after PROT
    /// P (ftpfront is the TLS server, resuming the control session), towards a TLS backend
    /// always (ftpfront is the TLS client). Both handshakes run at once; `client_side` is
    /// the client's leg being secured ([`secure_client_leg`]).
    async fn secure_data_legs(
        &mut self,
        client_side: impl std::future::Future<Output = Result<DataStream, DataRefusal>>,
        backend: tokio::net::TcpStream,
    ) -> Result<(DataStream, DataStream), DataRefusal> {
        let connector = self.backend.as_ref().and_then(|leg| leg.tls.clone());
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

    /// Whether the client's data leg is TLS (after PROT P, when `[tls]` is on), and
    /// whether it may bring TLS 1.3 tickets: uploads get none unless every data connection
    /// must resume (curl uses each ticket once, so its next data connection needs one).
    fn client_data_tls(&self, upload: bool) -> (Option<Arc<tls::ClientTls>>, bool) {
        let tls = self.shared.client_tls.clone().filter(|_| self.prot_private);
        let tickets = !upload || self.require_reuse();
        (tls, tickets)
    }

    fn require_reuse(&self) -> bool {
        self.shared.config.tls.require_data_session_reuse
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
}

/// Why a data connection was refused after the backend started the transfer.
struct DataRefusal {
    code: u16,
    text: String,
}

/// The client's leg: plain, TLS begun now, or the early handshake let finish, as
/// [`Session::client_data_tls`] decided it (`tls`, `tickets`).
async fn secure_client_leg(
    client: ClientConn,
    tls: Option<Arc<tls::ClientTls>>,
    tickets: bool,
    require_reuse: bool,
) -> Result<DataStream, DataRefusal> {
    let secured = match (client, tls) {
        (ClientConn::Tcp(tcp), None) => return Ok(DataStream::Plain(tcp)),
        (ClientConn::Tcp(tcp), Some(tls)) => {
            let gated = GatedStream::new(tcp, TicketGate::opened(tickets));
            tls::accept(&tls.data_acceptor(tickets), gated).await
        }
        (ClientConn::EarlyTls(early), tls) => {
            match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, early.finish()).await {
                Ok(Ok(EarlyConn::Plain(tcp))) if tls.is_none() => {
                    return Ok(DataStream::Plain(tcp))
                }
                Ok(Ok(EarlyConn::Tls(secured))) if tls.is_some() => Ok(*secured),
                Ok(Ok(_)) => {
                    return Err(DataRefusal {
                        code: 425,
                        text: "Can't open data connection: its TLS does not match the \
                               protection level (PROT)."
                            .into(),
                    })
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                )),
            }
        }
    };
    let secured = secured.map_err(|e| DataRefusal {
        code: 425,
        text: format!("Can't open data connection: TLS handshake failed ({e})."),
    })?;
    let resumed = secured.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    if require_reuse && !resumed {
        return Err(DataRefusal {
            code: 522,
            text: "Data connection must resume the control connection's TLS session.".into(),
        });
    }
    Ok(DataStream::ClientTls(Box::new(secured)))
}
