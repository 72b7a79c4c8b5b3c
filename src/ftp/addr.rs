//! Data-connection addresses: PORT/PASV host-port (RFC 959) and EPRT/EPSV (RFC 2428) arguments and replies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use super::codes::{ENTERING_EXTENDED_PASSIVE, ENTERING_PASSIVE};
use super::quote_for_error;
use super::reply::Reply;

/// Why an address argument or reply was rejected. The messages are phrased
/// to follow a `501 ` (or, for [`AddrError::UnsupportedProtocol`], `522 `) code.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    #[error("Expected a {expected} reply, got {got}")]
    UnexpectedReplyCode { expected: u16, got: u16 },
    #[error("Malformed host-port, expected h1,h2,h3,h4,p1,p2")]
    MalformedHostPort,
    #[error("No host-port h1,h2,h3,h4,p1,p2 found in reply")]
    MissingHostPort,
    #[error("Host-port number out of range 0-255")]
    NumberOutOfRange,
    #[error("Port 0 is not a valid data port")]
    ZeroPort,
    #[error("No (|||port|) found in extended passive reply")]
    MissingEpsvPort,
    #[error("Invalid port \"{0}\", expected 1-65535")]
    InvalidPort(String),
    #[error("Malformed EPRT argument, expected <d>protocol<d>address<d>port<d>")]
    MalformedEprt,
    #[error("Network protocol \"{0}\" not supported, use (1,2)")]
    UnsupportedProtocol(String),
    #[error("Invalid IPv4 address \"{0}\"")]
    InvalidIpv4(String),
    #[error("Invalid IPv6 address \"{0}\"")]
    InvalidIpv6(String),
    #[error("Invalid EPSV argument \"{0}\", expected 1, 2 or ALL")]
    InvalidEpsvArg(String),
}

/// The argument of `EPSV` (RFC 2428 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpsvArg {
    /// No argument: any protocol.
    Any,
    /// `EPSV ALL`: the client will only use EPSV from now on.
    All,
    /// A network protocol number: 1 = IPv4, 2 = IPv6.
    Protocol(u8),
}

/// `227 Entering Passive Mode (h1,h2,h3,h4,p1,p2).`
pub fn format_pasv_reply(ip: Ipv4Addr, port: u16) -> Reply {
    let host_port = format_port_arg(SocketAddrV4::new(ip, port));
    Reply::new(
        ENTERING_PASSIVE,
        format!("Entering Passive Mode ({host_port})."),
    )
}

/// Extracts the address from a 227 reply.
///
/// Servers disagree on the surrounding text (`"227 =10,0,0,5,117,48"` exists
/// in the wild), so the first six comma-separated numbers anywhere in the text
/// are taken. `0.0.0.0` is returned as is: what it means is the caller's call.
pub fn parse_pasv_reply(reply: &Reply) -> Result<SocketAddrV4, AddrError> {
    expect_code(reply, ENTERING_PASSIVE)?;
    let text = reply.text();
    let numbers = find_host_port(text.as_bytes()).ok_or(AddrError::MissingHostPort)?;
    host_port_to_addr(numbers)
}

/// `229 Entering Extended Passive Mode (|||port|)`
pub fn format_epsv_reply(port: u16) -> Reply {
    Reply::new(
        ENTERING_EXTENDED_PASSIVE,
        format!("Entering Extended Passive Mode (|||{port}|)"),
    )
}

/// Extracts the port from a 229 reply: `(<d><d><d>port<d>)` with any
/// delimiter in ASCII 33..=126, the same all four times.
pub fn parse_epsv_reply(reply: &Reply) -> Result<u16, AddrError> {
    expect_code(reply, ENTERING_EXTENDED_PASSIVE)?;
    let text = reply.text();
    let bytes = text.as_bytes();
    bytes
        .iter()
        .enumerate()
        .filter(|&(_, &b)| b == b'(')
        .find_map(|(open, _)| scan_epsv_port(bytes.get(open + 1..).unwrap_or_default()))
        .unwrap_or(Err(AddrError::MissingEpsvPort))
}

