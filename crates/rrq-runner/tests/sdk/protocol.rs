//! Protocol behaviour of the SDK server, in-process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rrq_protocol::{Envelope, ExecutionOutcome, OutcomeStatus, error_types};
use rrq_runner::{HandlerError, HandlerResult, JobContext, Registry, ServeOptions, example, messages};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::support::{Running, request, with_deadline};

fn message(outcome: &ExecutionOutcome) -> &str {
    outcome.error_message().unwrap_or("")
}

#[tokio::test]
async fn echo_succeeds_with_context() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let outcome = client.call(request("j1", "echo", json!({"x": 1, "y": {"z": [1, 2]}}))).await;
    assert_eq!(outcome.status, OutcomeStatus::Success);
    assert_eq!(outcome.job_id, "j1");
    assert_eq!(
        outcome.result,
        Some(json!({"echo": {"x": 1, "y": {"z": [1, 2]}}, "attempt": 1, "job_id": "j1", "queue": "rrq:queue:default"}))
    );
    let noop = client.call(request("j2", "noop", json!({}))).await;
    // `null` on the wire reads back as an absent result.
    assert_eq!((noop.status, noop.result), (OutcomeStatus::Success, None));
    let ok = client.call(request("j3", "success", json!({"value": "v"}))).await;
    assert_eq!(ok.result, Some(json!("ok:v")));
    server.stop().await;
}

#[tokio::test]
async fn unknown_handler_is_handler_not_found() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let outcome = client.call(request("j1", "nope", json!({}))).await;
    assert_eq!(outcome.status, OutcomeStatus::Error);
    assert_eq!(outcome.error_kind(), Some(error_types::HANDLER_NOT_FOUND));
    assert_eq!(message(&outcome), "No handler registered for function 'nope'");
    server.stop().await;
}

#[tokio::test]
async fn failing_handler_reports_its_message() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let outcome = client.call(request("j1", "fail", json!({"value": "q"}))).await;
    assert_eq!(outcome.status, OutcomeStatus::Error);
    assert_eq!(outcome.error_kind(), None);
    assert_eq!(message(&outcome), "boom: q");
    server.stop().await;
}

#[tokio::test]
async fn errors_carry_kind_code_and_details_and_panics_are_errors() {
    let mut registry = Registry::new();
    registry.register("typed", |_: Value, _ctx: JobContext| async move {
        HandlerResult::<()>::Err(
            HandlerError::failed("nope").with_kind("quota").with_code("E42").with_details(json!([1])),
        )
    });
    registry.register("panics", |_: Value, _ctx: JobContext| async move {
        if true {
            panic!("kaput");
        }
        HandlerResult::Ok(())
    });
    let server = Running::start(registry).await;
    let mut client = server.client().await;
    let typed = client.call(request("j1", "typed", json!({}))).await;
    let error = typed.error.expect("error member");
    assert_eq!(
        (error.kind.as_deref(), error.code.as_deref(), error.details),
        (Some("quota"), Some("E42"), Some(json!([1])))
    );
    let panicked = client.call(request("j2", "panics", json!({}))).await;
    assert_eq!(panicked.status, OutcomeStatus::Error);
    assert_eq!(message(&panicked), "Handler panicked: kaput");
    // The connection survives both.
    let again = client.call(request("j3", "typed", json!({}))).await;
    assert_eq!(again.status, OutcomeStatus::Error);
    server.stop().await;
}

#[tokio::test]
async fn retry_once_asks_for_a_retry_then_succeeds() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let first = client.call(request("j1", "retry_once", json!({"value": 7, "delay": 0.5}))).await;
    assert_eq!(first.status, OutcomeStatus::Retry);
    assert_eq!(first.retry_after_seconds, Some(0.5));
    let mut second = request("j1", "retry_once", json!({"value": 7}));
    second.context.attempt = 2;
    second.request_id = "j1-r2".into();
    let second = client.call(second).await;
    assert_eq!((second.status, second.result), (OutcomeStatus::Success, Some(json!("ok:7"))));
    let default_delay = client.call(request("j2", "retry_once", json!({}))).await;
    assert_eq!(default_delay.retry_after_seconds, Some(0.01));
    server.stop().await;
}

