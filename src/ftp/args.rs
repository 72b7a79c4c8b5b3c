//! Typed arguments of the commands ftpfront answers itself: REST, OPTS (before login), AUTH, PBSZ, PROT (EPSV's is `addr::parse_epsv_arg`).
//!
//! Each parser takes the argument as [`Command::arg_str`](super::Command::arg_str) gives
//! it, never allocates more than a bounded error quote, and says only what the argument
//! means: which reply that meaning gets is the session's business.

use super::quote_for_error;

// EPSV's argument is a data-address matter and lives with PORT/EPRT in `addr`; named here
// too so that every argument ftpfront reads itself has one place to be looked up.
pub use super::addr::{parse_epsv_arg, EpsvArg};

/// Why an argument was refused. The messages are for logs and tests: the session answers
/// each refusal with its own fixed reply text.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ArgError {
    #[error("Expected a decimal number, got \"{0}\"")]
    NotANumber(String),
    #[error("Option \"{0}\" not understood")]
    UnknownOption(String),
    #[error("Unknown protection level \"{0}\", expected C, S, E or P")]
    UnknownProtectionLevel(String),
}

/// `REST <offset>`: the byte offset a transfer restarts at (RFC 3659 5: stream mode).
///
/// Refused: an empty argument, anything but digits (spaces around them are tolerated), a
/// negative number and one beyond `u64::MAX`. A leading `+` is accepted, as `u64`'s
/// `FromStr` (which ftpfront always used here) accepts it.
pub fn parse_rest(arg: &str) -> Result<u64, ArgError> {
    parse_decimal(arg)
}

/// `PBSZ <size>`: the protection buffer size the client asks for (RFC 4217 8).
///
/// Any decimal `u64` is taken, with the same rules as [`parse_rest`]: TLS has no buffer,
/// so whatever the client asked, the answer is `PBSZ=0` (RFC 4217 9 lets the server
/// reply with a smaller size than requested).
pub fn parse_pbsz(arg: &str) -> Result<u64, ArgError> {
    parse_decimal(arg)
}

/// One decimal number, surrounding whitespace trimmed.
fn parse_decimal(arg: &str) -> Result<u64, ArgError> {
    let digits = arg.trim();
    digits
        .parse::<u64>()
        .map_err(|_| ArgError::NotANumber(quote_for_error(digits.as_bytes())))
}

/// The options of `OPTS` that ftpfront answers itself (before login; after login OPTS,
/// `OPTS MLST` included, is the backend's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptsArg {
    /// `OPTS UTF8`, `OPTS UTF8 ON` (true) or `OPTS UTF8 OFF` (false), in any case
    /// (RFC 2640 3.1 and the common `UTF8 ON` of Windows clients).
    Utf8(bool),
}

/// `OPTS <option> [<value>]`: words are split on any whitespace and compared in any case;
/// anything but the forms of [`OptsArg`] is [`ArgError::UnknownOption`].
pub fn parse_opts(arg: &str) -> Result<OptsArg, ArgError> {
    let mut words = arg.split_whitespace();
    // Three words at most are looked at: a longer argument is refused either way, and the
    // parse stays constant-time however long the line is.
    let first_three = [words.next(), words.next(), words.next()];
    let is = |word: &str, name: &str| word.eq_ignore_ascii_case(name);
    match first_three {
        [Some(option), None, None] if is(option, "UTF8") => Ok(OptsArg::Utf8(true)),
        [Some(option), Some(value), None] if is(option, "UTF8") && is(value, "ON") => {
            Ok(OptsArg::Utf8(true))
        }
        [Some(option), Some(value), None] if is(option, "UTF8") && is(value, "OFF") => {
            Ok(OptsArg::Utf8(false))
        }
        _ => Err(ArgError::UnknownOption(quote_for_error(
            arg.trim().as_bytes(),
        ))),
    }
}

/// The security mechanism `AUTH` names (RFC 2228, RFC 4217 4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthMechanism {
    /// `AUTH TLS` (RFC 4217).
    Tls,
    /// `AUTH TLS-C`, an older name of the same.
    TlsC,
    /// `AUTH SSL`, the pre-RFC name that clients still send.
    Ssl,
    /// Any other mechanism, as the client wrote it (trimmed, ASCII-uppercased), to be named
    /// in the refusal. Its length is the command line's, already bounded by the framer.
    Other(String),
}

/// `AUTH <mechanism>`, in any case, surrounding whitespace trimmed. Never fails: an
/// unknown mechanism is [`AuthMechanism::Other`].
pub fn parse_auth(arg: &str) -> AuthMechanism {
    let mechanism = arg.trim().to_ascii_uppercase();
    match mechanism.as_str() {
        "TLS" => AuthMechanism::Tls,
        "TLS-C" => AuthMechanism::TlsC,
        "SSL" => AuthMechanism::Ssl,
        _ => AuthMechanism::Other(mechanism),
    }
}

/// The data channel protection level of `PROT` (RFC 2228 9, RFC 4217 9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProtLevel {
    /// `C`: clear.
    Clear,
    /// `S`: safe (integrity only); TLS cannot offer it.
    Safe,
    /// `E`: confidential (privacy only); TLS cannot offer it.
    Confidential,
    /// `P`: private (TLS on data connections).
    Private,
}

