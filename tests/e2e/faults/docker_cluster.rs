//! A Redis Cluster in Docker containers: one master cut off the network
//! mid-drain (`docker network disconnect`), so it keeps running while every
//! connection to it hangs, unlike a killed process whose sockets close. The
//! worker (the `rrq` binary on a `redis-cluster://` DSN) rides out the
//! replica's promotion; the producer enqueues with `min_replicas_acked = 1`,
//! so every job it acknowledged is on a replica before the master is cut,
//! and every one of them completes. Both follow the promoted replica while
//! the old master is still cut off: the producer reaches it (and is refused
//! for want of a replica there, naming the setting) and the worker runs
//! jobs of its slots, each within seconds of the failover. Enqueues while
//! the master is cut off and before it is back as a replica either succeed
//! or fail with an error that says why; once the old master has rejoined as
//! a replica, the same producer acknowledges again.
//!
//! What at-least-once allows here: a job of the cut-off master's shards may
//! run a second time (its claim or outcome was written to the master and
//! lost with it, or could not be written at all, so recovery runs it again
//! once its lease expires). A job of another master's shards never does,
//! and no two executions of one job overlap.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rrq_producer::{EnqueueOptions, Producer, ProducerConfig, ProducerError};
use rrq_protocol::JobId;
use rrq_store::StoreError;
use rrq_store::keys::{self, Layout};
use rrq_test_support::docker::{self, DockerCluster};
use serde_json::{Value, json};

use super::harness::{Config, Orchestrator, POLL, Records, count_runs, enqueue_many, soak, store, wait_all_completed};
use super::redis::{audit, wait_runs};
use crate::report;
use crate::support::TempDir;

