//! OTLP/HTTP export of traces, metrics and logs, configured like the
//! reference orchestrator and by `[rrq.telemetry]` in `rrq.toml`.
//!
//! Per signal (`TRACES`, `METRICS`, `LOGS`) the endpoint is, first found:
//! `OTEL_EXPORTER_OTLP_{SIGNAL}_ENDPOINT` (used as is; explicitly empty turns
//! the signal off), `OTEL_EXPORTER_OTLP_ENDPOINT` with the signal path
//! (`/v1/traces`, `/v1/metrics`, `/v1/logs`) appended, then the file's
//! `{signal}_endpoint` and `otlp_endpoint` in the same way. The environment
//! wins over the file, and per-signal values over global ones: headers are
//! merged in that order (file global, file per-signal, environment global,
//! environment per-signal), and so are resource attributes
//! (`resource_attributes`, `service_name`, `OTEL_RESOURCE_ATTRIBUTES`,
//! `OTEL_SERVICE_NAME`; `service.name` defaults to `rrq`). The protocol
//! (`OTEL_EXPORTER_OTLP_[SIGNAL_]PROTOCOL`, `otlp_protocol`) can only be
//! `http/protobuf`.
//!
//! Export never blocks job processing: a finished span or log record is
//! handed to a bounded queue with `try_send`, dropped and counted when it is
//! full (`rrq_otlp_spans_dropped_total`, `rrq_otlp_logs_dropped_total`), and
//! one task per signal sends batches. Metrics are aggregated in memory (the
//! series are bounded by the label caps of `rrq-core`) and collected by a task
//! at an interval. A collector that cannot be reached is logged once when the
//! outage starts and once when it ends, per signal, not per batch.

mod logs;
mod queue;
mod recorder;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{LogExporter as _, SdkLoggerProvider};
use opentelemetry_sdk::metrics::{ManualReader, SdkMeterProvider, data::ResourceMetrics, exporter::PushMetricExporter};
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use rrq_config::TelemetrySettings;
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

#[cfg(test)]
use queue::Msg;
use queue::{Outage, Queue, SharedReader, SpanQueue, batch_loop, metrics_loop};

pub use logs::LogBridge;
pub use recorder::OtelRecorder;

/// Spans or log records held while the exporter is busy; beyond this they
/// are dropped.
const QUEUE_CAPACITY: usize = 4096;
/// Items sent in one request at most.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more items.
const BATCH_DELAY: Duration = Duration::from_millis(500);
/// Metrics export interval unless `OTEL_METRIC_EXPORT_INTERVAL` or the file
/// says otherwise (the OpenTelemetry default).
const METRIC_INTERVAL: Duration = Duration::from_secs(60);

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A protocol other than OTLP/HTTP with protobuf was asked for.
    #[error("unsupported OTLP protocol '{0}' in {1} (this build exports http/protobuf only)")]
    Protocol(String, &'static str),
    /// `OTEL_METRIC_EXPORT_INTERVAL` is not a whole number of milliseconds
    /// of at least 100.
    #[error("OTEL_METRIC_EXPORT_INTERVAL='{0}' must be a whole number of milliseconds >= 100")]
    Interval(String),
    /// The exporter rejected the endpoint or headers.
    #[error("cannot build the OTLP {0} exporter")]
    Build(&'static str, #[source] opentelemetry_otlp::ExporterBuildError),
}

/// One kind of telemetry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Spans.
    Traces,
    /// Counters, gauges and histograms.
    Metrics,
    /// Log records.
    Logs,
}

impl Signal {
    fn upper(self) -> &'static str {
        match self {
            Signal::Traces => "TRACES",
            Signal::Metrics => "METRICS",
            Signal::Logs => "LOGS",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Signal::Traces => "/v1/traces",
            Signal::Metrics => "/v1/metrics",
            Signal::Logs => "/v1/logs",
        }
    }

    /// What one exported item is called in log lines.
    fn items(self) -> &'static str {
        match self {
            Signal::Traces => "spans",
            Signal::Metrics => "metrics",
            Signal::Logs => "log records",
        }
    }

    fn file_endpoint(self, file: &TelemetrySettings) -> Option<&String> {
        match self {
            Signal::Traces => file.traces_endpoint.as_ref(),
            Signal::Metrics => file.metrics_endpoint.as_ref(),
            Signal::Logs => file.logs_endpoint.as_ref(),
        }
    }

    fn file_headers(self, file: &TelemetrySettings) -> &BTreeMap<String, String> {
        match self {
            Signal::Traces => &file.traces_headers,
            Signal::Metrics => &file.metrics_headers,
            Signal::Logs => &file.logs_headers,
        }
    }
}

