//! Log output: human-readable text or one JSON object per line (`log_format`).
//!
//! Two rules keep logging from ever hurting the server:
//! - A log line that cannot be written is dropped. stderr is often a pipe (`provq serve 2>&1 |
//!   tee log`); when the reader dies, writes fail with EPIPE. tracing-subscriber would then
//!   report the failure with `eprintln!`, which panics on that same closed stderr, inside
//!   whatever request or task logged: every request answered 500 and the shutdown task died.
//! - Colour escape codes only go to a terminal, and never when `NO_COLOR` is set
//!   (<https://no-color.org>), so log files and pipes stay plain text.

use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber, writing to stderr so stdout stays for the `listening on`
/// line and command output. `RUST_LOG` refines the default `info` level.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sea_orm_migration=warn"));
    let ansi = use_colour(io::stderr().is_terminal(), std::env::var_os("NO_COLOR"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LossyStderr)
        .with_ansi(ansi)
        .log_internal_errors(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Whether log lines get colour: only on a terminal, and not when `NO_COLOR` is set to a
/// non-empty value.
pub fn use_colour(stderr_is_terminal: bool, no_color: Option<OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// stderr that reports every write as done: a log line nobody can read is not worth an error,
/// let alone a panic.
struct LossyStderr;

impl Write for LossyStderr {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let _ = io::stderr().flush();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::use_colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(use_colour(true, None));
        assert!(use_colour(true, Some("".into())));
        assert!(!use_colour(true, Some("1".into())));
        assert!(!use_colour(false, None));
        assert!(!use_colour(false, Some("1".into())));
    }
}
