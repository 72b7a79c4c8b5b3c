//! Property tests of the pure FTP codec (`ftpfront::ftp`): encode -> decode round trips
//! for commands, replies, data addresses and the arguments ftpfront answers itself, and the
//! line splitter's invariants under arbitrary chunking. The coverage-guided fuzz targets in `fuzz/` check the same
//! properties on arbitrary bytes; `scripts/fuzz.sh` runs this suite where no nightly
//! toolchain is available.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};

use ftpfront::ftp::{
    addr, args, Command, EpsvArg, LineEvent, LineSplitter, OptsArg, ProtLevel, Reply, ReplyParser,
    Verb, DEFAULT_MAX_LINE_LENGTH,
};
use proptest::prelude::*;

// ---- helpers ----

/// Pushes `stream` in pieces of the given sizes (cycled; 0 pushes an empty slice),
/// draining after each push, and checks the memory bound every time.
fn split_in_chunks(stream: &[u8], sizes: &[usize], max: usize) -> Vec<LineEvent> {
    let mut splitter = LineSplitter::new(max);
    let mut events = Vec::new();
    let mut rest = stream;
    // Only empty pushes would never get through the stream: end with the rest at once.
    let progress = if sizes.iter().all(|&size| size == 0) {
        &[usize::MAX][..]
    } else {
        &[]
    };
    let mut sizes = sizes.iter().chain(progress).cycle();
    loop {
        let size = sizes.next().copied().unwrap_or(rest.len());
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        splitter.push(piece);
        events.extend(drain(&mut splitter, max));
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    events
}

fn drain(splitter: &mut LineSplitter, max: usize) -> Vec<LineEvent> {
    let events: Vec<LineEvent> = std::iter::from_fn(|| splitter.next_event()).collect();
    assert!(
        splitter.buffered_len() <= max + 2,
        "{} bytes buffered after draining, limit {max}",
        splitter.buffered_len()
    );
    for event in &events {
        if let LineEvent::Line(line) = event {
            assert!(
                line.len() <= max,
                "line of {} bytes, limit {max}",
                line.len()
            );
        }
    }
    events
}

/// The lines of `wire`, which must all be complete and within `max`.
fn lines_of(wire: &[u8], max: usize) -> Vec<Vec<u8>> {
    let mut splitter = LineSplitter::new(max);
    splitter.push(wire);
    let lines = std::iter::from_fn(|| splitter.next_event())
        .map(|event| match event {
            LineEvent::Line(line) => line,
            LineEvent::TooLong => panic!("overlong line in {wire:?}"),
        })
        .collect();
    assert!(splitter.is_empty(), "unterminated line in {wire:?}");
    lines
}

/// Every reply in `wire`, as the proxy reads them off a control connection.
fn replies_of(wire: &[u8]) -> Vec<Reply> {
    let mut parser = ReplyParser::new(usize::MAX);
    let replies = lines_of(wire, wire.len())
        .iter()
        .filter_map(|line| parser.push_line(line).expect("well-formed reply line"))
        .collect();
    assert!(!parser.is_partial(), "wire ends inside a multi-line reply");
    replies
}

/// The lines a constructed reply's text becomes on the wire, as a parser reads them:
/// `"\n"` splits a line, CR and NUL are dropped, and a middle line starting with a digit
/// gets a protective leading space.
fn wire_lines(lines: &[String]) -> Vec<String> {
    let mut wire: Vec<String> = lines
        .iter()
        .flat_map(|line| line.split('\n'))
        .map(|line| line.replace(['\r', '\0'], ""))
        .collect();
    if wire.is_empty() {
        wire.push(String::new());
    }
    let last = wire.len() - 1;
    for line in wire.iter_mut().take(last).skip(1) {
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            line.insert(0, ' ');
        }
    }
    wire
}

