//! Server replies: the reply type, its wire format, and assembling replies from received lines.

use super::command::strip_terminator;
use super::quote_for_error;

/// One FTP reply, single- or multi-line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Text of the first and last lines without the code and separator;
    /// middle lines of a parsed multi-line reply verbatim.
    pub lines: Vec<String>,
    /// The exact bytes of a parsed reply, so relaying it is byte-identical.
    raw: Option<Vec<u8>>,
}

impl Reply {
    /// A single-line reply (an embedded `"\n"` still splits it on the wire).
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply::multiline(code, vec![text.into()])
    }

    /// A reply sent as `"code-first"`, middle lines, `"code last"`.
    pub fn multiline(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            lines,
            raw: None,
        }
    }

    /// All lines joined with `"\n"`.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// The bytes this reply was parsed from; `None` for a constructed reply.
    pub fn raw(&self) -> Option<&[u8]> {
        self.raw.as_deref()
    }

    /// The bytes to send: exactly what was received for a parsed reply
    /// (including non-UTF-8 bytes), otherwise the RFC 959 formatting.
    pub fn to_wire(&self) -> Vec<u8> {
        match &self.raw {
            Some(raw) => raw.clone(),
            None => self.format().into_bytes(),
        }
    }

    /// 1xx: positive preliminary.
    pub fn is_preliminary(&self) -> bool {
        self.class() == 1
    }

    /// 2xx: positive completion.
    pub fn is_completion(&self) -> bool {
        self.class() == 2
    }

    /// 3xx: positive intermediate.
    pub fn is_intermediate(&self) -> bool {
        self.class() == 3
    }

    /// 4xx: transient negative completion.
    pub fn is_transient_error(&self) -> bool {
        self.class() == 4
    }

    /// 5xx: permanent negative completion.
    pub fn is_permanent_error(&self) -> bool {
        self.class() == 5
    }

    /// 4xx or 5xx.
    pub fn is_error(&self) -> bool {
        self.is_transient_error() || self.is_permanent_error()
    }

    fn class(&self) -> u16 {
        self.code / 100
    }

    fn format(&self) -> String {
        let code = self.code;
        match self.wire_lines().as_slice() {
            [] => format!("{code} \r\n"),
            [only] => format!("{code} {only}\r\n"),
            [first, middle @ .., last] => {
                let mut out = format!("{code}-{first}\r\n");
                for line in middle {
                    // RFC 959 4.2: a middle line starting with a digit gets a
                    // leading space, so it can never be taken for the last line.
                    if line.starts_with(|c: char| c.is_ascii_digit()) {
                        out.push(' ');
                    }
                    out.push_str(line);
                    out.push_str("\r\n");
                }
                out.push_str(&format!("{code} {last}\r\n"));
                out
            }
        }
    }

    /// The lines as they go on the wire: embedded `"\n"` splits a line, and CR
    /// and NUL are dropped so text can never end a line or a reply early.
    fn wire_lines(&self) -> Vec<String> {
        self.lines
            .iter()
            .flat_map(|line| line.split('\n'))
            .map(|line| line.replace(['\r', '\0'], ""))
            .collect()
    }
}

/// Why a reply line was rejected. Each error resets the [`ReplyParser`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    #[error("empty reply line")]
    Empty,
    #[error("reply line does not start with a code 100-599: \"{0}\"")]
    MalformedCode(String),
    #[error("reply code not followed by a space or '-': \"{0}\"")]
    MalformedSeparator(String),
    #[error("multi-line reply longer than {limit} lines")]
    TooManyLines { limit: usize },
}

/// A multi-line reply whose last line has not arrived yet.
#[derive(Debug, Clone)]
struct Partial {
    code: u16,
    /// The code's three digits as sent, to recognise the last line.
    prefix: [u8; 3],
    lines: Vec<String>,
    raw: Vec<u8>,
}

/// Assembles replies from lines (as yielded by a
/// [`LineSplitter`](super::LineSplitter)), single- and multi-line.
#[derive(Debug, Clone)]
pub struct ReplyParser {
    max_lines: usize,
    partial: Option<Partial>,
}

