//! OTLP export, checked with a real receiver: an OTLP/HTTP endpoint in this
//! process that decodes the protobuf payloads of all three signals. A job
//! enqueued by `rrq-producer` (or the reference Python client) inside a span
//! and run by `rrq worker run` yields one trace: the producer's span, the
//! worker's `rrq.job` span as its child, and the producer's context
//! forwarded unchanged to the runner. The worker's metrics carry the
//! instruments of `/metrics`, its log records the trace of the job's span;
//! `[rrq.telemetry]` configures the same, and a collector that is down costs
//! one warning per signal.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{SpanId, TraceContextExt, TraceId};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::LogRecord;
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric::Data, number_data_point::Value as Number};
use opentelemetry_proto::tonic::resource::v1::Resource;
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

fn text(value: Option<&AnyValue>) -> Option<String> {
    match value?.value.as_ref()? {
        Any::StringValue(s) => Some(s.clone()),
        Any::IntValue(i) => Some(i.to_string()),
        Any::BoolValue(b) => Some(b.to_string()),
        Any::DoubleValue(d) => Some(d.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn attr(attributes: &[KeyValue], key: &str) -> Option<String> {
    text(attributes.iter().find(|kv| kv.key == key)?.value.as_ref())
}

impl Got {
    fn attr(&self, key: &str) -> Option<String> {
        attr(&self.span.attributes, key)
    }
}

/// One decoded metric with its resource's attributes.
#[derive(Debug, Clone)]
struct GotMetric {
    resource: Vec<KeyValue>,
    metric: Metric,
}

/// One decoded log record with its resource's attributes.
#[derive(Debug, Clone)]
struct GotLog {
    resource: Vec<KeyValue>,
    record: LogRecord,
}

/// Per request: path, content type, and the other headers.
type Request = (String, String, Vec<(String, String)>);

/// An OTLP/HTTP collector on loopback: answers `POST /v1/{traces,metrics,logs}`
/// with an empty (valid) protobuf response and forwards what it decodes.
struct Receiver {
    port: u16,
    spans: mpsc::Receiver<Got>,
    metrics: mpsc::Receiver<GotMetric>,
    logs: mpsc::Receiver<GotLog>,
    paths: mpsc::Receiver<Request>,
}

/// The receiver's ends of its channels.
#[derive(Clone)]
struct Sinks {
    spans: mpsc::Sender<Got>,
    metrics: mpsc::Sender<GotMetric>,
    logs: mpsc::Sender<GotLog>,
    paths: mpsc::Sender<Request>,
}

impl Receiver {
    fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let port = listener.local_addr().unwrap().port();
        let (spans_tx, spans) = mpsc::channel();
        let (metrics_tx, metrics) = mpsc::channel();
        let (logs_tx, logs) = mpsc::channel();
        let (paths_tx, paths) = mpsc::channel();
        let sinks = Sinks { spans: spans_tx, metrics: metrics_tx, logs: logs_tx, paths: paths_tx };
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let sinks = sinks.clone();
                std::thread::spawn(move || serve(conn, sinks));
            }
        });
        Receiver { port, spans, metrics, logs, paths }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Everything received until `done` holds for it, or the deadline.
    fn collect_until(&self, done: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        collect(&self.spans, done)
    }
}

/// What `rx` delivers until `done` holds for all of it, failing at a deadline.
fn collect<T: std::fmt::Debug>(rx: &mpsc::Receiver<T>, done: impl Fn(&[T]) -> bool) -> Vec<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut all = Vec::new();
    while !done(&all) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "the receiver did not get what was expected; got {all:#?}");
        if let Ok(got) = rx.recv_timeout(left) {
            all.push(got);
        }
    }
    all
}

