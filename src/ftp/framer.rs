//! The line framer: splitting a control connection's byte stream into bounded lines, and what happens to an overlong one.

/// Default bound on one control-connection line, terminator excluded.
pub const DEFAULT_MAX_LINE_LENGTH: usize = 4096;
/// Buffer capacity an emptied splitter keeps (one read's worth); more is freed.
const KEEP_CAPACITY: usize = 4096;

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
        // After a burst or a long line, give the memory back: an idle connection keeps
        // at most a small buffer.
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        }
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
