//! Logs go to stderr through `tracing`: human-readable text, or one JSON
//! object per line with `LOG_FORMAT=json`. `RUST_LOG`, when set, refines
//! `LOG_LEVEL` per module. Text logs are coloured only when stderr is a
//! terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    // Colours only on a terminal: a log file or journal gets plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().flatten_event(true).with_current_span(false).init();
    } else {
        builder.init();
    }
}
