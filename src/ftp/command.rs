//! Client commands: verbs, parsing and formatting of command lines, and splitting a byte stream into lines.

use super::quote_for_error;

/// Default bound on one control-connection line, terminator excluded.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 4096;

/// RFC 959 verbs are 3–4 letters; extensions are longer but never this long.
const MAX_VERB_LEN: usize = 16;

/// Telnet "Interpret As Command" escape byte.
const IAC: u8 = 0xFF;
/// Telnet "Data Mark"; arrives without its IAC when the IAC went out-of-band.
const DM: u8 = 0xF2;
/// Telnet "Interrupt Process"; arrives bare when its IAC went out-of-band.
const IP: u8 = 0xF4;

/// Defines [`Verb`] and its name tables from one list, so the enum, the wire
/// names and the metric labels can never drift apart.
macro_rules! define_verbs {
    ($($variant:ident => $name:literal, $label:literal;)+) => {
        /// A command verb. Verbs the proxy does not know are [`Verb::Other`];
        /// their spelling is kept in [`Command::verb_text`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Verb {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )+
            /// Any verb not listed above.
            Other,
        }

        impl Verb {
            /// Every verb except [`Verb::Other`].
            pub const KNOWN: &'static [Verb] = &[$(Verb::$variant),+];

            /// The verb as written on the wire (uppercase); `"OTHER"` for [`Verb::Other`].
            pub fn name(self) -> &'static str {
                match self {
                    $(Verb::$variant => $name,)+
                    Verb::Other => "OTHER",
                }
            }

            /// Lowercase name for metrics. Unknown verbs all map to `"other"`
            /// so a client cannot blow up label cardinality.
            pub fn metric_label(self) -> &'static str {
                match self {
                    $(Verb::$variant => $label,)+
                    Verb::Other => "other",
                }
            }
        }
    };
}

define_verbs! {
    User => "USER", "user";
    Pass => "PASS", "pass";
    Acct => "ACCT", "acct";
    Quit => "QUIT", "quit";
    Rein => "REIN", "rein";
    Port => "PORT", "port";
    Eprt => "EPRT", "eprt";
    Pasv => "PASV", "pasv";
    Epsv => "EPSV", "epsv";
    Lprt => "LPRT", "lprt";
    Lpsv => "LPSV", "lpsv";
    Auth => "AUTH", "auth";
    Pbsz => "PBSZ", "pbsz";
    Prot => "PROT", "prot";
    Ccc => "CCC", "ccc";
    Adat => "ADAT", "adat";
    Feat => "FEAT", "feat";
    Opts => "OPTS", "opts";
    Syst => "SYST", "syst";
    Noop => "NOOP", "noop";
    Help => "HELP", "help";
    Host => "HOST", "host";
    Pret => "PRET", "pret";
    Retr => "RETR", "retr";
    Stor => "STOR", "stor";
    Stou => "STOU", "stou";
    Appe => "APPE", "appe";
    List => "LIST", "list";
    Nlst => "NLST", "nlst";
    Mlsd => "MLSD", "mlsd";
    Mlst => "MLST", "mlst";
    Rest => "REST", "rest";
    Abor => "ABOR", "abor";
    Stat => "STAT", "stat";
    Type => "TYPE", "type";
    Mode => "MODE", "mode";
    Stru => "STRU", "stru";
    Allo => "ALLO", "allo";
    Cwd => "CWD", "cwd";
    Cdup => "CDUP", "cdup";
    Pwd => "PWD", "pwd";
    Mkd => "MKD", "mkd";
    Rmd => "RMD", "rmd";
    Dele => "DELE", "dele";
    Rnfr => "RNFR", "rnfr";
    Rnto => "RNTO", "rnto";
    Size => "SIZE", "size";
    Mdtm => "MDTM", "mdtm";
    Mfmt => "MFMT", "mfmt";
    Site => "SITE", "site";
    Smnt => "SMNT", "smnt";
    Clnt => "CLNT", "clnt";
    Lang => "LANG", "lang";
    Xcwd => "XCWD", "xcwd";
    Xcup => "XCUP", "xcup";
    Xpwd => "XPWD", "xpwd";
    Xmkd => "XMKD", "xmkd";
    Xrmd => "XRMD", "xrmd";
}

