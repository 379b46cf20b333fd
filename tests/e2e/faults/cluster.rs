//! One logical queue over a Redis Cluster (three masters, one replica each,
//! started by the test): the real `rrq` binary drains jobs enqueued by the
//! Rust producer on a `redis-cluster://` DSN, while the cluster reshards or
//! loses a master. Every acknowledged job must complete, exactly once where
//! the cluster stays up.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rrq_producer::{EnqueueOptions, Producer, ProducerConfig, ProducerError};
use rrq_protocol::JobId;
use rrq_store::StoreError;
use rrq_test_support::cluster::TestCluster;
use serde_json::json;

use super::harness::{
    Config, Orchestrator, Records, Reply, count_runs, enqueue_many, redis, soak, store, wait_all_completed,
};
use super::redis::{audit, wait_runs};
use crate::report;
use crate::support::TempDir;

/// How many of the job hashes of `ids`' run each master holds, by port.
fn job_keys_per_master(cluster: &TestCluster) -> BTreeMap<u16, usize> {
    let mut out = BTreeMap::new();
    for master in cluster.masters() {
        let mut cursor = "0".to_owned();
        let mut count = 0;
        loop {
            let reply = redis(master.port, &["SCAN", &cursor, "MATCH", "rrq:{*}:job:*", "COUNT", "1000"]);
            let Reply::Array(mut parts) = reply else { panic!("SCAN on {}: {reply:?}", master.port) };
            let Some(Reply::Array(keys)) = parts.pop() else { panic!("SCAN keys on {}", master.port) };
            cursor = parts.pop().and_then(|c| c.text()).expect("a SCAN cursor");
            count += keys.len();
            if cursor == "0" {
                break;
            }
        }
        out.insert(master.port, count);
    }
    out
}

/// Asserts that no master holds under a fifth of `total` job hashes.
fn assert_spread(test: &str, cluster: &TestCluster, total: usize) {
    let per_master = job_keys_per_master(cluster);
    let held: usize = per_master.values().sum();
    report!(test, "observed: job hashes per master {per_master:?} ({held} in all)");
    assert!(held >= total, "only {held} of {total} job hashes found on the masters: {per_master:?}");
    for (port, n) in &per_master {
        assert!(n * 5 >= held, "master {port} holds {n} of {held} job hashes, under 20 %: {per_master:?}");
    }
}

/// Two workers on two configs (their own runner ports) against `dsn`.
fn two_workers(dir: &TempDir, dsn: &str) -> [Orchestrator; 2] {
    [0, 1].map(|i| {
        let config = Config::rust(dsn, 2, 16).write(dir, &format!("w{i}.toml"));
        Orchestrator::start(dir, &config, &format!("w{i}"))
    })
}