/// What the documentation promises for the complete lines of `stream`.
fn contract_events(stream: &[u8], max: usize) -> Vec<LineEvent> {
    let mut pieces: Vec<&[u8]> = stream.split(|&b| b == b'\n').collect();
    pieces.pop(); // the unterminated tail
    pieces
        .into_iter()
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .map(|line| {
            if line.len() > max {
                LineEvent::TooLong
            } else {
                LineEvent::Line(line.to_vec())
            }
        })
        .collect()
}

// ---- strategies ----

/// A verb as a client may spell it: known ones in any case, or any valid unknown one.
fn verb() -> impl Strategy<Value = String> {
    prop_oneof![
        (0..Verb::KNOWN.len(), any::<bool>()).prop_map(|(index, lower)| {
            let name = Verb::KNOWN[index].name();
            if lower {
                name.to_ascii_lowercase()
            } else {
                name.to_string()
            }
        }),
        "[A-Za-z][A-Za-z0-9]{0,15}",
    ]
}

/// Bytes rich in what the line and reply parsers care about: half of them from a small
/// alphabet of letters, digits, spaces, CR, LF, '-' and IAC, the rest anything.
fn line_bytes(max_len: usize) -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"abcxyzABC0123459   \r\r\n\n--\xff";
    prop::collection::vec(any::<u8>(), 0..max_len).prop_map(|raw| {
        raw.into_iter()
            .map(|b| {
                if b < 128 {
                    ALPHABET[usize::from(b) % ALPHABET.len()]
                } else {
                    b.wrapping_mul(7)
                }
            })
            .collect()
    })
}

fn reply_code() -> impl Strategy<Value = u16> {
    100u16..=599
}

/// Text of one reply line (no line breaks or NUL, which the formatter would drop).
fn line_text() -> impl Strategy<Value = String> {
    "[^\r\n\0]{0,40}"
}

fn port() -> impl Strategy<Value = u16> {
    1u16..=u16::MAX
}

fn ipv4() -> impl Strategy<Value = Ipv4Addr> {
    any::<u32>().prop_map(Ipv4Addr::from)
}