impl ReplyParser {
    /// `max_lines` bounds the lines of one multi-line reply held at a time (first and
    /// last included; see [`ReplyParser::take_relayable`]), limiting the memory a hostile
    /// backend can make us hold.
    /// Single-line replies are always accepted.
    pub fn new(max_lines: usize) -> Self {
        ReplyParser {
            max_lines,
            partial: None,
        }
    }

    /// Feeds one line (a trailing CRLF or LF is tolerated and ignored).
    /// Returns the reply once its last line arrived. The raw bytes of the
    /// reply end every line with CRLF, whatever terminator the peer used.
    pub fn push_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let line = strip_terminator(line);
        match self.partial.take() {
            None => self.start(line),
            Some(partial) => self.continue_multiline(partial, line),
        }
    }

    /// Whether a multi-line reply is partly assembled (useful on EOF).
    pub fn is_partial(&self) -> bool {
        self.partial.is_some()
    }

    /// Drops any partly assembled reply.
    pub fn reset(&mut self) {
        self.partial = None;
    }

    /// The bytes of the multi-line reply being assembled, once they are `min_bytes` or
    /// more: a relay passes a long reply (STAT of a big directory) on as it arrives
    /// instead of holding all of it. The reply completed later carries in its raw bytes
    /// and middle lines only what came after the last take (its first line is kept).
    pub fn take_relayable(&mut self, min_bytes: usize) -> Option<Vec<u8>> {
        let partial = self.partial.as_mut()?;
        if partial.raw.len() < min_bytes {
            return None;
        }
        partial.lines.truncate(1);
        Some(std::mem::take(&mut partial.raw))
    }

    /// Handles the first line of a reply.
    fn start(&mut self, line: &[u8]) -> Result<Option<Reply>, ReplyError> {
        let (code, prefix) = parse_code(line)?;
        match line.get(3) {
            None | Some(b' ') => Ok(Some(Reply {
                code,
                lines: vec![text_after_code(line)],
                raw: Some(with_crlf(line)),
            })),
            Some(b'-') => {
                self.partial = Some(Partial {
                    code,
                    prefix,
                    lines: vec![text_after_code(line)],
                    raw: with_crlf(line),
                });
                Ok(None)
            }
            Some(_) => Err(ReplyError::MalformedSeparator(quote_for_error(line))),
        }
    }

    /// Handles a line after the first of a multi-line reply.
    fn continue_multiline(
        &mut self,
        mut partial: Partial,
        line: &[u8],
    ) -> Result<Option<Reply>, ReplyError> {
        if partial.lines.len() >= self.max_lines {
            return Err(ReplyError::TooManyLines {
                limit: self.max_lines,
            });
        }
        partial.raw.extend_from_slice(line);
        partial.raw.extend_from_slice(b"\r\n");
        if is_last_line(&partial.prefix, line) {
            partial.lines.push(text_after_code(line));
            return Ok(Some(Reply {
                code: partial.code,
                lines: partial.lines,
                raw: Some(partial.raw),
            }));
        }
        partial
            .lines
            .push(String::from_utf8_lossy(line).into_owned());
        self.partial = Some(partial);
        Ok(None)
    }
}

/// Reads the leading three-digit code (100..=599).
fn parse_code(line: &[u8]) -> Result<(u16, [u8; 3]), ReplyError> {
    match line {
        [] => Err(ReplyError::Empty),
        &[a @ b'1'..=b'5', b @ b'0'..=b'9', c @ b'0'..=b'9', ..] => {
            let digit = |d: u8| u16::from(d - b'0');
            Ok((digit(a) * 100 + digit(b) * 10 + digit(c), [a, b, c]))
        }
        _ => Err(ReplyError::MalformedCode(quote_for_error(line))),
    }
}

/// RFC 959: the last line is the same code followed by a space; a bare code
/// is accepted too. Anything else, even `"NNN-"`, is a middle line.
fn is_last_line(prefix: &[u8; 3], line: &[u8]) -> bool {
    match line.strip_prefix(prefix.as_slice()) {
        Some(rest) => rest.is_empty() || rest.starts_with(b" "),
        None => false,
    }
}

