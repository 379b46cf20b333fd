//! Cron in the worker, on paused time: ticks fire at their virtual times and
//! their jobs run; several workers enqueue each tick once; a worker started
//! after downtime does not burst, and enqueues one catch-up run only when the
//! entry asks for it; a unique entry skips ticks while its job holds the lock.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_core::{CoreError, CronEntry, CronJob, Worker, WorkerConfig, WorkerStats};
use rrq_store::{InspectStore, Job, JobStatus, WorkerStore};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::Harness;
use crate::support::{Behavior, ScriptedRunner, success};

fn entry(schedule: &str, function: &str, unique: bool, catch_up: bool) -> CronJob {
    let params = json!({"value": "tick"}).as_object().unwrap().clone();
    let entry = CronEntry { params, unique, catch_up, ..CronEntry::new("rrq.cron_jobs[0]", function, schedule) };
    CronJob::new(entry, "2026-11-28T00:00:00Z".parse().unwrap()).unwrap()
}

/// A time on the harness clock's first day (it starts at midnight UTC).
fn at(hms: &str) -> DateTime<Utc> {
    format!("2026-11-28T{hms}Z").parse().unwrap()
}

/// A worker with its own stop token, so one harness can run several in turn.
struct Running {
    stop: CancellationToken,
    handle: JoinHandle<Result<WorkerStats, CoreError>>,
}

impl Running {
    async fn stop(self) -> WorkerStats {
        self.stop.cancel();
        self.handle.await.unwrap().unwrap()
    }
}

impl Harness {
    fn cron_config(&self, worker_id: &str, cron: Vec<CronJob>) -> WorkerConfig {
        let mut config = self.config(&[]);
        config.worker_id = worker_id.to_owned();
        config.cron = cron;
        config
    }

    fn spawn(&self, config: WorkerConfig) -> Running {
        let stop = CancellationToken::new();
        let worker =
            Worker::new(config, self.store.clone()).clock(self.clock.clone()).runner("rust", self.runner.clone());
        Running { handle: tokio::spawn(worker.run(stop.clone())), stop }
    }

    /// Every job a cron entry created, oldest first.
    async fn cron_jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for id in self.store.job_ids(0).await.unwrap() {
            if id.as_str().starts_with("cron:") {
                jobs.push(self.job(id.as_str()).await);
            }
        }
        jobs.sort_by_key(|j| j.enqueue_time);
        jobs
    }

    /// The ticks of the cron jobs created so far, read from their ids.
    async fn cron_ticks(&self) -> Vec<DateTime<Utc>> {
        self.cron_jobs().await.iter().map(|j| tick_of(j.id.as_str())).collect()
    }

    fn runner_calls(&self) -> Vec<String> {
        self.runner.calls.lock().unwrap().iter().map(|c| c.job_id.clone()).collect()
    }
}

