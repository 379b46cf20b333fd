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

/// The bounded hand-off from the code that produces items to the task that
/// exports them.
#[derive(Debug)]
struct Queue<T> {
    tx: mpsc::Sender<Msg<T>>,
    dropped: Arc<AtomicU64>,
    counter: &'static str,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone(), dropped: self.dropped.clone(), counter: self.counter }
    }
}

enum Msg<T> {
    Item(Box<T>),
    Flush(oneshot::Sender<()>),
}

impl<T> std::fmt::Debug for Msg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Item(_) => write!(f, "Item"),
            Msg::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl<T> Queue<T> {
    fn new(counter: &'static str) -> (Queue<T>, mpsc::Receiver<Msg<T>>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (Queue { tx, dropped: Arc::new(AtomicU64::new(0)), counter }, rx)
    }

    /// Hands `item` over without waiting; counts it when the queue is full.
    fn offer(&self, item: T) {
        if self.tx.try_send(Msg::Item(Box::new(item))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(self.counter).increment(1);
        }
    }

    fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    async fn flush(&self, deadline: tokio::time::Instant) {
        let (done, wait) = oneshot::channel();
        if tokio::time::timeout_at(deadline, self.tx.send(Msg::Flush(done))).await.is_ok_and(|sent| sent.is_ok()) {
            let _ = tokio::time::timeout_at(deadline, wait).await;
        }
    }

    fn report_drops(&self, signal: Signal) {
        let dropped = self.dropped();
        if dropped > 0 {
            warn!(dropped, "OTLP export dropped {} because its queue was full", signal.items());
        }
    }
}

/// Hands each finished span to the export task without waiting.
#[derive(Debug)]
struct SpanQueue(Queue<SpanData>);

impl SpanProcessor for SpanQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.offer(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Whether a signal's collector is failing: logs the start and the end of an
/// outage, never each failed request.
#[derive(Debug)]
struct Outage {
    signal: Signal,
    endpoint: String,
    failing: bool,
}

impl Outage {
    fn new(signal: Signal, endpoint: &str) -> Outage {
        Outage { signal, endpoint: endpoint.to_owned(), failing: false }
    }

    fn record(&mut self, result: OTelSdkResult, n: usize) {
        let items = self.signal.items();
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(endpoint = %self.endpoint, "OTLP collector reachable again; exporting {items}");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(endpoint = %self.endpoint, error = %e, count = n,
                    "cannot export {items} to the OTLP collector; dropping them until it answers (logged once per outage)");
            }
            Err(_) => {}
        }
    }
}

/// Drains a queue in batches: a batch closes at a flush, when full, or
/// after [`BATCH_DELAY`].
async fn batch_loop<T, F, Fut>(mut rx: mpsc::Receiver<Msg<T>>, mut outage: Outage, export: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = OTelSdkResult>,
{
    let mut batch: Vec<T> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut flushed = Vec::new();
        take(first, &mut batch, &mut flushed);
        // The channel is FIFO: a flush arrives after every item queued
        // before it.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushed.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => take(msg, &mut batch, &mut flushed),
                _ => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            let result = export(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH))).await;
            outage.record(result, n);
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

fn take<T>(msg: Msg<T>, batch: &mut Vec<T>, flushed: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Item(item) => batch.push(*item),
        Msg::Flush(done) => flushed.push(done),
    }
}

/// The manual reader, shared between the meter provider (which owns its
/// reader) and the export task that collects from it.
#[derive(Debug, Clone)]
struct SharedReader(Arc<ManualReader>);

impl opentelemetry_sdk::metrics::reader::MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: opentelemetry_sdk::metrics::InstrumentKind) -> opentelemetry_sdk::metrics::Temporality {
        self.0.temporality(kind)
    }
}

