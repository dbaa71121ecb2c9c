//! How the daemons (`server`, `controllers`, `agent`, `up`) write their log on stderr:
//! `text` for people (the default), or `json`, one object per line for log collectors.
//!
//! In JSON every event's fields are top-level keys beside `timestamp`, `level`, `target`
//! and `message`; the fields of the spans it happened in (`task`, `node`, `group`: each
//! controller job and each agent worker runs in a span naming its task and node) are under
//! `span` (the innermost) and `spans` (all, outermost first), so a collector can select
//! every line about one task without parsing messages.

use std::io::IsTerminal;

/// The format of the daemons' log lines.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The `--log-format` flag every daemon takes.
#[derive(clap::Args, Clone, Debug)]
pub struct LogFlags {
    /// How log lines are written on stderr: `text` for people, `json` (one object per line,
    /// with `task` and `node` as fields) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// Logs to stderr in `format`, filtered by `RUST_LOG` (default `info`). A second call (an
/// in-process test starting two daemons) keeps the first subscriber.
pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
}