/// The tick encoded at the end of a cron job id.
fn tick_of(id: &str) -> DateTime<Utc> {
    let secs = id.rsplit(':').next().unwrap().parse().unwrap();
    DateTime::from_timestamp(secs, 0).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_seconds_schedule_fires_at_its_ticks_and_its_jobs_run() {
    let h = Harness::new(ScriptedRunner::new(4).on("tick", Behavior::Reply(success)));
    let cron = entry("*/10 * * * * *", "tick", false, false);
    let mut config = h.cron_config("rrq_worker_test_000001", vec![cron.clone()]);
    // Cron wakes the worker by itself, not through polling.
    config.poll_interval = Duration::from_secs(3600);
    let start = Instant::now();
    let worker = h.spawn(config);

    sleep_until(start + Duration::from_secs(35)).await;
    let jobs = h.cron_jobs().await;
    let expected = [at("00:00:10"), at("00:00:20"), at("00:00:30")];
    assert_eq!(jobs.len(), 3, "{jobs:?}");
    for (job, tick) in jobs.iter().zip(expected) {
        assert_eq!(job.id, cron.job_id(tick));
        let late = job.enqueue_time - tick;
        assert!(late >= chrono::TimeDelta::zero() && late < chrono::TimeDelta::milliseconds(5), "{tick}: {late}");
        assert_eq!(job.status, Some(JobStatus::Completed));
        assert_eq!(job.result, Some(json!("ok:tick")), "the entry's params reach the runner");
        assert_eq!(job.queue_name.as_ref().map(|q| q.as_str()), Some("rrq:queue:default"));
        assert_eq!(job.unique_key, None);
    }
    assert_eq!(h.runner_calls().len(), 3);
    let stats = worker.stop().await;
    assert_eq!((stats.cron_enqueued, stats.cron_skipped, stats.completed), (3, 0, 3));
}

#[tokio::test(start_paused = true)]
async fn two_workers_enqueue_and_run_each_tick_once() {
    let runner = ScriptedRunner::new(4).on("tick", Behavior::Reply(success)).on("locked", Behavior::Reply(success));
    let h = Harness::new(runner);
    let cron = vec![entry("*/10 * * * * *", "tick", false, false), entry("*/10 * * * * *", "locked", true, false)];
    let start = Instant::now();
    let a = h.spawn(h.cron_config("rrq_worker_test_00000a", cron.clone()));
    let b = h.spawn(h.cron_config("rrq_worker_test_00000b", cron.clone()));

    sleep_until(start + Duration::from_secs(65)).await;
    let (a, b) = (a.stop().await, b.stop().await);
    let jobs = h.cron_jobs().await;
    let ticks: Vec<DateTime<Utc>> = (1..=6).map(|n| at(&format!("00:0{}:{}0", n / 6, n % 6))).collect();
    for entry in &cron {
        let ids: Vec<String> =
            jobs.iter().filter(|j| j.id.as_str().starts_with(entry.id())).map(|j| j.id.to_string()).collect();
        let expected: Vec<String> = ticks.iter().map(|t| entry.job_id(*t).to_string()).collect();
        assert_eq!(ids, expected, "one job per tick of {}", entry.id());
    }
    assert!(jobs.iter().all(|j| j.status == Some(JobStatus::Completed)), "{jobs:?}");
    let mut calls = h.runner_calls();
    assert_eq!(calls.len(), 12, "each job ran once: {calls:?}");
    calls.sort();
    calls.dedup();
    assert_eq!(calls.len(), 12, "no job ran twice");
    assert_eq!(a.cron_enqueued + b.cron_enqueued, 12, "{a:?} {b:?}");
    assert_eq!(a.cron_skipped + b.cron_skipped, 12, "the other worker left every tick alone: {a:?} {b:?}");
    assert_eq!(a.completed + b.completed, 12);
}

/// Runs a worker for the ticks at :10 and :20, stops it, stays down for ten
/// minutes (60 missed ticks), then starts another at 00:10:25.
async fn down_for_ten_minutes(h: &Harness, cron: &CronJob) -> (Running, Instant) {
    let start = Instant::now();
    let first = h.spawn(h.cron_config("rrq_worker_test_000001", vec![cron.clone()]));
    sleep_until(start + Duration::from_secs(25)).await;
    assert_eq!(first.stop().await.cron_enqueued, 2);
    sleep_until(start + Duration::from_secs(625)).await;
    (h.spawn(h.cron_config("rrq_worker_test_000002", vec![cron.clone()])), start)
}

#[tokio::test(start_paused = true)]
async fn no_burst_after_downtime_without_catch_up() {
    let h = Harness::new(ScriptedRunner::new(4).on("tick", Behavior::Reply(success)));
    let cron = entry("*/10 * * * * *", "tick", false, false);
    let (second, start) = down_for_ten_minutes(&h, &cron).await;

    sleep_until(start + Duration::from_secs(629)).await;
    assert_eq!(h.cron_ticks().await, [at("00:00:10"), at("00:00:20")], "nothing for the missed ticks");
    sleep_until(start + Duration::from_secs(631)).await;
    assert_eq!(h.cron_ticks().await, [at("00:00:10"), at("00:00:20"), at("00:10:30")], "back on schedule");
    let stats = second.stop().await;
    assert_eq!(stats.cron_enqueued, 1);
    assert_eq!(h.runner_calls().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn catch_up_enqueues_one_run_for_the_missed_ticks() {
    let h = Harness::new(ScriptedRunner::new(4).on("tick", Behavior::Reply(success)));
    let cron = entry("*/10 * * * * *", "tick", false, true);
    let (second, start) = down_for_ten_minutes(&h, &cron).await;

    sleep_until(start + Duration::from_secs(626)).await;
    assert_eq!(
        h.cron_ticks().await,
        [at("00:00:10"), at("00:00:20"), at("00:10:20")],
        "one run, for the latest missed tick, at once"
    );
    let caught_up = h.job(cron.job_id(at("00:10:20")).as_str()).await;
    assert_eq!(caught_up.enqueue_time, at("00:10:25"));
    assert_eq!(caught_up.status, Some(JobStatus::Completed));
    sleep_until(start + Duration::from_secs(631)).await;
    assert_eq!(h.cron_ticks().await, [at("00:00:10"), at("00:00:20"), at("00:10:20"), at("00:10:30")]);
    assert_eq!(h.store.cron_tick(cron.id()).await.unwrap(), Some(at("00:10:30")), "the record follows the ticks");
    let stats = second.stop().await;
    assert_eq!((stats.cron_enqueued, stats.completed), (2, 2));
}

#[tokio::test(start_paused = true)]
async fn a_unique_entry_skips_ticks_while_its_job_holds_the_lock() {
    // Each run takes 25 s: the job of :10 holds the lock through :20 and :30.
    let runner = ScriptedRunner::new(4).on("slow", Behavior::After(Duration::from_secs(25), success));
    let h = Harness::new(runner);
    let cron = entry("*/10 * * * * *", "slow", true, false);
    let start = Instant::now();
    let worker = h.spawn(h.cron_config("rrq_worker_test_000001", vec![cron.clone()]));

    sleep_until(start + Duration::from_secs(31)).await;
    assert_eq!(h.cron_ticks().await, [at("00:00:10")], "the ticks at :20 and :30 found the lock held");
    let first = h.job(cron.job_id(at("00:00:10")).as_str()).await;
    assert_eq!(first.unique_key.as_deref(), Some("cron:slow"));
    assert!(h.store.unique_lock_ttl("cron:slow").await.unwrap().is_some());

    sleep_until(start + Duration::from_secs(41)).await;
    assert_eq!(h.job(cron.job_id(at("00:00:10")).as_str()).await.status, Some(JobStatus::Completed));
    assert_eq!(h.cron_ticks().await, [at("00:00:10"), at("00:00:40")], "the lock went with the job at 00:00:35");
    let next = h.job(cron.job_id(at("00:00:40")).as_str()).await;
    assert_eq!(next.next_scheduled_run_time, Some(next.enqueue_time), "a free lock defers nothing");

    let stats = worker.stop().await;
    assert_eq!((stats.cron_enqueued, stats.cron_skipped), (2, 2));
}

/// The harness clock, `lag` behind.
#[derive(Debug)]
struct LaggingClock {
    inner: std::sync::Arc<crate::support::TokioClock>,
    lag: chrono::TimeDelta,
}

impl rrq_store::Clock for LaggingClock {
    fn now(&self) -> DateTime<Utc> {
        rrq_store::Clock::now(self.inner.as_ref()) - self.lag
    }
}

#[tokio::test(start_paused = true)]
async fn a_tick_fires_once_even_after_its_job_hash_expired() {
    let mut h = Harness::new(ScriptedRunner::new(4).on("tick", Behavior::Reply(success)));
    // Results live one second: the job of a tick is gone soon after it ran.
    let short = rrq_store::JobDefaults { result_ttl_seconds: 1, ..Default::default() };
    h.store = std::sync::Arc::new(rrq_store::MemoryStore::with_clock(h.clock.clone()).with_defaults(short));
    let cron = entry("*/10 * * * * *", "tick", false, false);
    let mut config = h.cron_config("rrq_worker_test_000001", vec![cron.clone()]);
    let start = Instant::now();
    let first = h.spawn(config.clone());
    // A second worker whose clock is 5 s behind sees each tick 5 s later,
    // after the first worker's job for it has expired.
    config.worker_id = "rrq_worker_test_000002".into();
    let stop = CancellationToken::new();
    let clock = std::sync::Arc::new(LaggingClock { inner: h.clock.clone(), lag: chrono::TimeDelta::seconds(5) });
    let worker = Worker::new(config, h.store.clone()).clock(clock).runner("rust", h.runner.clone());
    let second = Running { handle: tokio::spawn(worker.run(stop.clone())), stop };

    sleep_until(start + Duration::from_secs(27)).await;
    let tick_10 = cron.job_id(at("00:00:10"));
    let runs = h.runner_calls().iter().filter(|id| id.as_str() == tick_10.as_str()).count();
    assert_eq!(runs, 1, "the tick of 00:00:10 ran {runs} times: {:?}", h.runner_calls());
    first.stop().await;
    second.stop().await;
}
