//! Redis behind Sentinel: the master SIGKILLed mid-drain. The worker (the
//! `rrq` binary, connected with a `redis-sentinel://` DSN) follows the
//! promoted replica, and every job the producer acknowledged completes
//! exactly once. The producer enqueues with `min_replicas_acked = 1`, so an
//! acknowledged job is on the replica before the master can die with it;
//! after the failover the new master has no replica left, and the same
//! producer refuses to acknowledge, naming the setting.

use std::time::{Duration, Instant};

use rrq_producer::{EnqueueOptions, Producer, ProducerConfig, ProducerError};
use rrq_store::StoreError;
use rrq_test_support::sentinel::TestSentinel;
use serde_json::json;

use super::harness::{Config, Orchestrator, count_runs, enqueue_many, poll_until, soak, store, wait_all_completed};
use super::redis::{audit, wait_runs};
use crate::report;
use crate::support::TempDir;

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_failover_mid_drain_loses_no_acknowledged_job_and_runs_none_twice() {
    const T: &str = "sentinel_failover";
    let setup = TestSentinel::start();
    let dsn = setup.dsn();
    let old_master = setup.master_port();
    let dir = TempDir::new("fault-sentinel");
    let record = dir.path().join("record.jsonl");
    let path = Config::rust(&dsn, 2, 8).write(&dir, "rrq.toml");
    let acked = ProducerConfig {
        min_replicas_acked: 1,
        replica_ack_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&dsn, acked).await.expect("the producer connects through the sentinels");
    let n = soak(300, 3000);
    let params = json!({"path": record, "seconds": 0.05});
    let ids = enqueue_many(&producer, "sentinel", n, "record", params.clone()).await;
    let mut worker = Orchestrator::start(&dir, &path, "worker");

    wait_runs(&record, n / 3).await;
    let ran = count_runs(&record);
    let killed = Instant::now();
    let (setup, promoted) = tokio::task::spawn_blocking(move || {
        let mut setup = setup;
        let promoted = setup.kill_master();
        (setup, promoted)
    })
    .await
    .expect("the failover thread");
    report!(
        T,
        "injected: master {old_master} SIGKILLed after {ran} of {n} executions; the sentinels promoted {promoted} \
         {:.1}s later",
        killed.elapsed().as_secs_f64()
    );

    // The new master has no replica: an acknowledged enqueue now fails, and
    // says which setting asked for the replica (Unavailable first, while the
    // producer's connection moves to the new master).
    let refused = poll_until(Duration::from_secs(30), "an enqueue refused for want of a replica", async || {
        match producer.enqueue("record", params.clone(), EnqueueOptions::default()).await {
            Err(ProducerError::Store(e @ StoreError::NotReplicated { .. })) => Some(e.to_string()),
            Err(ProducerError::Store(StoreError::Unavailable { .. })) => None,
            other => panic!("expected NotReplicated after the failover, got {other:?}"),
        }
    })
    .await;
    assert!(refused.contains("`[rrq] min_replicas_acked`") && refused.contains("only 0 of the 1"), "{refused}");
    report!(T, "observed: with no replica left, an acknowledged enqueue is refused: {refused}");

    // Without the setting, enqueues go to the new master, and the worker,
    // reconnected there, runs them.
    let plain = Producer::connect(&dsn, ProducerConfig::default()).await.unwrap();
    let late = enqueue_many(&plain, "late", 20, "record", params).await;
    let all: Vec<_> = ids.iter().chain(&late).cloned().collect();
    let reader = store(&dsn).await;
    let took = wait_all_completed(&reader, &all, Duration::from_secs(90)).await;
    report!(
        T,
        "observed: every acknowledged job completed, the last {:.1}s after the last enqueue on the new master",
        took.as_secs_f64()
    );
    let runs = audit(T, &record, &all);
    assert_eq!(
        runs.reruns(),
        0,
        "a job ran twice across the failover: {:?}",
        runs.runs.iter().filter(|(_, r)| r.len() > 1).collect::<Vec<_>>()
    );
    assert!(worker.is_running(), "the worker rode the failover out");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
    drop(setup);
}
