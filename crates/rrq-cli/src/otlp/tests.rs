//! Unit tests of the parent module (test code: the source rules skip it).
#![cfg(test)]

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

/// Starts a batch loop over a fresh queue; each export arrives on the
/// returned channel with the (paused) time it was made at.
fn batching() -> (Queue<u32>, mpsc::UnboundedReceiver<(Vec<u32>, tokio::time::Instant)>) {
    let (queue, rx) = Queue::<u32>::new("rrq_otlp_test_batches_dropped_total");
    let (tx, sent) = mpsc::unbounded_channel();
    tokio::spawn(batch_loop(rx, Outage::new(Signal::Traces, "http://c"), move |batch| {
        let tx = tx.clone();
        async move {
            tx.send((batch, tokio::time::Instant::now())).unwrap();
            Ok(())
        }
    }));
    (queue, sent)
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_goes_at_once_and_a_partial_one_after_the_delay() {
    let (queue, mut sent) = batching();
    let start = tokio::time::Instant::now();
    for i in 0..MAX_BATCH as u32 + 3 {
        queue.offer(i);
    }
    let (full, at) = sent.recv().await.unwrap();
    assert_eq!((full.len(), at), (MAX_BATCH, start), "a full batch does not wait");
    let (rest, at) = sent.recv().await.unwrap();
    assert_eq!(rest, [512, 513, 514]);
    assert_eq!(at, start + BATCH_DELAY, "a partial batch waits the batch delay, no longer");
}

#[tokio::test(start_paused = true)]
async fn items_trickling_in_within_the_delay_share_one_batch() {
    let (queue, mut sent) = batching();
    let start = tokio::time::Instant::now();
    for i in 0..10 {
        queue.offer(i);
        tokio::time::sleep(Duration::from_millis(30)).await; // sleep-ok: paused time, paces the producer
    }
    let (batch, at) = sent.recv().await.unwrap();
    assert_eq!(batch, (0..10).collect::<Vec<_>>(), "one request for the ten");
    assert_eq!(at, start + BATCH_DELAY);
    assert!(sent.try_recv().is_err(), "and no other");
}

#[tokio::test(start_paused = true)]
async fn a_flush_sends_the_open_batch_before_it_answers() {
    let (queue, mut sent) = batching();
    let start = tokio::time::Instant::now();
    queue.offer(7);
    queue.offer(8);
    queue.flush(start + Duration::from_secs(5)).await;
    let (batch, at) = sent.try_recv().expect("exported before the flush returned");
    assert_eq!(batch, [7, 8]);
    assert!(at < start + BATCH_DELAY, "without waiting for the batch delay: {:?}", at - start);
}