/// `PROT <level>`: one letter in any case, surrounding whitespace trimmed.
pub fn parse_prot(arg: &str) -> Result<ProtLevel, ArgError> {
    let level = arg.trim();
    match level.as_bytes() {
        [letter] => match letter.to_ascii_uppercase() {
            b'C' => Ok(ProtLevel::Clear),
            b'S' => Ok(ProtLevel::Safe),
            b'E' => Ok(ProtLevel::Confidential),
            b'P' => Ok(ProtLevel::Private),
            _ => Err(unknown_level(level)),
        },
        _ => Err(unknown_level(level)),
    }
}

fn unknown_level(level: &str) -> ArgError {
    ArgError::UnknownProtectionLevel(quote_for_error(level.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- REST ----

    #[test]
    fn rest_takes_a_byte_offset() {
        assert_eq!(parse_rest("0"), Ok(0));
        assert_eq!(parse_rest("  1048576 "), Ok(1_048_576));
        assert_eq!(parse_rest("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn rest_accepts_a_plus_sign_as_it_always_did() {
        assert_eq!(parse_rest("+5"), Ok(5));
    }

    /// Every one of `args` is refused by `parse` with an error that `expected` recognises.
    fn refuses_all<T: std::fmt::Debug>(
        parse: fn(&str) -> Result<T, ArgError>,
        args: &[&str],
        expected: fn(&ArgError) -> bool,
    ) {
        for arg in args {
            let result = parse(arg);
            assert!(result.as_ref().is_err_and(expected), "{arg:?}: {result:?}");
        }
    }

    #[test]
    fn rest_refuses_what_is_not_an_offset() {
        let not_offsets = [
            "",
            "  ",
            "-1",
            "18446744073709551616",
            "1 2",
            "0x10",
            "1.5",
            "abc",
        ];
        refuses_all(parse_rest, &not_offsets, |e| {
            matches!(e, ArgError::NotANumber(_))
        });
    }

    #[test]
    fn a_refused_number_is_quoted_bounded_and_printable() {
        let long = format!("\u{1b}[2J{}", "9".repeat(5000));
        let message = parse_rest(&long).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
        assert!(!message.contains('\u{1b}'));
    }

    // ---- PBSZ ----

    #[test]
    fn pbsz_takes_any_number_and_refuses_the_rest() {
        assert_eq!(parse_pbsz("0"), Ok(0));
        assert_eq!(parse_pbsz(" 16384 "), Ok(16384));
        refuses_all(parse_pbsz, &["", "x", "-1", "1 2"], |e| {
            matches!(e, ArgError::NotANumber(_))
        });
    }

    // ---- OPTS ----

    #[test]
    fn opts_utf8_in_its_three_forms_and_any_case() {
        assert_eq!(parse_opts("UTF8"), Ok(OptsArg::Utf8(true)));
        assert_eq!(parse_opts("utf8 on"), Ok(OptsArg::Utf8(true)));
        assert_eq!(parse_opts("  Utf8 \t oN "), Ok(OptsArg::Utf8(true)));
        assert_eq!(parse_opts("UTF8 OFF"), Ok(OptsArg::Utf8(false)));
    }

    #[test]
    fn opts_refuses_other_options_and_values() {
        let unknown = [
            "",
            "MLST type;size;",
            "UTF8 MAYBE",
            "UTF8 ON NOW",
            "UTF-8 ON",
            "UTF8ON",
        ];
        refuses_all(parse_opts, &unknown, |e| {
            matches!(e, ArgError::UnknownOption(_))
        });
    }

    // ---- AUTH ----

    #[test]
    fn auth_names_of_tls_in_any_case() {
        assert_eq!(parse_auth("TLS"), AuthMechanism::Tls);
        assert_eq!(parse_auth(" tls "), AuthMechanism::Tls);
        assert_eq!(parse_auth("tls-c"), AuthMechanism::TlsC);
        assert_eq!(parse_auth("Ssl"), AuthMechanism::Ssl);
    }

    #[test]
    fn auth_keeps_another_mechanism_uppercased_for_the_refusal() {
        assert_eq!(
            parse_auth(" gssapi "),
            AuthMechanism::Other("GSSAPI".into())
        );
        assert_eq!(parse_auth(""), AuthMechanism::Other(String::new()));
        assert_eq!(
            parse_auth("TLS 1.3"),
            AuthMechanism::Other("TLS 1.3".into())
        );
    }

    // ---- PROT ----

    #[test]
    fn prot_levels_in_any_case() {
        let cases = [
            ("C", ProtLevel::Clear),
            ("s", ProtLevel::Safe),
            ("E", ProtLevel::Confidential),
            (" p ", ProtLevel::Private),
        ];
        for (arg, level) in cases {
            assert_eq!(parse_prot(arg), Ok(level), "{arg:?}");
        }
    }

    #[test]
    fn prot_refuses_unknown_levels() {
        refuses_all(parse_prot, &["", "X", "PP", "Private", "é"], |e| {
            matches!(e, ArgError::UnknownProtectionLevel(_))
        });
    }

    // ---- EPSV ----

    #[test]
    fn epsv_argument_is_reachable_from_here() {
        assert_eq!(parse_epsv_arg(None), Ok(EpsvArg::Any));
        assert_eq!(parse_epsv_arg(Some("all")), Ok(EpsvArg::All));
        assert_eq!(parse_epsv_arg(Some("2")), Ok(EpsvArg::Protocol(2)));
    }
}
