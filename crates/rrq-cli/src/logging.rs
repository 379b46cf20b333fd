//! Log output: human-readable on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Filter from `RUST_LOG`, else
/// `RRQ_LOG_LEVEL`, else `info`; format from `RUST_LOG_FORMAT` (`json`, or
/// `pretty`/`text`/`human`), else by whether stderr is a terminal.
pub fn init(default_level: &str) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("RRQ_LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase()))
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match std::env::var("RUST_LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("pretty" | "text" | "human") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = if json { builder.json().flatten_event(true).try_init() } else { builder.try_init() };
}
