//! Several orchestrators on one Redis (and on a Redis Cluster), SIGKILLed
//! and restarted at random while they share a burst: every job ends
//! COMPLETED exactly once and no two executions of a job overlap.

use std::time::{Duration, Instant};

use rrq_producer::Producer;
use rrq_protocol::JobId;
use rrq_store::keys::{self, Layout};
use rrq_test_support::TestRedis;
use rrq_test_support::cluster::TestCluster;
use serde_json::json;

use super::harness::{
    Config, Orchestrator, Records, Reply, Rng, count_runs, enqueue_many, poll_until, redis_pipeline, soak, statuses,
    store, tally, wait_all_completed, wait_all_dead,
};
use crate::report;
use crate::support::TempDir;

#[tokio::test(flavor = "multi_thread")]
async fn orchestrators_killed_at_random_lose_and_duplicate_nothing() {
    let redis = TestRedis::private();
    let port = redis.port();
    chaos("chaos", redis.url(), soak(10_000, 50_000), |ids: &[JobId]| {
        let xlen: Vec<Vec<String>> = ids.iter().map(|id| vec!["XLEN".to_owned(), keys::events(id)]).collect();
        redis_pipeline(port, &xlen)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn orchestrators_killed_at_random_on_a_cluster_lose_and_duplicate_nothing() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.expect("start the cluster");
    let layout = Layout::sharded(keys::DEFAULT_QUEUE_SHARDS).unwrap();
    chaos("chaos_cluster", &cluster.dsn(), soak(5_000, 50_000), |ids: &[JobId]| {
        // Each job's events stream on the master serving its slot, one
        // pipeline per master, answers put back in the order of `ids`.
        let masters = cluster.masters();
        let mut by_port: std::collections::BTreeMap<u16, Vec<usize>> = std::collections::BTreeMap::new();
        for (i, id) in ids.iter().enumerate() {
            let slot = cluster.slot_of(&layout.events(id));
            let port = masters.iter().find(|m| m.serves(slot)).expect("a master serves every slot").port;
            by_port.entry(port).or_default().push(i);
        }
        let mut out = vec![Reply::Int(-1); ids.len()];
        for (port, indices) in by_port {
            let xlen: Vec<Vec<String>> =
                indices.iter().map(|&i| vec!["XLEN".to_owned(), layout.events(&ids[i])]).collect();
            for (i, reply) in indices.into_iter().zip(redis_pipeline(port, &xlen)) {
                out[i] = reply;
            }
        }
        out
    })
    .await;
}

/// `n` jobs, three orchestrators on `dsn`, random SIGKILLs and restarts;
/// `completions` answers the length of each job's events stream (one
/// terminal event each when every job completed exactly once).
async fn chaos(test: &'static str, dsn: &str, n: usize, completions: impl Fn(&[JobId]) -> Vec<Reply>) {
    let dir = TempDir::new(&format!("fault-{test}"));
    let record = dir.path().join("record.jsonl");
    let workers = 3;
    let kills = soak(4, 12);
    let mut rng = Rng::from_env();
    let producer = Producer::new(dsn).await.unwrap();
    let store = store(dsn).await;
    let ids = enqueue_many(&producer, "chaos", n, "record", json!({"path": record, "seconds": 0.005})).await;

    let configs: Vec<_> = (0..workers).map(|i| Config::rust(dsn, 2, 16).write(&dir, &format!("w{i}.toml"))).collect();
    let mut running: Vec<Orchestrator> =
        configs.iter().enumerate().map(|(i, c)| Orchestrator::start(&dir, c, &format!("w{i}-0"))).collect();
    let started = Instant::now();
    report!(
        test,
        "injected: {n} jobs, {workers} orchestrators, {kills} random SIGKILLs + restarts (seed {})",
        rng.seed()
    );

    let mut last_kill = Instant::now();
    for k in 0..kills {
        // Somewhere in the k-th of `kills + 2` equal slices of the burst.
        let slice = n / (kills + 2);
        let at = (k + 1) * slice + rng.below(slice / 2);
        poll_until(Duration::from_secs(120), &format!("{at} executions"), async || {
            (count_runs(&record) >= at).then_some(())
        })
        .await;
        let victim = rng.below(workers);
        let runners = running[victim].runner_pids();
        running[victim].kill();
        last_kill = Instant::now();
        let gone = wait_all_dead(&runners, Duration::from_secs(5)).await;
        running[victim] = Orchestrator::start(&dir, &configs[victim], &format!("w{victim}-{}", k + 1));
        report!(
            test,
            "injected: SIGKILL of worker w{victim} after {at} executions; its runners {runners:?} gone in {:.2}s; restarted",
            gone.as_secs_f64()
        );
    }

    let states = wait_all_completed(&store, &ids, Duration::from_secs(90)).await;
    let since_kill = last_kill.elapsed();
    let total = started.elapsed();
    let completions = completions(&ids);
    let not_once: Vec<(&JobId, &Reply)> = ids.iter().zip(&completions).filter(|(_, r)| **r != Reply::Int(1)).collect();
    let runs = Records::load(&record);
    let never_ran: Vec<&JobId> = ids.iter().filter(|id| !runs.runs.contains_key(id.as_str())).collect();
    let overlapping = runs.overlapping();
    let final_states = tally(&statuses(&store, &ids).await.unwrap());
    report!(
        test,
        "observed: {final_states:?} {:.1}s after the start ({:.1}s after the last kill, {:.1}s to drain the rest); \
         lost {}, completed more than once {}, re-runs {}, overlapping {}",
        total.as_secs_f64(),
        since_kill.as_secs_f64(),
        states.as_secs_f64(),
        never_ran.len(),
        not_once.len(),
        runs.reruns(),
        overlapping.len()
    );
    assert!(never_ran.is_empty(), "jobs never ran: {:?}", &never_ran[..never_ran.len().min(10)]);
    assert!(not_once.is_empty(), "jobs not completed exactly once: {:?}", &not_once[..not_once.len().min(10)]);
    assert!(overlapping.is_empty(), "executions overlapped: {overlapping:?}");
    assert!(runs.uncounted().is_empty(), "a re-run carries a higher attempt: {:?}", runs.uncounted());
    for w in &mut running {
        assert!(w.is_running());
        w.signal("TERM");
    }
    for w in &mut running {
        assert!(w.wait_exit(Duration::from_secs(15)).await.success());
    }
}
