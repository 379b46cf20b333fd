//! Log output: human-readable on a terminal, JSON lines otherwise; and, for
//! the worker commands, OTLP export of traces, metrics and logs.

use std::io::IsTerminal;

use metrics_exporter_prometheus::PrometheusRecorder;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Installs the global subscriber. Filter from `RUST_LOG`, else
/// `RRQ_LOG_LEVEL`, else `info`; format from `RUST_LOG_FORMAT` (`json`, or
/// `pretty`/`text`/`human`), else by whether stderr is a terminal.
pub fn init(default_level: &str) {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .or_else(|| std::env::var("RRQ_LOG_LEVEL").ok().map(|l| l.to_ascii_lowercase()))
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| default_level.to_owned());
    let filter = || EnvFilter::try_new(&directives).unwrap_or_else(|_| EnvFilter::new(default_level));
    let json = match std::env::var("RUST_LOG_FORMAT").ok().as_deref() {
        Some("json") => true,
        Some("pretty" | "text" | "human") => false,
        _ => !std::io::stderr().is_terminal(),
    };
    // Both formats as optional layers under the log filter; the trace layer
    // has its own filter, so `RUST_LOG=warn` quiets logs but keeps traces.
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr));
    let json = json.then(|| tracing_subscriber::fmt::layer().with_writer(std::io::stderr).json().flatten_event(true));
    let logs = Layer::and_then(text, json).with_filter(filter());
    let _ = tracing_subscriber::registry().with(logs).with(trace_layer()).with(log_export_layer(filter())).try_init();
}

/// [`init`] after starting OTLP export as the environment and the file's
/// `[rrq.telemetry]` ask (the layers pick the exporters up). A bad variable
/// is reported and export stays off: telemetry never stops the worker (the
/// file's keys were checked when the settings loaded).
pub fn init_exporting(default_level: &str, telemetry: &rrq_config::TelemetrySettings) {
    #[cfg(feature = "otlp")]
    if let Err(e) = crate::otlp::start(telemetry) {
        let cause = std::error::Error::source(&e).map(|c| format!(": {c}")).unwrap_or_default();
        eprintln!("Warning: OTLP export is off: {e}{cause}");
    }
    #[cfg(not(feature = "otlp"))]
    let _ = telemetry;
    init(default_level);
}

/// Installs the global `metrics` recorder: Prometheus (for `/metrics`) when
/// given, the OTLP one when metrics are exported, both side by side when
/// both are on, none when neither is.
pub fn install_metrics(prometheus: Option<PrometheusRecorder>) -> anyhow::Result<()> {
    #[cfg(feature = "otlp")]
    let otlp = crate::otlp::metrics_recorder();
    #[cfg(not(feature = "otlp"))]
    let otlp: Option<PrometheusRecorder> = None;
    match (prometheus, otlp) {
        #[cfg(feature = "otlp")]
        (Some(p), Some(o)) => {
            let fanout = metrics_util::layers::FanoutBuilder::default().add_recorder(p).add_recorder(o).build();
            metrics::set_global_recorder(fanout)
                .map_err(|_| anyhow::anyhow!("a metrics recorder is already installed"))?;
        }
        #[cfg(not(feature = "otlp"))]
        (Some(_), Some(_)) => unreachable!("no OTLP recorder without the otlp feature"),
        (Some(p), None) => metrics::set_global_recorder(p)?,
        (None, Some(o)) => metrics::set_global_recorder(o)?,
        (None, None) => {}
    }
    Ok(())
}

/// Only RRQ's own spans and events are exported, so the exporter's HTTP
/// client never reports on itself.
fn only_rrq(meta: &tracing::Metadata<'_>) -> bool {
    meta.target().starts_with("rrq")
}

/// The OpenTelemetry layer when traces are exported: RRQ's own spans at
/// info and above only.
fn trace_layer<S>() -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    #[cfg(feature = "otlp")]
    let tracer = crate::otlp::tracer();
    #[cfg(not(feature = "otlp"))]
    let tracer: Option<opentelemetry::trace::noop::NoopTracer> = None;
    let filter = tracing_subscriber::filter::filter_fn(|meta| only_rrq(meta) && *meta.level() <= tracing::Level::INFO);
    // Each poll of a job's task enters and leaves its span; what the layer
    // does there by default (busy/idle timing, activating an OpenTelemetry
    // context that nothing in RRQ reads: the runner gets the job's own
    // carrier) was most of export's cost per job. Thread and source-location
    // attributes say nothing about a job and only grow every span.
    tracer.map(|t| {
        tracing_opentelemetry::layer()
            .with_tracer(t)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_threads(false)
            .with_location(false)
            .with_filter(filter)
    })
}

/// The layer exporting log records when logs are exported: RRQ's events
/// that pass the log filter.
#[cfg(feature = "otlp")]
fn log_export_layer<S>(filter: EnvFilter) -> Option<impl tracing_subscriber::Layer<S>>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::filter::FilterExt;
    let filter = filter.and(tracing_subscriber::filter::filter_fn(only_rrq));
    crate::otlp::log_bridge().map(|bridge| bridge.with_filter(filter))
}

#[cfg(not(feature = "otlp"))]
fn log_export_layer(_filter: EnvFilter) -> Option<tracing_subscriber::layer::Identity> {
    None
}