/// Serves HTTP/1.1 requests on one (keep-alive) connection.
fn serve(conn: TcpStream, sinks: Sinks) {
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
        decode(&path, &body, &sinks);
        let _ = sinks.paths.send((path, content_type, headers));
        let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn decode(path: &str, body: &[u8], sinks: &Sinks) {
    let attrs = |r: Option<Resource>| r.map(|r| r.attributes).unwrap_or_default();
    match path {
        "/v1/traces" => {
            let Ok(request) = ExportTraceServiceRequest::decode(body) else { return };
            for resource_spans in request.resource_spans {
                let service = attr(&attrs(resource_spans.resource), "service.name").unwrap_or_default();
                for scope in resource_spans.scope_spans {
                    for span in scope.spans {
                        let _ = sinks.spans.send(Got { service: service.clone(), span });
                    }
                }
            }
        }
        "/v1/metrics" => {
            let Ok(request) = ExportMetricsServiceRequest::decode(body) else { return };
            for rm in request.resource_metrics {
                let resource = attrs(rm.resource);
                for scope in rm.scope_metrics {
                    for metric in scope.metrics {
                        let _ = sinks.metrics.send(GotMetric { resource: resource.clone(), metric });
                    }
                }
            }
        }
        "/v1/logs" => {
            let Ok(request) = ExportLogsServiceRequest::decode(body) else { return };
            for rl in request.resource_logs {
                let resource = attrs(rl.resource);
                for scope in rl.scope_logs {
                    for record in scope.log_records {
                        let _ = sinks.logs.send(GotLog { resource: resource.clone(), record });
                    }
                }
            }
        }
        _ => {}
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn producer_worker_and_runner_share_one_trace_at_a_real_receiver() {
    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();

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

    // Every request is protobuf on a signal path; the worker's trace
    // requests carry the global headers, with per-signal entries overriding
    // them, and its other signals the global ones only.
    let requests: Vec<_> = receiver.paths.try_iter().collect();
    assert!(
        requests.iter().all(|(path, ct, _)| ["/v1/traces", "/v1/metrics", "/v1/logs"].contains(&path.as_str())
            && ct == "application/x-protobuf"),
        "{requests:?}"
    );
    let header = |h: &[(String, String)], k: &str| h.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let worker = requests
        .iter()
        .find(|(p, _, h)| p == "/v1/traces" && header(h, "x-both").is_some())
        .expect("a trace request from the worker");
    assert_eq!(header(&worker.2, "x-both").as_deref(), Some("signal"));
    assert_eq!(header(&worker.2, "x-global").as_deref(), Some("g v"));
    let metrics = requests.iter().find(|(p, _, _)| p == "/v1/metrics").expect("a metrics request from the worker");
    assert_eq!(header(&metrics.2, "x-both").as_deref(), Some("global"));
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
        // Metrics exported every 100 ms, so many of their exports fail too;
        // info-level logs, so log records flow throughout.
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_METRIC_EXPORT_INTERVAL", "100"), ("RUST_LOG", "info")],
        Duration::from_secs(30),
    );
    assert_success(&out);
    for i in 0..JOBS {
        let job = runtime.block_on(producer.job(&JobId::new(format!("j{i}")))).unwrap().unwrap();
        assert_eq!(job.status, Some(JobStatus::Completed), "j{i}");
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for items in ["spans", "metrics", "log records"] {
        let outages = stderr.matches(&format!("cannot export {items} to the OTLP collector")).count();
        assert_eq!(outages, 1, "one {items} line per outage, not per batch:\n{stderr}");
    }
}

#[test]
fn a_collector_that_never_answers_does_not_hold_jobs_or_the_exit_back() {
    const JOBS: usize = 1100;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-hung");
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, "", 2, 32));
    let producer = runtime.block_on(Producer::new(redis.url())).expect("connect");
    for i in 0..JOBS {
        let options = EnqueueOptions { job_id: Some(format!("h{i}")), ..Default::default() };
        runtime.block_on(producer.enqueue("echo", json!({"i": i}), options)).expect("enqueue");
    }
    // Accepts connections and reads nothing, answers nothing.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().flatten() {
            held.push(conn);
        }
    });
    let started = Instant::now();
    let out = run_rrq(
        &["worker", "run", "--burst", "--config", config.to_str().unwrap()],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("RUST_LOG", "info")],
        Duration::from_secs(60),
    );
    assert_success(&out);
    for i in 0..JOBS {
        let job = runtime.block_on(producer.job(&JobId::new(format!("h{i}")))).unwrap().unwrap();
        assert_eq!(job.status, Some(JobStatus::Completed), "h{i}");
    }
    // Each request waits up to 10 s for an answer and these spans fill three
    // batches: an exit that waited for every batch would take over 30 s; it
    // waits 5 s at most in all.
    assert!(started.elapsed() < Duration::from_secs(25), "took {:?}", started.elapsed());
}