/// Parses a `PORT` argument `h1,h2,h3,h4,p1,p2`; surrounding whitespace is
/// tolerated.
pub fn parse_port_arg(arg: &str) -> Result<SocketAddrV4, AddrError> {
    let arg = arg.trim().as_bytes();
    match scan_host_port(arg, 0) {
        Some((numbers, end)) if end == arg.len() => host_port_to_addr(numbers),
        _ => Err(AddrError::MalformedHostPort),
    }
}

/// Formats an address as a `PORT` argument `h1,h2,h3,h4,p1,p2`.
pub fn format_port_arg(addr: SocketAddrV4) -> String {
    let [h1, h2, h3, h4] = addr.ip().octets();
    let [p1, p2] = addr.port().to_be_bytes();
    format!("{h1},{h2},{h3},{h4},{p1},{p2}")
}

/// Parses an `EPRT` argument such as `|1|132.235.1.2|6275|` or `|2|::1|6275|`.
///
/// Protocol numbers other than 1 and 2 give
/// [`AddrError::UnsupportedProtocol`], which RFC 2428 answers with 522.
pub fn parse_eprt_arg(arg: &str) -> Result<SocketAddr, AddrError> {
    let arg = arg.trim();
    let mut chars = arg.chars();
    let delimiter = chars
        .next()
        .filter(|&c| is_delimiter(c))
        .ok_or(AddrError::MalformedEprt)?;
    let fields: Vec<&str> = chars.as_str().split(delimiter).collect();
    let [protocol, address, port, ""] = fields.as_slice() else {
        return Err(AddrError::MalformedEprt);
    };
    // The protocol is checked first so an unknown one is reported as such
    // (522) even when the address is in a format we cannot read.
    let ip = parse_eprt_ip(protocol, address)?;
    let port = parse_port_number(port.as_bytes())?;
    Ok(SocketAddr::new(ip, port))
}

/// Formats an address as an `EPRT` argument, using `|` as delimiter.
pub fn format_eprt_arg(addr: SocketAddr) -> String {
    let protocol = match addr {
        SocketAddr::V4(_) => 1,
        SocketAddr::V6(_) => 2,
    };
    format!("|{protocol}|{}|{}|", addr.ip(), addr.port())
}

/// Parses the optional `EPSV` argument: none or empty, `ALL`, `1` or `2`.
/// Other protocol numbers give [`AddrError::UnsupportedProtocol`] (522).
pub fn parse_epsv_arg(arg: Option<&str>) -> Result<EpsvArg, AddrError> {
    let arg = arg.unwrap_or_default().trim();
    match arg {
        "" => Ok(EpsvArg::Any),
        "1" => Ok(EpsvArg::Protocol(1)),
        "2" => Ok(EpsvArg::Protocol(2)),
        _ if arg.eq_ignore_ascii_case("ALL") => Ok(EpsvArg::All),
        _ if arg.bytes().all(|b| b.is_ascii_digit()) => Err(AddrError::UnsupportedProtocol(
            quote_for_error(arg.as_bytes()),
        )),
        _ => Err(AddrError::InvalidEpsvArg(quote_for_error(arg.as_bytes()))),
    }
}

fn expect_code(reply: &Reply, expected: u16) -> Result<(), AddrError> {
    if reply.code == expected {
        Ok(())
    } else {
        Err(AddrError::UnexpectedReplyCode {
            expected,
            got: reply.code,
        })
    }
}

/// RFC 2428: the delimiter is any printable ASCII character but space.
fn is_delimiter(c: char) -> bool {
    ('!'..='~').contains(&c)
}

/// Finds the first `h1,h2,h3,h4,p1,p2` in free text. Numbers are only
/// matched from their first digit, so `"10,0,..."` is not also tried as
/// `"0,0,..."`.
fn find_host_port(text: &[u8]) -> Option<[u32; 6]> {
    (0..text.len())
        .filter(|&i| starts_number(text, i))
        .find_map(|i| scan_host_port(text, i))
        .map(|(numbers, _)| numbers)
}