impl Verb {
    /// Looks a verb up case-insensitively; anything unknown is [`Verb::Other`].
    pub fn from_name(name: &str) -> Verb {
        Verb::KNOWN
            .iter()
            .copied()
            .find(|verb| verb.name().eq_ignore_ascii_case(name))
            .unwrap_or(Verb::Other)
    }

    /// Whether the command moves data over a data connection.
    pub fn is_transfer(self) -> bool {
        self.transfer_direction().is_some()
    }

    /// Which way a transfer command moves data; `None` for non-transfer verbs.
    pub fn transfer_direction(self) -> Option<TransferDirection> {
        match self {
            Verb::Retr => Some(TransferDirection::Download),
            Verb::Stor | Verb::Stou | Verb::Appe => Some(TransferDirection::Upload),
            Verb::List | Verb::Nlst | Verb::Mlsd => Some(TransferDirection::Listing),
            _ => None,
        }
    }
}

/// Direction of a data transfer, from the client's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransferDirection {
    Download,
    Upload,
    Listing,
}

impl TransferDirection {
    /// Lowercase name, suitable as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            TransferDirection::Download => "download",
            TransferDirection::Upload => "upload",
            TransferDirection::Listing => "listing",
        }
    }
}

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
    /// No length limit is applied: lines normally come from a [`LineSplitter`],
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
        if self.verb == Verb::Pass {
            return "PASS ****".to_string();
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

/// Removes one `"\r\n"` or `"\n"` line terminator, if present.
pub(super) fn strip_terminator(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line)
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

/// What a [`LineSplitter`] yields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LineEvent {
    /// A complete line, without its terminator.
    Line(Vec<u8>),
    /// A line exceeded the maximum length. Its bytes up to and including the
    /// next LF are discarded; reported once per overlong line.
    TooLong,
}

/// Tracks a line that outgrew the limit before its LF arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Overflow {
    /// No overlong line in progress.
    None,
    /// The end of `buf` holds a cut prefix of an overlong line, not yet
    /// reported; incoming bytes are dropped until its LF.
    Pending,
    /// The overlong line was reported and removed; incoming bytes are dropped
    /// until its LF.
    Reported,
}

/// Accumulates bytes from a control connection and yields complete lines,
/// bounded by a maximum length.
///
/// Lines end with CRLF or a bare LF; one CR before the LF is stripped. Bytes
/// are split lazily in [`LineSplitter::next_event`], so
/// [`LineSplitter::take_buffered`] can hand unconsumed bytes over intact when
/// the stream is upgraded to TLS. After the events are drained, at most
/// `max_line_length + 2` bytes stay buffered, however much a peer sends
/// without an LF.
///
/// Every byte is scanned for LF once and copied out once: yielded lines are
/// consumed by advancing `start`, and the buffer is compacted only when the
/// consumed prefix is at least half of it, so a pipelined burst of N bytes
/// costs O(N) however many lines it holds.
#[derive(Debug, Clone)]
pub struct LineSplitter {
    max: usize,
    buf: Vec<u8>,
    /// Bytes before `start` were already yielded.
    start: usize,
    /// `buf[start..scanned]` holds no LF.
    scanned: usize,
    /// Where the last unterminated line begins (just after the last LF in `buf`).
    tail_start: usize,
    overflow: Overflow,
}

impl LineSplitter {
    /// `max_line_length` applies to a line without its terminator.
    pub fn new(max_line_length: usize) -> Self {
        LineSplitter {
            max: max_line_length,
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            tail_start: 0,
            overflow: Overflow::None,
        }
    }

