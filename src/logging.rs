//! Tracing subscriber setup: human or JSON lines, filtered by `RUST_LOG` or `log.filter`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; `RUST_LOG`, when set, wins over the configured filter.
pub fn init(log: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal: never into files, pipes or journald.
        .with_ansi(std::io::stderr().is_terminal());
    let installed = match log.format {
        LogFormat::Json => builder.json().try_init(),
        // Text: every string field is quoted and escaped, so a client-chosen user name or
        // path cannot forge `result=ok user=admin` (JSON escapes by itself).
        LogFormat::Text => builder.fmt_fields(quoted_fields()).try_init(),
    };
    if let Err(e) = installed {
        eprintln!("ftpfront: logging already initialised: {e}");
    }
}

/// Text log fields as `name=value`, strings in Debug form ("…", escaped); the message as is.
fn quoted_fields() -> impl for<'w> tracing_subscriber::fmt::FormatFields<'w> {
    use tracing_subscriber::field::MakeExt;
    tracing_subscriber::fmt::format::debug_fn(|writer, field, value| {
        if field.name() == "message" {
            write!(writer, "{value:?}")
        } else {
            write!(writer, "{field}={value:?}")
        }
    })
    .delimited(" ")
}
