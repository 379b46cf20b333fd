//! OTLP export, checked with a real receiver: an OTLP/HTTP endpoint in this
//! process that decodes the protobuf payloads. A job enqueued by
//! `rrq-producer` inside a span and run by `rrq worker run` with the Rust
//! runner yields one trace: the producer's span, the worker's `rrq.job` span
//! as its child, and the producer's context forwarded unchanged to the runner.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::JobId;
use rrq_test_support::TestRedis;
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::support::{TempDir, assert_success, run_rrq, rust_runner_config};

/// One decoded span with the service that sent it.
#[derive(Debug, Clone)]
struct Got {
    service: String,
    span: Span,
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        let kv = self.span.attributes.iter().find(|kv| kv.key == key)?;
        match kv.value.as_ref()?.value.as_ref()? {
            Any::StringValue(s) => Some(s.clone()),
            Any::IntValue(i) => Some(i.to_string()),
            Any::BoolValue(b) => Some(b.to_string()),
            Any::DoubleValue(d) => Some(d.to_string()),
            other => Some(format!("{other:?}")),
        }
    }
}

/// Per request: path, content type, and the other headers.
type Request = (String, String, Vec<(String, String)>);

/// An OTLP/HTTP collector on loopback: answers `POST /v1/traces` with an
/// empty (valid) protobuf response and forwards every decoded span.
struct Receiver {
    port: u16,
    spans: mpsc::Receiver<Got>,
    paths: mpsc::Receiver<Request>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let (tx, spans) = mpsc::channel();
        let (ptx, paths) = mpsc::channel();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (tx, ptx) = (tx.clone(), ptx.clone());
                std::thread::spawn(move || serve(conn, tx, ptx));
            }
        });
        Receiver { port, spans, paths }
    }

    /// Everything received until `done` holds for it, or the deadline.
    fn collect_until(&self, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut all = Vec::new();
        while !done(&all) {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "the receiver did not get the expected spans; got {all:#?}");
            if let Ok(got) = self.spans.recv_timeout(left) {
                all.push(got);
            }
        }
        all
    }
}

