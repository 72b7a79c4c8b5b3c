//! The gates a command passes before its handler runs: small pure functions over a
//! read-only view of the session, in a fixed order; the first refusal is the answer. A new
//! policy is a new gate in [`GATES`] with its unit tests here.

use std::net::{IpAddr, SocketAddr};

use crate::config::{ClientActiveMode, TlsMode};
use crate::ftp::addr;
use crate::ftp::codes;
use crate::ftp::{Command, Reply, Verb};
use crate::net::canonical_ip;

/// What the gates may know of a session.
#[derive(Debug, Clone, Copy)]
pub(super) struct View {
    pub logged_in: bool,
    pub tls_mode: TlsMode,
    /// The control connection runs over TLS.
    pub control_tls: bool,
    /// PROT P was accepted.
    pub prot_private: bool,
    /// EPSV ALL was accepted.
    pub epsv_all: bool,
    /// PASV/EPSV or PORT/EPRT prepared a data connection.
    pub data_prepared: bool,
    pub active_mode: ClientActiveMode,
    pub client_ip: IpAddr,
}

/// A gate's refusal: the reply, and what it counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    pub reply: Reply,
    pub plaintext: Option<Plaintext>,
}

/// Which plaintext use `tls.mode = "required"` refused (`ftpfront_tls_plaintext_refused_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Plaintext {
    Login,
    Data,
}

impl Plaintext {
    pub fn label(self) -> &'static str {
        match self {
            Plaintext::Login => "login",
            Plaintext::Data => "data",
        }
    }
}

type Gate = fn(&View, &Command) -> Option<Refusal>;

/// Every gate, in the order they are asked.
const GATES: [Gate; 6] = [
    tls_before_login,
    login_required,
    epsv_all,
    active_mode_policy,
    data_prepared,
    protected_data,
];

/// The first gate that refuses `command`, if any.
pub(super) fn first_refusal(view: &View, command: &Command) -> Option<Refusal> {
    GATES.iter().find_map(|gate| gate(view, command))
}

/// Commands a client may send before login; the others get 530.
const BEFORE_LOGIN: &[Verb] = &[
    Verb::User,
    Verb::Pass,
    Verb::Acct,
    Verb::Quit,
    Verb::Rein,
    Verb::Feat,
    Verb::Help,
    Verb::Noop,
    Verb::Host,
    Verb::Opts,
    Verb::Syst,
    Verb::Auth,
    Verb::Pbsz,
    Verb::Prot,
    Verb::Ccc,
    Verb::Adat,
    Verb::Pret,
];

fn refuse(code: u16, text: impl Into<String>) -> Option<Refusal> {
    Some(Refusal {
        reply: Reply::new(code, text),
        plaintext: None,
    })
}

/// `tls.mode = "required"`: no credentials over a plaintext control connection.
fn tls_before_login(view: &View, command: &Command) -> Option<Refusal> {
    let credentials = matches!(command.verb, Verb::User | Verb::Pass | Verb::Acct);
    (credentials && view.tls_mode == TlsMode::Required && !view.control_tls).then(|| Refusal {
        reply: Reply::new(
            codes::NOT_LOGGED_IN,
            "TLS is required: send AUTH TLS before logging in.",
        ),
        plaintext: Some(Plaintext::Login),
    })
}

/// Before login only the commands of [`BEFORE_LOGIN`].
fn login_required(view: &View, command: &Command) -> Option<Refusal> {
    if view.logged_in || BEFORE_LOGIN.contains(&command.verb) {
        return None;
    }
    refuse(codes::NOT_LOGGED_IN, "Please login with USER and PASS.")
}

/// After EPSV ALL only EPSV prepares data connections (RFC 2428).
fn epsv_all(view: &View, command: &Command) -> Option<Refusal> {
    if !view.epsv_all {
        return None;
    }
    match command.verb {
        Verb::Pasv => refuse(codes::BAD_SEQUENCE, "PASV refused after EPSV ALL."),
        Verb::Port | Verb::Eprt => refuse(codes::BAD_SEQUENCE, "PORT/EPRT refused after EPSV ALL."),
        _ => None,
    }
}