    /// Appends bytes read from the socket.
    pub fn push(&mut self, data: &[u8]) {
        let Some(data) = self.skip_discarded(data) else {
            return;
        };
        self.compact();
        let old_len = self.buf.len();
        self.buf.extend_from_slice(data);
        if let Some(lf) = data.iter().rposition(|&b| b == b'\n') {
            self.tail_start = old_len + lf + 1;
        }
        self.cut_overlong_tail();
    }

    /// The next complete line, or [`LineEvent::TooLong`]; `None` when more
    /// bytes are needed.
    pub fn next_event(&mut self) -> Option<LineEvent> {
        if let Some(lf) = self.find_lf() {
            return Some(self.take_line(lf));
        }
        if self.overflow == Overflow::Pending {
            // Report right away rather than wait for an LF that may never come.
            self.clear();
            self.overflow = Overflow::Reported;
            return Some(LineEvent::TooLong);
        }
        None
    }

    /// Whether a complete line (or an overlong one to report) is buffered, so
    /// that [`LineSplitter::next_event`] would yield without more bytes.
    pub fn has_event(&mut self) -> bool {
        self.find_lf().is_some() || self.overflow == Overflow::Pending
    }

    /// Removes and returns the bytes not yet yielded as lines, and forgets any
    /// overlong line in progress (the stream is about to change hands).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.overflow = Overflow::None;
        let rest = self.buf.split_off(self.start);
        self.clear();
        rest
    }

    /// Whether no bytes are buffered.
    pub fn is_empty(&self) -> bool {
        self.buffered_len() == 0
    }

    /// Number of buffered bytes (for tests and memory accounting).
    pub fn buffered_len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn clear(&mut self) {
        self.buf.clear();
        self.start = 0;
        self.scanned = 0;
        self.tail_start = 0;
    }

    /// Drops the consumed prefix once it is at least half of the buffer: each
    /// byte is moved at most once on average.
    fn compact(&mut self) {
        if self.start == self.buf.len() {
            self.clear();
        } else if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.tail_start = self.tail_start.saturating_sub(self.start);
            self.start = 0;
        }
    }

    /// The position of the next LF after `start`, scanning each byte once.
    fn find_lf(&mut self) -> Option<usize> {
        let from = self.scanned.max(self.start);
        match self.buf[from..].iter().position(|&b| b == b'\n') {
            Some(offset) => Some(from + offset),
            None => {
                self.scanned = self.buf.len();
                None
            }
        }
    }

    /// While an overlong line is being discarded, drops `data` up to and
    /// including the LF that ends it. Returns what follows that LF, or `None`
    /// when everything was dropped.
    fn skip_discarded<'a>(&mut self, data: &'a [u8]) -> Option<&'a [u8]> {
        if self.overflow == Overflow::None {
            return Some(data);
        }
        let lf = data.iter().position(|&b| b == b'\n')?;
        if self.overflow == Overflow::Pending {
            // Terminate the cut prefix so next_event reports it in order,
            // after any complete lines that precede it.
            self.buf.push(b'\n');
            self.tail_start = self.buf.len();
        }
        self.overflow = Overflow::None;
        Some(&data[lf + 1..])
    }

    /// Bounds memory: once the unterminated tail is certainly too long, keep
    /// only a prefix that still reads as too long, and drop the rest.
    fn cut_overlong_tail(&mut self) {
        let tail_start = self.tail_start.max(self.start);
        let tail = &self.buf[tail_start..];
        // A trailing CR may still turn out to be part of the terminator.
        if content_len(tail) > self.max {
            // max + 2 bytes exceed max even if the last kept byte is a CR.
            let keep = tail.len().min(self.max.saturating_add(2));
            self.buf.truncate(tail_start + keep);
            self.scanned = self.scanned.min(self.buf.len());
            self.overflow = Overflow::Pending;
        }
    }

    /// Yields the line ending at `lf` (inclusive) and consumes it.
    fn take_line(&mut self, lf: usize) -> LineEvent {
        let mut line = &self.buf[self.start..lf];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        }
        let event = if line.len() > self.max {
            LineEvent::TooLong
        } else {
            LineEvent::Line(line.to_vec())
        };
        self.start = lf + 1;
        self.scanned = self.start;
        if self.start == self.buf.len() {
            self.clear();
        }
        event
    }
}