/// Collects and sends the metrics every `interval`, and at each flush
/// request (the last one at exit).
async fn metrics_loop(
    reader: SharedReader,
    exporter: opentelemetry_otlp::MetricExporter,
    interval: Duration,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
    mut outage: Outage,
) {
    use opentelemetry_sdk::metrics::reader::MetricReader as _;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            _ = tick.tick() => None,
            request = flush.recv() => match request {
                Some(done) => Some(done),
                None => return,
            },
        };
        let mut rm = ResourceMetrics::default();
        if reader.collect(&mut rm).is_ok() {
            let n = rm.scope_metrics().map(|s| s.metrics().count()).sum();
            if n > 0 {
                outage.record(exporter.export(&rm).await, n);
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
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
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    fn none() -> TelemetrySettings {
        TelemetrySettings::default()
    }

    #[test]
    fn the_signal_path_is_appended_to_the_base_endpoint() {
        let p = plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")]), &none()).unwrap();
        assert_eq!(p.traces.unwrap().endpoint, "http://c:4318/v1/traces");
        assert_eq!(p.metrics.unwrap().endpoint, "http://c:4318/v1/metrics");
        assert_eq!(p.logs.unwrap().endpoint, "http://c:4318/v1/logs");
    }

    #[test]
    fn a_per_signal_endpoint_is_used_as_is_and_empty_disables_that_signal_only() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t/x"),
            ("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", ""),
        ];
        let p = plan(env(&vars), &none()).unwrap();
        assert_eq!(p.traces.unwrap().endpoint, "http://t/x");
        assert_eq!(p.metrics.unwrap().endpoint, "http://c:4318/v1/metrics");
        assert_eq!(p.logs, None);
        let p = plan(env(&[]), &none()).unwrap();
        assert!(!p.any());
    }

    #[test]
    fn the_file_configures_export_and_the_environment_wins() {
        let mut file = none();
        file.otlp_endpoint = Some("http://file:4318".into());
        file.metrics_endpoint = Some(String::new());
        file.otlp_headers.insert("x-a".into(), "file".into());
        file.otlp_headers.insert("x-b".into(), "file".into());
        file.logs_headers.insert("x-b".into(), "file-logs".into());
        file.service_name = Some("from-file".into());
        file.resource_attributes.insert("deployment.environment".into(), "prod".into());
        file.metric_export_interval = Some(Duration::from_secs(5));
        let p = plan(env(&[]), &file).unwrap();
        assert_eq!(p.traces.as_ref().unwrap().endpoint, "http://file:4318/v1/traces");
        assert_eq!(p.metrics, None, "an empty per-signal endpoint in the file turns metrics off");
        let logs = p.logs.unwrap();
        assert_eq!(logs.headers["x-b"], "file-logs", "per-signal over global");
        assert_eq!(p.traces.unwrap().headers["x-b"], "file");
        assert_eq!(p.resource["service.name"], "from-file");
        assert_eq!(p.resource["deployment.environment"], "prod");
        assert_eq!(p.metric_interval, Duration::from_secs(5));

        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://env:4318"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-a=env"),
            ("OTEL_SERVICE_NAME", "from-env"),
            ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=staging"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "250"),
        ];
        let p = plan(env(&vars), &file).unwrap();
        assert_eq!(p.traces.as_ref().unwrap().endpoint, "http://env:4318/v1/traces");
        assert_eq!(p.metrics.unwrap().endpoint, "http://env:4318/v1/metrics", "the environment wins over the file");
        let logs = p.logs.unwrap();
        assert_eq!(logs.headers["x-a"], "env");
        assert_eq!(logs.headers["x-b"], "file-logs");
        assert_eq!(p.resource["service.name"], "from-env");
        assert_eq!(p.resource["deployment.environment"], "staging");
        assert_eq!(p.metric_interval, Duration::from_millis(250));
    }

    #[test]
    fn headers_merge_global_then_per_signal() {
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20t0k,x-both=global"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "x-both=metrics"),
        ];
        let p = plan(env(&vars), &none()).unwrap();
        let metrics = p.metrics.unwrap().headers;
        assert_eq!(metrics["authorization"], "Bearer t0k");
        assert_eq!(metrics["x-both"], "metrics");
        assert_eq!(p.traces.unwrap().headers["x-both"], "global");
    }

    #[test]
    fn pairs_are_split_and_percent_decoded() {
        let h = parse_pairs("authorization=Bearer%20t0k,x-a = 1 ,broken,=v,x-pct=100%");
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["authorization"], "Bearer t0k");
        assert_eq!(h["x-a"], "1");
        assert_eq!(h["x-pct"], "100%");
    }

    #[test]
    fn the_service_name_defaults_to_rrq() {
        let p = plan(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c")]), &none()).unwrap();
        assert_eq!(p.resource["service.name"], "rrq");
        let p = plan(env(&[("OTEL_RESOURCE_ATTRIBUTES", "service.name=a,service.version=2")]), &none()).unwrap();
        assert_eq!((p.resource["service.name"].as_str(), p.resource["service.version"].as_str()), ("a", "2"));
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let grpc = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(matches!(plan(env(&grpc), &none()), Err(OtlpError::Protocol(p, _)) if p == "grpc"));
        let logs = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "http/json")];
        assert!(
            matches!(plan(env(&logs), &none()), Err(OtlpError::Protocol(_, v)) if v == "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL")
        );
        let ok = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")];
        assert!(plan(env(&ok), &none()).unwrap().traces.is_some());
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (queue, mut rx) = Queue::<u32>::new("rrq_otlp_test_dropped_total");
        for i in 0..QUEUE_CAPACITY as u32 + 10 {
            queue.offer(i);
        }
        assert_eq!(queue.dropped(), 10, "nothing beyond the capacity is held");
        let mut held = 0;
        while let Ok(Msg::Item(_)) = rx.try_recv() {
            held += 1;
        }
        assert_eq!(held, QUEUE_CAPACITY);
        queue.offer(1);
        assert_eq!(queue.dropped(), 10, "room again once the exporter took items");
    }

    #[test]
    fn a_bad_metric_interval_is_reported_with_the_variable() {
        for bad in ["50", "1s", "-1"] {
            let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_METRIC_EXPORT_INTERVAL", bad)];
            let err = plan(env(&vars), &none()).unwrap_err().to_string();
            assert!(err.contains("OTEL_METRIC_EXPORT_INTERVAL") && err.contains(bad), "{err}");
        }
    }
}
