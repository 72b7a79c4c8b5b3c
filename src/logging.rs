//! Tracing subscriber setup: human or JSON lines, filtered by `RUST_LOG` or `log.filter`,
//! written by a thread of their own so that a stalled stderr reader never stalls a session.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// The log's writer thread; dropping this flushes the lines still queued.
#[must_use = "the log is flushed and its writer stopped when this is dropped"]
pub struct LogGuard {
    _writer: WorkerGuard,
}

/// Lines dropped because the queue to the writer thread was full, counted by that writer.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because stderr did not keep up (`log.queue_lines` were waiting).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Installs the global subscriber; `RUST_LOG`, when set, wins over the configured filter.
pub fn init(log: &LogConfig) -> LogGuard {
    init_quieting(log, &[])
}

/// As [`init`], with every target in `quiet` turned down to WARN unless the filter in force
/// names it (`ftpfront demo` so quiets its embedded libunftp, which logs whole structs at INFO).
pub fn init_quieting(log: &LogConfig, quiet: &[&str]) -> LogGuard {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = env_filter(rust_log.as_deref(), &log.filter, quiet);
    // Lossy: when the reader of stderr stalls (a stuck log shipper, a full pipe), a line
    // that finds `queue_lines` waiting is dropped and counted, where a direct write would
    // block a worker thread and with it every session on that thread.
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(log.queue_lines.max(1))
        .thread_name("ftpfront-log")
        .finish(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
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
    LogGuard { _writer: guard }
}

/// The filter in force: `rust_log` when set and valid, else `configured`, else `info`; each
/// with the `quiet` targets added by [`quieting`].
fn env_filter(rust_log: Option<&str>, configured: &str, quiet: &[&str]) -> EnvFilter {
    rust_log
        .into_iter()
        .chain([configured, "info"])
        .find_map(|filter| EnvFilter::try_new(quieting(filter, quiet)).ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}

/// `filter` (an `EnvFilter` directive string) with `target=warn` appended for each target
/// of `quiet` that no directive of `filter` names itself: `info` becomes
/// `info,libunftp=warn`, while `debug,libunftp=debug` stays as it is. A directive for a
/// module inside the target (`libunftp::server=debug`) does not count: being more specific,
/// it still wins for that module. A filter without directives (empty) stays as it is.
pub fn quieting(filter: &str, quiet: &[&str]) -> String {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|directive| !directive.is_empty())
        .collect();
    if directives.is_empty() {
        return filter.to_string();
    }
    let named: Vec<&str> = directives.iter().filter_map(|d| target_of(d)).collect();
    // Appended to the text as it is, so the user's own directives parse exactly as without.
    let mut out = filter.to_string();
    for target in quiet.iter().filter(|target| !named.contains(target)) {
        out.push_str(&format!(",{target}=warn"));
    }
    out
}

/// The target a directive names (`target`, `target=level`, `target[span]=level`), or none
/// for a bare level (`info`) or a span-only directive (`[span]=debug`).
fn target_of(directive: &str) -> Option<&str> {
    let end = directive.find(['=', '[']).unwrap_or(directive.len());
    let target = &directive[..end];
    let bare_level = end == directive.len()
        && target
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .is_ok();
    (!target.is_empty() && !bare_level).then_some(target)
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

#[cfg(test)]
mod tests {
    use super::*;

    const QUIET: &[&str] = &["libunftp", "unftp_sbe_fs"];

    #[test]
    fn quiet_targets_are_added_to_a_filter_that_does_not_name_them() {
        assert_eq!(
            quieting("info", QUIET),
            "info,libunftp=warn,unftp_sbe_fs=warn"
        );
        assert_eq!(
            quieting("debug,ftpfront=trace", QUIET),
            "debug,ftpfront=trace,libunftp=warn,unftp_sbe_fs=warn"
        );
        assert_eq!(
            quieting(" info , ", QUIET),
            " info , ,libunftp=warn,unftp_sbe_fs=warn"
        );
        // A module inside libunftp: its own directive still wins for it.
        assert_eq!(
            quieting("info,libunftp::server=debug", QUIET),
            "info,libunftp::server=debug,libunftp=warn,unftp_sbe_fs=warn"
        );
        // Bare levels, numeric or not, name no target.
        assert_eq!(quieting("TRACE", &["libunftp"]), "TRACE,libunftp=warn");
        assert_eq!(quieting("off", &["libunftp"]), "off,libunftp=warn");
    }

    #[test]
    fn a_filter_that_names_a_quiet_target_keeps_its_own_level() {
        assert_eq!(
            quieting("info,libunftp=debug", QUIET),
            "info,libunftp=debug,unftp_sbe_fs=warn"
        );
        assert_eq!(
            quieting("libunftp,unftp_sbe_fs=trace", QUIET),
            "libunftp,unftp_sbe_fs=trace"
        );
        assert_eq!(
            quieting("warn,libunftp[handle_command]=info", QUIET),
            "warn,libunftp[handle_command]=info,unftp_sbe_fs=warn"
        );
    }

    #[test]
    fn nothing_to_quiet_or_nothing_to_add_to_leaves_the_filter_alone() {
        assert_eq!(quieting("info,ftpfront=debug", &[]), "info,ftpfront=debug");
        assert_eq!(quieting("", QUIET), "");
        assert_eq!(quieting(" , ", QUIET), " , ");
        assert_eq!(quieting("[session]=debug", &[]), "[session]=debug");
    }

    /// What [`env_filter`] chose, as `EnvFilter` prints its directives.
    fn chosen(rust_log: Option<&str>, configured: &str) -> String {
        env_filter(rust_log, configured, &["libunftp"]).to_string()
    }

    #[test]
    fn rust_log_wins_then_the_configured_filter_then_info_each_quieted() {
        let directives = |s: String| {
            let mut d: Vec<String> = s.split(',').map(str::to_string).collect();
            d.sort();
            d
        };
        assert_eq!(
            directives(chosen(Some("debug"), "warn")),
            ["debug", "libunftp=warn"]
        );
        assert_eq!(
            directives(chosen(Some("debug,libunftp=info"), "warn")),
            ["debug", "libunftp=info"]
        );
        // An invalid RUST_LOG falls back to the configured filter, an invalid one to info.
        assert_eq!(
            directives(chosen(Some("=?="), "warn")),
            ["libunftp=warn", "warn"]
        );
        assert_eq!(directives(chosen(None, "warn")), ["libunftp=warn", "warn"]);
        assert_eq!(directives(chosen(None, "=?=")), ["info", "libunftp=warn"]);
    }
}