/// Length of a possibly unfinished line, not counting a CR that may turn out
/// to be the first half of CRLF.
fn content_len(line: &[u8]) -> usize {
    line.strip_suffix(b"\r").unwrap_or(line).len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Command {
        Command::parse(line).unwrap()
    }

    // ---- Verb ----

    #[test]
    fn from_name_is_case_insensitive() {
        assert_eq!(Verb::from_name("retr"), Verb::Retr);
        assert_eq!(Verb::from_name("ReTr"), Verb::Retr);
        assert_eq!(Verb::from_name("XMKD"), Verb::Xmkd);
    }

    #[test]
    fn from_name_maps_unknown_to_other() {
        assert_eq!(Verb::from_name("FOO"), Verb::Other);
        assert_eq!(Verb::from_name(""), Verb::Other);
        assert_eq!(Verb::from_name("OTHER"), Verb::Other);
        assert_eq!(Verb::from_name("RETR "), Verb::Other);
    }

    #[test]
    fn every_known_verb_round_trips_through_its_name() {
        assert_eq!(Verb::KNOWN.len(), 58);
        for &verb in Verb::KNOWN {
            assert_eq!(Verb::from_name(verb.name()), verb);
            assert_eq!(verb.metric_label(), verb.name().to_ascii_lowercase());
        }
    }

    #[test]
    fn other_has_fixed_labels() {
        assert_eq!(Verb::Other.metric_label(), "other");
        assert_eq!(Verb::Other.name(), "OTHER");
        assert_eq!(Verb::Retr.metric_label(), "retr");
    }

    #[test]
    fn transfer_directions() {
        use TransferDirection::*;
        assert_eq!(Verb::Retr.transfer_direction(), Some(Download));
        for verb in [Verb::Stor, Verb::Stou, Verb::Appe] {
            assert_eq!(verb.transfer_direction(), Some(Upload));
        }
        for verb in [Verb::List, Verb::Nlst, Verb::Mlsd] {
            assert_eq!(verb.transfer_direction(), Some(Listing));
        }
        for verb in [Verb::Mlst, Verb::Stat, Verb::Pasv, Verb::Other] {
            assert_eq!(verb.transfer_direction(), None);
        }
    }

    #[test]
    fn is_transfer_matches_exactly_the_seven_transfer_verbs() {
        let transfers: Vec<Verb> = Verb::KNOWN
            .iter()
            .copied()
            .filter(|v| v.is_transfer())
            .collect();
        use Verb::*;
        assert_eq!(transfers, [Retr, Stor, Stou, Appe, List, Nlst, Mlsd]);
        assert!(!Other.is_transfer());
    }

    #[test]
    fn transfer_direction_names() {
        assert_eq!(TransferDirection::Download.as_str(), "download");
        assert_eq!(TransferDirection::Upload.as_str(), "upload");
        assert_eq!(TransferDirection::Listing.as_str(), "listing");
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
            b"NOOP\r",
            b"NOOP\r\r\n",
            b"NOOP\n\n",
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

    // ---- LineSplitter ----

    /// A splitter fed `input` in chunks of the given sizes, drained after every chunk.
    fn split_in_chunks(max: usize, input: &[u8], sizes: &[usize]) -> Vec<LineEvent> {
        let mut s = LineSplitter::new(max);
        let mut events = Vec::new();
        let mut rest = input;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let n = (*sizes.next().unwrap_or(&1)).clamp(1, rest.len());
            s.push(&rest[..n]);
            rest = &rest[n..];
            events.extend(drain(&mut s));
            assert!(
                s.buffered_len() <= max + 2,
                "buffer grew to {}",
                s.buffered_len()
            );
        }
        events
    }

    #[test]
    fn events_do_not_depend_on_how_the_bytes_were_chunked() {
        let mut input = Vec::new();
        for i in 0..200usize {
            input.extend(std::iter::repeat_n(b'a', i % 13));
            input.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        }
        input.extend(std::iter::repeat_n(b'x', 40));
        input.extend_from_slice(b"\r\nNOOP\r\n");
        let whole = split_in_chunks(10, &input, &[input.len()]);
        for sizes in [&[1usize][..], &[2, 3], &[7, 1, 64], &[4096]] {
            assert_eq!(
                split_in_chunks(10, &input, sizes),
                whole,
                "chunks {sizes:?}"
            );
        }
        assert_eq!(
            whole.iter().filter(|e| **e == LineEvent::TooLong).count(),
            1 + 200 / 13 * 2
        );
    }

    #[test]
    fn a_burst_of_lines_is_consumed_without_moving_the_rest() {
        let mut s = LineSplitter::new(100);
        s.push(&b"NOOP\r\n".repeat(10_000));
        for _ in 0..9_999 {
            assert_eq!(s.next_event(), Some(line(b"NOOP")));
        }
        // Consumed lines are skipped by an offset until the next push compacts.
        assert_eq!(s.buffered_len(), 6);
        s.push(b"PW");
        assert_eq!(s.buffered_len(), 8);
        assert_eq!(s.next_event(), Some(line(b"NOOP")));
        assert!(!s.has_event());
        s.push(b"D\r\n");
        assert!(s.has_event());
        assert_eq!(drain(&mut s), [line(b"PWD")]);
        assert!(s.is_empty());
    }

    #[test]
    fn take_buffered_returns_only_unyielded_bytes() {
        let mut s = LineSplitter::new(100);
        s.push(b"AUTH TLS\r\n\x16\x03\x01");
        assert_eq!(s.next_event(), Some(line(b"AUTH TLS")));
        assert_eq!(s.take_buffered(), b"\x16\x03\x01");
        assert!(s.is_empty());
    }

    fn drain(splitter: &mut LineSplitter) -> Vec<LineEvent> {
        std::iter::from_fn(|| splitter.next_event()).collect()
    }

    fn line(text: &[u8]) -> LineEvent {
        LineEvent::Line(text.to_vec())
    }

    #[test]
    fn splits_crlf_and_bare_lf_lines() {
        let mut s = LineSplitter::new(100);
        s.push(b"USER a\r\nPASS b\nNOOP");
        assert_eq!(drain(&mut s), [line(b"USER a"), line(b"PASS b")]);
        assert!(!s.is_empty());
        s.push(b"\r\n");
        assert_eq!(drain(&mut s), [line(b"NOOP")]);
        assert!(s.is_empty());
    }

    #[test]
    fn strips_only_one_cr() {
        let mut s = LineSplitter::new(100);
        s.push(b"A\r\r\n\r\n");
        assert_eq!(drain(&mut s), [line(b"A\r"), line(b"")]);
    }

    #[test]
    fn cr_split_from_its_lf_across_pushes() {
        let mut s = LineSplitter::new(4);
        s.push(b"NOOP\r");
        assert_eq!(s.next_event(), None);
        s.push(b"\n");
        assert_eq!(drain(&mut s), [line(b"NOOP")]);
    }

    #[test]
    fn line_of_exactly_max_is_accepted() {
        let mut s = LineSplitter::new(4);
        s.push(b"NOOP\r\nNOOPS\r\n");
        assert_eq!(drain(&mut s), [line(b"NOOP"), LineEvent::TooLong]);
    }

    #[test]
    fn overlong_complete_line_is_reported_in_order() {
        let mut s = LineSplitter::new(4);
        s.push(b"A\nTOOLONG\nB\n");
        assert_eq!(drain(&mut s), [line(b"A"), LineEvent::TooLong, line(b"B")]);
    }

    #[test]
    fn overlong_line_is_reported_before_its_lf_arrives() {
        let mut s = LineSplitter::new(4);
        s.push(b"ABCDEF");
        assert_eq!(drain(&mut s), [LineEvent::TooLong]);
        s.push(b"GHI");
        assert_eq!(drain(&mut s), []);
        s.push(b"J\r\nNOOP\r\n");
        assert_eq!(drain(&mut s), [line(b"NOOP")]);
    }

    #[test]
    fn overlong_line_cut_before_draining_is_reported_once() {
        let mut s = LineSplitter::new(4);
        s.push(b"OK\nABCDEF");
        s.push(b"GHI");
        s.push(b"\r\nNEXT\n");
        assert_eq!(
            drain(&mut s),
            [line(b"OK"), LineEvent::TooLong, line(b"NEXT")]
        );
    }

    #[test]
    fn cut_prefix_ending_in_cr_still_counts_as_too_long() {
        let mut s = LineSplitter::new(4);
        s.push(b"ABCD\rX");
        s.push(b"\n");
        assert_eq!(drain(&mut s), [LineEvent::TooLong]);
    }

    #[test]
    fn pending_cr_at_the_limit_is_not_cut() {
        let mut s = LineSplitter::new(4);
        s.push(b"ABCD\r");
        assert_eq!(s.next_event(), None);
        assert_eq!(s.buffered_len(), 5);
    }

    #[test]
    fn memory_stays_bounded_without_lf() {
        let mut s = LineSplitter::new(16);
        let chunk = [b'x'; 1000];
        for _ in 0..1000 {
            s.push(&chunk);
            assert!(s.buffered_len() <= 18);
        }
        assert_eq!(drain(&mut s), [LineEvent::TooLong]);
        for _ in 0..1000 {
            s.push(&chunk);
            assert_eq!(s.buffered_len(), 0);
        }
        s.push(b"\nOK\n");
        assert_eq!(drain(&mut s), [line(b"OK")]);
    }

    #[test]
    fn zero_max_accepts_only_empty_lines() {
        let mut s = LineSplitter::new(0);
        s.push(b"\r\nX\n");
        assert_eq!(drain(&mut s), [line(b""), LineEvent::TooLong]);
    }

    #[test]
    fn take_buffered_returns_unconsumed_bytes_intact() {
        let mut s = LineSplitter::new(100);
        s.push(b"AUTH TLS\r\n\x16\x03\x01\n\x00");
        assert_eq!(s.next_event(), Some(line(b"AUTH TLS")));
        assert_eq!(s.take_buffered(), b"\x16\x03\x01\n\x00");
        assert!(s.is_empty());
        assert_eq!(s.next_event(), None);
    }

    #[test]
    fn take_buffered_ends_discard_mode() {
        let mut s = LineSplitter::new(2);
        s.push(b"ABCDEF");
        assert_eq!(s.take_buffered(), b"ABCD");
        s.push(b"OK\n");
        assert_eq!(drain(&mut s), [line(b"OK")]);
    }

    #[test]
    fn chunking_does_not_change_the_events() {
        let stream: &[u8] =
            b"USER a\r\nLONGLONGLONG\r\nB\n\r\nCCCCCCCCC\r\r\nXXXXXXXXXXXXXXXXXXXXXXX\nD\r\n";
        let mut whole = LineSplitter::new(8);
        whole.push(stream);
        let expected = drain(&mut whole);
        for size in 1..stream.len() {
            let mut s = LineSplitter::new(8);
            let mut events = Vec::new();
            for chunk in stream.chunks(size) {
                s.push(chunk);
                events.extend(drain(&mut s));
            }
            assert_eq!(events, expected, "chunk size {size}");
        }
    }
}
