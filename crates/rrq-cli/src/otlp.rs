//! OTLP/HTTP trace export, configured like the reference orchestrator:
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (the signal path `/v1/traces` appended),
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as is; explicitly empty
//! disables traces), `OTEL_EXPORTER_OTLP_[TRACES_]HEADERS`,
//! `OTEL_SERVICE_NAME` (default `rrq`), `OTEL_RESOURCE_ATTRIBUTES`, and
//! `OTEL_EXPORTER_OTLP_[TRACES_]PROTOCOL` (`http/protobuf` only).
//!
//! Export never blocks job processing: a finished span is handed to a
//! bounded queue with `try_send`; when the queue is full the span is dropped
//! and counted (`rrq_otlp_spans_dropped_total`). One task drains the queue in
//! batches. A collector that cannot be reached is logged once when the
//! outage starts and once when it ends, not per batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, SpanData, SpanExporter as _, SpanProcessor};
use tokio::sync::{mpsc, oneshot};
use tracing::{info, warn};

/// Spans held while the exporter is busy; beyond this they are dropped.
const QUEUE_CAPACITY: usize = 4096;
/// Spans sent in one request at most.
const MAX_BATCH: usize = 512;
/// How long a partial batch waits for more spans.
const BATCH_DELAY: Duration = Duration::from_millis(500);

/// Why export could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum OtlpError {
    /// A protocol other than OTLP/HTTP with protobuf was asked for.
    #[error("unsupported OTLP protocol '{0}' (this build exports http/protobuf only)")]
    Protocol(String),
    /// The exporter rejected the endpoint or headers.
    #[error("cannot build the OTLP trace exporter")]
    Build(#[source] opentelemetry_otlp::ExporterBuildError),
}

/// Where and how traces go, resolved from the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceTarget {
    /// Full URL of the traces endpoint.
    pub endpoint: String,
}

/// Resolves the traces endpoint from the environment (`var` reads one
/// variable): `None` means traces are not exported.
pub fn trace_target(var: impl Fn(&str) -> Option<String>) -> Result<Option<TraceTarget>, OtlpError> {
    for name in ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"] {
        if let Some(p) = var(name).filter(|p| !p.trim().is_empty()) {
            if p.trim() != "http/protobuf" {
                return Err(OtlpError::Protocol(p));
            }
            break;
        }
    }
    if let Some(signal) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
        let signal = signal.trim();
        return Ok((!signal.is_empty()).then(|| TraceTarget { endpoint: signal.to_owned() }));
    }
    let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|b| !b.trim().is_empty()) else {
        return Ok(None);
    };
    let base = base.trim().trim_end_matches('/');
    Ok(Some(TraceTarget { endpoint: format!("{base}/v1/traces") }))
}

