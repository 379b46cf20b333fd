//! OpenTelemetry trace context flows from the producer's span, through the
//! stored job, to the worker's `rrq.job` span and the runner's request.

use std::sync::Arc;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_store::{JobStatus, Store};
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

use crate::Harness;
use crate::support::{Behavior, ScriptedRunner, success};

#[tokio::test(start_paused = true)]
async fn one_trace_id_from_enqueue_to_runner() {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder().with_simple_exporter(exporter.clone()).build();
    let subscriber =
        tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("rrq-test")));
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // The test runtime is single-threaded, so a thread-local default
    // subscriber sees the producer and the worker alike.
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    let store: Arc<dyn Store> = h.store.clone();
    let producer = Producer::with_store(store, ProducerConfig::default()).with_clock(h.clock.clone());
    let request_span = tracing::info_span!("http.request");
    let trace_id = request_span.context().span().span_context().trace_id();
    assert_ne!(trace_id, opentelemetry::trace::TraceId::INVALID);
    let id = producer
        .enqueue("success", json!({"value": "t"}), EnqueueOptions::default())
        .instrument(request_span)
        .await
        .unwrap();

    let _w = h.start(h.config(&[]));
    h.wait_for(id.as_str(), JobStatus::Completed).await;

    let sent = h.runner.calls_for(id.as_str())[0].context.trace_context.clone().expect("trace context forwarded");
    let traceparent = &sent["traceparent"];
    assert!(traceparent.contains(&trace_id.to_string()), "{traceparent} carries {trace_id}");

    provider.force_flush().unwrap();
    let spans = exporter.get_finished_spans().unwrap();
    let job_span = spans.iter().find(|s| s.name == "rrq.job").expect("the worker exported an rrq.job span");
    assert_eq!(job_span.span_context.trace_id(), trace_id, "the worker's span continues the producer's trace");
}