/// `limits.client_active_mode` on PORT/EPRT (see [`active_target`]).
fn active_mode_policy(view: &View, command: &Command) -> Option<Refusal> {
    if !matches!(command.verb, Verb::Port | Verb::Eprt) {
        return None;
    }
    active_target(view, command).err().map(|reply| Refusal {
        reply,
        plaintext: None,
    })
}

/// The address a PORT/EPRT names, if the active-mode policy allows it: `deny` refuses
/// every one; `same_ip` only the client's own address, and no port below 1024 (no
/// bouncing the proxy's connections to third hosts or privileged services).
pub(super) fn active_target(view: &View, command: &Command) -> Result<SocketAddr, Reply> {
    if view.active_mode == ClientActiveMode::Deny {
        return Err(Reply::new(
            codes::NOT_IMPLEMENTED,
            "Active mode (PORT/EPRT) is disabled on this proxy: use PASV or EPSV.",
        ));
    }
    let target = match command.verb {
        Verb::Port => addr::parse_port_arg(command.arg_str()).map(SocketAddr::V4),
        _ => addr::parse_eprt_arg(command.arg_str()),
    };
    let target = match target {
        Ok(target) => target,
        Err(addr::AddrError::UnsupportedProtocol(..)) => {
            return Err(Reply::new(
                codes::PROTOCOL_NOT_SUPPORTED,
                "Network protocol not supported, use (1,2)",
            ))
        }
        Err(e) => {
            let text = format!("Bad {} argument: {e}.", command.verb_text);
            return Err(Reply::new(codes::SYNTAX_ERROR_ARGS, text));
        }
    };
    if view.active_mode == ClientActiveMode::SameIp {
        let verb = &command.verb_text;
        if canonical_ip(target.ip()) != view.client_ip {
            let text = format!(
                "{verb} refused: the data address must be your own ({}).",
                view.client_ip
            );
            return Err(Reply::new(codes::SYNTAX_ERROR_ARGS, text));
        }
        if target.port() < 1024 {
            let text = format!("{verb} refused: ports below 1024 are not allowed.");
            return Err(Reply::new(codes::SYNTAX_ERROR_ARGS, text));
        }
    }
    Ok(target)
}

/// A transfer needs its data connection prepared first.
fn data_prepared(view: &View, command: &Command) -> Option<Refusal> {
    if !command.verb.is_transfer() || view.data_prepared {
        return None;
    }
    refuse(codes::CANT_OPEN_DATA, "Use PASV or EPSV (or PORT) first.")
}

