//! The worker with the example Rust runner: one job of each kind of outcome.

use std::time::Duration;

use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::{DlqName, JobId};
use rrq_store::{RedisStore, Store};
use rrq_test_support::TestRedis;
use serde_json::json;

use crate::support::{TempDir, assert_success, run_rrq, rust_runner_config};

fn with_id(id: &str) -> EnqueueOptions {
    EnqueueOptions { job_id: Some(id.to_owned()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_worker_runs_every_outcome_kind_with_the_rust_runner() {
    let redis = TestRedis::private();
    let dir = TempDir::new("rust-burst");
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, "", 2, 8));
    let producer = Producer::new(redis.url()).await.expect("connect");

    producer.enqueue("echo", json!({"x": 1}), with_id("ok")).await.unwrap();
    producer
        .enqueue("fail", json!({"value": "z"}), EnqueueOptions { max_retries: Some(2), ..with_id("bad") })
        .await
        .unwrap();
    producer
        .enqueue("sleep", json!({"seconds": 5}), EnqueueOptions { job_timeout_seconds: Some(1), ..with_id("slow") })
        .await
        .unwrap();
    producer.enqueue("nope", json!({}), with_id("missing")).await.unwrap();
    producer.enqueue("rust#success", json!({"value": "v"}), with_id("prefixed")).await.unwrap();
    producer.enqueue("other#success", json!({"value": "v"}), with_id("no-runner")).await.unwrap();

    // Burst mode does not wait for jobs scheduled in the future, so run until
    // the retries are spent: the worker is started again while work remains.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            run_rrq(&["worker", "run", "--burst", "--config", config.to_str().unwrap()], &[], Duration::from_secs(30));
        assert_success(&out);
        let status = producer.status(&JobId::new("bad")).await.unwrap().unwrap().status;
        if status == Some(JobStatus::Failed) || std::time::Instant::now() > deadline {
            break;
        }
    }

    let get = |id: &'static str| {
        let p = producer.clone();
        async move { p.job(&JobId::new(id)).await.unwrap().unwrap() }
    };
    let ok = get("ok").await;
    assert_eq!(ok.status, Some(JobStatus::Completed));
    assert_eq!(ok.result.as_ref().unwrap()["echo"], json!({"x": 1}));

    let bad = get("bad").await;
    assert_eq!((bad.status, bad.current_retries), (Some(JobStatus::Failed), 2));
    assert_eq!(bad.last_error.as_deref(), Some("boom: z"));

    let slow = get("slow").await;
    assert_eq!((slow.status, slow.current_retries), (Some(JobStatus::Failed), 1));
    assert_eq!(slow.last_error.as_deref(), Some("Job timed out after 1s."));

    let missing = get("missing").await;
    assert_eq!(missing.status, Some(JobStatus::Failed));
    assert_eq!(missing.last_error.as_deref(), Some("No handler registered for function 'nope'"));

    assert_eq!(get("prefixed").await.result, Some(json!("ok:v")));
    assert_eq!(get("no-runner").await.last_error.as_deref(), Some("No runner configured for 'other'."));

    let store = RedisStore::connect(redis.url()).await.unwrap();
    let mut dlq: Vec<String> =
        store.dlq_ids(&DlqName::new("default"), 0, 100).await.unwrap().into_iter().map(JobId::into_string).collect();
    dlq.sort();
    assert_eq!(dlq, ["bad", "missing", "no-runner", "slow"]);
}
