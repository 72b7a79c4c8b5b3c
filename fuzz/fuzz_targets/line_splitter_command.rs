//! Fuzzes `ftp::LineSplitter` under arbitrary chunking and line limits, and `Command::parse` and the argument parsers of `ftp::args` on every line it yields.
#![no_main]

use ftpfront::ftp::{
    args, ArgError, AuthMechanism, Command, CommandError, LineEvent, LineSplitter, Verb,
    DEFAULT_MAX_LINE_LENGTH,
};
use libfuzzer_sys::fuzz_target;

/// Line limits chosen by the high bits of the mode byte; the low bits pick a small one.
const LARGE_MAXES: [usize; 4] = [255, 512, 1024, DEFAULT_MAX_LINE_LENGTH];

/// How the input is fed to the splitter, decoded from its first bytes.
struct Plan<'a> {
    max: usize,
    /// Chunk lengths, used in turn (0 pushes an empty slice).
    chunks: &'a [u8],
    /// Bit i set: drain the events after chunk i (mod 8); they are always drained at the end.
    drain_mask: u8,
    /// The stream is `body` repeated this many times, so that long lines are reachable
    /// with short inputs.
    repeat: usize,
    body: &'a [u8],
}

impl<'a> Plan<'a> {
    fn decode(data: &'a [u8]) -> Option<Plan<'a>> {
        let (&[mode, shape, drain_mask], rest) = data.split_first_chunk::<3>()?;
        let max = if mode & 0xC0 == 0 {
            usize::from(mode & 0x3F)
        } else {
            LARGE_MAXES[usize::from(mode >> 6) & 3]
        };
        let chunk_count = usize::from(shape & 0x07) + 1;
        let repeat = usize::from(shape >> 3 & 0x0F) + 1;
        let (chunks, body) = rest.split_at(chunk_count.min(rest.len()));
        Some(Plan {
            max,
            chunks,
            drain_mask,
            repeat,
            body,
        })
    }

    fn stream(&self) -> Vec<u8> {
        self.body.repeat(self.repeat)
    }

    /// The stream cut into pieces whose lengths cycle through `chunks`.
    fn pieces<'s>(&self, stream: &'s [u8]) -> Vec<&'s [u8]> {
        let sizes: Vec<usize> = self.chunks.iter().map(|&b| usize::from(b)).collect();
        let mut pieces = Vec::new();
        let mut rest = stream;
        if sizes.iter().all(|&size| size == 0) {
            pieces.extend(sizes.iter().map(|_| &stream[..0]));
            pieces.push(stream);
            return pieces;
        }
        for &size in sizes.iter().cycle() {
            if rest.is_empty() {
                break;
            }
            let (piece, tail) = rest.split_at(size.min(rest.len()));
            pieces.push(piece);
            rest = tail;
        }
        pieces
    }
}

fn drain(splitter: &mut LineSplitter, max: usize, events: &mut Vec<LineEvent>) {
    while let Some(event) = splitter.next_event() {
        if let LineEvent::Line(line) = &event {
            assert!(line.len() <= max, "line of {} > max {max}", line.len());
        }
        events.push(event);
    }
    assert!(
        splitter.buffered_len() <= max + 2,
        "{} bytes buffered after draining, max {max}",
        splitter.buffered_len()
    );
}

/// Length of an unfinished line that can no longer shrink: a trailing CR may still be
/// half of a CRLF.
fn content_len(tail: &[u8]) -> usize {
    tail.strip_suffix(b"\r").unwrap_or(tail).len()
}

/// What the documentation promises for the complete lines of `stream`: split at LF, one
/// CR before it stripped, lines over `max` reported as `TooLong`.
fn expected_complete_lines(stream: &[u8], max: usize) -> (Vec<LineEvent>, &[u8]) {
    let mut events = Vec::new();
    let mut rest = stream;
    while let Some(lf) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..lf];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        events.push(if line.len() > max {
            LineEvent::TooLong
        } else {
            LineEvent::Line(line.to_vec())
        });
        rest = &rest[lf + 1..];
    }
    (events, rest)
}

