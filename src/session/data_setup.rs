//! Preparing the client's data connection: PASV/EPSV answered with a port of the pool and
//! the announced address, PORT/EPRT checked against the active-mode policy, REST held
//! until the transfer command.

use std::net::IpAddr;
use std::sync::Arc;

use tracing::warn;

use super::gates;
use super::{Flow, Session, SessionError};
use crate::backend;
use crate::data::{ClientData, EarlyTls, GatedTickets, TicketGate};
use crate::ftp::addr::{self, AddrError, EpsvArg};
use crate::ftp::args;
use crate::ftp::codes;
use crate::ftp::{Command, Reply, Verb};
use crate::ports::Reservation;

impl Session {
    /// PASV/EPSV are always answered by ftpfront, with a port of the pool.
    pub(super) async fn passive(&mut self, command: Command) -> Result<Flow, SessionError> {
        let reply = self.passive_reply(&command);
        self.send(&reply).await?;
        let reserved = matches!(
            reply.code,
            codes::ENTERING_PASSIVE | codes::ENTERING_EXTENDED_PASSIVE
        );
        if let (true, Some(leg)) = (reserved, self.backend.as_mut()) {
            backend::prepare_backend_data(leg).await?;
        }
        Ok(Flow::Continue)
    }

    fn passive_reply(&mut self, command: &Command) -> Reply {
        let extended = command.verb == Verb::Epsv;
        if extended {
            match addr::parse_epsv_arg(command.arg.as_deref()) {
                Ok(EpsvArg::All) => {
                    self.epsv_all = true;
                    return Reply::new(codes::COMMAND_OK, "EPSV ALL ok: only EPSV from now on.");
                }
                // RFC 2428: a protocol other than the connection's, known or not, is 522.
                Ok(EpsvArg::Protocol(p)) if p != self.client_protocol() => {
                    return self.epsv_protocol_refused();
                }
                Err(AddrError::UnsupportedProtocol(_)) => return self.epsv_protocol_refused(),
                Ok(_) => {}
                Err(e) => {
                    return Reply::new(codes::SYNTAX_ERROR_ARGS, format!("Bad EPSV argument: {e}."))
                }
            }
        }
        let public = self.public_address();
        let IpAddr::V4(public_v4) = public else {
            if !extended {
                return Reply::new(
                    codes::PROTOCOL_NOT_SUPPORTED,
                    "PASV cannot carry an IPv6 address: use EPSV.",
                );
            }
            return self.reserve_passive(None);
        };
        if !extended && self.client_ip.is_ipv6() {
            return Reply::new(
                codes::PROTOCOL_NOT_SUPPORTED,
                "PASV cannot carry an IPv6 address: use EPSV.",
            );
        }
        self.reserve_passive(if extended { None } else { Some(public_v4) })
    }

    /// 522 naming the one protocol a passive connection of this client can use.
    fn epsv_protocol_refused(&self) -> Reply {
        Reply::new(
            codes::PROTOCOL_NOT_SUPPORTED,
            format!(
                "Network protocol not supported, use ({})",
                self.client_protocol()
            ),
        )
    }

    /// Reserves a port (replacing this session's previous reservation) and formats the
    /// 227 (with `pasv_ip`) or 229 reply.
    fn reserve_passive(&mut self, pasv_ip: Option<std::net::Ipv4Addr>) -> Reply {
        // Dropping the old reservation first lets a one-port range serve a repeated PASV.
        self.data = None;
        match self.shared.pool.reserve(self.client_ip) {
            Ok(reservation) => {
                let port = self.shared.pool.announcement().port_for(reservation.port());
                self.data = Some(self.passive_data(reservation));
                match pasv_ip {
                    Some(ip) => addr::format_pasv_reply(ip, port),
                    None => addr::format_epsv_reply(port),
                }
            }
            Err(e) => {
                warn!(error = %e, "passive port pool exhausted for this client address");
                Reply::new(
                    codes::CANT_OPEN_DATA,
                    format!("Can't open data connection: {e}. Try again when a transfer ends."),
                )
            }
        }
    }

    /// Under PROT P the handshake begins when the connection arrives (data/early_tls.rs).
    fn passive_data(&self, reservation: Reservation) -> ClientData {
        let Some(tls) = self
            .shared
            .client_tls
            .as_ref()
            .filter(|_| self.prot_private)
        else {
            return ClientData::Passive(reservation);
        };
        let gate = Arc::new(TicketGate::default());
        let ticket_gate = gate.clone();
        let acceptor = tls.early_data_acceptor(|inner| {
            Arc::new(GatedTickets {
                inner,
                gate: ticket_gate,
            })
        });
        ClientData::PassiveTls(EarlyTls::start(reservation, acceptor, gate))
    }

    fn client_protocol(&self) -> u8 {
        if self.client_ip.is_ipv4() {
            1
        } else {
            2
        }
    }

    /// The address clients are told to connect to (ports/announce.rs).
    fn public_address(&self) -> IpAddr {
        self.shared
            .pool
            .announcement()
            .address_for(self.client_ip, self.reached_at.ip())
    }

    /// Client PORT/EPRT under `limits.client_active_mode`: no bounce to other hosts or to
    /// privileged ports unless the policy is `any`.
    pub(super) async fn active(&mut self, command: Command) -> Result<Flow, SessionError> {
        let reply = match gates::active_target(&self.view(), &command) {
            Ok(target) => {
                self.data = Some(ClientData::Active(target));
                Reply::new(
                    codes::COMMAND_OK,
                    format!("{} command successful.", command.verb_text),
                )
            }
            Err(reply) => reply,
        };
        self.send(&reply).await?;
        Ok(Flow::Continue)
    }

    /// REST gets the backend's own verdict (servers differ: proftpd refuses any REST in
    /// ASCII mode with 501, vsftpd takes `REST abc` as 0 and says 350). An accepted offset
    /// is held and sent again right before the transfer command, after the PASV/PORT
    /// ftpfront sends the backend in between (RFC 3659 5.3: REST must be the last command
    /// before the transfer).
    pub(super) async fn rest(&mut self, command: Command) -> Result<Flow, SessionError> {
        self.pending_rest = None;
        let Some(leg) = self.backend.as_mut() else {
            return self.relay(&command).await;
        };
        let verdict = leg
            .control
            .command(&command, "asking the backend about REST")
            .await?;
        let offset = args::parse_rest(command.arg_str());
        if verdict.code == codes::FILE_ACTION_PENDING && offset.is_ok() {
            self.pending_rest = Some(command);
        }
        self.relay_verdict(&verdict).await
    }
}