#[tokio::test]
async fn deadlines_are_enforced() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let past = client.call(with_deadline(request("j1", "noop", json!({})), -1000)).await;
    assert_eq!(past.status, OutcomeStatus::Timeout);
    assert_eq!(message(&past), messages::DEADLINE_EXCEEDED);

    let started = std::time::Instant::now();
    let cut = client.call(with_deadline(request("j2", "sleep", json!({"seconds": 30.0})), 200)).await;
    assert_eq!(cut.status, OutcomeStatus::Timeout);
    assert_eq!(message(&cut), messages::TIMED_OUT);
    assert!(started.elapsed() < Duration::from_secs(3), "cut at the deadline, not at the end of the sleep");

    let within = client.call(with_deadline(request("j3", "sleep", json!({"seconds": 0.01})), 5000)).await;
    assert_eq!(within.result, Some(json!("slept")));

    let mut naive = request("j4", "noop", json!({}));
    naive.context.deadline = Some("2001-01-01T00:00:00".into());
    let naive = client.call(naive).await;
    assert_eq!(message(&naive), messages::DEADLINE_EXCEEDED, "an offset-less deadline is UTC");
    server.stop().await;
}

#[tokio::test]
async fn cancel_by_request_id_from_another_connection() {
    let server = Running::start(example::registry()).await;
    let mut worker = server.client().await;
    worker.send(&Envelope::Request(request("j1", "sleep", json!({"seconds": 30.0})))).await;
    // A second request of the same job must survive a cancel naming the first.
    let mut other = request("j1", "sleep", json!({"seconds": 0.2}));
    other.request_id = "j1-other".into();
    worker.send(&Envelope::Request(other)).await;

    let mut side = server.client().await;
    side.cancel("j1", Some("j1-r")).await;
    let cancelled = worker.outcome().await;
    assert_eq!(cancelled.request_id.as_deref(), Some("j1-r"));
    assert_eq!(cancelled.status, OutcomeStatus::Error);
    assert_eq!(cancelled.error_kind(), Some(error_types::CANCELLED));
    assert_eq!(message(&cancelled), messages::CANCELLED);
    let finished = worker.outcome().await;
    assert_eq!((finished.request_id.as_deref(), finished.result), (Some("j1-other"), Some(json!("slept"))));
    server.stop().await;
}

#[tokio::test]
async fn cancel_by_job_id_on_the_same_connection_stops_every_request_of_the_job() {
    let server = Running::start(example::registry()).await;
    let mut worker = server.client().await;
    for id in ["a", "b"] {
        let mut r = request("j1", "sleep", json!({"seconds": 30.0}));
        r.request_id = id.into();
        worker.send(&Envelope::Request(r)).await;
    }
    worker.send(&Envelope::Request(request("j2", "sleep", json!({"seconds": 0.3})))).await;
    worker.cancel("j1", None).await;
    let mut ids = vec![];
    for _ in 0..2 {
        let o = worker.outcome().await;
        assert_eq!(o.error_kind(), Some(error_types::CANCELLED));
        ids.push(o.request_id.unwrap());
    }
    ids.sort();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(worker.outcome().await.result, Some(json!("slept")), "the other job is untouched");
    // Unknown ids and other protocol versions are ignored silently.
    worker.cancel("nobody", Some("nothing")).await;
    let mut old = rrq_protocol::CancelRequest::new("j3", None);
    old.protocol_version = "1".into();
    worker.send(&Envelope::Request(request("j3", "sleep", json!({"seconds": 0.1})))).await;
    worker.send(&Envelope::Cancel(old)).await;
    assert_eq!(worker.outcome().await.result, Some(json!("slept")));
    server.stop().await;
}

#[tokio::test]
async fn the_65th_request_on_a_connection_is_refused_as_busy() {
    let gate = CancellationToken::new();
    let mut registry = Registry::new();
    let g = gate.clone();
    registry.register("wait", move |_: Value, _ctx: JobContext| {
        let g = g.clone();
        async move {
            g.cancelled().await;
            HandlerResult::Ok("released")
        }
    });
    let server = Running::start(registry).await;
    let mut client = server.client().await;
    for i in 0..rrq_runner::MAX_IN_FLIGHT_PER_CONNECTION + 1 {
        let mut r = request("j", "wait", json!({}));
        r.request_id = format!("r{i}");
        client.send(&Envelope::Request(r)).await;
    }
    let busy = client.outcome().await;
    assert_eq!(busy.request_id.as_deref(), Some("r64"));
    assert_eq!(message(&busy), messages::BUSY);
    // Another connection has its own budget.
    let mut other = server.client().await;
    other.send(&Envelope::Request(request("k", "wait", json!({})))).await;
    gate.cancel();
    assert_eq!(other.outcome().await.result, Some(json!("released")));
    server.stop().await;
}

