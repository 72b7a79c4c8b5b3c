//! One command line: parsing it (Telnet prefix, verb, argument), building one to send, and its log form.

use super::quote_for_error;
use super::telnet::{DM, IAC, IP};
// The verb table lived here before `verb.rs`: `ftp::command::{Verb, TransferDirection}`
// still name it, for the callers that import it from here.
pub use super::verb::{TransferDirection, Verb};

/// RFC 959 verbs are 3–4 letters; extensions are longer but never this long.
const MAX_VERB_LEN: usize = 16;

/// Why a command line was rejected. The messages are phrased to follow a
/// `500 ` reply code directly.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("Empty command line")]
    Empty,
    #[error("Syntax error, invalid command \"{0}\"")]
    InvalidVerb(String),
    #[error("Command line too long (limit is {limit} bytes)")]
    LineTooLong { limit: usize },
    #[error("Syntax error, NUL byte in command line")]
    ContainsNul,
    #[error("Syntax error, stray CR or LF in command line")]
    StrayLineBreak,
}

/// One parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    pub verb: Verb,
    /// The verb as sent, ASCII-uppercased (so [`Verb::Other`] keeps its name).
    pub verb_text: String,
    /// Everything after the first space, verbatim (lossy UTF-8); `None` when
    /// no space followed the verb, `Some("")` for a lone trailing space.
    pub arg: Option<String>,
    /// The exact line without terminator and leading Telnet sequences. This is
    /// what a proxy relays: legacy servers use Latin-1 paths, never re-encode.
    pub raw: Vec<u8>,
    /// The line began with Telnet sequences: the Interrupt Process and Synch that RFC 959
    /// (4.1.3) has a client put before an urgent command such as ABOR.
    pub telnet_prefixed: bool,
}

impl Command {
    /// Parses one command line; it may end with `"\r\n"`, `"\n"` or nothing.
    ///
    /// No length limit is applied: lines normally come from a [`LineSplitter`](super::LineSplitter),
    /// which already enforces one. See [`Command::parse_with_limit`].
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        let terminated = strip_terminator(line);
        let line = strip_telnet_prefix(terminated);
        check_line_bytes(line)?;
        let (verb, arg) = split_verb(line);
        check_verb(verb)?;
        let verb_text = String::from_utf8_lossy(verb).to_ascii_uppercase();
        Ok(Command {
            verb: Verb::from_name(&verb_text),
            verb_text,
            arg: arg.map(|arg| String::from_utf8_lossy(arg).into_owned()),
            raw: line.to_vec(),
            telnet_prefixed: line.len() != terminated.len(),
        })
    }

    /// Like [`Command::parse`], but first rejects lines longer than `limit`
    /// bytes (terminator excluded).
    pub fn parse_with_limit(line: &[u8], limit: usize) -> Result<Command, CommandError> {
        if strip_terminator(line).len() > limit {
            return Err(CommandError::LineTooLong { limit });
        }
        Command::parse(line)
    }

    /// Builds a command to send, e.g. to a backend.
    ///
    /// CR, LF and NUL are removed from both parts: this constructor cannot
    /// fail, and it must never let a caller smuggle a second command onto the
    /// wire. `verb_text` should be a single word.
    pub fn new(verb_text: &str, arg: Option<&str>) -> Command {
        let verb_text = remove_line_breaks(verb_text).to_ascii_uppercase();
        let arg = arg.map(remove_line_breaks);
        let mut raw = verb_text.clone().into_bytes();
        if let Some(arg) = &arg {
            raw.push(b' ');
            raw.extend_from_slice(arg.as_bytes());
        }
        Command {
            verb: Verb::from_name(&verb_text),
            verb_text,
            arg,
            raw,
            telnet_prefixed: false,
        }
    }

    /// The argument, or `""` when there is none.
    pub fn arg_str(&self) -> &str {
        self.arg.as_deref().unwrap_or("")
    }

    /// The line for logs: never contains a password, and control characters
    /// are escaped so a client cannot forge log lines or terminal output.
    pub fn log_line(&self) -> String {
        // ACCT carries an account password (RFC 959) just as PASS does.
        if matches!(self.verb, Verb::Pass | Verb::Acct) {
            return format!("{} ****", self.verb_text);
        }
        escape_controls(&String::from_utf8_lossy(&self.raw))
    }

    /// The bytes to send: the raw line plus CRLF.
    pub fn to_wire(&self) -> Vec<u8> {
        let mut wire = Vec::with_capacity(self.raw.len() + 2);
        wire.extend_from_slice(&self.raw);
        wire.extend_from_slice(b"\r\n");
        wire
    }
}

