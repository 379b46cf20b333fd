//! Log output: human-readable on a terminal, JSON lines otherwise.

use std::io::IsTerminal;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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
    // Both formats as optional layers under the log filter; the trace layer
    // has its own filter, so `RUST_LOG=warn` quiets logs but keeps traces.
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().flatten_event(true));
    let logs = Layer::and_then(text, json).with_filter(filter);
    let _ = tracing_subscriber::registry().with(logs).with(trace_layer()).try_init();
}

/// The OpenTelemetry layer when OTLP export is on: RRQ's own spans at info
/// and above only, so the exporter's HTTP client never traces itself.
fn trace_layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    #[cfg(feature = "otlp")]
    let tracer = crate::otlp::tracer();
    #[cfg(not(feature = "otlp"))]
    let tracer: Option<opentelemetry::trace::noop::NoopTracer> = None;
    let only_rrq = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("rrq") && *meta.level() <= tracing::Level::INFO
    });
    tracer.map(|t| tracing_opentelemetry::layer().with_tracer(t).with_filter(only_rrq))
}