#[tokio::test]
async fn other_protocol_versions_are_refused() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let mut old = request("j1", "echo", json!({}));
    old.protocol_version = "1".into();
    let outcome = client.call(old).await;
    assert_eq!(outcome.status, OutcomeStatus::Error);
    assert_eq!((message(&outcome), outcome.error_kind()), (messages::UNSUPPORTED_VERSION, None));
    server.stop().await;
}

#[tokio::test]
async fn empty_probe_connections_are_tolerated() {
    let server = Running::start(example::registry()).await;
    for _ in 0..3 {
        drop(tokio::net::TcpStream::connect(server.addr).await.expect("probe"));
    }
    let mut client = server.client().await;
    assert_eq!(client.call(request("j1", "noop", json!({}))).await.status, OutcomeStatus::Success);
    server.stop().await;
}

#[tokio::test]
async fn protocol_errors_close_only_that_connection() {
    let server = Running::start(example::registry()).await;
    let mut healthy = server.client().await;
    healthy.send(&Envelope::Request(request("slow", "sleep", json!({"seconds": 0.2})))).await;

    let mut garbage = server.client().await;
    garbage.send_raw(&[0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o']).await;
    assert!(garbage.recv().await.is_none(), "a non-JSON frame closes the connection");

    let mut oversize = server.client().await;
    oversize.send_raw(&(64 * 1024 * 1024_u32).to_be_bytes()).await;
    assert!(oversize.recv().await.is_none(), "an oversize header closes the connection");

    let mut wrong_way = server.client().await;
    let response = ExecutionOutcome::success(&request("x", "noop", json!({})), Value::Null);
    wrong_way.send(&Envelope::Response(response)).await;
    assert!(wrong_way.recv().await.is_none(), "a response frame closes the connection");

    assert_eq!(healthy.outcome().await.result, Some(json!("slept")));
    server.stop().await;
}

#[tokio::test]
async fn pipelined_requests_are_answered_as_they_finish() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    client.send(&Envelope::Request(request("slow", "sleep", json!({"seconds": 0.3})))).await;
    client.send(&Envelope::Request(request("fast", "noop", json!({})))).await;
    assert_eq!(client.outcome().await.job_id, "fast");
    assert_eq!(client.outcome().await.job_id, "slow");
    server.stop().await;
}

/// A `hold` handler that never finishes on its own and tells when it starts
/// and when the SDK drops it (its request was stopped).
struct Held {
    dropped: Arc<AtomicBool>,
    on_drop: Arc<Notify>,
    on_start: Arc<Notify>,
}

impl Held {
    fn new() -> Held {
        Held { dropped: Arc::default(), on_drop: Arc::default(), on_start: Arc::default() }
    }

    fn registry(&self) -> Registry {
        struct SetOnDrop(Arc<AtomicBool>, Arc<Notify>);
        impl Drop for SetOnDrop {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
                self.1.notify_one();
            }
        }
        let mut registry = Registry::new();
        let (d, s, st) = (Arc::clone(&self.dropped), Arc::clone(&self.on_drop), Arc::clone(&self.on_start));
        registry.register("hold", move |_: Value, _ctx: JobContext| {
            let guard = SetOnDrop(Arc::clone(&d), Arc::clone(&s));
            let st = Arc::clone(&st);
            async move {
                let _guard = guard;
                st.notify_one();
                std::future::pending::<()>().await;
                HandlerResult::Ok(())
            }
        });
        registry
    }

    async fn started(&self) {
        tokio::time::timeout(crate::support::PATIENCE, self.on_start.notified()).await.expect("handler started");
    }

    async fn dropped(&self) {
        tokio::time::timeout(crate::support::PATIENCE, self.on_drop.notified()).await.expect("handler dropped");
        assert!(self.dropped.load(Ordering::SeqCst));
    }
}