async fn stop(test: &str, workers: impl IntoIterator<Item = Orchestrator>) {
    for mut w in workers {
        assert!(w.is_running(), "[{test}] a worker died during the run:\n{}", w.log());
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(20)).await.success(), "[{test}] worker exit:\n{}", w.log());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_thousand_jobs_drained_by_two_workers_on_a_cluster_run_once_each_on_every_master() {
    const T: &str = "cluster_drain";
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.expect("start the cluster");
    let dsn = cluster.dsn();
    let dir = TempDir::new("fault-cluster-drain");
    let record = dir.path().join("record.jsonl");
    let n = soak(20_000, 100_000);
    let producer = Producer::new(&dsn).await.expect("the producer connects to the cluster");
    let started = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for part in 0..n.div_ceil(5_000) {
        let size = 5_000.min(n - part * 5_000);
        ids.extend(enqueue_many(&producer, &format!("drain{part}"), size, "record", json!({"path": record})).await);
    }
    report!(T, "injected: {n} jobs enqueued by rrq-producer in {:.1}s", started.elapsed().as_secs_f64());
    let workers = two_workers(&dir, &dsn);
    let reader = store(&dsn).await;
    let took = wait_all_completed(&reader, &ids, Duration::from_secs(300)).await;
    report!(T, "observed: all {n} completed {:.1}s after the workers started", took.as_secs_f64());
    let runs = audit(T, &record, &ids);
    assert_eq!(runs.reruns(), 0, "jobs ran twice: {:?}", reruns(&runs));
    let by_worker = per_worker(&reader, &ids).await;
    report!(T, "observed: executions per worker {by_worker:?}");
    assert!(by_worker.len() == 2, "both workers take jobs: {by_worker:?}");
    assert_spread(T, &cluster, n);
    stop(T, workers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_resharding_during_a_drain_loses_and_duplicates_nothing() {
    const T: &str = "cluster_resharding";
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.expect("start the cluster");
    let dsn = cluster.dsn();
    let dir = TempDir::new("fault-cluster-reshard");
    let record = dir.path().join("record.jsonl");
    let n = soak(3_000, 20_000);
    let params = json!({"path": record, "seconds": 0.002});
    let producer = Producer::new(&dsn).await.unwrap();
    let mut ids = enqueue_many(&producer, "reshard", n, "record", params.clone()).await;
    let workers = two_workers(&dir, &dsn);
    wait_runs(&record, n / 10).await;

    // Move the lower half of the first master's slots (about a sixth of every
    // queue's shards with their jobs, locks and leases) to the second, while
    // the workers claim, renew and complete, and a producer keeps enqueueing.
    let masters = cluster.masters();
    let (from, to) = (&masters[0], &masters[1]);
    let first = from.slots[0].clone();
    let moved = *first.start()..=(*first.start() + (*first.end() - *first.start()) / 2);
    let ran = count_runs(&record);
    let began = Instant::now();
    let to_port = to.port;
    let migrated = moved.clone();
    let migration = tokio::task::spawn_blocking(move || {
        cluster.migrate_slots(migrated, to_port);
        cluster
    });
    let mut during = 0usize;
    let mut refused = Vec::new();
    while !migration.is_finished() {
        let id = format!("during-{during}");
        let options = EnqueueOptions { job_id: Some(id.clone()), ..Default::default() };
        match producer.enqueue("record", params.clone(), options).await {
            Ok(_) => ids.push(JobId::new(&id)),
            Err(e) => refused.push(format!("{id}: {e}")),
        }
        during += 1;
    }
    let cluster = migration.await.expect("the migration");
    report!(
        T,
        "injected: slots {moved:?} moved from master {} to {} in {:.1}s, starting after {ran} of {n} executions; \
         {during} enqueues during the move, {} refused",
        from.port,
        to.port,
        began.elapsed().as_secs_f64(),
        refused.len()
    );
    assert!(refused.is_empty(), "enqueues refused during the resharding: {refused:?}");
    assert!(cluster.master_for_slot(*moved.start()).port == to.port, "the slots moved");
    let reader = store(&dsn).await;
    wait_all_completed(&reader, &ids, Duration::from_secs(120)).await;
    let runs = audit(T, &record, &ids);
    assert_eq!(runs.reruns(), 0, "jobs ran twice across the resharding: {:?}", reruns(&runs));
    stop(T, workers).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_master_killed_during_a_drain_loses_no_acknowledged_job() {
    const T: &str = "cluster_master_kill";
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.expect("start the cluster");
    let dsn = cluster.dsn();
    let dir = TempDir::new("fault-cluster-kill");
    let record = dir.path().join("record.jsonl");
    let n = soak(1_500, 10_000);
    let acked = ProducerConfig {
        min_replicas_acked: 1,
        replica_ack_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&dsn, acked).await.expect("the producer connects to the cluster");
    let params = json!({"path": record, "seconds": 0.01});
    let mut ids = enqueue_many(&producer, "kill", n, "record", params.clone()).await;
    let workers = two_workers(&dir, &dsn);
    wait_runs(&record, n / 3).await;

    let victim = cluster.masters()[0].port;
    let ran = count_runs(&record);
    let killed = Instant::now();
    let kill = tokio::task::spawn_blocking(move || {
        let mut cluster = cluster;
        let promoted = cluster.kill_master(victim);
        (cluster, promoted)
    });
    // Enqueue while the master is down and its replica takes over: each call
    // either is acknowledged (then it must run) or fails with an error.
    let (mut acknowledged, mut failed) = (0usize, BTreeMap::<String, usize>::new());
    let mut i = 0;
    while !kill.is_finished() {
        let id = format!("failover-{i}");
        i += 1;
        let options = EnqueueOptions { job_id: Some(id.clone()), ..Default::default() };
        match producer.enqueue("record", params.clone(), options).await {
            Ok(_) => {
                acknowledged += 1;
                ids.push(JobId::new(&id));
            }
            Err(ProducerError::Store(e)) => *failed.entry(kind(&e)).or_default() += 1,
            Err(e) => panic!("an enqueue during the failover failed oddly: {e}"),
        }
    }
    let (cluster, promoted) = kill.await.expect("the failover");
    report!(
        T,
        "injected: master {victim} SIGKILLed after {ran} of {n} executions; replica {} took over {:.1}s later; \
         enqueues meanwhile: {acknowledged} acknowledged, refused {failed:?}",
        promoted.port,
        killed.elapsed().as_secs_f64()
    );
    // The promoted master has no replica: acknowledged enqueues to its slots
    // are refused now, naming the setting; a producer without the setting
    // goes on (its jobs too must run).
    let plain = Producer::new(&dsn).await.unwrap();
    ids.extend(enqueue_many(&plain, "after", 200, "record", params).await);

    let reader = store(&dsn).await;
    let took = wait_all_completed(&reader, &ids, Duration::from_secs(180)).await;
    let runs = Records::load(&record);
    let lost: Vec<&JobId> = ids.iter().filter(|id| !runs.runs.contains_key(id.as_str())).collect();
    report!(
        T,
        "observed: {} acknowledged jobs completed {:.1}s after the failover; lost {}, re-runs {} (a claim or outcome \
         the dead master had not replicated), overlapping {}",
        ids.len(),
        took.as_secs_f64(),
        lost.len(),
        runs.reruns(),
        runs.overlapping().len()
    );
    assert!(lost.is_empty(), "acknowledged jobs never ran: {lost:?}");
    stop(T, workers).await;
    drop(cluster);
}

/// A short name for a store error, to count them.
fn kind(e: &StoreError) -> String {
    let text = e.to_string();
    match e {
        StoreError::NotReplicated { .. } => "not replicated".to_owned(),
        StoreError::Unavailable { .. } => "unavailable".to_owned(),
        _ => text.chars().take(60).collect(),
    }
}

fn reruns(runs: &Records) -> Vec<&String> {
    runs.runs.iter().filter(|(_, r)| r.len() > 1).map(|(id, _)| id).collect()
}

/// Completed jobs per worker process (the `worker_id` of each job hash,
/// without its per-process suffix).
async fn per_worker(reader: &rrq_store::RedisStore, ids: &[JobId]) -> BTreeMap<String, usize> {
    use rrq_store::InspectStore;
    let mut out = BTreeMap::new();
    for fields in reader.job_fields_batch(ids).await.expect("read the jobs").into_iter().flatten() {
        let worker = fields.get("worker_id").cloned().unwrap_or_else(|| "none".to_owned());
        *out.entry(worker).or_default() += 1;
    }
    out
}
