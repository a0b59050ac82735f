//! Log output: plain text on a terminal or a file; under systemd (stderr is the journal's
//! stream, `JOURNAL_STREAM`) each line carries its syslog priority as a `<N>` prefix and no
//! timestamp of its own, so `journalctl -p warning` isolates warnings and errors and the
//! journal's timestamp is the only one; `PDTF_LOG_FORMAT=json` gives one JSON object per line
//! for log shippers.

use std::fmt;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The environment variable that picks the format.
pub const FORMAT_VAR: &str = "PDTF_LOG_FORMAT";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Timestamped lines (colour on a terminal).
    Text,
    /// `<N>`-prefixed lines without a timestamp, for systemd's journal.
    Journald,
    /// One JSON object per line.
    Json,
}

impl Format {
    /// `PDTF_LOG_FORMAT` (`auto`, `text`, `journald`, `json`); `auto` or unset picks journald
    /// when stderr is the journal's stream, text otherwise.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(FORMAT_VAR).as_deref() {
            Err(_) | Ok("") | Ok("auto") => Ok(if stderr_is_journal() {
                Self::Journald
            } else {
                Self::Text
            }),
            Ok("text") => Ok(Self::Text),
            Ok("journald") => Ok(Self::Journald),
            Ok("json") => Ok(Self::Json),
            Ok(other) => Err(format!(
                "{FORMAT_VAR}={other:?}: expected one of auto, text, journald, json"
            )),
        }
    }
}

/// systemd sets `JOURNAL_STREAM=dev:inode` for a service whose stderr (or stdout) goes to the
/// journal; a redirected stderr (`2>file`) has another inode and keeps the text format.
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    journal_stream_matches(&stream, &std::io::stderr())
}

#[cfg(unix)]
fn journal_stream_matches(stream: &str, fd: &impl std::os::fd::AsFd) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(owned) = fd.as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(owned).metadata() else {
        return false;
    };
    dev.parse() == Ok(meta.dev()) && ino.parse() == Ok(meta.ino())
}

#[cfg(not(unix))]
fn journal_stream_matches(_: &str, _: &impl Sized) -> bool {
    false
}

/// syslog priority of a level (sd-daemon(3): `<3>` error … `<7>` debug).
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes every line of every event with its `<N>` priority (journald takes each line as
/// an entry of its own: a multi-line message keeps its priority on all of them); the wrapped
/// format writes the rest.
struct Journald<F>(F);

/// `text` with `<priority>` before each of its lines, each ending in a newline.
fn with_priority(priority: u8, text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    for line in text.lines() {
        out.push('<');
        out.push_str(&priority.to_string());
        out.push('>');
        out.push_str(line);
        out.push('\n');
    }
    out
}

impl<S, N, F> FormatEvent<S, N> for Journald<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        writer.write_str(&with_priority(priority(*event.metadata().level()), &text))
    }
}

/// Installs the global subscriber: `RUST_LOG` if set, else `default` (an env-filter string).
pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = Format::from_env().unwrap_or_else(|e| {
        eprintln!("warning: {e}; logging as text");
        Format::Text
    });
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        Format::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        Format::Journald => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_target(true);
            builder
                .with_ansi(false)
                .event_format(Journald(inner))
                .init()
        }
        Format::Json => builder.with_ansi(false).json().init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_of_a_multi_line_event_carries_the_priority() {
        assert_eq!(
            with_priority(4, " WARN agent: 2 errors:\nfirst\nsecond\n"),
            "<4> WARN agent: 2 errors:\n<4>first\n<4>second\n"
        );
        assert_eq!(with_priority(3, "one line"), "<3>one line\n");
        assert_eq!(with_priority(6, ""), "");
    }

    #[test]
    fn levels_map_to_syslog_priorities() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    #[test]
    fn only_the_named_stream_is_the_journal() {
        use std::os::unix::fs::MetadataExt;
        let f = tempfile::tempfile().unwrap();
        let m = f.metadata().unwrap();
        assert!(journal_stream_matches(
            &format!("{}:{}", m.dev(), m.ino()),
            &f
        ));
        assert!(!journal_stream_matches(
            &format!("{}:{}", m.dev(), m.ino() + 1),
            &f
        ));
        assert!(!journal_stream_matches("garbage", &f));
    }
}