/// The value of the sum data point of `metric` whose attributes include
/// all of `want`.
fn sum_with(got: &[GotMetric], metric: &str, want: &[(&str, &str)]) -> Option<i64> {
    got.iter().filter(|m| m.metric.name == metric).find_map(|m| match m.metric.data.as_ref()? {
        Data::Sum(sum) => sum.data_points.iter().find_map(|p| {
            want.iter().all(|(k, v)| attr(&p.attributes, k).as_deref() == Some(*v)).then_some(())?;
            match p.value? {
                Number::AsInt(i) => Some(i),
                Number::AsDouble(d) => Some(d as i64),
            }
        }),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_and_logs_from_the_toml_keys_arrive_beside_prometheus_with_the_job_trace() {
    let receiver = Receiver::start();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-signals");
    let port = crate::support::free_ports(1);
    // Export configured by the file alone; /metrics served at the same time.
    let telemetry = format!(
        "metrics_listen = \"127.0.0.1:{port}\"\n\n[rrq.telemetry]\notlp_endpoint = \"{}\"\n\
         service_name = \"billing\"\notlp_headers = {{ x-from-file = \"yes\" }}\n\
         resource_attributes = {{ \"deployment.environment\" = \"test\" }}\n",
        receiver.endpoint()
    );
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, &telemetry, 1, 4));
    let producer = Producer::new(redis.url()).await.expect("connect");
    producer
        .enqueue("echo", json!({"x": 1}), EnqueueOptions { job_id: Some("sig".into()), ..Default::default() })
        .await
        .unwrap();

    let worker = std::process::Command::new(crate::support::rrq_bin())
        .args(["worker", "run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG_FORMAT", "text")
        .env("RUST_LOG", "info,rrq_core=debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start worker");
    producer.wait_for_completion(&JobId::new("sig"), Duration::from_secs(30)).await.unwrap().expect("sig done");

    // Prometheus still counts the job while OTLP metrics are on.
    let counted = r#"rrq_jobs_completed_total{queue="rrq:queue:default",function="echo"} 1"#;
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let body = http_get(port, "/metrics");
        if body.contains(counted) || Instant::now() > deadline {
            break body;
        }
        std::thread::sleep(Duration::from_millis(20)); // sleep-ok: deadline poll of /metrics
    };
    assert!(body.contains(counted), "{counted} missing:\n{body}");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let out = crate::support::wait_with_deadline(worker, Duration::from_secs(30));
    assert_success(&out);

    // Metrics: the completed-jobs counter with its queue and function, from
    // the service the file names (sent at the latest when the worker stops).
    let queue_and_function = [("queue", "rrq:queue:default"), ("function", "echo")];
    let histogram = |m: &GotMetric| {
        m.metric.name == "rrq_job_duration_seconds" && matches!(m.metric.data, Some(Data::Histogram(_)))
    };
    let metrics = collect(&receiver.metrics, |all| {
        sum_with(all, "rrq_jobs_completed_total", &queue_and_function).is_some() && all.iter().any(histogram)
    });
    assert_eq!(sum_with(&metrics, "rrq_jobs_completed_total", &queue_and_function), Some(1));
    let completed = metrics.iter().find(|m| m.metric.name == "rrq_jobs_completed_total").unwrap();
    assert_eq!(attr(&completed.resource, "service.name").as_deref(), Some("billing"));
    assert_eq!(attr(&completed.resource, "deployment.environment").as_deref(), Some("test"));

    // Logs: the job's dispatch event carries the trace and span of its
    // rrq.job span.
    let spans = receiver.collect_until(|all| all.iter().any(|g| g.span.name == "rrq.job"));
    let job_span = spans.iter().find(|g| g.span.name == "rrq.job").unwrap();
    assert_eq!(job_span.service, "billing");
    let dispatched = |l: &GotLog| {
        text(l.record.body.as_ref()).as_deref() == Some("dispatching")
            && attr(&l.record.attributes, "job_id").as_deref() == Some("sig")
    };
    let logs = collect(&receiver.logs, |all| all.iter().any(dispatched));
    let record = &logs.iter().find(|l| dispatched(l)).unwrap().record;
    assert_eq!(hex(&record.trace_id), hex(&job_span.span.trace_id), "the log record joins the job's trace");
    assert_eq!(hex(&record.span_id), hex(&job_span.span.span_id), "inside the rrq.job span");
    assert_eq!(record.severity_text, "DEBUG");
    assert!(logs.iter().all(|l| attr(&l.resource, "service.name").as_deref() == Some("billing")));

    // The file's headers go with every signal.
    let requests: Vec<_> = receiver.paths.try_iter().collect();
    for signal in ["/v1/traces", "/v1/metrics", "/v1/logs"] {
        let request = requests.iter().find(|(p, _, _)| p == signal).expect("a request per signal");
        assert!(request.2.contains(&("x-from-file".to_owned(), "yes".to_owned())), "{signal}: {:?}", request.2);
    }
}

#[test]
fn an_empty_per_signal_endpoint_turns_that_signal_off() {
    let receiver = Receiver::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-off");
    // The file sends everything to the receiver but turns metrics off; the
    // environment turns logs off; traces stay on.
    let extra = format!("\n[rrq.telemetry]\notlp_endpoint = \"{}\"\nmetrics_endpoint = \"\"\n", receiver.endpoint());
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, &extra, 1, 4));
    let producer = runtime.block_on(Producer::new(redis.url())).expect("connect");
    let options = EnqueueOptions { job_id: Some("off".into()), ..Default::default() };
    runtime.block_on(producer.enqueue("echo", json!({}), options)).unwrap();
    let out = run_rrq(
        &["worker", "run", "--burst", "--config", config.to_str().unwrap()],
        &[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", ""), ("RUST_LOG", "info,rrq_core=debug")],
        Duration::from_secs(30),
    );
    assert_success(&out);
    receiver.collect_until(|all| all.iter().any(|g| g.span.name == "rrq.job"));
    // The worker has exited, after its last export was answered: every
    // request it made is recorded.
    let paths: Vec<String> = receiver.paths.try_iter().map(|(p, _, _)| p).collect();
    assert!(paths.iter().all(|p| p == "/v1/traces"), "only traces are sent: {paths:?}");
    assert!(receiver.metrics.try_recv().is_err() && receiver.logs.try_recv().is_err());
}