fn check_command(line: &[u8], max: usize) {
    let parsed = Command::parse(line);
    assert_eq!(Command::parse_with_limit(line, max), parsed);
    let Ok(cmd) = parsed else {
        if let Err(CommandError::InvalidVerb(quoted)) = &parsed {
            assert!(quoted.len() <= 64 + 3, "unbounded error quote");
        }
        return;
    };
    // Command::parse's own guarantees on what it accepts.
    // CRs before the end are dropped (`"PWD\r\r\n"` is `PWD`, as vsftpd takes it).
    let content_end = line.iter().rposition(|&b| b != b'\r').map_or(0, |i| i + 1);
    assert!(
        line[..content_end].ends_with(&cmd.raw),
        "raw is not the end of the line"
    );
    assert!(!cmd.raw.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
    assert!((1..=16).contains(&cmd.verb_text.len()));
    assert!(cmd
        .verb_text
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
    assert_eq!(cmd.verb, Verb::from_name(&cmd.verb_text));
    let log = cmd.log_line();
    assert!(!log.chars().any(char::is_control), "control in log line");
    if cmd.verb == Verb::Pass {
        assert_eq!(log, "PASS ****");
    }

    // Round trip through the wire: to_wire -> splitter -> parse gives the same command.
    let wire = cmd.to_wire();
    let mut splitter = LineSplitter::new(wire.len());
    splitter.push(&wire);
    assert_eq!(
        splitter.next_event(),
        Some(LineEvent::Line(cmd.raw.clone()))
    );
    assert_eq!(splitter.next_event(), None);
    assert!(splitter.is_empty());
    // The wire form carries no Telnet marks: a relayed command is a plain line.
    let relayed = Command {
        telnet_prefixed: false,
        ..cmd.clone()
    };
    assert_eq!(Command::parse(&cmd.raw).as_ref(), Ok(&relayed));
    assert_eq!(Command::parse(&wire).as_ref(), Ok(&relayed));

    // A command rebuilt from its parts parses to the same verb and argument.
    let rebuilt = Command::new(&cmd.verb_text, cmd.arg.as_deref());
    assert_eq!(
        (rebuilt.verb, &rebuilt.verb_text, &rebuilt.arg),
        (cmd.verb, &cmd.verb_text, &cmd.arg)
    );
    assert_eq!(Command::parse(&rebuilt.to_wire()), Ok(rebuilt));
    check_args(cmd.arg_str());
}

/// The argument parsers of `ftp::args` on any argument: no panic, bounded error quotes, and
/// what they accept is what they promise.
fn check_args(arg: &str) {
    let bounded = |error: ArgError| assert!(error.to_string().len() <= 160, "{error}");
    match args::parse_rest(arg) {
        Ok(offset) => assert_eq!(args::parse_rest(&offset.to_string()), Ok(offset)),
        Err(error) => bounded(error),
    }
    assert_eq!(args::parse_pbsz(arg), args::parse_rest(arg));
    if let Err(error) = args::parse_opts(arg) {
        bounded(error);
    }
    match args::parse_prot(arg) {
        Ok(_) => assert_eq!(arg.trim().len(), 1),
        Err(error) => bounded(error),
    }
    if let AuthMechanism::Other(mechanism) = args::parse_auth(arg) {
        assert_eq!(mechanism, arg.trim().to_ascii_uppercase());
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(plan) = Plan::decode(data) else {
        return;
    };
    let max = plan.max;
    let stream = plan.stream();

    // Reference: everything pushed at once, then drained.
    let mut whole = LineSplitter::new(max);
    whole.push(&stream);
    let mut expected = Vec::new();
    drain(&mut whole, max, &mut expected);

    // The same bytes in pieces, drained after some of them.
    let mut splitter = LineSplitter::new(max);
    let mut events = Vec::new();
    for (index, piece) in plan.pieces(&stream).into_iter().enumerate() {
        splitter.push(piece);
        if plan.drain_mask & (1 << (index % 8)) != 0 {
            drain(&mut splitter, max, &mut events);
        }
    }
    drain(&mut splitter, max, &mut events);
    assert_eq!(events, expected, "chunking changed the events");

    // The events match the documented contract.
    let (complete, tail) = expected_complete_lines(&stream, max);
    let (head, extra) = events.split_at(complete.len().min(events.len()));
    assert_eq!(
        head,
        complete.as_slice(),
        "complete lines differ from the contract"
    );
    let tail_too_long = content_len(tail) > max;
    match extra {
        [] => {}
        [LineEvent::TooLong] if tail_too_long => {}
        other => panic!("unexpected events after the complete lines: {other:?}"),
    }
    // Bytes not yet yielded are handed over intact (AUTH TLS), unless they were an
    // overlong line being discarded.
    let buffered = splitter.take_buffered();
    if !tail_too_long {
        assert_eq!(buffered, tail, "take_buffered lost or changed bytes");
    }
    assert!(splitter.is_empty());

    for event in &events {
        if let LineEvent::Line(line) = event {
            check_command(line, max);
        }
    }
});