/// How long one enqueue may take before the test calls it hung (the store's
/// command timeout is 10 s, the replicas' confirmation 2 s).
const ENQUEUE_LIMIT: Duration = Duration::from_secs(30);
/// How long after the failover the producer may take to reach the promoted
/// master (and be refused for want of a replica there): the store notices a
/// call that waits over a second, asks the other masters for the layout
/// and follows it.
const REFUSAL_LIMIT: Duration = Duration::from_secs(15);
/// How long after the failover the worker may take to run a job of the
/// promoted master's slots, with the old master still cut off.
const WORKER_LIMIT: Duration = Duration::from_secs(15);
/// How long after the healing the producer may take to acknowledge again.
const AFTER_HEALING_LIMIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread")]
async fn a_master_cut_off_mid_drain_in_a_docker_cluster_loses_no_acknowledged_job() {
    const T: &str = "docker_cluster_partition";
    if !docker::require_docker("faults::docker_cluster::a_master_cut_off_mid_drain") {
        return;
    }
    let started = Instant::now();
    let mut cluster = DockerCluster::start().await;
    let dsn = cluster.dsn();
    report!(T, "setup: 3 masters + 3 replicas in containers, up in {:.1}s; {dsn}", started.elapsed().as_secs_f64());
    let dir = TempDir::new("fault-docker-cluster");
    let record = dir.path().join("record.jsonl");
    // Four jobs at a time, 0.2 s each (about 20 jobs/s): work is left on
    // every master's shards when the failover is over.
    let path = Config::rust(&dsn, 1, 4).write(&dir, "rrq.toml");
    let acked = ProducerConfig {
        min_replicas_acked: 1,
        replica_ack_timeout: Duration::from_secs(2),
        ..ProducerConfig::default()
    };
    let producer = Producer::connect(&dsn, acked).await.expect("the producer connects to the cluster from the host");
    let n = soak(300, 3000);
    let params = json!({"path": record, "seconds": 0.2});
    let mut acknowledged = enqueue_many(&producer, "docker", n, "record", params.clone()).await;
    let mut worker = Orchestrator::start(&dir, &path, "worker");

    wait_runs(&record, n / 5).await;
    let ran = count_runs(&record);
    let cut = cluster.masters().into_iter().next().expect("a master");
    let on_cut = |id: &JobId| cut.serves(slot_of(id));
    let on_its_shards = acknowledged.iter().filter(|id| on_cut(id)).count();
    cluster.disconnect(cut.index);
    let cut_at = Instant::now();
    let cut_wall = epoch_seconds();
    let failover = tokio::task::spawn_blocking(move || {
        let promoted = cluster.wait_for_failover(cut.index);
        (cluster, promoted, cut_at.elapsed())
    });

    // Enqueue while the failover runs, one job at a time.
    let mut during = Attempts::default();
    while !failover.is_finished() {
        during.enqueue(&producer, &params).await;
    }
    let (mut cluster, promoted, took) = failover.await.expect("the failover thread");
    report!(
        T,
        "injected: master {} ({}, {on_its_shards} of the {n} jobs on its shards) cut off the network after {ran} \
         executions; its replica {} took over {:.1}s later",
        cut.index,
        cut.ip,
        promoted.index,
        took.as_secs_f64()
    );
    report!(T, "observed: enqueues during the failover: {}", during.summary());

    // The promoted master has no replica while the old one is cut off: an
    // acknowledged enqueue is refused, naming the setting, once the
    // producer's connections have moved on (before that, they may time out).
    // A producer that never moves on is noted, and the test goes on to heal
    // the partition, to see whether that unblocks it, before it fails.
    let failed_over = cut_at + took;
    let mut stuck = None;
    loop {
        let last = match timed_enqueue(&producer, &params).await {
            Err(ProducerError::Store(e @ StoreError::NotReplicated { .. })) => {
                let refused = e.to_string();
                assert!(
                    refused.contains("`[rrq] min_replicas_acked`") && refused.contains("only 0 of the 1"),
                    "{refused}"
                );
                report!(
                    T,
                    "observed: {:.1}s after the failover, with the promoted master alone, an acknowledged enqueue is \
                     refused: {refused}",
                    failed_over.elapsed().as_secs_f64()
                );
                break;
            }
            Err(ProducerError::Store(e @ StoreError::Unavailable { .. })) => chain(&e),
            other => panic!("expected NotReplicated with the old master cut off, got {other:?}"),
        };
        if failed_over.elapsed() >= REFUSAL_LIMIT {
            let why = format!(
                "{:.0}s after node {}'s replica took over, the producer's enqueues still failed as if the cluster \
                 were unreachable (the store had not moved on from the cut-off master); last error: {last}",
                failed_over.elapsed().as_secs_f64(),
                cut.index
            );
            report!(T, "observed: {why}");
            stuck = Some(why);
            break;
        }
        tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
    }

    // The worker follows the promoted master too: a job of the cut-off
    // master's slots starts after the failover, the old master still cut off.
    let failover_wall = cut_wall + took.as_secs_f64();
    let mut worker_stuck = None;
    let followed = loop {
        let started = Records::load(&record)
            .runs
            .iter()
            .filter(|(id, _)| on_cut(&JobId::new(id.as_str())))
            .flat_map(|(_, runs)| runs.iter().map(|r| r.start))
            .filter(|start| *start > failover_wall)
            .fold(None, |first: Option<f64>, start| Some(first.map_or(start, |f| f.min(start))));
        if let Some(first) = started {
            break Some(first - failover_wall);
        }
        if failed_over.elapsed() >= WORKER_LIMIT {
            let why = format!(
                "{:.0}s after node {}'s replica took over, the worker had run none of the jobs of its slots",
                failed_over.elapsed().as_secs_f64(),
                cut.index
            );
            report!(T, "observed: {why}");
            worker_stuck = Some(why);
            break None;
        }
        tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
    };
    if let Some(after) = followed {
        report!(
            T,
            "observed: the worker started a job of the cut-off master's slots {after:.1}s after its replica took over"
        );
    }

    // Heal the partition: the old master comes back as the promoted one's
    // replica, and acknowledged enqueues work again.
    cluster.reconnect(cut.index);
    let healing = Instant::now();
    let healed_wall = epoch_seconds();
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.wait_rejoined_as_replica(cut.index, &promoted.id);
        cluster
    })
    .await
    .expect("the healing thread");
    report!(
        T,
        "injected: master {} reconnected; it rejoined as a replica {:.1}s later",
        cut.index,
        healing.elapsed().as_secs_f64()
    );
    let mut after = Attempts::default();
    let healed = Instant::now();
    let first = loop {
        if let Some(id) = after.enqueue(&producer, &params).await {
            break id;
        }
        assert!(
            healed.elapsed() < AFTER_HEALING_LIMIT,
            "no acknowledged enqueue within {AFTER_HEALING_LIMIT:?} of the healing: {}",
            after.summary()
        );
        tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
    };
    report!(T, "observed: enqueues after the healing, until one was acknowledged: {}", after.summary());
    acknowledged.extend(during.acknowledged.iter().cloned());
    acknowledged.extend(after.acknowledged.iter().cloned());
    acknowledged.extend(enqueue_many(&producer, "late", 20, "record", params).await);
    assert!(acknowledged.contains(&first));

    let reader = store(&cluster.dsn()).await;
    let waited = wait_all_completed(&reader, &acknowledged, Duration::from_secs(90)).await;
    report!(
        T,
        "observed: all {} acknowledged jobs completed, the last {:.1}s after the last enqueue",
        acknowledged.len(),
        waited.as_secs_f64()
    );
    let runs = audit(T, &record, &acknowledged);
    check_reruns(T, &runs, on_cut);
    let (cut_off, elsewhere) = started_between(&runs, cut_wall, healed_wall, on_cut);
    report!(
        T,
        "observed: while node {} was cut off ({:.1}s), {cut_off} executions started, {elsewhere} of them of jobs on \
         the masters that stayed up",
        cut.index,
        healed_wall - cut_wall
    );
    assert!(worker.is_running(), "the worker rode the partition out");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
    report!(T, "total run time {:.1}s", started.elapsed().as_secs_f64());
    // Checked last, so that the report above says what happened after it.
    let stalls: Vec<String> = [stuck, worker_stuck].into_iter().flatten().collect();
    assert!(stalls.is_empty(), "{}", stalls.join("; "));
    for (when, attempts) in [("during the failover", &during), ("after the healing", &after)] {
        assert!(attempts.unclear.is_empty(), "enqueues {when} failed without a clear error: {:?}", attempts.unclear);
    }
    drop(cluster);
}