/// `tls.mode = "required"`: no plaintext data connections.
fn protected_data(view: &View, command: &Command) -> Option<Refusal> {
    let plaintext = view.tls_mode == TlsMode::Required && !view.prot_private;
    (command.verb.is_transfer() && plaintext).then(|| Refusal {
        reply: Reply::new(
            codes::PROT_SETTING_REFUSED,
            "Data connections must be encrypted: send PROT P first.",
        ),
        plaintext: Some(Plaintext::Data),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> View {
        View {
            logged_in: true,
            tls_mode: TlsMode::Optional,
            control_tls: false,
            prot_private: false,
            epsv_all: false,
            data_prepared: true,
            active_mode: ClientActiveMode::SameIp,
            client_ip: "192.0.2.7".parse().expect("address"),
        }
    }

    fn command(line: &str) -> Command {
        Command::parse(line.as_bytes()).expect("a command line")
    }

    fn code(view: &View, line: &str) -> Option<u16> {
        first_refusal(view, &command(line)).map(|refusal| refusal.reply.code)
    }

    #[test]
    fn an_ordinary_session_passes_every_gate() {
        for line in [
            "RETR a",
            "LIST",
            "PASV",
            "EPSV",
            "CWD x",
            "PORT 192,0,2,7,4,1",
        ] {
            assert_eq!(code(&view(), line), None, "{line}");
        }
    }

    #[test]
    fn credentials_need_tls_when_it_is_required() {
        let required = View {
            logged_in: false,
            tls_mode: TlsMode::Required,
            ..view()
        };
        for line in ["USER a", "PASS b", "ACCT c"] {
            let refusal = first_refusal(&required, &command(line)).expect("refused");
            assert_eq!(refusal.reply.code, 530);
            assert_eq!(refusal.plaintext, Some(Plaintext::Login));
        }
        assert_eq!(code(&required, "AUTH TLS"), None);
        let secured = View {
            control_tls: true,
            ..required
        };
        assert_eq!(code(&secured, "USER a"), None);
    }

    #[test]
    fn before_login_only_the_allowed_commands_pass() {
        let anonymous = View {
            logged_in: false,
            ..view()
        };
        for line in [
            "USER a",
            "FEAT",
            "SYST",
            "NOOP",
            "HELP",
            "QUIT",
            "AUTH TLS",
            "OPTS UTF8 ON",
        ] {
            assert_eq!(code(&anonymous, line), None, "{line}");
        }
        for line in ["RETR a", "PASV", "CWD x", "STAT", "SITE HELP", "XYZZY"] {
            assert_eq!(code(&anonymous, line), Some(530), "{line}");
        }
    }

    #[test]
    fn after_epsv_all_only_epsv_prepares_data() {
        let all = View {
            epsv_all: true,
            ..view()
        };
        assert_eq!(code(&all, "PASV"), Some(503));
        assert_eq!(code(&all, "PORT 192,0,2,7,4,1"), Some(503));
        assert_eq!(code(&all, "EPRT |1|192.0.2.7|1025|"), Some(503));
        assert_eq!(code(&all, "EPSV"), None);
    }

    #[test]
    fn active_mode_follows_the_policy() {
        let own = "PORT 192,0,2,7,4,1";
        let deny = View {
            active_mode: ClientActiveMode::Deny,
            ..view()
        };
        assert_eq!(code(&deny, own), Some(502));
        assert_eq!(code(&view(), own), None);
        assert_eq!(
            code(&view(), "PORT 198,51,100,1,4,1"),
            Some(501),
            "a third host"
        );
        assert_eq!(
            code(&view(), "PORT 192,0,2,7,0,21"),
            Some(501),
            "a privileged port"
        );
        assert_eq!(code(&view(), "PORT 1,2"), Some(501), "malformed");
        assert_eq!(code(&view(), "EPRT |9|x|1|"), Some(522));
        let any = View {
            active_mode: ClientActiveMode::Any,
            ..view()
        };
        assert_eq!(code(&any, "PORT 198,51,100,1,0,21"), None);
        let target = active_target(&view(), &command(own)).expect("allowed");
        assert_eq!(target, "192.0.2.7:1025".parse().expect("address"));
    }

    #[test]
    fn a_transfer_needs_a_prepared_and_protected_data_connection() {
        let unprepared = View {
            data_prepared: false,
            ..view()
        };
        assert_eq!(code(&unprepared, "RETR a"), Some(425));
        assert_eq!(code(&unprepared, "PWD"), None);
        let required = View {
            tls_mode: TlsMode::Required,
            control_tls: true,
            ..view()
        };
        let refusal = first_refusal(&required, &command("STOR a")).expect("refused");
        assert_eq!(refusal.reply.code, 521);
        assert_eq!(refusal.plaintext, Some(Plaintext::Data));
        let protected = View {
            prot_private: true,
            ..required
        };
        assert_eq!(code(&protected, "STOR a"), None);
    }

    #[test]
    fn gates_are_asked_in_order() {
        // Not logged in and no data connection: the login gate answers first.
        let anonymous = View {
            logged_in: false,
            data_prepared: false,
            ..view()
        };
        assert_eq!(code(&anonymous, "RETR a"), Some(530));
    }
}
