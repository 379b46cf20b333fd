//! Faults of the orchestrator process itself: SIGKILL mid-burst, a frozen
//! lock holder (SIGSTOP past its lease), SIGTERM with long jobs in flight,
//! and SIGTERM while Redis is down.

use std::time::{Duration, Instant};

use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::JobId;
use rrq_store::{InspectStore, keys};
use rrq_test_support::TestRedis;
use serde_json::json;

use super::harness::{
    Config, Orchestrator, Records, Reply, count_runs, enqueue_many, poll_until, redis, runner_port, soak, statuses,
    store, tally, wait_all_completed, wait_all_dead,
};
use crate::report;
use crate::support::TempDir;

/// The documented recovery bound with default settings: a 15 s lease, a
/// recovery pass every 5 s, plus time to claim and start again.
const RECOVERY_BOUND: Duration = Duration::from_secs(35);

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_of_the_orchestrator_mid_burst_loses_no_job() {
    const T: &str = "orchestrator_sigkill";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-sigkill");
    let record = dir.path().join("record.jsonl");
    let config = Config::rust(redis.url(), 2, 8);
    let path = config.write(&dir, "rrq.toml");
    let producer = Producer::new(redis.url()).await.unwrap();
    let store = store(redis.url()).await;
    let n = soak(300, 3000);
    let ids = enqueue_many(&producer, "burst", n, "record", json!({"path": record, "seconds": 0.1})).await;

    let mut first = Orchestrator::start(&dir, &path, "first");
    let runners = first.wait_runners(2, Duration::from_secs(20)).await;
    poll_until(Duration::from_secs(120), "a third of the burst to run", async || {
        (count_runs(&record) >= n / 3).then_some(())
    })
    .await;
    first.kill();
    let killed = Instant::now();
    let before = statuses(&store, &ids).await.unwrap();
    let in_flight: Vec<JobId> =
        ids.iter().zip(&before).filter(|(_, s)| *s == "ACTIVE").map(|(id, _)| id.clone()).collect();
    report!(
        T,
        "injected: SIGKILL of worker pid {} with {:?} of {n} jobs; runner pids {runners:?}",
        first.pid(),
        tally(&before)
    );
    let runners_gone = wait_all_dead(&runners, Duration::from_secs(5)).await;

    let mut second = Orchestrator::start(&dir, &path, "second");
    let new_runners = second.wait_runners(2, Duration::from_secs(20)).await;
    let mut ports: Vec<u16> = new_runners.iter().filter_map(|p| runner_port(*p)).collect();
    ports.sort_unstable();
    wait_all_completed(&store, &in_flight, RECOVERY_BOUND.saturating_sub(killed.elapsed())).await;
    let recovered_in = killed.elapsed();
    wait_all_completed(&store, &ids, Duration::from_secs(120)).await;
    let total = killed.elapsed();

    let runs = Records::load(&record);
    let overlapping = runs.overlapping();
    let never_ran: Vec<&JobId> = ids.iter().filter(|id| !runs.runs.contains_key(id.as_str())).collect();
    let recovered = store.job_fields_batch(&in_flight).await.unwrap();
    let counted =
        recovered.iter().flatten().filter(|f| f.get("current_retries").map(String::as_str) == Some("1")).count();
    report!(
        T,
        "observed: runners of the killed worker gone in {:.2}s; restart on ports {ports:?}; {} in-flight jobs recovered \
         and completed {:.1}s after the kill; all {n} completed after {:.1}s; lost {}, re-runs {}, overlapping {}",
        runners_gone.as_secs_f64(),
        in_flight.len(),
        recovered_in.as_secs_f64(),
        total.as_secs_f64(),
        never_ran.len(),
        runs.reruns(),
        overlapping.len()
    );
    assert_eq!(ports, config.ports(), "the restarted worker's runners listen on the configured ports");
    assert!(!in_flight.is_empty(), "the kill happened mid-burst");
    assert!(never_ran.is_empty(), "jobs never ran: {never_ran:?}");
    assert!(overlapping.is_empty(), "executions overlapped: {overlapping:?}");
    assert!(runs.uncounted().is_empty(), "a re-run carries a higher attempt: {:?}", runs.uncounted());
    assert!(runs.reruns() <= in_flight.len(), "only jobs in flight at the kill may run again");
    assert_eq!(counted, in_flight.len(), "the attempt lost with the worker is counted");
    assert!(second.is_running());
    second.signal("TERM");
    assert!(second.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_frozen_lock_holder_cannot_overwrite_the_outcome_of_the_worker_that_took_over() {
    const T: &str = "frozen_holder";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-sigstop");
    let record = dir.path().join("record.jsonl");
    let path_a = Config::rust(redis.url(), 1, 1).write(&dir, "a.toml");
    let path_b = Config::rust(redis.url(), 1, 1).write(&dir, "b.toml");
    let producer = Producer::new(redis.url()).await.unwrap();
    let mut a = Orchestrator::start(&dir, &path_a, "a");
    a.wait_log("worker started", Duration::from_secs(20)).await;

    let options = EnqueueOptions { job_id: Some("frozen".into()), job_timeout_seconds: Some(60), ..Default::default() };
    let id = producer.enqueue("record", json!({"path": record, "seconds": 3}), options).await.unwrap();
    poll_until(Duration::from_secs(10), "worker A to claim the job", async || {
        let job = producer.job(&id).await.ok()??;
        (job.status == Some(JobStatus::Active) && job.worker_id.as_deref()?.starts_with(&a.worker_prefix()))
            .then_some(())
    })
    .await;
    a.signal("STOP");
    let stopped = Instant::now();
    report!(T, "injected: SIGSTOP of worker A (pid {}) while it runs job {id} (3 s; lease 15 s)", a.pid());

    let mut b = Orchestrator::start(&dir, &path_b, "b");
    let done = producer.wait_for_completion(&id, RECOVERY_BOUND).await.unwrap().expect("worker B completes the job");
    let taken_over_in = stopped.elapsed();
    let by_b = producer.job(&id).await.unwrap().unwrap();
    assert_eq!(done.status, Some(JobStatus::Completed));
    assert!(by_b.worker_id.as_deref().unwrap_or_default().starts_with(&b.worker_prefix()), "{by_b:?}");
    assert_eq!(by_b.result.as_ref().map(|r| r["attempt"].clone()), Some(json!(2)), "B ran attempt 2");

    a.signal("CONT");
    let resumed = Instant::now();
    // A learns it lost the job either from its renewal (and never writes) or
    // from the fenced write itself (dropped as stale).
    let seen = poll_until(Duration::from_secs(15), "worker A to give the job up", async || {
        let log = a.log();
        [
            "outcome dropped: the job is no longer held by this attempt",
            "lock lost while running; runner stopped, attempt abandoned",
        ]
        .into_iter()
        .find(|m| log.contains(m))
    })
    .await;
    let after = producer.job(&id).await.unwrap().unwrap();
    let runs = Records::load(&record);
    report!(
        T,
        "observed: B (pid {}) recovered and completed the job {:.1}s after the freeze; A resumed and said {seen:?} \
         {:.2}s later; final worker {:?}, result attempt {}; runs {}, overlapping {}",
        b.pid(),
        taken_over_in.as_secs_f64(),
        resumed.elapsed().as_secs_f64(),
        after.worker_id,
        after.result.as_ref().map_or(json!(null), |r| r["attempt"].clone()),
        runs.len(),
        runs.overlapping().len()
    );
    assert_eq!(after.status, Some(JobStatus::Completed));
    assert_eq!(after.worker_id, by_b.worker_id, "A's stale outcome was not written");
    assert_eq!(after.result, by_b.result);
    assert_eq!(after.completion_time, by_b.completion_time);
    // A's runner ran the job too unless the freeze caught A before it dispatched
    // the attempt: one or two executions, never overlapping, B's outcome kept.
    let executions = runs.runs["frozen"].len();
    assert!((1..=2).contains(&executions), "B ran the job, A's runner at most once more: {executions} runs");
    assert!(runs.overlapping().is_empty(), "the lease expired long after A's run ended");
    assert!(a.is_running() && b.is_running(), "both workers survive");
    for w in [&mut a, &mut b] {
        w.signal("TERM");
        assert!(w.wait_exit(Duration::from_secs(15)).await.success());
    }
}

/// Whether a job is back on its queue with nothing of the interrupted attempt
/// left: PENDING, no lock, no lease, no attempt counted.
fn is_requeued_cleanly(port: u16, id: &JobId) -> Result<(), String> {
    let field = |name: &str| redis(port, &["HGET", &keys::job(id), name]).text();
    let checks = [
        ("status", field("status"), Some("PENDING".to_owned())),
        ("current_retries", field("current_retries"), Some("0".to_owned())),
        (
            "last_error",
            field("last_error"),
            Some("Job execution interrupted by worker shutdown. Re-queued.".to_owned()),
        ),
        ("lock", redis(port, &["GET", &keys::lock(id)]).text(), None),
        ("lease", redis(port, &["ZSCORE", keys::LEASES, id.as_str()]).text(), None),
    ];
    for (what, got, want) in checks {
        if got != want {
            return Err(format!("{id}: {what} is {got:?}, expected {want:?}"));
        }
    }
    match redis(port, &["ZSCORE", "rrq:queue:default", id.as_str()]) {
        Reply::Bulk(Some(_)) => Ok(()),
        other => Err(format!("{id} is not in its queue: {other:?}")),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_puts_long_jobs_back_on_their_queue() {
    const T: &str = "sigterm_in_flight";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-sigterm");
    let mut config = Config::rust(redis.url(), 1, 4);
    config.job_timeout_seconds = 120;
    config.grace_seconds = 1.0;
    let path = config.write(&dir, "rrq.toml");
    let producer = Producer::new(redis.url()).await.unwrap();
    let store = store(redis.url()).await;
    let ids = enqueue_many(&producer, "long", 4, "sleep", json!({"seconds": 60})).await;
    let mut worker = Orchestrator::start(&dir, &path, "worker");
    let runners = worker.wait_runners(1, Duration::from_secs(20)).await;
    poll_until(Duration::from_secs(10), "every job to run", async || {
        statuses(&store, &ids).await.ok()?.iter().all(|s| s == "ACTIVE").then_some(())
    })
    .await;
    worker.signal("TERM");
    let termed = Instant::now();
    report!(T, "injected: SIGTERM with {} jobs of 60 s in flight (grace 1 s)", ids.len());
    let status = worker.wait_exit(Duration::from_secs(12)).await;
    let exited_in = termed.elapsed();
    let runners_gone = wait_all_dead(&runners, Duration::from_secs(5)).await;
    let problems: Vec<String> = ids.iter().filter_map(|id| is_requeued_cleanly(redis.port(), id).err()).collect();
    report!(
        T,
        "observed: exit {status} after {:.2}s; runners gone {:.2}s later; {} of {} jobs back on the queue untouched",
        exited_in.as_secs_f64(),
        runners_gone.as_secs_f64(),
        ids.len() - problems.len(),
        ids.len()
    );
    assert!(status.success(), "a graceful stop exits 0");
    assert!(exited_in < Duration::from_secs(1 + 5), "exit within the grace period plus the release window");
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(worker.log().contains("draining"), "{}", worker.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_during_a_redis_outage_exits_in_bounded_time_and_the_job_is_recovered() {
    const T: &str = "sigterm_redis_down";
    let mut redis = TestRedis::private_with_aof();
    let dir = TempDir::new("fault-sigterm-outage");
    let record = dir.path().join("record.jsonl");
    let mut config = Config::rust(redis.url(), 1, 1);
    config.job_timeout_seconds = 60;
    config.grace_seconds = 1.0;
    let path = config.write(&dir, "a.toml");
    let producer = Producer::new(redis.url()).await.unwrap();
    let mut a = Orchestrator::start(&dir, &path, "a");
    let runners = a.wait_runners(1, Duration::from_secs(20)).await;
    let id = producer
        .enqueue(
            "record",
            json!({"path": record, "seconds": 3}),
            EnqueueOptions { job_id: Some("stranded".into()), ..Default::default() },
        )
        .await
        .unwrap();
    poll_until(Duration::from_secs(10), "the job to run", async || {
        (producer.job(&id).await.ok()??.status == Some(JobStatus::Active)).then_some(())
    })
    .await;

    redis.stop();
    a.signal("TERM");
    let termed = Instant::now();
    report!(T, "injected: Redis stopped, then SIGTERM to worker pid {} with job {id} in flight (grace 1 s)", a.pid());
    let status = a.wait_exit(Duration::from_secs(15)).await;
    let exited_in = termed.elapsed();
    let runners_gone = wait_all_dead(&runners, Duration::from_secs(5)).await;
    assert!(exited_in < Duration::from_secs(1 + 5 + 3), "grace + release window + margin, took {exited_in:?}");

    redis.start_again();
    let back = Instant::now();
    let b_path = Config::rust(redis.url(), 1, 1).write(&dir, "b.toml");
    let mut b = Orchestrator::start(&dir, &b_path, "b");
    let done = producer.wait_for_completion(&id, RECOVERY_BOUND).await.unwrap().expect("the job is recovered");
    let recovered_in = back.elapsed();
    let job = producer.job(&id).await.unwrap().unwrap();
    let runs = Records::load(&record);
    report!(
        T,
        "observed: exit {status} {:.2}s after SIGTERM, runners gone {:.2}s later; after Redis returned the job \
         was recovered and {:?} in {:.1}s (attempt {}, last_error {:?}); runs {}",
        exited_in.as_secs_f64(),
        runners_gone.as_secs_f64(),
        done.status,
        recovered_in.as_secs_f64(),
        job.attempt(),
        job.last_error,
        runs.len()
    );
    assert!(status.success(), "a stop during an outage is still a requested stop: exit 0 ({status})");
    assert_eq!(done.status, Some(JobStatus::Completed));
    assert!(job.worker_id.as_deref().unwrap_or_default().starts_with(&b.worker_prefix()));
    assert!(a.log().contains("could not put every job back"), "{}", a.log());
    assert!(runs.overlapping().is_empty());
    assert!(b.is_running());
    b.signal("TERM");
    assert!(b.wait_exit(Duration::from_secs(15)).await.success());
}