/// The hash slot of a job's keys with the default shard count.
fn slot_of(id: &JobId) -> u16 {
    let layout = Layout::sharded(keys::DEFAULT_QUEUE_SHARDS).expect("the default shard count is valid");
    keys::key_slot(layout.job(id).as_bytes())
}

/// Executions that started in `[from, to)` (epoch seconds), and how many of
/// them were of jobs not on the cut-off master.
fn started_between(runs: &Records, from: f64, to: f64, on_cut: impl Fn(&JobId) -> bool) -> (usize, usize) {
    let mut counts = (0, 0);
    for (id, list) in &runs.runs {
        let n = list.iter().filter(|r| (from..to).contains(&r.start)).count();
        counts.0 += n;
        if !on_cut(&JobId::new(id.as_str())) {
            counts.1 += n;
        }
    }
    counts
}

/// Seconds since the Unix epoch, as the `record` handler writes them.
fn epoch_seconds() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

/// Re-runs are allowed only for jobs of the cut-off master's shards.
fn check_reruns(test: &str, runs: &Records, on_cut: impl Fn(&JobId) -> bool) {
    let rerun: Vec<&String> = runs.runs.iter().filter(|(_, r)| r.len() > 1).map(|(id, _)| id).collect();
    let elsewhere: Vec<&&String> = rerun.iter().filter(|id| !on_cut(&JobId::new(id.as_str()))).collect();
    report!(
        test,
        "observed: {} jobs ran more than once ({} executions beyond the first), all on the cut-off master's shards: {}",
        rerun.len(),
        runs.reruns(),
        elsewhere.is_empty()
    );
    assert!(elsewhere.is_empty(), "jobs of the masters that stayed up ran twice: {elsewhere:?}");
}

/// `producer.enqueue`, bounded: an enqueue must answer, not hang.
async fn timed_enqueue(producer: &Producer, params: &Value) -> Result<JobId, ProducerError> {
    let call = producer.enqueue("record", params.clone(), EnqueueOptions::default());
    tokio::time::timeout(ENQUEUE_LIMIT, call)
        .await
        .unwrap_or_else(|_| panic!("an enqueue did not answer within {ENQUEUE_LIMIT:?}"))
}

/// Enqueue attempts and how they ended.
#[derive(Debug, Default)]
struct Attempts {
    acknowledged: Vec<JobId>,
    /// Refusals that say what went wrong (the cluster unreachable, too few
    /// replicas), by their message.
    refused: BTreeMap<String, usize>,
    /// Any other error, by its message: not a clear answer to an enqueue.
    unclear: BTreeMap<String, usize>,
    slowest: Duration,
}

impl Attempts {
    /// One enqueue; the id when it was acknowledged.
    async fn enqueue(&mut self, producer: &Producer, params: &Value) -> Option<JobId> {
        let asked = Instant::now();
        let result = timed_enqueue(producer, params).await;
        self.slowest = self.slowest.max(asked.elapsed());
        let bucket = match result {
            Ok(id) => {
                self.acknowledged.push(id.clone());
                return Some(id);
            }
            Err(ProducerError::Store(e @ (StoreError::Unavailable { .. } | StoreError::NotReplicated { .. }))) => {
                (&mut self.refused, chain(&e))
            }
            Err(other) => (&mut self.unclear, chain(&other)),
        };
        *bucket.0.entry(bucket.1).or_insert(0) += 1;
        None
    }

    fn summary(&self) -> String {
        format!(
            "{} acknowledged, refused {:?}, other errors {:?}, slowest answer {:.1}s",
            self.acknowledged.len(),
            self.refused,
            self.unclear,
            self.slowest.as_secs_f64()
        )
    }
}

/// An error with its sources, `: `-separated.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}