fn starts_number(text: &[u8], i: usize) -> bool {
    let is_digit = |i: usize| text.get(i).is_some_and(u8::is_ascii_digit);
    is_digit(i) && (i == 0 || !is_digit(i - 1))
}

/// Reads six comma-separated numbers starting at `pos` (spaces around the
/// commas are tolerated). Returns them with the position just after.
fn scan_host_port(text: &[u8], mut pos: usize) -> Option<([u32; 6], usize)> {
    let mut numbers = [0u32; 6];
    for (index, slot) in numbers.iter_mut().enumerate() {
        if index > 0 {
            pos = skip_spaces(text, pos);
            if text.get(pos) != Some(&b',') {
                return None;
            }
            pos = skip_spaces(text, pos + 1);
        }
        let (value, next) = scan_number(text, pos)?;
        *slot = value;
        pos = next;
    }
    Some((numbers, pos))
}

fn skip_spaces(text: &[u8], pos: usize) -> usize {
    let rest = text.get(pos..).unwrap_or_default();
    pos + rest.iter().take_while(|&&b| b == b' ').count()
}

/// Reads a run of digits; saturates instead of overflowing, since any value
/// that large is rejected later anyway.
fn scan_number(text: &[u8], pos: usize) -> Option<(u32, usize)> {
    let digits: Vec<u8> = text
        .get(pos..)?
        .iter()
        .take_while(|b| b.is_ascii_digit())
        .copied()
        .collect();
    if digits.is_empty() {
        return None;
    }
    let value = digits.iter().fold(0u32, |acc, &d| {
        acc.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    });
    Some((value, pos + digits.len()))
}

fn host_port_to_addr(numbers: [u32; 6]) -> Result<SocketAddrV4, AddrError> {
    let mut bytes = [0u8; 6];
    for (byte, number) in bytes.iter_mut().zip(numbers) {
        *byte = u8::try_from(number).map_err(|_| AddrError::NumberOutOfRange)?;
    }
    let [h1, h2, h3, h4, p1, p2] = bytes;
    let port = u16::from_be_bytes([p1, p2]);
    if port == 0 {
        return Err(AddrError::ZeroPort);
    }
    Ok(SocketAddrV4::new(Ipv4Addr::new(h1, h2, h3, h4), port))
}

/// Matches `<d><d><d>port<d>)` right after an opening parenthesis. `None`
/// when the shape does not match (keep looking); an error when it does but
/// the port is invalid.
fn scan_epsv_port(text: &[u8]) -> Option<Result<u16, AddrError>> {
    let [d1, d2, d3, rest @ ..] = text else {
        return None;
    };
    let delimiter = *d1;
    if !is_delimiter(char::from(delimiter)) || *d2 != delimiter || *d3 != delimiter {
        return None;
    }
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (port, after) = rest.split_at(digits);
    match after {
        [d4, b')', ..] if *d4 == delimiter => Some(parse_port_number(port)),
        _ => None,
    }
}

/// A decimal TCP port 1..=65535 (digits only: no sign, no spaces).
fn parse_port_number(text: &[u8]) -> Result<u16, AddrError> {
    let valid_digits = (1..=5).contains(&text.len()) && text.iter().all(u8::is_ascii_digit);
    std::str::from_utf8(text)
        .ok()
        .filter(|_| valid_digits)
        .and_then(|digits| digits.parse::<u16>().ok())
        .filter(|&port| port != 0)
        .ok_or_else(|| AddrError::InvalidPort(quote_for_error(text)))
}