#[tokio::test]
async fn closing_the_connection_cancels_its_requests() {
    let held = Held::new();
    let server = Running::start(held.registry()).await;
    let mut client = server.client().await;
    client.send(&Envelope::Request(request("j", "hold", json!({})))).await;
    held.started().await;
    drop(client);
    held.dropped().await;
    server.stop().await;
}

#[tokio::test]
async fn shutdown_lets_running_requests_finish_then_cancels_the_rest() {
    let options = ServeOptions { drain_grace: Duration::from_millis(600), ..ServeOptions::default() };
    let server = Running::start_with(example::registry(), options).await;
    let mut client = server.client().await;
    client.send(&Envelope::Request(request("quick", "sleep", json!({"seconds": 0.2})))).await;
    client.send(&Envelope::Request(request("stuck", "sleep", json!({"seconds": 60.0})))).await;
    let addr = server.addr;
    // Wait until both are surely running: a third request answered proves the
    // first two were read.
    assert_eq!(client.call(request("probe", "noop", json!({}))).await.status, OutcomeStatus::Success);
    let stopping = tokio::spawn(server.stop());
    let mut seen = vec![];
    for _ in 0..2 {
        let o = client.outcome().await;
        seen.push((o.job_id.clone(), o.status, o.error_message().map(str::to_owned)));
    }
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(seen[0], ("quick".into(), OutcomeStatus::Success, None));
    assert_eq!(seen[1], ("stuck".into(), OutcomeStatus::Error, Some(messages::CANCELLED.into())));
    stopping.await.expect("stopped");
    assert!(client.recv().await.is_none(), "connections are closed at the end");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the listener is gone");
}