/// The text after `"NNN "` / `"NNN-"`, or `""` for a bare code.
fn text_after_code(line: &[u8]) -> String {
    String::from_utf8_lossy(line.get(4..).unwrap_or_default()).into_owned()
}

fn with_crlf(line: &[u8]) -> Vec<u8> {
    let mut raw = Vec::with_capacity(line.len() + 2);
    raw.extend_from_slice(line);
    raw.extend_from_slice(b"\r\n");
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds lines until a reply completes.
    fn parse_lines(parser: &mut ReplyParser, lines: &[&[u8]]) -> Option<Reply> {
        let mut reply = None;
        for line in lines {
            assert!(reply.is_none(), "reply completed before its last line");
            reply = parser.push_line(line).unwrap();
        }
        reply
    }

    fn parse_one(lines: &[&[u8]]) -> Reply {
        parse_lines(&mut ReplyParser::new(100), lines).unwrap()
    }

    // ---- formatting ----

    #[test]
    fn formats_single_line() {
        let reply = Reply::new(227, "Entering Passive Mode (1,2,3,4,5,6).");
        assert_eq!(
            reply.to_wire(),
            b"227 Entering Passive Mode (1,2,3,4,5,6).\r\n"
        );
        assert_eq!(reply.raw(), None);
    }

    #[test]
    fn formats_multiline_with_space_before_digit_lines() {
        let lines = vec![
            "Features:".into(),
            " MDTM".into(),
            "200 fake".into(),
            "End".into(),
        ];
        assert_eq!(
            Reply::multiline(211, lines).to_wire(),
            b"211-Features:\r\n MDTM\r\n 200 fake\r\n211 End\r\n"
        );
    }

    #[test]
    fn embedded_newline_splits_lines() {
        assert_eq!(
            Reply::new(211, "a\n1\nb").to_wire(),
            b"211-a\r\n 1\r\n211 b\r\n"
        );
        assert_eq!(Reply::new(211, "a\r\nb").to_wire(), b"211-a\r\n211 b\r\n");
    }

    #[test]
    fn cr_and_nul_are_dropped_from_text() {
        assert_eq!(Reply::new(200, "a\rb\0c").to_wire(), b"200 abc\r\n");
    }

    #[test]
    fn empty_text_and_no_lines() {
        assert_eq!(Reply::new(200, "").to_wire(), b"200 \r\n");
        assert_eq!(Reply::multiline(200, vec![]).to_wire(), b"200 \r\n");
    }

    #[test]
    fn text_joins_lines() {
        let reply = Reply::multiline(211, vec!["a".into(), "b".into()]);
        assert_eq!(reply.text(), "a\nb");
    }

    #[test]
    fn reply_classes() {
        let classes = |code| {
            let r = Reply::new(code, "");
            [
                r.is_preliminary(),
                r.is_completion(),
                r.is_intermediate(),
                r.is_transient_error(),
                r.is_permanent_error(),
                r.is_error(),
            ]
        };
        assert_eq!(classes(150), [true, false, false, false, false, false]);
        assert_eq!(classes(226), [false, true, false, false, false, false]);
        assert_eq!(classes(331), [false, false, true, false, false, false]);
        assert_eq!(classes(425), [false, false, false, true, false, true]);
        assert_eq!(classes(530), [false, false, false, false, true, true]);
        assert_eq!(classes(600), [false; 6]);
    }

    // ---- parsing: single line ----

    #[test]
    fn parses_single_line() {
        let reply = parse_one(&[b"220 Welcome"]);
        assert_eq!(
            (reply.code, reply.lines.clone()),
            (220, vec!["Welcome".into()])
        );
        assert_eq!(reply.to_wire(), b"220 Welcome\r\n");
    }

    #[test]
    fn parses_bare_code() {
        let reply = parse_one(&[b"200"]);
        assert_eq!((reply.code, reply.text()), (200, String::new()));
        assert_eq!(reply.to_wire(), b"200\r\n");
    }

    #[test]
    fn tolerates_terminators_and_keeps_inner_spaces() {
        let reply = parse_one(&[b"257 \"/a b \" created \r\n"]);
        assert_eq!(reply.text(), "\"/a b \" created ");
        assert_eq!(parse_one(&[b"200 ok\n"]).to_wire(), b"200 ok\r\n");
    }

    #[test]
    fn relays_non_utf8_bytes_exactly() {
        let reply = parse_one(&[b"550 caf\xe9: not found"]);
        assert_eq!(reply.text(), "caf\u{fffd}: not found");
        assert_eq!(reply.to_wire(), b"550 caf\xe9: not found\r\n");
    }

    #[test]
    fn accepts_code_range_bounds() {
        assert_eq!(parse_one(&[b"100 x"]).code, 100);
        assert_eq!(parse_one(&[b"599 x"]).code, 599);
    }

    // ---- parsing: multi-line ----

    #[test]
    fn parses_multiline_keeping_middle_lines_verbatim() {
        let reply = parse_one(&[
            b"211-Features:",
            b" 200 is just text",
            b"211-still middle",
            b"211still middle",
            b"230 other code",
            b"",
            b"211 End",
        ]);
        assert_eq!(reply.code, 211);
        assert_eq!(
            reply.lines,
            [
                "Features:",
                " 200 is just text",
                "211-still middle",
                "211still middle",
                "230 other code",
                "",
                "End"
            ]
        );
        assert_eq!(
            reply.to_wire(),
            b"211-Features:\r\n 200 is just text\r\n211-still middle\r\n211still middle\r\n\
              230 other code\r\n\r\n211 End\r\n"
        );
    }

    #[test]
    fn multiline_may_end_with_bare_code() {
        let reply = parse_one(&[b"211-a", b"211"]);
        assert_eq!(reply.lines, ["a", ""]);
    }

    #[test]
    fn multiline_keeps_non_utf8_middle_lines_on_the_wire() {
        let reply = parse_one(&[b"226-x", b"\xff\xfe", b"226 y"]);
        assert_eq!(reply.to_wire(), b"226-x\r\n\xff\xfe\r\n226 y\r\n");
    }

    #[test]
    fn a_long_reply_is_taken_in_pieces_and_ends_with_the_rest() {
        let mut parser = ReplyParser::new(10);
        assert_eq!(parser.take_relayable(0), None, "nothing is assembled");
        assert_eq!(parser.push_line(b"213-Status follows:"), Ok(None));
        assert_eq!(parser.take_relayable(100), None, "below the threshold");
        assert_eq!(parser.push_line(b"a"), Ok(None));
        let piece = parser.take_relayable(10).unwrap();
        assert_eq!(piece, b"213-Status follows:\r\na\r\n");
        assert_eq!(parser.take_relayable(0), Some(Vec::new()));
        assert_eq!(parser.push_line(b"b"), Ok(None));
        let tail = parser.push_line(b"213 End of status").unwrap().unwrap();
        assert_eq!(tail.code, 213);
        assert_eq!(tail.to_wire(), b"b\r\n213 End of status\r\n");
        assert_eq!(tail.lines, ["Status follows:", "b", "End of status"]);
        assert!(!parser.is_partial());
    }

    #[test]
    fn the_line_limit_counts_the_lines_held_since_the_last_piece() {
        let mut parser = ReplyParser::new(3);
        for line in [&b"211-1"[..], b"2", b"3"] {
            assert_eq!(parser.push_line(line), Ok(None));
        }
        assert!(parser.take_relayable(0).is_some());
        assert_eq!(
            parser.push_line(b"4"),
            Ok(None),
            "the fourth line of the reply"
        );
        assert_eq!(parser.push_line(b"211 5").unwrap().unwrap().code, 211);
    }

    #[test]
    fn parser_is_idle_between_replies() {
        let mut parser = ReplyParser::new(10);
        assert!(!parser.is_partial());
        assert_eq!(parser.push_line(b"211-a"), Ok(None));
        assert!(parser.is_partial());
        parser.reset();
        assert!(!parser.is_partial());
        assert_eq!(parser.push_line(b"200 b").unwrap().unwrap().code, 200);
    }

    #[test]
    fn consecutive_replies_are_independent() {
        let mut parser = ReplyParser::new(10);
        let first = parse_lines(&mut parser, &[b"150-a", b"150 b"]).unwrap();
        let second = parse_lines(&mut parser, &[b"226 done"]).unwrap();
        assert_eq!((first.code, second.code), (150, 226));
    }

    // ---- parsing: malformed input ----

    #[test]
    fn rejects_empty_line() {
        assert_eq!(ReplyParser::new(5).push_line(b""), Err(ReplyError::Empty));
        assert_eq!(
            ReplyParser::new(5).push_line(b"\r\n"),
            Err(ReplyError::Empty)
        );
    }

    #[test]
    fn rejects_malformed_codes() {
        for line in [
            &b"abc"[..],
            b"22",
            b"099 x",
            b"600 x",
            b"2x0 x",
            b" 220 x",
            b"\xff\r",
        ] {
            let err = ReplyParser::new(5).push_line(line).unwrap_err();
            assert!(
                matches!(err, ReplyError::MalformedCode(_)),
                "{line:?}: {err:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_separators() {
        for line in [&b"2200 x"[..], b"220x", b"220\t"] {
            let err = ReplyParser::new(5).push_line(line).unwrap_err();
            assert!(
                matches!(err, ReplyError::MalformedSeparator(_)),
                "{line:?}: {err:?}"
            );
        }
    }

    #[test]
    fn error_messages_quote_sanitised_input() {
        let err = ReplyParser::new(5).push_line(b"xx\x1b[0m").unwrap_err();
        assert_eq!(
            err.to_string(),
            "reply line does not start with a code 100-599: \"xx?[0m\""
        );
        let err = ReplyParser::new(5).push_line(b"2200").unwrap_err();
        assert_eq!(
            err.to_string(),
            "reply code not followed by a space or '-': \"2200\""
        );
        assert_eq!(ReplyError::Empty.to_string(), "empty reply line");
    }

    #[test]
    fn too_many_lines_is_an_error_and_resets() {
        let mut parser = ReplyParser::new(3);
        assert_eq!(parser.push_line(b"211-1"), Ok(None));
        assert_eq!(parser.push_line(b"2"), Ok(None));
        assert_eq!(parser.push_line(b"3"), Ok(None));
        assert_eq!(
            parser.push_line(b"4"),
            Err(ReplyError::TooManyLines { limit: 3 })
        );
        assert!(!parser.is_partial());
        assert_eq!(parser.push_line(b"200 fresh").unwrap().unwrap().code, 200);
        assert_eq!(
            ReplyError::TooManyLines { limit: 3 }.to_string(),
            "multi-line reply longer than 3 lines"
        );
    }

    #[test]
    fn reply_of_exactly_max_lines_is_accepted() {
        let reply = parse_lines(&mut ReplyParser::new(3), &[b"211-1", b"2", b"211 3"]);
        assert_eq!(reply.unwrap().lines.len(), 3);
    }

    #[test]
    fn zero_max_lines_still_accepts_single_line_replies() {
        let mut parser = ReplyParser::new(0);
        assert!(parser.push_line(b"200 ok").unwrap().is_some());
        assert_eq!(parser.push_line(b"211-a"), Ok(None));
        assert_eq!(
            parser.push_line(b"211 b"),
            Err(ReplyError::TooManyLines { limit: 0 })
        );
    }

    #[test]
    fn malformed_line_after_error_starts_fresh() {
        let mut parser = ReplyParser::new(5);
        assert!(parser.push_line(b"garbage").is_err());
        assert_eq!(parser.push_line(b"331-a"), Ok(None));
        assert_eq!(
            parser.push_line(b"331 b").unwrap().unwrap().lines,
            ["a", "b"]
        );
    }

    #[test]
    fn constructed_reply_round_trips_through_parser() {
        let original = Reply::multiline(250, vec!["x".into(), " y".into(), "z".into()]);
        let wire = original.to_wire();
        let lines: Vec<&[u8]> = wire.split_inclusive(|&b| b == b'\n').collect();
        let parsed = parse_one(&lines);
        assert_eq!((parsed.code, &parsed.lines), (250, &original.lines));
        assert_eq!(parsed.to_wire(), wire);
    }
}