/// Removes the line terminator: `"\n"` and every CR before it. Scripts that write
/// `"...\r\n"` through a text-mode stream send `"\r\r\n"`; vsftpd takes such a line, so
/// ftpfront does too (a CR cannot end a file name a client means anyway).
pub(super) fn strip_terminator(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let kept = line
        .iter()
        .rposition(|&b| b != b'\r')
        .map_or(0, |last| last + 1);
    &line[..kept]
}

/// Skips the Telnet sequences clients put in front of urgent commands.
///
/// To abort a transfer, RFC 959 clients send IAC IP, then IAC DM as TCP
/// urgent data, then ABOR (Python's ftplib sends `"\xff\xf4\xff\xf2ABOR"`).
/// Depending on how the urgent byte is delivered, the line may start with the
/// full sequences, with an IAC whose command byte went out-of-band, or with a
/// lone DM or IP byte. A verb never starts with these bytes, so dropping them is safe.
fn strip_telnet_prefix(mut line: &[u8]) -> &[u8] {
    loop {
        line = match line {
            // IAC IAC is an escaped 0xFF data byte.
            [IAC, IAC, rest @ ..] => rest,
            // WILL/WONT/DO/DONT carry an option byte.
            [IAC, 0xFB..=0xFE, _option, rest @ ..] => rest,
            // Two-byte commands (IP, DM, NOP, ...), or a truncated negotiation.
            [IAC, 0xF0..=0xFE, rest @ ..] => rest,
            // An IAC whose command byte was delivered out-of-band.
            [IAC, rest @ ..] => rest,
            [DM, rest @ ..] | [IP, rest @ ..] => rest,
            _ => return line,
        };
    }
}

/// Rejects empty lines and bytes that would confuse a backend's line parser.
fn check_line_bytes(line: &[u8]) -> Result<(), CommandError> {
    if line.is_empty() {
        return Err(CommandError::Empty);
    }
    if line.contains(&0) {
        return Err(CommandError::ContainsNul);
    }
    if line.iter().any(|&b| b == b'\r' || b == b'\n') {
        return Err(CommandError::StrayLineBreak);
    }
    Ok(())
}

/// Splits at the first space; the argument is kept verbatim, including any
/// further spaces (file names may start or end with spaces).
fn split_verb(line: &[u8]) -> (&[u8], Option<&[u8]>) {
    match line.iter().position(|&b| b == b' ') {
        Some(space) => (&line[..space], Some(&line[space + 1..])),
        None => (line, None),
    }
}

/// A verb is 1..=16 ASCII alphanumerics starting with a letter.
fn check_verb(verb: &[u8]) -> Result<(), CommandError> {
    let valid = verb.len() <= MAX_VERB_LEN
        && verb.first().is_some_and(u8::is_ascii_alphabetic)
        && verb.iter().all(u8::is_ascii_alphanumeric);
    if valid {
        Ok(())
    } else {
        Err(CommandError::InvalidVerb(quote_for_error(verb)))
    }
}

