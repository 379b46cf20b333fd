//! Producer behaviour over the in-memory store.

use std::sync::Arc;
use std::time::Duration;

use rrq_producer::{EnqueueOptions, Limit, Producer, ProducerConfig, ProducerError};
use rrq_store::{Enqueued, MemoryStore, Store};
use serde_json::{Map, Value, json};

fn producer() -> Producer {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    Producer::with_store(store, ProducerConfig::default())
}

#[tokio::test]
async fn the_older_args_kwargs_call_shape_maps_to_params() {
    let p = producer();
    let kwargs: Map<String, Value> = json!({"to": "a@example.com"}).as_object().cloned().unwrap();
    let id = p.enqueue_args("send", vec![json!(1), json!("x")], kwargs, EnqueueOptions::default()).await.unwrap();
    let job = p.job(&id).await.unwrap().unwrap();
    assert_eq!(Value::Object(job.params), json!({"to": "a@example.com", "args": [1, "x"]}));
    let clash: Map<String, Value> = json!({"args": 1}).as_object().cloned().unwrap();
    let err = p.enqueue_args("send", vec![json!(1)], clash, EnqueueOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("collide"), "{err}");
}

#[tokio::test]
async fn options_are_validated_with_the_reference_messages() {
    let p = producer();
    let bad = |o: EnqueueOptions| {
        let p = p.clone();
        async move { p.enqueue("f", Value::Null, o).await.unwrap_err().to_string() }
    };
    assert_eq!(
        bad(EnqueueOptions { job_timeout_seconds: Some(0), ..Default::default() }).await,
        "job_timeout_seconds must be positive"
    );
    let limit = Limit { key: "k".into(), window: Duration::from_secs(1) };
    assert_eq!(
        bad(EnqueueOptions { rate_limit: Some(limit.clone()), debounce: Some(limit), ..Default::default() }).await,
        "rate_limit and debounce options are mutually exclusive"
    );
    assert_eq!(bad(EnqueueOptions::queue("  ")).await, "queue_name cannot be empty");
    let err = p.enqueue("f", json!([1]), EnqueueOptions::default()).await.unwrap_err();
    assert!(matches!(err, ProducerError::InvalidOption(_)));
}

#[tokio::test]
async fn a_rate_limited_call_is_reported_not_dropped_silently() {
    let p = producer();
    let limit = Limit { key: "user-7".into(), window: Duration::from_secs(60) };
    let opts = || EnqueueOptions { rate_limit: Some(limit.clone()), ..Default::default() };
    assert!(matches!(p.try_enqueue("f", Value::Null, opts()).await.unwrap(), Enqueued::Created(_)));
    assert_eq!(p.try_enqueue("f", Value::Null, opts()).await.unwrap(), Enqueued::RateLimited);
    let err = p.enqueue("f", Value::Null, opts()).await.unwrap_err();
    assert!(matches!(err, ProducerError::RateLimited(ref k) if k == "user-7"), "{err}");
}

#[tokio::test]
async fn batches_enqueue_each_job() {
    let p = producer();
    let jobs = (0..10).map(|i| ("f".to_owned(), json!({"i": i}), EnqueueOptions::default()));
    let ids: Vec<_> = p.enqueue_batch(jobs).await.unwrap().into_iter().map(Result::unwrap).collect();
    assert_eq!(ids.len(), 10);
    let third = p.job(&ids[3]).await.unwrap().unwrap();
    assert_eq!(third.params["i"], 3);
}

/// With `min_replicas_acked`, an enqueue the store cannot confirm on that
/// many replicas fails, naming the setting (the memory store has none);
/// without it, nothing is asked of the store. A rate-limited call wrote
/// nothing, so it confirms nothing either.
#[tokio::test]
async fn min_replicas_acked_fails_an_enqueue_no_replica_confirms() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let config =
        ProducerConfig { min_replicas_acked: 1, replica_ack_timeout: Duration::from_millis(50), ..Default::default() };
    let acked = Producer::with_store(store.clone(), config);
    let err = acked.enqueue("f", Value::Null, EnqueueOptions::default()).await.unwrap_err();
    assert!(
        matches!(err, ProducerError::Store(rrq_store::StoreError::NotReplicated { wanted: 1, acked: 0, .. })),
        "{err:?}"
    );
    assert!(err.to_string().contains("`[rrq] min_replicas_acked`"), "{err}");
    let batch = acked.enqueue_batch([("f".to_owned(), Value::Null, EnqueueOptions::default())]).await.unwrap_err();
    assert!(batch.to_string().contains("min_replicas_acked"), "{batch}");

    let plain = Producer::with_store(store, ProducerConfig::default());
    assert!(plain.enqueue("f", Value::Null, EnqueueOptions::default()).await.is_ok());
    let limit = Limit { key: "once".into(), window: Duration::from_secs(60) };
    let limited = EnqueueOptions { rate_limit: Some(limit), ..Default::default() };
    plain.enqueue("f", Value::Null, limited.clone()).await.unwrap();
    assert_eq!(acked.try_enqueue("f", Value::Null, limited).await.unwrap(), Enqueued::RateLimited);
}