#[tokio::test]
async fn record_appends_one_line_per_run() {
    let dir = std::env::temp_dir().join(format!("rrq-runner-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("runs.jsonl");
    let _ = std::fs::remove_file(&path);
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    for job in ["a", "b"] {
        let params = json!({"path": path.to_str().unwrap(), "seconds": 0.01});
        assert_eq!(client.call(request(job, "record", params)).await.status, OutcomeStatus::Success);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["job_id"], "a");
    assert!(lines[0]["end"].as_f64().unwrap() <= lines[1]["start"].as_f64().unwrap());
    std::fs::remove_dir_all(&dir).unwrap();
    server.stop().await;
}

/// Registers `probe`, which records that it ran and answers `null`.
fn flagging_registry(ran: &Arc<AtomicBool>) -> Registry {
    let mut registry = Registry::new();
    let ran = Arc::clone(ran);
    registry.register("probe", move |_: Value, _ctx: JobContext| {
        ran.store(true, Ordering::SeqCst);
        async move { HandlerResult::Ok(()) }
    });
    registry
}

#[tokio::test]
async fn a_request_past_its_deadline_never_runs_the_handler() {
    let ran = Arc::new(AtomicBool::new(false));
    let server = Running::start(flagging_registry(&ran)).await;
    let mut client = server.client().await;
    let past = client.call(with_deadline(request("late", "probe", json!({})), -1000)).await;
    assert_eq!(past.status, OutcomeStatus::Timeout);
    assert_eq!(past.error_kind(), Some(error_types::TIMEOUT));
    assert!(!ran.load(Ordering::SeqCst), "the handler ran although its deadline had passed");
    // The same handler with time left does run (the flag can be set).
    let ok = client.call(with_deadline(request("on-time", "probe", json!({})), 5000)).await;
    assert_eq!(ok.status, OutcomeStatus::Success);
    assert!(ran.load(Ordering::SeqCst));
    server.stop().await;
}

/// One frame holding `value` as its JSON payload.
fn raw_frame(value: &Value) -> Vec<u8> {
    let payload = serde_json::to_vec(value).unwrap();
    let mut frame = u32::try_from(payload.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(&payload);
    frame
}

/// A request envelope as JSON, every field present.
fn full_request() -> Value {
    serde_json::to_value(Envelope::Request(request("j", "echo", json!({"a": 1})))).unwrap()
}

#[tokio::test]
async fn a_request_missing_a_required_field_closes_its_connection_without_an_answer() {
    let server = Running::start(example::registry()).await;
    let required: [&[&str]; 8] = [
        &["payload"],
        &["payload", "request_id"],
        &["payload", "job_id"],
        &["payload", "function_name"],
        &["payload", "context", "job_id"],
        &["payload", "context", "attempt"],
        &["payload", "context", "enqueue_time"],
        &["payload", "context", "queue_name"],
    ];
    // The full request is answered, so each failure below is the missing field's.
    let mut control = server.client().await;
    control.send_raw(&raw_frame(&full_request())).await;
    assert_eq!(control.outcome().await.status, OutcomeStatus::Success);
    for path in required {
        let mut message = full_request();
        let (last, parents) = path.split_last().unwrap();
        let mut object = &mut message;
        for key in parents {
            object = object.get_mut(*key).unwrap();
        }
        object.as_object_mut().unwrap().remove(*last).expect("the field was there");
        let mut client = server.client().await;
        client.send_raw(&raw_frame(&message)).await;
        assert!(client.recv().await.is_none(), "without {path:?} the request is a protocol error");
    }
    let mut unknown = server.client().await;
    unknown.send_raw(&raw_frame(&json!({"type": "bogus", "payload": {}}))).await;
    assert!(unknown.recv().await.is_none(), "an unknown message type is a protocol error");
    // Other connections are served on.
    assert_eq!(control.call(request("after", "noop", json!({}))).await.status, OutcomeStatus::Success);
    server.stop().await;
}

#[tokio::test]
async fn a_request_without_optional_fields_is_served_with_defaults() {
    let server = Running::start(example::registry()).await;
    let mut client = server.client().await;
    let minimal = json!({"type": "request", "payload": {
        "request_id": "r1", "job_id": "j1", "function_name": "echo",
        "context": {"job_id": "j1", "attempt": 2, "enqueue_time": "2026-12-04T20:00:00Z",
                    "queue_name": "rrq:queue:default"},
        "unknown_member": {"ignored": true}
    }});
    client.send_raw(&raw_frame(&minimal)).await;
    let outcome = client.outcome().await;
    // No protocol_version means "2" (not refused); no params means {}.
    assert_eq!(outcome.status, OutcomeStatus::Success, "{outcome:?}");
    assert_eq!((outcome.job_id.as_str(), outcome.request_id.as_deref()), ("j1", Some("r1")));
    let result = outcome.result.unwrap();
    assert_eq!((&result["echo"], &result["attempt"]), (&json!({}), &json!(2)));
    // Explicit nulls for the nullable fields are the same as absent ones.
    let mut nulls = minimal.clone();
    nulls["payload"]["request_id"] = json!("r2");
    for key in ["deadline", "trace_context", "correlation_context", "worker_id"] {
        nulls["payload"]["context"][key] = Value::Null;
    }
    client.send_raw(&raw_frame(&nulls)).await;
    assert_eq!(client.outcome().await.status, OutcomeStatus::Success);
    server.stop().await;
}

#[tokio::test]
async fn the_handler_gets_trace_and_correlation_context_untouched() {
    let mut registry = Registry::new();
    registry.register("contexts", |_: Value, ctx: JobContext| async move {
        HandlerResult::Ok(json!({"trace": ctx.trace_context, "correlation": ctx.correlation_context}))
    });
    let server = Running::start(registry).await;
    let mut client = server.client().await;
    let trace: std::collections::BTreeMap<String, String> = [
        ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ("tracestate".to_owned(), "rrq=1,other=x".to_owned()),
    ]
    .into();
    let correlation: std::collections::BTreeMap<String, String> =
        [("tenant".to_owned(), "acme".to_owned()), ("order.id".to_owned(), "42 7".to_owned())].into();
    let mut req = request("j", "contexts", json!({}));
    req.context.trace_context = Some(trace.clone());
    req.context.correlation_context = Some(correlation.clone());
    let outcome = client.call(req).await;
    assert_eq!(outcome.result, Some(json!({"trace": trace, "correlation": correlation})));
    server.stop().await;
}

#[tokio::test]
async fn a_malformed_frame_stops_the_requests_its_connection_carried() {
    let held = Held::new();
    let server = Running::start(held.registry()).await;
    let mut client = server.client().await;
    client.send(&Envelope::Request(request("j", "hold", json!({})))).await;
    held.started().await;
    // The connection stays open on our side: only the bad frame can stop it.
    client.send_raw(b"\x00\x00\x00\x05hello").await;
    held.dropped().await;
    assert!(client.recv().await.is_none(), "closed without an answer");
    server.stop().await;
}
