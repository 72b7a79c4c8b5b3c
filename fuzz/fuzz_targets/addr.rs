//! Fuzzes the PASV/EPSV reply and PORT/EPRT/EPSV argument parsers of `ftp::addr`; what parses re-formats and re-parses to the same value.
#![no_main]

use ftpfront::ftp::{addr, EpsvArg, LineEvent, LineSplitter, Reply, ReplyParser};
use libfuzzer_sys::fuzz_target;

fn check_pasv(reply: &Reply) {
    if let Ok(found) = addr::parse_pasv_reply(reply) {
        assert_ne!(found.port(), 0);
        let formatted = addr::format_pasv_reply(*found.ip(), found.port());
        assert_eq!(formatted.code, 227);
        assert_eq!(addr::parse_pasv_reply(&formatted), Ok(found));
    }
}

fn check_epsv(reply: &Reply) {
    if let Ok(port) = addr::parse_epsv_reply(reply) {
        assert_ne!(port, 0);
        let formatted = addr::format_epsv_reply(port);
        assert_eq!(formatted.code, 229);
        assert_eq!(addr::parse_epsv_reply(&formatted), Ok(port));
    }
}

/// Replies as the proxy receives them: the bytes through a splitter and a reply parser.
fn parsed_replies(data: &[u8]) -> Vec<Reply> {
    let mut splitter = LineSplitter::new(1024);
    let mut parser = ReplyParser::new(16);
    let mut replies = Vec::new();
    splitter.push(data);
    splitter.push(b"\r\n");
    while let Some(event) = splitter.next_event() {
        if let LineEvent::Line(line) = event {
            if let Ok(Some(reply)) = parser.push_line(&line) {
                replies.push(reply);
            }
        }
    }
    replies
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(found) = addr::parse_port_arg(&text) {
        assert_ne!(found.port(), 0);
        assert_eq!(
            addr::parse_port_arg(&addr::format_port_arg(found)),
            Ok(found)
        );
    }

    if let Ok(found) = addr::parse_eprt_arg(&text) {
        assert_ne!(found.port(), 0);
        assert_eq!(
            addr::parse_eprt_arg(&addr::format_eprt_arg(found)),
            Ok(found)
        );
    }

    if let Ok(arg) = addr::parse_epsv_arg(Some(&text)) {
        let formatted = match arg {
            EpsvArg::Any => String::new(),
            EpsvArg::All => "ALL".to_string(),
            EpsvArg::Protocol(protocol) => {
                assert!(matches!(protocol, 1 | 2), "protocol {protocol}");
                protocol.to_string()
            }
        };
        assert_eq!(addr::parse_epsv_arg(Some(&formatted)), Ok(arg));
    }

    // The text as a reply body, as one line and split into several.
    for code in [227, 229] {
        let single = Reply::new(code, text.as_ref());
        let lines = Reply::multiline(code, text.split(['\r', '\n']).map(String::from).collect());
        for reply in [single, lines] {
            check_pasv(&reply);
            check_epsv(&reply);
        }
    }
    // The bytes as a whole reply, code included.
    for reply in parsed_replies(data) {
        check_pasv(&reply);
        check_epsv(&reply);
    }
});