/// Serves HTTP/1.1 requests on one (keep-alive) connection.
fn serve(conn: TcpStream, tx: mpsc::Sender<Got>, paths: mpsc::Sender<Request>) {
    let mut out = conn.try_clone().expect("clone the connection");
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        let mut content_type = String::new();
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap_or(0),
                    "content-type" => content_type = value.trim().to_owned(),
                    other => headers.push((other.to_owned(), value.trim().to_owned())),
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        let _ = paths.send((path, content_type, headers));
        if let Ok(request) = ExportTraceServiceRequest::decode(body.as_slice()) {
            for resource_spans in request.resource_spans {
                let service = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| r.attributes.iter())
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        Any::StringValue(s) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        let _ = tx.send(Got { service: service.clone(), span });
                    }
                }
            }
        }
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn producer_worker_and_runner_share_one_trace_at_a_real_receiver() {
    let receiver = Receiver::start();
    let endpoint = format!("http://127.0.0.1:{}", receiver.port);

    // The application side: a tracer exporting to the same receiver, and the
    // W3C propagator, so the producer stores the trace context on the job.
    let app = rrq_cli::otlp::Otlp::start(&format!("{endpoint}/v1/traces"), "shop-api").expect("app exporter");
    let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(app.tracer()));
    let _guard = tracing::subscriber::set_default(subscriber);
    opentelemetry::global::set_text_map_propagator(opentelemetry_sdk::propagation::TraceContextPropagator::new());

    let redis = TestRedis::private();
    let dir = TempDir::new("otlp");
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, "", 1, 4));
    let producer = Producer::new(redis.url()).await.expect("connect");
    let request = tracing::info_span!("checkout");
    let request_cx = request.context().span().span_context().clone();
    assert!(request_cx.is_valid());
    let options = EnqueueOptions { job_id: Some("traced".to_owned()), ..Default::default() };
    producer.enqueue("echo", json!({"order": 7}), options).instrument(request).await.expect("enqueue");
    app.shutdown(Duration::from_secs(5)).await;

    let out = run_rrq(
        &["worker", "run", "--burst", "--config", config.to_str().unwrap()],
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_SERVICE_NAME", "rrq-worker"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "x-global=g%20v,x-both=global"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-both=signal"),
        ],
        Duration::from_secs(30),
    );
    assert_success(&out);
    let job = producer.job(&JobId::new("traced")).await.unwrap().expect("the job is stored");
    assert_eq!(job.status, Some(JobStatus::Completed));

    let spans = receiver.collect_until(|all| {
        all.iter().any(|g| g.span.name == "checkout") && all.iter().any(|g| g.span.name == "rrq.job")
    });
    let checkout = spans.iter().find(|g| g.span.name == "checkout").unwrap();
    let job_span = spans.iter().find(|g| g.span.name == "rrq.job").unwrap();
    let trace = hex(&request_cx.trace_id().to_bytes());
    assert_eq!(checkout.service, "shop-api");
    assert_eq!(hex(&checkout.span.trace_id), trace);
    assert_eq!(hex(&checkout.span.span_id), hex(&request_cx.span_id().to_bytes()));

    // The orchestrator's attempt span: same trace, child of the producer's span.
    assert_eq!(job_span.service, "rrq-worker");
    assert_eq!(hex(&job_span.span.trace_id), trace, "the worker's span joins the producer's trace");
    assert_eq!(hex(&job_span.span.parent_span_id), hex(&checkout.span.span_id), "child of the producer's span");
    assert_eq!(job_span.attr("queue").as_deref(), Some("rrq:queue:default"));
    assert_eq!(job_span.attr("function").as_deref(), Some("echo"));
    assert_eq!(job_span.attr("attempt").as_deref(), Some("1"));
    assert_eq!(job_span.attr("outcome").as_deref(), Some("Completed"));

    // The runner got the stored carrier unchanged, as from the reference
    // orchestrator: its span is a sibling of rrq.job under the producer's.
    let result = job.result.expect("a result");
    let stored = job.trace_context.expect("the producer stored a trace context");
    assert_eq!(result["trace_context"], json!(stored), "forwarded byte for byte");
    let traceparent = result["trace_context"]["traceparent"].as_str().expect("the runner got a traceparent");
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(TraceId::from_hex(parts[1]).unwrap().to_bytes().to_vec(), job_span.span.trace_id);
    assert_eq!(SpanId::from_hex(parts[2]).unwrap().to_bytes().to_vec(), checkout.span.span_id);

    // Every request is protobuf on the traces path; the worker's carry the
    // global headers, with per-signal entries overriding them.
    let requests: Vec<_> = receiver.paths.try_iter().collect();
    assert!(
        requests.iter().all(|(path, ct, _)| path == "/v1/traces" && ct == "application/x-protobuf"),
        "{requests:?}"
    );
    let header = |h: &[(String, String)], k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let worker = requests.iter().find(|(_, _, h)| header(h, "x-both").is_some()).expect("a request from the worker");
    assert_eq!(header(&worker.2, "x-both").as_deref(), Some("signal"));
    assert_eq!(header(&worker.2, "x-global").as_deref(), Some("g v"));
}

#[test]
fn an_unreachable_collector_is_logged_once_and_jobs_still_run() {
    const JOBS: usize = 1100;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-down");
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, "", 2, 32));
    let producer = runtime.block_on(Producer::new(redis.url())).expect("connect");
    // More spans than one export batch holds (512), so several exports fail.
    for i in 0..JOBS {
        let options = EnqueueOptions { job_id: Some(format!("j{i}")), ..Default::default() };
        runtime.block_on(producer.enqueue("echo", json!({"i": i}), options)).expect("enqueue");
    }
    // A port nothing listens on: every export fails at once.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let out = run_rrq(
        &["worker", "run", "--burst", "--config", config.to_str().unwrap()],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("RUST_LOG", "warn")],
        Duration::from_secs(30),
    );
    assert_success(&out);
    for i in 0..JOBS {
        let job = runtime.block_on(producer.job(&JobId::new(format!("j{i}")))).unwrap().unwrap();
        assert_eq!(job.status, Some(JobStatus::Completed), "j{i}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let outages = stderr.matches("cannot export spans to the OTLP collector").count();
    assert_eq!(outages, 1, "one log line per outage, not per batch:\n{stderr}");
}