fn remove_line_breaks(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

fn escape_controls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Command {
        Command::parse(line).unwrap()
    }

    // ---- Command::parse: accepted lines ----

    #[test]
    fn parses_verb_and_argument() {
        let cmd = parse(b"RETR file.txt\r\n");
        assert_eq!(cmd.verb, Verb::Retr);
        assert_eq!(cmd.verb_text, "RETR");
        assert_eq!(cmd.arg.as_deref(), Some("file.txt"));
        assert_eq!(cmd.raw, b"RETR file.txt");
    }

    #[test]
    fn accepts_all_three_line_endings() {
        for line in [&b"NOOP\r\n"[..], b"NOOP\n", b"NOOP"] {
            let cmd = parse(line);
            assert_eq!(
                (cmd.verb, cmd.arg, cmd.raw),
                (Verb::Noop, None, b"NOOP".to_vec())
            );
        }
    }

    #[test]
    fn lowercase_verb_is_uppercased_but_raw_is_untouched() {
        let cmd = parse(b"cwd /Pub\r\n");
        assert_eq!(cmd.verb, Verb::Cwd);
        assert_eq!(cmd.verb_text, "CWD");
        assert_eq!(cmd.raw, b"cwd /Pub");
    }

    #[test]
    fn unknown_verb_keeps_its_name() {
        let cmd = parse(b"xyzzy 1\r\n");
        assert_eq!(cmd.verb, Verb::Other);
        assert_eq!(cmd.verb_text, "XYZZY");
    }

    #[test]
    fn verb_may_contain_digits_after_the_first_letter() {
        assert_eq!(parse(b"X2GO").verb_text, "X2GO");
    }

    #[test]
    fn verb_of_sixteen_chars_is_accepted() {
        assert_eq!(parse(b"ABCDEFGHIJKLMNOP").verb, Verb::Other);
    }

    #[test]
    fn trailing_space_gives_empty_argument() {
        assert_eq!(parse(b"LIST \r\n").arg.as_deref(), Some(""));
        assert_eq!(parse(b"LIST\r\n").arg, None);
    }

    #[test]
    fn argument_spaces_are_kept_verbatim() {
        let cmd = parse(b"STOR  two  spaces \r\n");
        assert_eq!(cmd.arg.as_deref(), Some(" two  spaces "));
        assert_eq!(cmd.raw, b"STOR  two  spaces ");
    }

    #[test]
    fn latin1_argument_is_lossy_but_raw_is_exact() {
        let cmd = parse(b"RETR caf\xe9.txt\r\n");
        assert_eq!(cmd.arg.as_deref(), Some("caf\u{fffd}.txt"));
        assert_eq!(cmd.raw, b"RETR caf\xe9.txt");
        assert_eq!(cmd.to_wire(), b"RETR caf\xe9.txt\r\n");
    }

    #[test]
    fn tab_is_part_of_the_argument() {
        assert_eq!(parse(b"SITE a\tb").arg.as_deref(), Some("a\tb"));
    }

    // ---- Command::parse: Telnet prefixes ----

    #[test]
    fn strips_ftplib_abort_prefix() {
        let cmd = parse(b"\xff\xf4\xff\xf2ABOR\r\n");
        assert_eq!(cmd.verb, Verb::Abor);
        assert_eq!(cmd.raw, b"ABOR");
        assert!(cmd.telnet_prefixed);
    }

    #[test]
    fn a_plain_line_has_no_telnet_prefix() {
        assert!(!parse(b"ABOR\r\n").telnet_prefixed);
        assert!(!parse(b"RETR \xff\xf4x").telnet_prefixed);
        assert!(!Command::new("ABOR", None).telnet_prefixed);
    }

    #[test]
    fn strips_iac_whose_command_went_out_of_band() {
        assert_eq!(parse(b"\xff\xf4\xffABOR").raw, b"ABOR");
    }

    #[test]
    fn strips_lone_data_mark() {
        assert_eq!(parse(b"\xf2ABOR").raw, b"ABOR");
    }

    /// The IAC of IAC IP went out-of-band (urgent data), leaving a bare IP byte, in any
    /// order with the DM, and in any case.
    #[test]
    fn strips_bare_interrupt_process() {
        for line in [
            &b"\xf4ABOR"[..],
            b"\xf4\xff\xf2abor",
            b"\xf4\xf2Abor",
            b"\xff\xf2\xf4ABOR",
        ] {
            let cmd = parse(line);
            assert_eq!(cmd.verb, Verb::Abor, "{line:?}");
            assert!(cmd.telnet_prefixed, "{line:?}");
        }
    }

    #[test]
    fn strips_escaped_iac_and_negotiation() {
        assert_eq!(parse(b"\xff\xff\xff\xfd\x01\xff\xf1ABOR").raw, b"ABOR");
    }

    #[test]
    fn strips_truncated_negotiation() {
        assert_eq!(Command::parse(b"\xff\xfb"), Err(CommandError::Empty));
    }

    #[test]
    fn telnet_bytes_inside_the_argument_are_kept() {
        assert_eq!(parse(b"RETR \xff\xf4x").raw, b"RETR \xff\xf4x");
    }

    // ---- Command::parse: rejected lines ----

    #[test]
    fn rejects_empty_lines() {
        for line in [&b""[..], b"\r\n", b"\n", b"\xff\xf4\xff\xf2\r\n"] {
            assert_eq!(Command::parse(line), Err(CommandError::Empty));
        }
    }

    #[test]
    fn takes_a_doubled_cr_before_the_lf_as_vsftpd_does() {
        assert_eq!(parse(b"PWD\r\r\n").raw, b"PWD");
        assert_eq!(parse(b"CWD a b\r\r\r\n").raw, b"CWD a b");
        for line in [&b"\r\r\n"[..], b"\r", b"\r\n"] {
            assert_eq!(Command::parse(line), Err(CommandError::Empty));
        }
        // A CR inside the line is still refused.
        assert_eq!(
            Command::parse(b"CWD a\rb\r\n"),
            Err(CommandError::StrayLineBreak)
        );
    }

    #[test]
    fn rejects_nul() {
        assert_eq!(
            Command::parse(b"RETR a\0b\r\n"),
            Err(CommandError::ContainsNul)
        );
    }

    #[test]
    fn rejects_stray_cr_and_lf() {
        for line in [
            &b"RETR a\rb"[..],
            b"RETR a\nb",
            b"NOOP\n\n",
            b"NOOP\r\n\r\n",
        ] {
            assert_eq!(Command::parse(line), Err(CommandError::StrayLineBreak));
        }
    }

    #[test]
    fn rejects_malformed_verbs() {
        let cases: [(&[u8], &str); 6] = [
            (b" NOOP", ""),
            (b"1ABC", "1ABC"),
            (b"RE-TR x", "RE-TR"),
            (b"ABCDEFGHIJKLMNOPQ", "ABCDEFGHIJKLMNOPQ"),
            (b"USER\tbob", "USER?bob"),
            (b"\xc3\xa9T\xe9", "??T?"),
        ];
        for (line, quoted) in cases {
            let err = Command::parse(line).unwrap_err();
            assert_eq!(err, CommandError::InvalidVerb(quoted.to_string()));
        }
    }

    #[test]
    fn invalid_verb_message_is_bounded() {
        let line = vec![b'-'; 5000];
        let message = Command::parse(&line).unwrap_err().to_string();
        assert!(message.len() < 120, "{message}");
    }

    #[test]
    fn error_messages_read_well_after_a_reply_code() {
        assert_eq!(CommandError::Empty.to_string(), "Empty command line");
        assert_eq!(
            CommandError::InvalidVerb("1X".into()).to_string(),
            "Syntax error, invalid command \"1X\""
        );
        assert_eq!(
            CommandError::LineTooLong { limit: 10 }.to_string(),
            "Command line too long (limit is 10 bytes)"
        );
        assert_eq!(
            CommandError::ContainsNul.to_string(),
            "Syntax error, NUL byte in command line"
        );
        assert_eq!(
            CommandError::StrayLineBreak.to_string(),
            "Syntax error, stray CR or LF in command line"
        );
    }

    #[test]
    fn parse_with_limit_counts_the_line_without_terminator() {
        assert!(Command::parse_with_limit(b"NOOP\r\n", 4).is_ok());
        assert_eq!(
            Command::parse_with_limit(b"NOOPS\r\n", 4),
            Err(CommandError::LineTooLong { limit: 4 })
        );
    }

    // ---- Command helpers ----

    #[test]
    fn arg_str_defaults_to_empty() {
        assert_eq!(parse(b"PWD").arg_str(), "");
        assert_eq!(parse(b"CWD /x").arg_str(), "/x");
    }

    #[test]
    fn log_line_hides_passwords() {
        assert_eq!(parse(b"pass s3cret\r\n").log_line(), "PASS ****");
        assert_eq!(parse(b"PASS").log_line(), "PASS ****");
        assert_eq!(parse(b"acct s3cret\r\n").log_line(), "ACCT ****");
    }

    #[test]
    fn log_line_shows_other_commands_and_escapes_controls() {
        assert_eq!(parse(b"USER bob").log_line(), "USER bob");
        assert_eq!(parse(b"RETR a\x1b[2Jb").log_line(), "RETR a\\u{1b}[2Jb");
        assert_eq!(parse(b"RETR \xe9").log_line(), "RETR \u{fffd}");
    }

    #[test]
    fn new_builds_a_sendable_command() {
        let cmd = Command::new("retr", Some("a b.txt"));
        assert_eq!(cmd.verb, Verb::Retr);
        assert_eq!(cmd.verb_text, "RETR");
        assert_eq!(cmd.to_wire(), b"RETR a b.txt\r\n");
        assert_eq!(Command::new("PASV", None).to_wire(), b"PASV\r\n");
    }

    #[test]
    fn new_cannot_inject_a_second_command() {
        let cmd = Command::new("US\rER", Some("bob\r\nDELE x\0"));
        assert_eq!(cmd.to_wire(), b"USER bobDELE x\r\n");
        assert_eq!(cmd.verb, Verb::User);
    }

    #[test]
    fn new_then_parse_round_trips() {
        let cases = [
            ("USER", Some("anonymous")),
            ("LIST", Some("")),
            ("STOR", Some(" lead and trail ")),
            ("FEAT", None),
            ("SITE", Some("CHMOD 755 x")),
            ("XFOO", Some("ünïcödé")),
        ];
        for (verb, arg) in cases {
            let built = Command::new(verb, arg);
            assert_eq!(Command::parse(&built.to_wire()), Ok(built));
        }
    }
}
