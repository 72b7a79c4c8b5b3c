//! Pure FTP protocol codec: commands and their arguments, replies and reply codes, and data-address formats (no I/O).

pub mod addr;
pub mod args;
pub mod codes;
pub mod command;
pub mod framer;
pub mod reply;
pub mod telnet;
pub mod verb;

pub use addr::{AddrError, EpsvArg};
pub use args::{ArgError, AuthMechanism, OptsArg, ProtLevel};
pub use command::{Command, CommandError};
pub use framer::{LineEvent, LineSplitter, DEFAULT_MAX_LINE_LENGTH};
pub use reply::{Reply, ReplyError, ReplyParser};
pub use verb::{TransferDirection, Verb};

/// Longest peer-supplied snippet quoted in an error message.
const MAX_QUOTED_CHARS: usize = 64;

/// Renders peer-supplied bytes for quoting inside error messages.
///
/// Error messages end up in FTP replies and in logs, so anything a peer sent
/// is reduced to printable ASCII (everything else becomes `?`) and truncated:
/// a hostile peer must not be able to inject line breaks, terminal escapes or
/// megabytes of text through an error message.
pub(crate) fn quote_for_error(bytes: &[u8]) -> String {
    let mut out: String = bytes
        .iter()
        .take(MAX_QUOTED_CHARS)
        .map(|&b| {
            if (0x20..=0x7e).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    if bytes.len() > MAX_QUOTED_CHARS {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quote_for_error_keeps_printable_ascii() {
        assert_eq!(quote_for_error(b"RETR a b"), "RETR a b");
    }

    #[test]
    fn quote_for_error_masks_control_and_non_ascii_bytes() {
        assert_eq!(quote_for_error(b"a\r\n\x1b\xff\xc3\xa9"), "a??????");
    }

    #[test]
    fn quote_for_error_truncates_long_input() {
        let quoted = quote_for_error(&[b'x'; 1000]);
        assert_eq!(quoted.len(), MAX_QUOTED_CHARS + 3);
        assert!(quoted.ends_with("..."));
    }

    /// Tiny deterministic xorshift64 so the fuzz-style tests need no dependency
    /// and every failure is reproducible.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// Bytes biased towards the characters the parsers care about, so the
        /// random input actually reaches the interesting branches.
        fn bytes(&mut self, max_len: u64) -> Vec<u8> {
            const INTERESTING: &[u8] = b"0123456789,|()! -\r\n\0\xff\xf4\xf2ALLPASVabc:.2291";
            let len = self.below(max_len + 1) as usize;
            (0..len)
                .map(|_| {
                    if self.below(4) == 0 {
                        self.next() as u8
                    } else {
                        INTERESTING[self.below(INTERESTING.len() as u64) as usize]
                    }
                })
                .collect()
        }
    }

    /// Feeds a random input to every parser; the assertion is simply that
    /// nothing panics (and that the splitter honours its memory bound).
    fn exercise_all_parsers(input: &[u8], rng: &mut XorShift) {
        let text = String::from_utf8_lossy(input);

        let _ = Command::parse(input);
        let _ = addr::parse_port_arg(&text);
        let _ = addr::parse_eprt_arg(&text);
        let _ = addr::parse_epsv_arg(Some(&text));
        let _ = args::parse_rest(&text);
        let _ = args::parse_pbsz(&text);
        let _ = args::parse_opts(&text);
        let _ = args::parse_auth(&text);
        let _ = args::parse_prot(&text);

        let max = rng.below(64) as usize;
        let mut splitter = LineSplitter::new(max);
        let mut parser = ReplyParser::new(1 + rng.below(8) as usize);
        for chunk in input.chunks(1 + rng.below(16) as usize) {
            splitter.push(chunk);
            while let Some(event) = splitter.next_event() {
                if let LineEvent::Line(line) = event {
                    if let Ok(Some(reply)) = parser.push_line(&line) {
                        let _ = addr::parse_pasv_reply(&reply);
                        let _ = addr::parse_epsv_reply(&reply);
                        let _ = reply.to_wire();
                    }
                }
            }
            // Once drained, only an unterminated (and cut) tail may remain.
            assert!(splitter.buffered_len() <= max + 2);
        }
        let _ = parser.push_line(input);

        for code in [codes::ENTERING_PASSIVE, codes::ENTERING_EXTENDED_PASSIVE] {
            let reply = Reply::new(code, text.clone());
            let _ = addr::parse_pasv_reply(&reply);
            let _ = addr::parse_epsv_reply(&reply);
        }
    }

    fn random_port(rng: &mut XorShift) -> u16 {
        1 + rng.below(65535) as u16
    }

    #[test]
    fn pasv_and_port_formats_round_trip() {
        use std::net::{Ipv4Addr, SocketAddrV4};
        let mut rng = XorShift(7);
        for _ in 0..2000 {
            let ip = Ipv4Addr::from(rng.next() as u32);
            let port = random_port(&mut rng);
            let reply = addr::format_pasv_reply(ip, port);
            assert_eq!(
                addr::parse_pasv_reply(&reply),
                Ok(SocketAddrV4::new(ip, port))
            );
            let socket = SocketAddrV4::new(ip, port);
            assert_eq!(
                addr::parse_port_arg(&addr::format_port_arg(socket)),
                Ok(socket)
            );
        }
    }

    #[test]
    fn epsv_reply_round_trips_for_every_port() {
        for port in 1..=u16::MAX {
            assert_eq!(
                addr::parse_epsv_reply(&addr::format_epsv_reply(port)),
                Ok(port)
            );
        }
    }

    #[test]
    fn eprt_round_trips_for_both_families() {
        use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
        let mut rng = XorShift(11);
        for _ in 0..2000 {
            let v4 = Ipv4Addr::from(rng.next() as u32);
            let v6 = Ipv6Addr::from((u128::from(rng.next()) << 64) | u128::from(rng.next()));
            for ip in [v4.into(), v6.into()] {
                let socket = SocketAddr::new(ip, random_port(&mut rng));
                assert_eq!(
                    addr::parse_eprt_arg(&addr::format_eprt_arg(socket)),
                    Ok(socket)
                );
            }
        }
    }

    #[test]
    fn built_commands_round_trip_through_the_wire() {
        const ARG_CHARS: &[u8] = b"abc XYZ 019/._-|,()";
        let mut rng = XorShift(13);
        for _ in 0..2000 {
            let verb = Verb::KNOWN[rng.below(Verb::KNOWN.len() as u64) as usize];
            let arg: Option<String> = (rng.below(4) != 0).then(|| {
                let len = rng.below(24) as usize;
                (0..len)
                    .map(|_| char::from(ARG_CHARS[rng.below(ARG_CHARS.len() as u64) as usize]))
                    .collect()
            });
            let built = Command::new(verb.name(), arg.as_deref());
            let mut splitter = LineSplitter::new(DEFAULT_MAX_LINE_LENGTH);
            splitter.push(&built.to_wire());
            let Some(LineEvent::Line(line)) = splitter.next_event() else {
                panic!("no line for {built:?}");
            };
            assert_eq!(Command::parse(&line), Ok(built));
        }
    }

    #[test]
    fn random_input_never_panics() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..5000 {
            let input = rng.bytes(96);
            exercise_all_parsers(&input, &mut rng);
        }
    }

    #[test]
    fn random_replies_round_trip_through_splitter_and_parser() {
        let mut rng = XorShift(42);
        for _ in 0..500 {
            let code = 100 + rng.below(500) as u16;
            let count = 1 + rng.below(4) as usize;
            // Middle lines must not start with a digit: those get a protective
            // leading space on the wire, which the parser keeps verbatim.
            let lines: Vec<String> = (0..count)
                .map(|i| format!("line {i} {}", rng.next()))
                .collect();
            let original = Reply::multiline(code, lines);
            let mut splitter = LineSplitter::new(DEFAULT_MAX_LINE_LENGTH);
            splitter.push(&original.to_wire());
            let mut parser = ReplyParser::new(16);
            let mut parsed = None;
            while let Some(LineEvent::Line(line)) = splitter.next_event() {
                parsed = parser.push_line(&line).ok().flatten().or(parsed);
            }
            let parsed = parsed.map(|r| (r.code, r.lines.clone(), r.to_wire()));
            let expected = (original.code, original.lines.clone(), original.to_wire());
            assert_eq!(parsed, Some(expected));
        }
    }
}