/// Where one signal goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Full URL of the signal's endpoint.
    pub endpoint: String,
    /// Request headers, merged.
    pub headers: HashMap<String, String>,
}

/// Everything export needs, resolved from the environment and the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Traces, when exported.
    pub traces: Option<Target>,
    /// Metrics, when exported.
    pub metrics: Option<Target>,
    /// Logs, when exported.
    pub logs: Option<Target>,
    /// Resource attributes (always with `service.name`).
    pub resource: BTreeMap<String, String>,
    /// How often metrics are sent.
    pub metric_interval: Duration,
}

impl Plan {
    /// Whether any signal is exported.
    pub fn any(&self) -> bool {
        self.traces.is_some() || self.metrics.is_some() || self.logs.is_some()
    }
}

/// Resolves what to export from the environment (`var` reads one variable)
/// over the file's `[rrq.telemetry]`.
pub fn plan(var: impl Fn(&str) -> Option<String>, file: &TelemetrySettings) -> Result<Plan, OtlpError> {
    let present = |name: &str| var(name).filter(|v| !v.trim().is_empty());
    let target = |signal: Signal| -> Result<Option<Target>, OtlpError> {
        let protocol_vars: [&'static str; 2] = match signal {
            Signal::Traces => ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
            Signal::Metrics => ["OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
            Signal::Logs => ["OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"],
        };
        for name in protocol_vars {
            if let Some(p) = present(name) {
                if p.trim() != rrq_config::OTLP_PROTOCOL {
                    return Err(OtlpError::Protocol(p, name));
                }
                break;
            }
        }
        let upper = signal.upper();
        let appended = |base: &str| format!("{}{}", base.trim().trim_end_matches('/'), signal.path());
        let endpoint = if let Some(v) = var(&format!("OTEL_EXPORTER_OTLP_{upper}_ENDPOINT")) {
            v.trim().to_owned()
        } else if let Some(base) = present("OTEL_EXPORTER_OTLP_ENDPOINT") {
            appended(&base)
        } else if let Some(v) = signal.file_endpoint(file) {
            v.trim().to_owned()
        } else if let Some(base) = &file.otlp_endpoint {
            appended(base)
        } else {
            String::new()
        };
        if endpoint.is_empty() {
            return Ok(None);
        }
        // The exporter itself lays the environment's per-signal (else
        // global) headers over these again, which keeps the same order.
        let mut headers: HashMap<String, String> = HashMap::new();
        headers.extend(file.otlp_headers.iter().map(|(k, v)| (k.clone(), v.clone())));
        headers.extend(signal.file_headers(file).iter().map(|(k, v)| (k.clone(), v.clone())));
        for name in ["OTEL_EXPORTER_OTLP_HEADERS".to_owned(), format!("OTEL_EXPORTER_OTLP_{upper}_HEADERS")] {
            if let Some(list) = var(&name) {
                headers.extend(parse_pairs(&list));
            }
        }
        Ok(Some(Target { endpoint, headers }))
    };
    let mut resource = file.resource_attributes.clone();
    if let Some(name) = &file.service_name {
        resource.insert("service.name".to_owned(), name.clone());
    }
    if let Some(list) = var("OTEL_RESOURCE_ATTRIBUTES") {
        resource.extend(parse_pairs(&list));
    }
    if let Some(name) = present("OTEL_SERVICE_NAME") {
        resource.insert("service.name".to_owned(), name.trim().to_owned());
    }
    resource.entry("service.name".to_owned()).or_insert_with(|| "rrq".to_owned());
    let metric_interval = match present("OTEL_METRIC_EXPORT_INTERVAL") {
        Some(ms) => match ms.trim().parse::<u64>() {
            Ok(ms) if ms >= 100 => Duration::from_millis(ms),
            _ => return Err(OtlpError::Interval(ms)),
        },
        None => file.metric_export_interval.unwrap_or(METRIC_INTERVAL),
    };
    Ok(Plan {
        traces: target(Signal::Traces)?,
        metrics: target(Signal::Metrics)?,
        logs: target(Signal::Logs)?,
        resource,
        metric_interval,
    })
}

/// `k=v,k2=v2` with percent-encoded values (the OTLP variables' format);
/// malformed entries are skipped.
fn parse_pairs(list: &str) -> HashMap<String, String> {
    list.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_owned(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn resource(attributes: &BTreeMap<String, String>) -> Resource {
    Resource::builder_empty()
        .with_detector(Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector))
        .with_attributes(attributes.iter().map(|(k, v)| KeyValue::new(k.clone(), v.clone())))
        .build()
}

/// The installed exporters: what the log subscriber and the metrics
/// recorder pick up, and the handles that flush on exit.
#[derive(Debug, Default)]
pub struct Otlp {
    traces: Option<Traces>,
    metrics: Option<Metrics>,
    logs: Option<Logs>,
}

#[derive(Debug)]
struct Traces {
    provider: SdkTracerProvider,
    queue: Queue<SpanData>,
}

#[derive(Debug)]
struct Metrics {
    provider: SdkMeterProvider,
    flush: mpsc::Sender<oneshot::Sender<()>>,
}

#[derive(Debug)]
struct Logs {
    provider: SdkLoggerProvider,
    queue: Queue<logs::Record>,
}

static TRACER: OnceLock<SdkTracer> = OnceLock::new();
static LOGGER: OnceLock<SdkLoggerProvider> = OnceLock::new();
static METER: OnceLock<SdkMeterProvider> = OnceLock::new();

/// The tracer of the installed exporter, for the log subscriber's layer.
pub fn tracer() -> Option<SdkTracer> {
    TRACER.get().cloned()
}

/// The layer that turns `tracing` events into exported log records, when
/// logs are exported.
pub fn log_bridge() -> Option<LogBridge> {
    LOGGER.get().map(LogBridge::new)
}

/// The `metrics` recorder feeding exported metrics, when metrics are
/// exported.
pub fn metrics_recorder() -> Option<OtelRecorder> {
    METER.get().map(OtelRecorder::new)
}

impl Otlp {
    /// Starts what `plan` asks for and makes it the process's exporter (for
    /// [`tracer`], [`log_bridge`] and [`metrics_recorder`]); must run inside
    /// the tokio runtime (the export tasks are spawned on it).
    pub fn install(plan: &Plan) -> Result<Otlp, OtlpError> {
        let resource = resource(&plan.resource);
        let mut otlp = Otlp::default();
        if let Some(t) = &plan.traces {
            let traces = Traces::launch(t, resource.clone())?;
            let _ = TRACER.set(traces.provider.tracer("rrq"));
            otlp.traces = Some(traces);
        }
        if let Some(t) = &plan.metrics {
            let metrics = Metrics::launch(t, resource.clone(), plan.metric_interval)?;
            let _ = METER.set(metrics.provider.clone());
            otlp.metrics = Some(metrics);
        }
        if let Some(t) = &plan.logs {
            let logs = Logs::launch(t, resource)?;
            let _ = LOGGER.set(logs.provider.clone());
            otlp.logs = Some(logs);
        }
        Ok(otlp)
    }

    /// Exports traces to the URL `endpoint` as `service_name`, for an
    /// embedding application or a test; [`Otlp::install`] is what `rrq` runs.
    pub fn start(endpoint: &str, service_name: &str) -> Result<Otlp, OtlpError> {
        let resource = Resource::builder_empty().with_service_name(service_name.to_owned()).build();
        let target = Target { endpoint: endpoint.to_owned(), headers: HashMap::new() };
        Ok(Otlp { traces: Some(Traces::launch(&target, resource)?), ..Otlp::default() })
    }

    /// A tracer whose spans this exporter sends (a no-op one when traces are
    /// off).
    pub fn tracer(&self) -> SdkTracer {
        match &self.traces {
            Some(t) => t.provider.tracer("rrq"),
            None => SdkTracerProvider::builder().build().tracer("rrq"),
        }
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.traces.as_ref().map_or(0, |t| t.queue.dropped())
    }

    /// Sends what is queued and the last metrics, waiting at most `limit`
    /// for all signals together.
    pub async fn shutdown(self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        if let Some(t) = self.traces {
            t.queue.flush(deadline).await;
            t.queue.report_drops(Signal::Traces);
            let _ = t.provider.shutdown();
        }
        if let Some(m) = self.metrics {
            let (done, wait) = oneshot::channel();
            if m.flush.send(done).await.is_ok() {
                let _ = tokio::time::timeout_at(deadline, wait).await;
            }
            let _ = m.provider.shutdown();
        }
        if let Some(l) = self.logs {
            l.queue.flush(deadline).await;
            l.queue.report_drops(Signal::Logs);
            let _ = l.provider.shutdown();
        }
    }
}

/// Longest wait for one export request.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings every signal's HTTP exporter shares.
fn http<B: WithExportConfig + WithHttpConfig>(builder: B, target: &Target) -> B {
    builder
        .with_protocol(Protocol::HttpBinary)
        .with_timeout(EXPORT_TIMEOUT)
        .with_endpoint(target.endpoint.clone())
        .with_headers(target.headers.clone())
}

impl Traces {
    fn launch(target: &Target, resource: Resource) -> Result<Traces, OtlpError> {
        let mut exporter = http(opentelemetry_otlp::SpanExporter::builder().with_http(), target)
            .build()
            .map_err(|e| OtlpError::Build("trace", e))?;
        exporter.set_resource(&resource);
        let (queue, rx) = Queue::new("rrq_otlp_spans_dropped_total");
        let processor = SpanQueue(queue.clone());
        let provider = SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build();
        let outage = Outage::new(Signal::Traces, &target.endpoint);
        let exporter = Arc::new(exporter);
        tokio::spawn(batch_loop(rx, outage, move |batch| {
            let exporter = exporter.clone();
            async move { exporter.export(batch).await }
        }));
        Ok(Traces { provider, queue })
    }
}

impl Metrics {
    fn launch(target: &Target, resource: Resource, interval: Duration) -> Result<Metrics, OtlpError> {
        let exporter = http(opentelemetry_otlp::MetricExporter::builder().with_http(), target)
            .build()
            .map_err(|e| OtlpError::Build("metric", e))?;
        let reader = SharedReader(Arc::new(ManualReader::builder().build()));
        let provider = SdkMeterProvider::builder().with_resource(resource).with_reader(reader.clone()).build();
        let (flush, rx) = mpsc::channel(4);
        let outage = Outage::new(Signal::Metrics, &target.endpoint);
        tokio::spawn(metrics_loop(reader, exporter, interval, rx, outage));
        Ok(Metrics { provider, flush })
    }
}

impl Logs {
    fn launch(target: &Target, resource: Resource) -> Result<Logs, OtlpError> {
        let mut exporter = http(opentelemetry_otlp::LogExporter::builder().with_http(), target)
            .build()
            .map_err(|e| OtlpError::Build("log", e))?;
        exporter.set_resource(&resource);
        let (queue, rx) = Queue::new("rrq_otlp_logs_dropped_total");
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(logs::RecordQueue(queue.clone()))
            .build();
        let outage = Outage::new(Signal::Logs, &target.endpoint);
        let exporter = Arc::new(exporter);
        tokio::spawn(batch_loop(rx, outage, move |batch: Vec<logs::Record>| {
            let exporter = exporter.clone();
            async move {
                let refs: Vec<_> = batch.iter().map(|(r, s)| (r, s)).collect();
                exporter.export(opentelemetry_sdk::logs::LogBatch::new(&refs)).await
            }
        }));
        Ok(Logs { provider, queue })
    }
}

/// The exporter `rrq` installed, flushed at exit.
static INSTALLED: Mutex<Option<Otlp>> = Mutex::new(None);

/// Starts export as the environment over `file` asks (before the log
/// subscriber and the metrics recorder are installed, which pick the
/// exporters up). Returns whether anything is exported.
pub fn start(file: &TelemetrySettings) -> Result<bool, OtlpError> {
    let plan = plan(|name| std::env::var(name).ok(), file)?;
    if !plan.any() {
        return Ok(false);
    }
    let otlp = Otlp::install(&plan)?;
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());
    *INSTALLED.lock().unwrap_or_else(PoisonError::into_inner) = Some(otlp);
    Ok(true)
}

/// Flushes and stops what [`start`] installed, waiting at most `limit`.
pub async fn shutdown(limit: Duration) {
    let otlp = INSTALLED.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(otlp) = otlp {
        otlp.shutdown(limit).await;
    }
}

#[cfg(test)]
mod tests;