/// Any IP, including IPv4-mapped IPv6 addresses and the special ones.
fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        ipv4().prop_map(IpAddr::V4),
        any::<u128>().prop_map(|bits| IpAddr::V6(Ipv6Addr::from(bits))),
        ipv4().prop_map(|v4| IpAddr::V6(v4.to_ipv6_mapped())),
        ipv4().prop_map(|v4| IpAddr::V6(v4.to_ipv6_compatible())),
        prop::sample::select(vec![
            IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V4(Ipv4Addr::BROADCAST),
            IpAddr::V6(Ipv6Addr::UNSPECIFIED),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]),
    ]
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Command::new -> to_wire -> LineSplitter -> Command::parse gives the same command.
    #[test]
    fn built_command_round_trips(verb in verb(), arg in prop::option::of(any::<String>())) {
        let built = Command::new(&verb, arg.as_deref());
        prop_assert_eq!(built.verb, Verb::from_name(&verb));
        let wire = built.to_wire();
        let lines = lines_of(&wire, DEFAULT_MAX_LINE_LENGTH.max(wire.len()));
        prop_assert_eq!(lines.len(), 1, "one command, one line");
        prop_assert_eq!(Command::parse(&lines[0]), Ok(built.clone()));
        prop_assert_eq!(Command::parse(&wire), Ok(built));
    }

    /// Whatever line parses re-encodes to a line that parses to the same command.
    #[test]
    fn parsed_command_round_trips(
        prefix in prop::sample::select(vec![&b""[..], b"\xff\xf4\xff\xf2", b"\xf2", b"\xff\xff"]),
        verb in verb(),
        arg in prop::option::of(line_bytes(60)),
        terminator in prop::sample::select(vec![&b""[..], b"\n", b"\r\n"]),
    ) {
        let mut line = prefix.to_vec();
        line.extend_from_slice(verb.as_bytes());
        if let Some(arg) = &arg {
            line.push(b' ');
            line.extend_from_slice(arg);
        }
        line.extend_from_slice(terminator);
        if let Ok(cmd) = Command::parse(&line) {
            prop_assert_eq!(cmd.verb_text.clone(), verb.to_ascii_uppercase());
            prop_assert!(!cmd.log_line().chars().any(char::is_control));
            let wire = cmd.to_wire();
            let lines = lines_of(&wire, wire.len());
            prop_assert_eq!(lines.as_slice(), std::slice::from_ref(&cmd.raw));
            // The wire form carries no Telnet marks: a relayed command is a plain line.
            let relayed = Command { telnet_prefixed: false, ..cmd };
            prop_assert_eq!(Command::parse(&lines[0]), Ok(relayed));
        }
    }

    /// A single-line reply goes through the wire unchanged.
    #[test]
    fn single_line_reply_round_trips(code in reply_code(), text in line_text()) {
        let reply = Reply::new(code, text.clone());
        let wire = reply.to_wire();
        let parsed = replies_of(&wire);
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(parsed[0].code, code);
        prop_assert_eq!(&parsed[0].lines, &vec![text]);
        prop_assert_eq!(parsed[0].to_wire(), wire);
    }

    /// A multi-line reply whose middle lines do not start with a digit comes back as is.
    #[test]
    fn multiline_reply_round_trips(
        code in reply_code(),
        first in line_text(),
        middle in prop::collection::vec("([^0-9\r\n\0][^\r\n\0]{0,30})?", 0..6),
        last in line_text(),
    ) {
        let mut lines = vec![first];
        lines.extend(middle);
        lines.push(last);
        let reply = Reply::multiline(code, lines.clone());
        let wire = reply.to_wire();
        let parsed = replies_of(&wire);
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(parsed[0].code, code);
        prop_assert_eq!(&parsed[0].lines, &lines);
        prop_assert_eq!(parsed[0].to_wire(), wire);
    }

    /// Any text at all: one reply with the code, the lines as formatted, the same bytes,
    /// and a parser that is idle afterwards (no text can end a reply early).
    #[test]
    fn any_reply_text_round_trips(
        code in reply_code(),
        lines in prop::collection::vec(any::<String>(), 0..6),
    ) {
        let reply = Reply::multiline(code, lines.clone());
        let wire = reply.to_wire();
        let parsed = replies_of(&wire);
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(parsed[0].code, code);
        prop_assert_eq!(&parsed[0].lines, &wire_lines(&lines));
        prop_assert_eq!(parsed[0].to_wire(), wire);
    }

    /// A reply relayed in pieces (`take_relayable` after every line) is the same bytes as
    /// the reply assembled whole, in the same order, with the same code; each piece holds
    /// at most `min_bytes` plus one line.
    #[test]
    fn a_reply_relayed_in_pieces_is_the_reply_assembled_whole(
        min_bytes in 0usize..64,
        input in line_bytes(400),
    ) {
        let mut whole = ReplyParser::new(usize::MAX);
        let mut relaying = ReplyParser::new(usize::MAX);
        let mut taken = Vec::new();
        for line in input.split(|&b| b == b'\n') {
            let expected = whole.push_line(line);
            let got = relaying.push_line(line);
            match (expected, got) {
                (Ok(Some(reply)), Ok(Some(tail))) => {
                    prop_assert_eq!(tail.code, reply.code);
                    taken.extend_from_slice(tail.raw().unwrap_or_default());
                    prop_assert_eq!(&taken, &reply.to_wire());
                    prop_assert_eq!(tail.lines.first(), reply.lines.first());
                    prop_assert_eq!(tail.lines.last(), reply.lines.last());
                    taken.clear();
                }
                (Ok(None), Ok(None)) => {
                    if let Some(piece) = relaying.take_relayable(min_bytes) {
                        prop_assert!(piece.len() >= min_bytes);
                        prop_assert!(piece.len() <= min_bytes + line.len() + 2);
                        taken.extend_from_slice(&piece);
                    }
                }
                (Err(a), Err(b)) => {
                    prop_assert_eq!(a, b);
                    taken.clear();
                }
                (a, b) => prop_assert!(false, "whole {:?}, relaying {:?}", a, b),
            }
        }
    }

    /// A parsed multi-line reply never holds more lines than the parser's limit.
    #[test]
    fn reply_parser_honours_its_line_limit(
        max_lines in 0usize..8,
        input in line_bytes(300),
    ) {
        let mut parser = ReplyParser::new(max_lines);
        for line in input.split(|&b| b == b'\n') {
            match parser.push_line(line) {
                Ok(Some(reply)) => {
                    prop_assert!(reply.lines.len() == 1 || reply.lines.len() <= max_lines);
                    prop_assert_eq!(replies_of(&reply.to_wire()).len(), 1);
                }
                Ok(None) => prop_assert!(parser.is_partial()),
                Err(_) => prop_assert!(!parser.is_partial(), "errors reset the parser"),
            }
        }
    }

    /// format_pasv_reply -> wire -> ReplyParser -> parse_pasv_reply.
    #[test]
    fn pasv_reply_round_trips(ip in ipv4(), port in port()) {
        let reply = addr::format_pasv_reply(ip, port);
        prop_assert_eq!(addr::parse_pasv_reply(&reply), Ok(SocketAddrV4::new(ip, port)));
        let parsed = replies_of(&reply.to_wire());
        prop_assert_eq!(addr::parse_pasv_reply(&parsed[0]), Ok(SocketAddrV4::new(ip, port)));
    }

    /// format_epsv_reply -> wire -> ReplyParser -> parse_epsv_reply.
    #[test]
    fn epsv_reply_round_trips(port in port()) {
        let reply = addr::format_epsv_reply(port);
        prop_assert_eq!(addr::parse_epsv_reply(&reply), Ok(port));
        let parsed = replies_of(&reply.to_wire());
        prop_assert_eq!(addr::parse_epsv_reply(&parsed[0]), Ok(port));
    }

    /// format_port_arg -> PORT command on the wire -> parse -> parse_port_arg.
    #[test]
    fn port_arg_round_trips(ip in ipv4(), port in port()) {
        let socket = SocketAddrV4::new(ip, port);
        let arg = addr::format_port_arg(socket);
        prop_assert_eq!(addr::parse_port_arg(&arg), Ok(socket));
        let cmd = Command::parse(&Command::new("PORT", Some(&arg)).to_wire()).expect("PORT parses");
        prop_assert_eq!(cmd.verb, Verb::Port);
        prop_assert_eq!(addr::parse_port_arg(cmd.arg_str()), Ok(socket));
    }

    /// format_eprt_arg -> EPRT command on the wire -> parse -> parse_eprt_arg, for both
    /// families, IPv4-mapped addresses included.
    #[test]
    fn eprt_arg_round_trips(ip in ip(), port in port()) {
        let socket = SocketAddr::new(ip, port);
        let arg = addr::format_eprt_arg(socket);
        prop_assert_eq!(addr::parse_eprt_arg(&arg), Ok(socket));
        let cmd = Command::parse(&Command::new("EPRT", Some(&arg)).to_wire()).expect("EPRT parses");
        prop_assert_eq!(cmd.verb, Verb::Eprt);
        prop_assert_eq!(addr::parse_eprt_arg(cmd.arg_str()), Ok(socket));
    }

    /// Whatever PORT/EPRT/EPSV argument parses re-formats to one that parses the same.
    #[test]
    fn parsed_address_args_reformat(text in "[0-9a-fA-F:.,|! ]{0,40}") {
        if let Ok(socket) = addr::parse_port_arg(&text) {
            prop_assert_eq!(addr::parse_port_arg(&addr::format_port_arg(socket)), Ok(socket));
        }
        if let Ok(socket) = addr::parse_eprt_arg(&text) {
            prop_assert_eq!(addr::parse_eprt_arg(&addr::format_eprt_arg(socket)), Ok(socket));
        }
        if let Ok(EpsvArg::Protocol(protocol)) = addr::parse_epsv_arg(Some(&text)) {
            prop_assert!(protocol == 1 || protocol == 2);
        }
    }

    /// Every REST offset and PBSZ size survives the command line, in any spacing.
    #[test]
    fn rest_and_pbsz_numbers_round_trip(number in any::<u64>(), pad in " {0,3}") {
        let line = format!("REST {pad}{number}{pad}");
        let cmd = Command::parse(line.as_bytes()).expect("a REST line");
        prop_assert_eq!(args::parse_rest(cmd.arg_str()), Ok(number));
        prop_assert_eq!(args::parse_pbsz(cmd.arg_str()), Ok(number));
    }

    /// The argument parsers never panic, and what they accept is what they promise.
    #[test]
    fn argument_parsers_take_any_text(text in any::<String>()) {
        if let Ok(offset) = args::parse_rest(&text) {
            prop_assert_eq!(args::parse_rest(&offset.to_string()), Ok(offset));
        }
        if let Ok(OptsArg::Utf8(_)) = args::parse_opts(&text) {
            prop_assert!(text.to_ascii_uppercase().contains("UTF8"));
        }
        if let Ok(level) = args::parse_prot(&text) {
            let letter = text.trim().to_ascii_uppercase();
            let expected = match letter.as_str() {
                "C" => ProtLevel::Clear,
                "S" => ProtLevel::Safe,
                "E" => ProtLevel::Confidential,
                _ => ProtLevel::Private,
            };
            prop_assert_eq!(level, expected);
        }
        let _ = args::parse_auth(&text);
    }

    /// The splitter yields the same events however the stream is cut, the complete lines
    /// are those the documentation promises, and memory stays bounded after draining.
    #[test]
    fn splitter_events_do_not_depend_on_chunking(
        stream in line_bytes(400),
        sizes in prop::collection::vec(0usize..40, 1..8),
        max in prop_oneof![0usize..24, Just(DEFAULT_MAX_LINE_LENGTH)],
    ) {
        let whole = split_in_chunks(&stream, &[stream.len()], max);
        let chunked = split_in_chunks(&stream, &sizes, max);
        prop_assert_eq!(&chunked, &whole);
        let promised = contract_events(&stream, max);
        prop_assert!(whole.starts_with(&promised), "{:?} vs {:?}", whole, promised);
        // At most a TooLong for an unterminated tail that is already too long.
        let extra = &whole[promised.len()..];
        prop_assert!(extra.is_empty() || extra == [LineEvent::TooLong]);
    }

    /// Bytes without LF never make the splitter hold more than max + 2 bytes, and the
    /// next line after the LF is intact.
    #[test]
    fn splitter_memory_is_bounded_without_lf(
        max in 0usize..64,
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>().prop_filter("no LF", |&b| b != b'\n'), 0..200), 1..20),
    ) {
        let mut splitter = LineSplitter::new(max);
        let mut total = 0;
        for chunk in &chunks {
            splitter.push(chunk);
            total += chunk.len();
            drain(&mut splitter, max);
        }
        splitter.push(b"\nOK\n");
        let events = drain(&mut splitter, max);
        let ok = if max >= 2 { LineEvent::Line(b"OK".to_vec()) } else { LineEvent::TooLong };
        prop_assert_eq!(events.last(), Some(&ok), "after {} bytes", total);
    }

    /// Bytes left over after a line are handed over intact (the AUTH TLS upgrade).
    #[test]
    fn take_buffered_returns_what_follows_the_last_line(
        line in "[A-Z]{1,8}( [a-z]{0,8})?",
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let mut wire = format!("{line}\r\n").into_bytes();
        wire.extend_from_slice(&tail);
        let mut splitter = LineSplitter::new(DEFAULT_MAX_LINE_LENGTH);
        splitter.push(&wire);
        prop_assert_eq!(splitter.next_event(), Some(LineEvent::Line(line.into_bytes())));
        prop_assert_eq!(splitter.take_buffered(), tail);
        prop_assert!(splitter.is_empty());
    }
}
