//! Fuzzes `ftp::ReplyParser` with arbitrary (multi-line) reply lines, the wire format of the replies it returns, and replies relayed in pieces (`take_relayable`).
#![no_main]

use ftpfront::ftp::{addr, LineEvent, LineSplitter, Reply, ReplyParser};
use libfuzzer_sys::fuzz_target;

/// Every reply in `wire`, parsed line by line through a splitter as the proxy does.
fn reparse(wire: &[u8]) -> Vec<Reply> {
    let mut splitter = LineSplitter::new(wire.len());
    splitter.push(wire);
    let mut parser = ReplyParser::new(usize::MAX);
    let mut replies = Vec::new();
    while let Some(event) = splitter.next_event() {
        let LineEvent::Line(line) = event else {
            panic!("a reply's own wire format has an overlong line");
        };
        let parsed = parser.push_line(&line).expect("own wire format re-parses");
        replies.extend(parsed);
    }
    assert!(
        splitter.is_empty(),
        "wire format does not end with a line break"
    );
    assert!(
        !parser.is_partial(),
        "wire format ends inside a multi-line reply"
    );
    replies
}

/// The lines a constructed reply's text becomes on the wire, as a parser reads them back.
fn expected_wire_lines(lines: &[String]) -> Vec<String> {
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

fn check_reply(reply: &Reply, max_lines: usize) {
    assert!((100..=599).contains(&reply.code), "code {}", reply.code);
    assert!(!reply.lines.is_empty());
    assert!(
        reply.lines.len() == 1 || reply.lines.len() <= max_lines,
        "{} lines, limit {max_lines}",
        reply.lines.len()
    );
    let wire = reply.to_wire();
    assert_eq!(reply.raw(), Some(wire.as_slice()));
    assert!(wire.ends_with(b"\r\n"));

    // A parsed reply relays byte-identically, and its bytes parse to the same reply.
    let again = reparse(&wire);
    let [same] = again.as_slice() else {
        panic!("{} replies from one reply's wire format", again.len());
    };
    assert_eq!(same.code, reply.code);
    assert_eq!(same.lines, reply.lines);
    assert_eq!(same.to_wire(), wire);

    // A reply constructed from the same text formats to something that parses back.
    let built = Reply::multiline(reply.code, reply.lines.clone());
    let again = reparse(&built.to_wire());
    let [same] = again.as_slice() else {
        panic!("{} replies from a constructed reply", again.len());
    };
    assert_eq!(same.code, reply.code);
    assert_eq!(same.lines, expected_wire_lines(&built.lines));

    let _ = addr::parse_pasv_reply(reply);
    let _ = addr::parse_epsv_reply(reply);
    let _ = reply.text();
    let _ = (
        reply.is_preliminary(),
        reply.is_completion(),
        reply.is_error(),
    );
}

/// Relaying: a parser whose partial reply is taken in pieces of at least `min_bytes`
/// after every line yields the bytes a parser assembling whole replies yields, in order.
fn check_relayed_in_pieces(input: &[u8], min_bytes: usize) {
    let mut whole = ReplyParser::new(usize::MAX);
    let mut relaying = ReplyParser::new(usize::MAX);
    let mut taken = Vec::new();
    for line in input.split(|&b| b == b'\n') {
        match (whole.push_line(line), relaying.push_line(line)) {
            (Ok(Some(reply)), Ok(Some(tail))) => {
                assert_eq!(tail.code, reply.code);
                taken.extend_from_slice(&tail.to_wire());
                assert_eq!(taken, reply.to_wire(), "pieces differ from the whole reply");
                assert_eq!(tail.lines.first(), reply.lines.first());
                assert_eq!(tail.lines.last(), reply.lines.last());
                taken.clear();
            }
            (Ok(None), Ok(None)) => {
                if let Some(piece) = relaying.take_relayable(min_bytes) {
                    assert!(piece.len() >= min_bytes);
                    taken.extend_from_slice(&piece);
                }
            }
            (Err(a), Err(b)) => {
                assert_eq!(a, b);
                taken.clear();
            }
            (a, b) => panic!("whole {a:?}, relaying {b:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, input)) = data.split_first() else {
        return;
    };
    if mode & 0x20 != 0 {
        check_relayed_in_pieces(input, usize::from(mode & 0x1F));
        return;
    }
    let max_lines = usize::from(mode & 0x1F);
    let mut parser = ReplyParser::new(max_lines);
    // Lines as a splitter yields them, some with their terminator left on (tolerated).
    for (index, piece) in input.split_inclusive(|&b| b == b'\n').enumerate() {
        let keep_terminator = mode & 0x80 != 0 && index % 2 == 0;
        let line = if keep_terminator {
            piece
        } else {
            let line = piece.strip_suffix(b"\n").unwrap_or(piece);
            line.strip_suffix(b"\r").unwrap_or(line)
        };
        match parser.push_line(line) {
            Ok(Some(reply)) => {
                check_reply(&reply, max_lines);
                assert!(!parser.is_partial());
            }
            Ok(None) => assert!(parser.is_partial()),
            Err(error) => {
                assert!(!parser.is_partial(), "an error did not reset the parser");
                assert!(error.to_string().len() < 200, "unbounded error message");
            }
        }
    }
    if mode & 0x40 != 0 {
        parser.reset();
        assert!(!parser.is_partial());
    }
});
