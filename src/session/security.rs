//! The client's FTPS state in a session (RFC 4217): AUTH TLS upgrades the control
//! connection, PBSZ/PROT choose protected data connections, and `tls.mode = "required"`
//! refuses plaintext logins and transfers.

use tracing::{debug, warn};

use super::events::{SessionEvent, Side};
use super::{Flow, Outcome, Session, SessionError};
use crate::conn::LineConn;
use crate::ftp::codes;
use crate::ftp::{args, AuthMechanism, Command, ProtLevel};
use crate::tls;

impl Session {
    pub(super) async fn auth(&mut self, command: Command) -> Result<Flow, SessionError> {
        let Some(client_tls) = self.shared.client_tls.clone() else {
            self.reply(
                codes::NOT_IMPLEMENTED_PARAM,
                "AUTH is not available: TLS is not enabled on this proxy.",
            )
            .await?;
            return Ok(Flow::Continue);
        };
        if let AuthMechanism::Other(mechanism) = args::parse_auth(command.arg_str()) {
            let text = format!("AUTH {mechanism} is not supported: use AUTH TLS.");
            self.reply(codes::NOT_IMPLEMENTED_PARAM, &text).await?;
            return Ok(Flow::Continue);
        }
        if self.control_tls {
            self.reply(
                codes::BAD_SEQUENCE,
                "The control connection already uses TLS.",
            )
            .await?;
            return Ok(Flow::Continue);
        }
        self.reply(
            codes::AUTH_OK,
            "AUTH TLS successful; start the TLS handshake.",
        )
        .await?;
        let peer = self.client.peer();
        let plain = std::mem::replace(&mut self.client, LineConn::placeholder(peer));
        let stream = match plain.into_stream() {
            Ok(stream) => stream,
            Err(e) => {
                warn!(error = %e, "client broke the AUTH TLS exchange");
                self.count_client_handshake(false);
                return Ok(Flow::Close(Outcome::Error));
            }
        };
        match tls::accept(&client_tls.acceptor(), stream).await {
            Ok(secured) => {
                self.count_client_handshake(true);
                self.sni = tls::server_name(&secured);
                let max_line = self.shared.config.limits.max_line_length;
                let write_timeout = self.shared.config.limits.idle_timeout;
                self.client = LineConn::new(Box::new(secured), peer, max_line)
                    .with_write_timeout(write_timeout);
                self.control_tls = true;
                // RFC 4217: after AUTH, data stays clear until PROT P.
                self.prot_private = false;
                Ok(Flow::Continue)
            }
            Err(e) => {
                debug!(error = %e, "TLS handshake on the control connection failed");
                self.count_client_handshake(false);
                Ok(Flow::Close(Outcome::Error))
            }
        }
    }

    pub(super) fn count_client_handshake(&self, ok: bool) {
        let side = Side::Client;
        self.record(SessionEvent::TlsHandshake { side, ok });
    }

    pub(super) async fn pbsz(&mut self, command: Command) -> Result<Flow, SessionError> {
        if !self.control_tls {
            self.reply(codes::BAD_SEQUENCE, "PBSZ needs AUTH TLS first.")
                .await?;
        } else if args::parse_pbsz(command.arg_str()).is_err() {
            self.reply(codes::SYNTAX_ERROR_ARGS, "PBSZ needs a number (0 for TLS).")
                .await?;
        } else {
            // TLS has no protection buffer: the only valid size is 0 (RFC 4217 9).
            self.reply(codes::COMMAND_OK, "PBSZ=0").await?;
        }
        Ok(Flow::Continue)
    }

    pub(super) async fn prot(&mut self, command: Command) -> Result<Flow, SessionError> {
        if !self.control_tls {
            self.reply(codes::BAD_SEQUENCE, "PROT needs AUTH TLS first.")
                .await?;
            return Ok(Flow::Continue);
        }
        match args::parse_prot(command.arg_str()) {
            Ok(ProtLevel::Private) => {
                self.prot_private = true;
                self.reply(codes::COMMAND_OK, "Protection level set to Private.")
                    .await?;
            }
            Ok(ProtLevel::Clear) => {
                self.prot_private = false;
                self.reply(codes::COMMAND_OK, "Protection level set to Clear.")
                    .await?;
            }
            Ok(ProtLevel::Safe | ProtLevel::Confidential) => {
                self.reply(
                    codes::PROT_LEVEL_NOT_SUPPORTED,
                    "Only PROT P and PROT C are supported.",
                )
                .await?
            }
            Err(_) => {
                self.reply(codes::NOT_IMPLEMENTED_PARAM, "Unknown protection level.")
                    .await?
            }
        }
        Ok(Flow::Continue)
    }
}