fn parse_eprt_ip(protocol: &str, address: &str) -> Result<IpAddr, AddrError> {
    let quoted = || quote_for_error(address.as_bytes());
    match protocol {
        "1" => address
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| AddrError::InvalidIpv4(quoted())),
        "2" => address
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| AddrError::InvalidIpv6(quoted())),
        _ if !protocol.is_empty() && protocol.bytes().all(|b| b.is_ascii_digit()) => Err(
            AddrError::UnsupportedProtocol(quote_for_error(protocol.as_bytes())),
        ),
        _ => Err(AddrError::MalformedEprt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddrV6;

    fn v4(text: &str) -> SocketAddrV4 {
        text.parse().unwrap()
    }

    // ---- PASV ----

    #[test]
    fn formats_pasv_reply() {
        let reply = format_pasv_reply(Ipv4Addr::new(10, 0, 0, 5), 30000);
        assert_eq!(
            reply.to_wire(),
            b"227 Entering Passive Mode (10,0,0,5,117,48).\r\n"
        );
    }

    #[test]
    fn parses_pasv_reply_variants() {
        let texts = [
            "Entering Passive Mode (10,0,0,5,117,48).",
            "=10,0,0,5,117,48",
            "Entering Passive Mode 10,0,0,5,117,48",
            "Entering Passive Mode (10, 0, 0, 5, 117, 48)",
            "Mode 2 (10,0,0,5,117,48)",
            "(10,0,0,5,117,48,99)",
            "10,0,0,5,117,48",
        ];
        for text in texts {
            let reply = Reply::new(227, text);
            assert_eq!(parse_pasv_reply(&reply), Ok(v4("10.0.0.5:30000")), "{text}");
        }
    }

    #[test]
    fn parses_pasv_reply_received_as_multiline() {
        let reply = Reply::multiline(227, vec!["Passive".into(), "(1,2,3,4,0,1)".into()]);
        assert_eq!(parse_pasv_reply(&reply), Ok(v4("1.2.3.4:1")));
    }

    #[test]
    fn pasv_reply_with_wrong_code() {
        let reply = Reply::new(500, "(10,0,0,5,117,48)");
        assert_eq!(
            parse_pasv_reply(&reply),
            Err(AddrError::UnexpectedReplyCode {
                expected: 227,
                got: 500
            })
        );
    }

    #[test]
    fn pasv_reply_without_six_numbers() {
        for text in [
            "Entering Passive Mode",
            "(10,0,0,5,117)",
            "(10,0,0,5,117,)",
            "(1;2;3;4;5;6)",
            "",
        ] {
            let reply = Reply::new(227, text);
            assert_eq!(
                parse_pasv_reply(&reply),
                Err(AddrError::MissingHostPort),
                "{text}"
            );
        }
    }

    #[test]
    fn pasv_reply_with_number_out_of_range() {
        for text in ["(256,0,0,1,1,1)", "(1,2,3,4,5,99999999999999999999)"] {
            let reply = Reply::new(227, text);
            assert_eq!(parse_pasv_reply(&reply), Err(AddrError::NumberOutOfRange));
        }
    }

    #[test]
    fn pasv_reply_with_port_zero() {
        let reply = Reply::new(227, "(1,2,3,4,0,0)");
        assert_eq!(parse_pasv_reply(&reply), Err(AddrError::ZeroPort));
    }

    // ---- EPSV reply ----

    #[test]
    fn formats_epsv_reply() {
        assert_eq!(
            format_epsv_reply(6446).to_wire(),
            b"229 Entering Extended Passive Mode (|||6446|)\r\n"
        );
    }

    #[test]
    fn parses_epsv_reply_with_any_delimiter() {
        for text in [
            "Entering Extended Passive Mode (|||6446|)",
            "(!!!6446!)",
            "(~~~6446~)",
            "x (not it) (|||6446|) trailing",
        ] {
            assert_eq!(parse_epsv_reply(&Reply::new(229, text)), Ok(6446), "{text}");
        }
    }

    #[test]
    fn epsv_reply_with_wrong_code() {
        assert_eq!(
            parse_epsv_reply(&Reply::new(227, "(|||6446|)")),
            Err(AddrError::UnexpectedReplyCode {
                expected: 229,
                got: 227
            })
        );
    }

    #[test]
    fn epsv_reply_without_port() {
        for text in [
            "Entering Extended Passive Mode",
            "(|||6446|",
            "|||6446|",
            "(||6446|)",
            "(|!|6446|)",
            "(|||6446!)",
            "(   6446 )",
            "(\u{7f}\u{7f}\u{7f}6446\u{7f})",
            "(|||64a46|)",
            "(",
        ] {
            let result = parse_epsv_reply(&Reply::new(229, text));
            assert_eq!(result, Err(AddrError::MissingEpsvPort), "{text}");
        }
    }

    #[test]
    fn epsv_reply_with_invalid_port() {
        for (text, port) in [
            ("(||||)", ""),
            ("(|||0|)", "0"),
            ("(|||65536|)", "65536"),
            ("(|||000001|)", "000001"),
        ] {
            let result = parse_epsv_reply(&Reply::new(229, text));
            assert_eq!(result, Err(AddrError::InvalidPort(port.into())), "{text}");
        }
    }

    // ---- PORT ----

    #[test]
    fn parses_port_arg() {
        assert_eq!(
            parse_port_arg("192,168,1,2,4,1"),
            Ok(v4("192.168.1.2:1025"))
        );
        assert_eq!(
            parse_port_arg("  192,168,1,2,4,1 \t"),
            Ok(v4("192.168.1.2:1025"))
        );
        assert_eq!(
            parse_port_arg("192, 168 ,1,2,4,1"),
            Ok(v4("192.168.1.2:1025"))
        );
    }

    #[test]
    fn rejects_malformed_port_args() {
        for arg in [
            "",
            "1,2,3,4,5",
            "1,2,3,4,5,6,7",
            "1,2,3,4,5,6x",
            "(1,2,3,4,5,6)",
            "1,2,3,4,,6",
            "+1,2,3,4,5,6",
        ] {
            assert_eq!(
                parse_port_arg(arg),
                Err(AddrError::MalformedHostPort),
                "{arg}"
            );
        }
    }

    #[test]
    fn rejects_port_arg_out_of_range_or_zero() {
        assert_eq!(
            parse_port_arg("1,2,3,256,5,6"),
            Err(AddrError::NumberOutOfRange)
        );
        assert_eq!(parse_port_arg("1,2,3,4,0,0"), Err(AddrError::ZeroPort));
    }

    #[test]
    fn formats_port_arg() {
        assert_eq!(format_port_arg(v4("10.0.0.5:30000")), "10,0,0,5,117,48");
    }

    // ---- EPRT ----

    #[test]
    fn parses_eprt_ipv4_and_ipv6() {
        assert_eq!(
            parse_eprt_arg("|1|132.235.1.2|6275|"),
            Ok("132.235.1.2:6275".parse().unwrap())
        );
        assert_eq!(
            parse_eprt_arg("|2|::1|6275|"),
            Ok("[::1]:6275".parse().unwrap())
        );
        assert_eq!(
            parse_eprt_arg(" !2!1080::8:800:200C:417A!5282! "),
            Ok("[1080::8:800:200C:417A]:5282".parse().unwrap())
        );
    }

    #[test]
    fn eprt_unsupported_protocol() {
        assert_eq!(
            parse_eprt_arg("|3|whatever|21|"),
            Err(AddrError::UnsupportedProtocol("3".into()))
        );
        assert_eq!(
            AddrError::UnsupportedProtocol("3".into()).to_string(),
            "Network protocol \"3\" not supported, use (1,2)"
        );
    }

    #[test]
    fn eprt_address_must_match_protocol() {
        assert_eq!(
            parse_eprt_arg("|1|::1|21|"),
            Err(AddrError::InvalidIpv4("::1".into()))
        );
        assert_eq!(
            parse_eprt_arg("|2|1.2.3.4|21|"),
            Err(AddrError::InvalidIpv6("1.2.3.4".into()))
        );
        assert_eq!(
            parse_eprt_arg("|1|1.2.3|21|"),
            Err(AddrError::InvalidIpv4("1.2.3".into()))
        );
    }

    #[test]
    fn eprt_rejects_bad_ports() {
        for (arg, port) in [
            ("|1|1.2.3.4|0|", "0"),
            ("|1|1.2.3.4|65536|", "65536"),
            ("|1|1.2.3.4||", ""),
            ("|1|1.2.3.4|+21|", "+21"),
        ] {
            assert_eq!(
                parse_eprt_arg(arg),
                Err(AddrError::InvalidPort(port.into())),
                "{arg}"
            );
        }
    }

    #[test]
    fn eprt_rejects_malformed_shapes() {
        for arg in [
            "",
            "   ",
            " |1|1.2.3.4|21",
            "|1|1.2.3.4|21|x",
            "|1|1.2.3.4|21||",
            "|1|1.2.3.4|",
            "||1.2.3.4|21|",
            "|x|1.2.3.4|21|",
            "é1é1.2.3.4é21é",
            "\u{7f}1\u{7f}1.2.3.4\u{7f}21\u{7f}",
            ":2:::1:21:",
        ] {
            assert_eq!(
                parse_eprt_arg(arg),
                Err(AddrError::MalformedEprt),
                "{arg:?}"
            );
        }
    }

    #[test]
    fn formats_eprt_arg() {
        assert_eq!(
            format_eprt_arg("132.235.1.2:6275".parse().unwrap()),
            "|1|132.235.1.2|6275|"
        );
        let v6 = SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::LOCALHOST, 21, 0, 0));
        assert_eq!(format_eprt_arg(v6), "|2|::1|21|");
    }

    // ---- EPSV argument ----

    #[test]
    fn parses_epsv_args() {
        assert_eq!(parse_epsv_arg(None), Ok(EpsvArg::Any));
        assert_eq!(parse_epsv_arg(Some("")), Ok(EpsvArg::Any));
        assert_eq!(parse_epsv_arg(Some(" ")), Ok(EpsvArg::Any));
        assert_eq!(parse_epsv_arg(Some("ALL")), Ok(EpsvArg::All));
        assert_eq!(parse_epsv_arg(Some("all")), Ok(EpsvArg::All));
        assert_eq!(parse_epsv_arg(Some("1")), Ok(EpsvArg::Protocol(1)));
        assert_eq!(parse_epsv_arg(Some("2")), Ok(EpsvArg::Protocol(2)));
    }

    #[test]
    fn rejects_bad_epsv_args() {
        assert_eq!(
            parse_epsv_arg(Some("3")),
            Err(AddrError::UnsupportedProtocol("3".into()))
        );
        assert_eq!(
            parse_epsv_arg(Some("ALLX")),
            Err(AddrError::InvalidEpsvArg("ALLX".into()))
        );
        assert_eq!(
            parse_epsv_arg(Some("-1")),
            Err(AddrError::InvalidEpsvArg("-1".into()))
        );
        assert_eq!(
            AddrError::InvalidEpsvArg("x".into()).to_string(),
            "Invalid EPSV argument \"x\", expected 1, 2 or ALL"
        );
    }

    #[test]
    fn all_error_messages_are_capitalised_sentences() {
        let errors = [
            AddrError::UnexpectedReplyCode {
                expected: 227,
                got: 500,
            },
            AddrError::MalformedHostPort,
            AddrError::MissingHostPort,
            AddrError::NumberOutOfRange,
            AddrError::ZeroPort,
            AddrError::MissingEpsvPort,
            AddrError::InvalidPort("x".into()),
            AddrError::MalformedEprt,
            AddrError::UnsupportedProtocol("3".into()),
            AddrError::InvalidIpv4("x".into()),
            AddrError::InvalidIpv6("x".into()),
            AddrError::InvalidEpsvArg("x".into()),
        ];
        for error in errors {
            let message = error.to_string();
            assert!(
                message.starts_with(|c: char| c.is_ascii_uppercase()),
                "{message}"
            );
        }
    }
}