/// `k=v,k2=v2` with percent-encoded values (the OTLP exporter format);
/// malformed entries are skipped.
fn parse_headers(list: &str) -> HashMap<String, String> {
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

/// The service name and other resource attributes: `OTEL_SERVICE_NAME`, else
/// `service.name` from `OTEL_RESOURCE_ATTRIBUTES`, else `rrq`.
fn resource(var: impl Fn(&str) -> Option<String>) -> Resource {
    // The SDK's default detectors read OTEL_SERVICE_NAME and
    // OTEL_RESOURCE_ATTRIBUTES; only the fallback name is ours.
    let named = var("OTEL_SERVICE_NAME").is_some_and(|n| !n.trim().is_empty())
        || var("OTEL_RESOURCE_ATTRIBUTES")
            .is_some_and(|a| a.split(',').any(|kv| kv.trim().starts_with("service.name=")));
    let builder = Resource::builder();
    if named { builder.build() } else { builder.with_service_name("rrq").build() }
}

/// The installed exporter: the tracer for the tracing layer and the handle
/// that flushes on exit.
#[derive(Debug)]
pub struct Otlp {
    provider: SdkTracerProvider,
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

enum Msg {
    Span(Box<SpanData>),
    Flush(oneshot::Sender<()>),
}

static TRACER: OnceLock<SdkTracer> = OnceLock::new();

/// The tracer of the installed exporter, for the log subscriber's layer.
pub fn tracer() -> Option<SdkTracer> {
    TRACER.get().cloned()
}

impl Otlp {
    /// Starts export when the environment asks for it; must run inside the
    /// tokio runtime (the export task is spawned on it).
    pub fn from_env() -> Result<Option<Otlp>, OtlpError> {
        let var = |name: &str| std::env::var(name).ok();
        let Some(target) = trace_target(var)? else { return Ok(None) };
        // The exporter reads the per-signal headers variable *instead of* the
        // global one; the reference merges them (per-signal entries win). So
        // the global ones are passed explicitly, and the exporter lays the
        // per-signal ones over them.
        let headers = var("OTEL_EXPORTER_OTLP_HEADERS").map(|h| parse_headers(&h)).unwrap_or_default();
        let otlp = Otlp::launch(target.endpoint, resource(var), headers)?;
        let _ = TRACER.set(otlp.tracer());
        Ok(Some(otlp))
    }

    /// Exports to the traces URL `endpoint` as `service_name`, for an
    /// embedding application or a test; [`Otlp::from_env`] is what `rrq` runs.
    pub fn start(endpoint: &str, service_name: &str) -> Result<Otlp, OtlpError> {
        let resource = Resource::builder_empty().with_service_name(service_name.to_owned()).build();
        Otlp::launch(endpoint.to_owned(), resource, HashMap::new())
    }

    fn launch(endpoint: String, resource: Resource, headers: HashMap<String, String>) -> Result<Otlp, OtlpError> {
        // The endpoint is passed resolved, so an empty per-signal value has
        // already disabled export.
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_headers(headers)
            .build()
            .map_err(OtlpError::Build)?;
        exporter.set_resource(&resource);
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let dropped = Arc::new(AtomicU64::new(0));
        let processor = QueueProcessor { tx: tx.clone(), dropped: dropped.clone() };
        let provider = SdkTracerProvider::builder().with_resource(resource).with_span_processor(processor).build();
        tokio::spawn(export_loop(exporter, rx, endpoint));
        Ok(Otlp { provider, tx, dropped })
    }

    /// A tracer whose spans this exporter sends.
    pub fn tracer(&self) -> SdkTracer {
        self.provider.tracer("rrq")
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is queued, waiting at most `limit`.
    pub async fn shutdown(self, limit: Duration) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Flush(done)).await.is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
        let dropped = self.dropped();
        if dropped > 0 {
            warn!(dropped, "OTLP export dropped spans because its queue was full");
        }
        let _ = self.provider.shutdown();
    }
}

/// Hands each finished span to the export task without waiting.
#[derive(Debug)]
struct QueueProcessor {
    tx: mpsc::Sender<Msg>,
    dropped: Arc<AtomicU64>,
}

impl SpanProcessor for QueueProcessor {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        if self.tx.try_send(Msg::Span(Box::new(span))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("rrq_otlp_spans_dropped_total").increment(1);
        }
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        Ok(())
    }
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Span(s) => write!(f, "Span({})", s.name),
            Msg::Flush(_) => write!(f, "Flush"),
        }
    }
}

/// Drains the queue in batches; logs the start and the end of an outage.
async fn export_loop(exporter: opentelemetry_otlp::SpanExporter, mut rx: mpsc::Receiver<Msg>, endpoint: String) {
    let mut failing = false;
    let mut batch: Vec<SpanData> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut flushed = Vec::new();
        take(first, &mut batch, &mut flushed);
        // The channel is FIFO: a flush arrives after every span queued
        // before it, so a batch closes at a flush, when full, or at the delay.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushed.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => take(msg, &mut batch, &mut flushed),
                _ => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            match exporter.export(std::mem::take(&mut batch)).await {
                Ok(()) if failing => {
                    failing = false;
                    info!(endpoint = %endpoint, "OTLP collector reachable again; exporting spans");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    warn!(endpoint = %endpoint, error = %e, spans = n,
                        "cannot export spans to the OTLP collector; dropping them until it answers (logged once per outage)");
                }
                Err(_) => {}
            }
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

fn take(msg: Msg, batch: &mut Vec<SpanData>, flushed: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Span(span) => batch.push(*span),
        Msg::Flush(done) => flushed.push(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned())
    }

    #[test]
    fn the_signal_path_is_appended_to_the_base_endpoint() {
        let t = trace_target(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318/")])).unwrap();
        assert_eq!(t.unwrap().endpoint, "http://c:4318/v1/traces");
    }

    #[test]
    fn a_per_signal_endpoint_is_used_as_is_and_empty_disables() {
        let both =
            [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t/x")];
        assert_eq!(trace_target(env(&both)).unwrap().unwrap().endpoint, "http://t/x");
        let off = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"), ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")];
        assert_eq!(trace_target(env(&off)).unwrap(), None);
        assert_eq!(trace_target(env(&[])).unwrap(), None);
    }

    #[test]
    fn headers_are_split_and_percent_decoded() {
        let h = parse_headers("authorization=Bearer%20t0k,x-a = 1 ,broken,=v,x-pct=100%");
        assert_eq!(h.len(), 3, "{h:?}");
        assert_eq!(h["authorization"], "Bearer t0k");
        assert_eq!(h["x-a"], "1");
        assert_eq!(h["x-pct"], "100%");
    }

    #[test]
    fn only_http_protobuf_is_accepted() {
        let grpc = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")];
        assert!(matches!(trace_target(env(&grpc)), Err(OtlpError::Protocol(p)) if p == "grpc"));
        let ok = [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"), ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf")];
        assert!(trace_target(env(&ok)).unwrap().is_some());
    }
}