#[test]
fn a_misspelled_telemetry_key_stops_the_worker_with_exit_code_3() {
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-bad-key");
    let extra = "\n[rrq.telemetry]\notlp_endpont = \"http://127.0.0.1:4318\"\n";
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, extra, 1, 1));
    let out =
        run_rrq(&["worker", "run", "--burst", "--config", config.to_str().unwrap()], &[], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("rrq.telemetry.otlp_endpont") && stderr.contains("did you mean `otlp_endpoint`"),
        "{stderr}"
    );
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default()
}

/// One `rrq.toml` serves both orchestrators: the reference (the binary of
/// the 0.11.1 wheel) loads a file with every `[rrq.telemetry]` key.
#[test]
fn the_reference_orchestrator_loads_a_file_with_the_telemetry_table() {
    let venv = rrq_test_support::python::venv();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-reference");
    let config = dir.write(
        "rrq.toml",
        &format!(
            r#"[rrq]
redis_dsn = "{}"

[rrq.telemetry]
otlp_endpoint = "http://127.0.0.1:9"
traces_endpoint = "http://127.0.0.1:9/v1/traces"
metrics_endpoint = ""
logs_endpoint = ""
otlp_headers = {{ authorization = "Bearer t" }}
traces_headers = {{ x-a = "1" }}
metrics_headers = {{ x-b = "2" }}
logs_headers = {{ x-c = "3" }}
otlp_protocol = "http/protobuf"
service_name = "both"
resource_attributes = {{ "deployment.environment" = "test" }}
metric_export_interval_seconds = 30
"#,
            redis.url()
        ),
    );
    let out = crate::support::wait_with_deadline(
        std::process::Command::new(venv.reference_orchestrator())
            .args(["queue", "list", "--config"])
            .arg(&config)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the reference orchestrator"),
        Duration::from_secs(60),
    );
    assert_success(&out);
    // And RRQ reads the same file without a warning.
    let ours = run_rrq(&["queue", "list", "--config", config.to_str().unwrap()], &[], Duration::from_secs(30));
    assert_success(&ours);
    assert!(!String::from_utf8_lossy(&ours.stderr).contains("warning"), "{ours:?}");
}

/// The reference runner's handlers, tracing to the test's receiver through
/// the reference's OpenTelemetry integration.
const TRACED_HANDLERS_PY: &str = r#"
import os
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from rrq.integrations import otel
from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings

provider = TracerProvider(resource=Resource.create({"service.name": "py-runner"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["TEST_OTLP"] + "/v1/traces")))
trace.set_tracer_provider(provider)
otel.enable(service_name="py-runner")

registry = Registry()

async def echo(request):
    return {"ok": True}

registry.register("echo", echo)
settings = PythonRunnerSettings(registry=registry)
"#;

/// The reference Python client enqueuing inside its own span.
const TRACED_ENQUEUE_PY: &str = r#"
import asyncio, json, os
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from rrq.client import RRQClient

provider = TracerProvider(resource=Resource.create({"service.name": "py-app"}))
provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=os.environ["TEST_OTLP"] + "/v1/traces")))
trace.set_tracer_provider(provider)

async def main():
    client = RRQClient(config={"redis_dsn": os.environ["TEST_DSN"]})
    with trace.get_tracer("app").start_as_current_span("checkout") as span:
        carrier = {}
        propagate.inject(carrier)
        await client.enqueue("echo", {"job_id": "py-traced", "params": {"v": 1}, "trace_context": carrier})
        ctx = span.get_span_context()
    await client.close()
    provider.shutdown()
    print(json.dumps({"trace": format(ctx.trace_id, "032x"), "span": format(ctx.span_id, "016x")}))

asyncio.run(main())
"#;

/// The reference Python client and runner with their telemetry on, and our
/// worker between them: the worker's `rrq.job` span and the runner's
/// `rrq.runner` span both join the client's trace under its span.
#[test]
fn the_worker_span_joins_the_trace_of_the_traced_python_client_and_runner() {
    let venv = rrq_test_support::python::otel_venv();
    let receiver = Receiver::start();
    let endpoint = receiver.endpoint();
    let redis = TestRedis::private();
    let dir = TempDir::new("otlp-python");
    dir.write("handlers.py", TRACED_HANDLERS_PY);
    let config = dir.write(
        "rrq.toml",
        &format!(
            "[rrq]\nredis_dsn = \"{dsn}\"\ndefault_runner_name = \"python\"\nrunner_shutdown_term_grace_seconds = 0.5\n\n\
             [rrq.runners.python]\ncmd = [\"{bin}\", \"--settings\", \"handlers.settings\"]\ntcp_port = {port}\n\
             pool_size = 1\nmax_in_flight = 1\nenv = {{ PYTHONPATH = \"{dir}\", TEST_OTLP = \"{endpoint}\" }}\n",
            dsn = redis.url(),
            bin = venv.runner().display(),
            port = crate::support::free_ports(1),
            dir = dir.path().display(),
        ),
    );
    let printed = venv.run_script(TRACED_ENQUEUE_PY, &[("TEST_DSN", redis.url()), ("TEST_OTLP", &endpoint)]);
    let ids: serde_json::Value = serde_json::from_str(printed.trim().lines().last().unwrap()).expect("ids printed");
    let (trace, parent) = (ids["trace"].as_str().unwrap(), ids["span"].as_str().unwrap());

    let out = run_rrq(
        &["worker", "run", "--burst", "--config", config.to_str().unwrap()],
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint), ("OTEL_SERVICE_NAME", "rrq-worker")],
        Duration::from_secs(60),
    );
    assert_success(&out);

    let names = ["checkout", "rrq.job", "rrq.runner"];
    let spans = receiver.collect_until(|all| names.iter().all(|n| all.iter().any(|g| g.span.name == *n)));
    let find = |name: &str| spans.iter().find(|g| g.span.name == name).unwrap();
    let (checkout, job, runner) = (find("checkout"), find("rrq.job"), find("rrq.runner"));
    assert_eq!((checkout.service.as_str(), hex(&checkout.span.span_id).as_str()), ("py-app", parent));
    for (got, service) in [(job, "rrq-worker"), (runner, "py-runner")] {
        assert_eq!(got.service, service);
        assert_eq!(hex(&got.span.trace_id), trace, "{} joins the client's trace", got.span.name);
        assert_eq!(hex(&got.span.parent_span_id), parent, "{} is a child of the client's span", got.span.name);
    }
    assert_eq!(job.attr("function").as_deref(), Some("echo"));
    assert_eq!(job.attr("outcome").as_deref(), Some("Completed"));
}
