//! The worker on a Redis Cluster (the sharded layout), in real time: cron
//! entries with `unique = true`, whose fixed tick ids are rarely on their
//! unique lock's shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rrq_core::{CronEntry, CronJob, Worker, WorkerConfig};
use rrq_protocol::{JobId, QueueName};
use rrq_store::keys::{DEFAULT_QUEUE_SHARDS, Layout};
use rrq_store::{EnqueueStore, InspectStore, JobStatus, RedisStore};
use rrq_test_support::cluster::TestCluster;
use tokio_util::sync::CancellationToken;

use crate::support::{Behavior, ScriptedRunner, success};

/// Two workers on a cluster run a `unique` entry that fires every second:
/// each tick is enqueued once (the other worker, or the held lock, skips
/// it), under an id on the lock's shard that both derive alike, and runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_cron_entry_on_a_cluster_enqueues_each_tick_once_under_a_fitted_id() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let runner = ScriptedRunner::new(4).on("locked", Behavior::Reply(success));
    let start = chrono::Utc::now();
    let entry = CronEntry { unique: true, ..CronEntry::new("rrq.cron_jobs[0]", "locked", "* * * * * *") };
    let cron = CronJob::new(entry, start).unwrap();
    let stop = CancellationToken::new();
    let mut workers = Vec::new();
    for name in ["rrq_worker_cluster_a", "rrq_worker_cluster_b"] {
        let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
        let mut config = WorkerConfig::new([QueueName::new("default")]);
        config.worker_id = name.into();
        config.routing.default_runner = "rust".into();
        config.shutdown_grace = Duration::from_secs(1);
        config.cron = vec![cron.clone()];
        let worker = Worker::new(config, Arc::new(store)).runner("rust", runner.clone());
        workers.push(tokio::spawn(worker.run(stop.clone())));
    }

    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let cron_jobs = async || {
        let ids = store.job_ids(0).await.unwrap();
        let mut jobs = Vec::new();
        for id in ids.into_iter().filter(|id| id.as_str().starts_with(cron.id())) {
            jobs.push(store.job(&id).await.unwrap().expect("listed job exists").expect("job parses"));
        }
        jobs
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let done = cron_jobs().await.iter().filter(|j| j.status == Some(JobStatus::Completed)).count();
        if done >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "three ticks did not run within 30 s ({done} did)");
        tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: polling the cluster against a deadline
    }
    stop.cancel();
    let mut stats = Vec::new();
    for worker in workers {
        stats.push(worker.await.unwrap().unwrap());
    }

    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let lock_key = cron.unique_lock_key().expect("a unique entry has a lock");
    let shard = layout.unique_lock_shard(&lock_key);
    let mode = cron.enqueue_mode(Duration::from_secs(1));
    let jobs = cron_jobs().await;
    let mut ticks = Vec::new();
    for job in &jobs {
        assert_eq!(layout.shard_of(&job.id), shard, "{} is on the lock's shard", job.id);
        let tick: i64 = job.id.as_str().split('~').next().unwrap().rsplit(':').next().unwrap().parse().unwrap();
        let tick = chrono::DateTime::from_timestamp(tick, 0).unwrap();
        let fitted: JobId = store.fitted_job_id(cron.job_id(tick), &mode);
        assert_eq!(job.id, fitted, "the id every worker derives for {tick}");
        ticks.push(tick);
    }
    ticks.sort();
    let enqueued: u64 = stats.iter().map(|s| s.cron_enqueued).sum();
    assert_eq!(enqueued, jobs.len() as u64, "every enqueue made a job: {stats:?}");
    let before = ticks.len();
    ticks.dedup();
    assert_eq!(ticks.len(), before, "one job per tick: {ticks:?}");
    let ran: u64 = stats.iter().map(|s| s.completed).sum();
    assert!(ran >= 3, "{stats:?}");
    let calls = runner.calls.lock().unwrap().len();
    assert_eq!(calls as u64, ran, "each job ran once");
}
