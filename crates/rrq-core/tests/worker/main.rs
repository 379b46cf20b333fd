//! The worker against `MemoryStore`, a scripted runner and paused tokio time:
//! every transition of the job state machine, with no real sleeps; and
//! (`cluster.rs`) what only a Redis Cluster shows, in real time.

mod cluster;
mod cron;
mod hardening;
mod hooked;
mod support;
mod trace;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::TimeDelta;
use rrq_core::{CoreError, Worker, WorkerConfig, WorkerStats};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{
    AdminStore, CancelResult, ClaimRequest, Clock, EnqueueMode, EnqueueStore, InspectStore, Job, JobDefaults,
    JobStatus, MemoryStore, NewJob, Store, WorkerStore,
};
use serde_json::{Map, Value, json};
use support::{Behavior, ScriptedRunner, TokioClock, fail, retry_once, success};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Harness {
    store: Arc<MemoryStore>,
    clock: Arc<TokioClock>,
    runner: Arc<ScriptedRunner>,
    shutdown: CancellationToken,
}

impl Harness {
    fn new(runner: Arc<ScriptedRunner>) -> Self {
        let clock = TokioClock::new();
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        Self { store, clock, runner, shutdown: CancellationToken::new() }
    }

    fn config(&self, queues: &[&str]) -> WorkerConfig {
        let mut c = WorkerConfig::new(queues.iter().map(|q| QueueName::new(q)));
        c.worker_id = "rrq_worker_test_000001".into();
        c.routing.default_runner = "rust".into();
        c.shutdown_grace = Duration::from_secs(1);
        c
    }

    fn start(&self, config: WorkerConfig) -> JoinHandle<Result<WorkerStats, CoreError>> {
        self.start_on(config, self.store.clone())
    }

    /// Starts a worker on another view of the store (a wrapper of `self.store`).
    fn start_on(&self, config: WorkerConfig, store: Arc<dyn Store>) -> JoinHandle<Result<WorkerStats, CoreError>> {
        let worker = Worker::new(config, store).clock(self.clock.clone()).runner("rust", self.runner.clone());
        tokio::spawn(worker.run(self.shutdown.clone()))
    }

    async fn enqueue(&self, id: &str, function: &str, params: Value, tweak: impl FnOnce(&mut NewJob)) {
        let now = self.clock.now();
        let mut job = NewJob {
            id: JobId::new(id),
            function_name: function.into(),
            params: match params {
                Value::Object(m) => m,
                _ => Map::new(),
            },
            queue: QueueName::new("default"),
            enqueue_time: now,
            scheduled_time: now,
            max_retries: 3,
            job_timeout_seconds: 30,
            result_ttl_seconds: 86_400,
            trace_context: Default::default(),
            correlation_context: Default::default(),
            unique_key: None,
        };
        tweak(&mut job);
        self.store.enqueue(job, EnqueueMode::Standard).await.expect("enqueue");
    }

    async fn job(&self, id: &str) -> Job {
        self.store.job(&JobId::new(id)).await.unwrap().expect("job exists").expect("job parses")
    }

    /// Waits (in virtual time) until the job reaches `status`.
    async fn wait_for(&self, id: &str, status: JobStatus) -> Job {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3600);
        loop {
            let job = self.job(id).await;
            if job.status == Some(status) {
                return job;
            }
            assert!(tokio::time::Instant::now() < deadline, "job {id} never reached {status}: {job:?}");
            tokio::time::sleep(Duration::from_millis(5)).await; // sleep-ok: paused (virtual) time
        }
    }

    /// Claims the one ready job of the default queue for a worker that then
    /// dies: its lease (15 s) is never renewed.
    async fn claim_as_dead_worker(&self) {
        let claimed = self
            .store
            .claim(ClaimRequest {
                queue: QueueName::new("default"),
                worker_id: "rrq_worker_dead_0000".into(),
                max: 1,
                now: self.clock.now(),
                lease_ttl: Duration::from_secs(15),
                max_payload_bytes: usize::MAX,
            })
            .await
            .unwrap();
        assert_eq!(claimed.jobs.len(), 1);
    }

    async fn dlq(&self) -> Vec<String> {
        self.store
            .dlq_ids(&DlqName::new("default"), 0, 100)
            .await
            .unwrap()
            .into_iter()
            .map(JobId::into_string)
            .collect()
    }
}

#[tokio::test(start_paused = true)]
async fn success_stores_the_result() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    h.enqueue("j1", "success", json!({"value": "alpha"}), |_| {}).await;
    let worker = h.start(h.config(&[]));
    let job = h.wait_for("j1", JobStatus::Completed).await;
    assert_eq!(job.result, Some(json!("ok:alpha")));
    assert_eq!(job.current_retries, 0);
    let call = &h.runner.calls_for("j1")[0];
    assert_eq!(call.context.attempt, 1);
    assert_eq!(call.context.queue_name, "rrq:queue:default");
    assert_eq!(call.context.worker_id.as_deref(), Some("rrq_worker_test_000001"));
    assert!(call.context.deadline.is_some());
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!((stats.claimed, stats.completed), (1, 1));
    assert!(*h.runner.shut_down.lock().unwrap(), "runners are shut down with the worker");
}

/// docs/RUNNER_PROTOCOL.md: request timestamps are UTC with a `Z` suffix and
/// up to 9 fractional digits, whatever precision the job hash holds.
#[tokio::test(start_paused = true)]
async fn request_timestamps_are_utc_with_z_and_at_most_nine_fraction_digits() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    let cases = [
        ("nanos", "2026-12-04T21:00:00.123456789+01:00", "2026-12-04T20:00:00.123456789Z"),
        ("millis", "2026-12-04T20:00:00.5Z", "2026-12-04T20:00:00.500Z"),
        ("whole", "2026-12-04T20:00:00Z", "2026-12-04T20:00:00Z"),
    ];
    for (id, stored, _) in cases {
        let at = chrono::DateTime::parse_from_rfc3339(stored).unwrap().to_utc();
        h.enqueue(id, "success", json!({"value": id}), |j| j.enqueue_time = at).await;
    }
    let _w = h.start(h.config(&[]));
    for (id, _, wire) in cases {
        h.wait_for(id, JobStatus::Completed).await;
        let call = &h.runner.calls_for(id)[0];
        assert_eq!(call.context.enqueue_time, wire, "{id}");
        let deadline = call.context.deadline.as_deref().unwrap();
        let (_, fraction) = deadline.strip_suffix('Z').unwrap_or_else(|| panic!("{deadline} ends with Z")).split_at(19);
        let digits = fraction.strip_prefix('.').unwrap_or(fraction);
        assert!(digits.len() <= 9 && digits.bytes().all(|b| b.is_ascii_digit()), "{deadline}");
        assert!(chrono::DateTime::parse_from_rfc3339(deadline).is_ok(), "{deadline}");
    }
}

#[tokio::test(start_paused = true)]
async fn runner_requested_retry_then_success() {
    let h = Harness::new(ScriptedRunner::new(4).on("retry_once", Behavior::Reply(retry_once)));
    h.enqueue("j", "retry_once", json!({"value": "beta"}), |_| {}).await;
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("j", JobStatus::Completed).await;
    assert_eq!(job.current_retries, 1);
    assert_eq!(job.last_error.as_deref(), Some("please retry"), "the old error is kept, as the reference does");
    assert_eq!(job.result, Some(json!("ok:beta")));
    let attempts: Vec<u32> = h.runner.calls_for("j").iter().map(|c| c.context.attempt).collect();
    assert_eq!(attempts, [1, 2]);
}

#[tokio::test(start_paused = true)]
async fn errors_back_off_until_attempts_run_out() {
    let h = Harness::new(ScriptedRunner::new(4).on("fail", Behavior::Reply(fail)));
    h.enqueue("j", "fail", json!({}), |j| j.max_retries = 3).await;
    let start = tokio::time::Instant::now();
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("j", JobStatus::Failed).await;
    assert_eq!((job.current_retries, job.last_error.as_deref()), (3, Some("boom")));
    assert_eq!(h.dlq().await, ["j"]);
    // Default backoff: 5 s then 10 s between the three attempts.
    assert!(start.elapsed() >= Duration::from_secs(15), "{:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_retry_runs_when_due_not_at_the_next_poll() {
    // A deferred retry publishes no ready signal; the worker that wrote it
    // must still wake when it is due, however long its poll interval.
    let h = Harness::new(ScriptedRunner::new(4).on("fail", Behavior::Reply(fail)));
    h.enqueue("j", "fail", json!({}), |j| j.max_retries = 3).await;
    let mut config = h.config(&[]);
    config.poll_interval = Duration::from_secs(600);
    config.backoff = rrq_core::Backoff { base: Duration::from_secs(1), max: Duration::from_secs(1) };
    let start = tokio::time::Instant::now();
    let _w = h.start(config);
    let job = h.wait_for("j", JobStatus::Failed).await;
    assert_eq!(job.current_retries, 3);
    // Two retries of 1 s each, not two 600 s polls.
    assert!(start.elapsed() >= Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(3), "{:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn timeouts_go_to_the_dlq_with_a_deterministic_message() {
    let h = Harness::new(ScriptedRunner::new(4).on("hang", Behavior::Hang));
    h.enqueue("j", "hang", json!({}), |j| j.job_timeout_seconds = 1).await;
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("j", JobStatus::Failed).await;
    assert_eq!(job.last_error.as_deref(), Some("Job timed out after 1s."));
    assert_eq!(job.current_retries, 1);
    assert_eq!(h.runner.calls_for("j").len(), 1, "timeouts are never retried");
    assert_eq!(h.dlq().await, ["j"]);
}

#[tokio::test(start_paused = true)]
async fn fatal_routing_and_validation_errors_skip_retries() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    h.enqueue("missing", "nope", json!({}), |_| {}).await;
    h.enqueue("no-runner", "other#success", json!({}), |_| {}).await;
    h.enqueue("no-handler", "rust#", json!({}), |_| {}).await;
    h.enqueue("bad-timeout", "success", json!({}), |j| j.job_timeout_seconds = 0).await;
    let _w = h.start(h.config(&[]));
    for (id, message) in [
        ("missing", "No handler registered for function 'nope'"),
        ("no-runner", "No runner configured for 'other'."),
        ("no-handler", "Handler name is missing"),
        ("bad-timeout", "Invalid job timeout: 0. Must be positive."),
    ] {
        let job = h.wait_for(id, JobStatus::Failed).await;
        assert_eq!((job.last_error.as_deref(), job.current_retries), (Some(message), 1), "{id}");
    }
    assert_eq!(h.runner.calls.lock().unwrap().len(), 1, "only the unknown handler reached the runner");
}

#[tokio::test(start_paused = true)]
async fn a_payload_over_the_limit_is_dead_lettered_without_running() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    // {"value":"xxxxxxxxxx"} is 22 bytes of JSON.
    h.enqueue("at-limit", "success", json!({"value": "x".repeat(10)}), |_| {}).await;
    h.enqueue("over", "success", json!({"value": "x".repeat(11)}), |_| {}).await;
    let mut config = h.config(&[]);
    config.max_payload_bytes = 22;
    let _w = h.start(config);
    assert_eq!(h.wait_for("at-limit", JobStatus::Completed).await.result, Some(json!("ok:xxxxxxxxxx")));
    let over = h.wait_for("over", JobStatus::Failed).await;
    assert_eq!(over.last_error.as_deref(), Some("Job payload is 23 bytes, over max_payload_bytes (22). Moved to DLQ."));
    assert_eq!(over.current_retries, 0, "a job never sent counts no attempt");
    assert_eq!(h.dlq().await, ["over"]);
    assert!(h.runner.calls_for("over").is_empty(), "the runner never sees it");
}

#[tokio::test(start_paused = true)]
async fn transport_errors_are_retried() {
    let h = Harness::new(ScriptedRunner::new(4).on("flaky", Behavior::Transport("runner connection closed")));
    h.enqueue("j", "flaky", json!({}), |j| j.max_retries = 2).await;
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("j", JobStatus::Failed).await;
    assert_eq!(job.last_error.as_deref(), Some("Runner transport error: runner connection closed"));
    assert_eq!(h.runner.calls_for("j").len(), 2);
}

#[tokio::test(start_paused = true)]
async fn the_handler_name_is_sent_without_its_runner_prefix() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    h.enqueue("j", "rust#success", json!({"value": "v"}), |_| {}).await;
    let _w = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Completed).await;
    assert_eq!(h.runner.calls_for("j")[0].function_name, "success");
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_job_sends_a_cancel_to_the_runner() {
    let h = Harness::new(ScriptedRunner::new(4).on("hang", Behavior::Hang));
    h.enqueue("j", "hang", json!({}), |j| j.job_timeout_seconds = 300).await;
    let _w = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Active).await;
    assert_eq!(h.store.cancel(&JobId::new("j")).await.unwrap(), CancelResult::CancelRequested);
    let job = h.wait_for("j", JobStatus::Cancelled).await;
    assert_eq!(job.current_retries, 0);
    let cancels = h.runner.cancels.lock().unwrap().clone();
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0, "j");
}

#[tokio::test(start_paused = true)]
async fn a_cancel_signal_stops_a_running_job_before_the_next_renewal() {
    let h = Harness::new(ScriptedRunner::new(4).on("hang", Behavior::Hang));
    h.enqueue("j", "hang", json!({}), |j| j.job_timeout_seconds = 7200).await;
    let mut config = h.config(&[]);
    // Renewal (the fallback) would notice the request only after an hour.
    config.renew_interval = Duration::from_secs(3600);
    config.lease_ttl = Duration::from_secs(7200);
    let _w = h.start(config);
    h.wait_for("j", JobStatus::Active).await;
    let asked = tokio::time::Instant::now();
    assert_eq!(h.store.cancel(&JobId::new("j")).await.unwrap(), CancelResult::CancelRequested);
    h.wait_for("j", JobStatus::Cancelled).await;
    let took = asked.elapsed();
    assert!(took < Duration::from_millis(100), "cancelled {took:?} after the request");
    assert_eq!(h.runner.cancels.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_puts_unfinished_jobs_back_on_their_queue() {
    let h = Harness::new(ScriptedRunner::new(4).on("hang", Behavior::Hang));
    h.enqueue("j", "hang", json!({}), |_| {}).await;
    let worker = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Active).await;
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.released, 1);
    let job = h.job("j").await;
    assert_eq!(job.status, Some(JobStatus::Pending));
    assert_eq!(job.last_error.as_deref(), Some("Job execution interrupted by worker shutdown. Re-queued."));
    assert_eq!(job.current_retries, 0, "an interrupted attempt is not counted");
    assert_eq!(h.store.queue_len(&QueueName::new("default")).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn shutdown_lets_short_jobs_finish_within_the_grace_period() {
    let h = Harness::new(ScriptedRunner::new(4).on("slow", Behavior::After(Duration::from_millis(500), success)));
    h.enqueue("j", "slow", json!({"value": "x"}), |_| {}).await;
    let worker = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Active).await;
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!((stats.completed, stats.released), (1, 0));
    assert_eq!(h.job("j").await.status, Some(JobStatus::Completed));
}

#[tokio::test(start_paused = true)]
async fn burst_mode_stops_when_no_work_is_left() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    for i in 0..5 {
        h.enqueue(&format!("j{i}"), "success", json!({}), |_| {}).await;
    }
    let mut config = h.config(&[]);
    config.burst = true;
    let stats = h.start(config).await.unwrap().unwrap();
    assert_eq!((stats.claimed, stats.completed), (5, 5));
}

#[tokio::test(start_paused = true)]
async fn paused_queues_are_skipped_until_resumed() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    let paused = QueueName::new("paused");
    h.store.pause(&paused).await.unwrap();
    h.enqueue("held", "success", json!({}), |j| j.queue = paused.clone()).await;
    h.enqueue("free", "success", json!({}), |j| j.queue = QueueName::new("open")).await;
    let mut config = h.config(&["paused", "open"]);
    config.burst = true;
    h.start(config).await.unwrap().unwrap();
    assert_eq!(h.job("free").await.status, Some(JobStatus::Completed));
    assert_eq!(h.job("held").await.status, Some(JobStatus::Pending));
    h.store.resume(&paused).await.unwrap();
    let mut config = h.config(&["paused", "open"]);
    config.burst = true;
    h.start(config).await.unwrap().unwrap();
    assert_eq!(h.job("held").await.status, Some(JobStatus::Completed));
}

#[tokio::test(start_paused = true)]
async fn claims_are_fair_across_queues() {
    let h = Harness::new(ScriptedRunner::new(2).on("slow", Behavior::After(Duration::from_secs(1), success)));
    for i in 0..6 {
        h.enqueue(&format!("a{i}"), "slow", json!({}), |j| j.queue = QueueName::new("a")).await;
        h.enqueue(&format!("b{i}"), "slow", json!({}), |j| j.queue = QueueName::new("b")).await;
    }
    let mut config = h.config(&["a", "b"]);
    config.burst = true;
    h.start(config).await.unwrap().unwrap();
    let calls: Vec<String> = h.runner.calls.lock().unwrap().iter().map(|c| c.job_id.clone()).collect();
    // Each pair of concurrent slots holds one job of each queue.
    for pair in calls.chunks(2) {
        let queues: Vec<char> = pair.iter().map(|id| id.chars().next().unwrap()).collect();
        assert!(queues.contains(&'a') && queues.contains(&'b'), "unfair claim order: {calls:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_new_job_is_picked_up_without_waiting_for_a_poll() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    let mut config = h.config(&[]);
    config.poll_interval = Duration::from_secs(30);
    let _w = h.start(config);
    // Let the worker go idle, then enqueue.
    tokio::time::sleep(Duration::from_secs(1)).await; // sleep-ok: paused (virtual) time
    let enqueued = tokio::time::Instant::now();
    h.enqueue("j", "success", json!({}), |_| {}).await;
    h.wait_for("j", JobStatus::Completed).await;
    assert!(enqueued.elapsed() < Duration::from_millis(100), "pickup took {:?}", enqueued.elapsed());
}

#[tokio::test(start_paused = true)]
async fn deferred_jobs_run_when_due() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    let due = h.clock.now() + TimeDelta::seconds(7);
    h.enqueue("later", "success", json!({}), |j| j.scheduled_time = due).await;
    let mut config = h.config(&[]);
    config.poll_interval = Duration::from_secs(60);
    let start = tokio::time::Instant::now();
    let _w = h.start(config);
    h.wait_for("later", JobStatus::Completed).await;
    assert!(start.elapsed() >= Duration::from_secs(7));
    assert!(start.elapsed() < Duration::from_secs(8), "the worker slept until the job was due: {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn jobs_of_a_dead_worker_are_recovered_within_a_bounded_time() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    h.enqueue("orphan", "success", json!({}), |j| j.job_timeout_seconds = 3600).await;
    // A worker claims the job and dies without renewing its lease.
    h.claim_as_dead_worker().await;
    let start = tokio::time::Instant::now();
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("orphan", JobStatus::Completed).await;
    assert!(start.elapsed() <= Duration::from_secs(35), "recovered after {:?}", start.elapsed());
    assert_eq!(job.current_retries, 1, "the lost attempt is counted");
    assert_eq!(h.runner.calls_for("orphan")[0].context.attempt, 2);
}

/// docs/RUNNER_PROTOCOL.md §4.1, §5.3, §7: the request carries the job's trace
/// and correlation context unchanged, and a deadline of dispatch time plus
/// the job's timeout.
#[tokio::test(start_paused = true)]
async fn the_request_carries_the_jobs_contexts_and_the_deadline_of_its_timeout() {
    let h = Harness::new(ScriptedRunner::new(4).on("success", Behavior::Reply(success)));
    let trace: std::collections::BTreeMap<String, String> = [
        ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ("tracestate".to_owned(), "vendor=opaque value".to_owned()),
    ]
    .into();
    let correlation: std::collections::BTreeMap<String, String> =
        [("tenant".to_owned(), "acme".to_owned()), ("request.id".to_owned(), "r 42".to_owned())].into();
    let (t, c) = (trace.clone(), correlation.clone());
    h.enqueue("j", "success", json!({}), move |j| {
        j.job_timeout_seconds = 45;
        j.trace_context = t;
        j.correlation_context = c;
    })
    .await;
    let before = h.clock.now();
    let _w = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Completed).await;
    let after = h.clock.now();
    let call = &h.runner.calls_for("j")[0];
    assert_eq!(call.context.trace_context.as_ref(), Some(&trace));
    assert_eq!(call.context.correlation_context.as_ref(), Some(&correlation));
    let deadline = chrono::DateTime::parse_from_rfc3339(call.context.deadline.as_deref().unwrap()).unwrap().to_utc();
    let timeout = TimeDelta::seconds(45);
    assert!(before + timeout <= deadline && deadline <= after + timeout, "{before} {deadline} {after}");
}

fn retry_without_delay(r: &rrq_protocol::ExecutionRequest) -> rrq_protocol::ExecutionOutcome {
    rrq_protocol::ExecutionOutcome::retry(r, "not yet", None)
}

#[tokio::test(start_paused = true)]
async fn retries_without_a_delay_back_off_and_end_in_the_dlq() {
    let h = Harness::new(ScriptedRunner::new(4).on("later", Behavior::Reply(retry_without_delay)));
    h.enqueue("j", "later", json!({}), |j| j.max_retries = 3).await;
    let start = tokio::time::Instant::now();
    let _w = h.start(h.config(&[]));
    let job = h.wait_for("j", JobStatus::Failed).await;
    assert_eq!((job.current_retries, job.last_error.as_deref()), (3, Some("not yet")));
    assert_eq!(h.dlq().await, ["j"]);
    assert_eq!(h.runner.calls_for("j").len(), 3);
    // The default backoff (5 s, then 10 s) stands in for the missing delay.
    assert!(start.elapsed() >= Duration::from_secs(15), "{:?}", start.elapsed());
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
}

/// Job defaults have one source, the store: a worker never holds a second
/// copy that could disagree with it. Here the store's DLQ is `graveyard`;
/// the job the claim itself quarantines (an unknown status) and the job
/// whose handler fails fatally must end in that same DLQ, and a worker told
/// no queue listens on the store's default queue.
#[tokio::test(start_paused = true)]
async fn every_outcome_uses_the_stores_job_defaults() {
    let clock = TokioClock::new();
    let defaults =
        JobDefaults { queue: QueueName::new("main"), dlq: DlqName::new("graveyard"), ..JobDefaults::default() };
    let store = Arc::new(MemoryStore::with_clock(clock.clone()).with_defaults(defaults));
    let h = Harness {
        store,
        clock,
        runner: ScriptedRunner::new(4).on("success", Behavior::Reply(success)),
        shutdown: CancellationToken::new(),
    };
    h.enqueue("bogus", "success", json!({}), |j| j.queue = QueueName::new("main")).await;
    let bogus = BTreeMap::from([("status".to_owned(), "BOGUS".to_owned())]);
    h.store.put_job_fields(&JobId::new("bogus"), &bogus).await.unwrap();
    h.enqueue("doomed", "nope", json!({}), |j| j.queue = QueueName::new("main")).await;
    let _w = h.start(h.config(&[]));
    h.wait_for("doomed", JobStatus::Failed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let graveyard = loop {
        let ids = h.store.dlq_ids(&DlqName::new("graveyard"), 0, 10).await.unwrap();
        if ids.len() == 2 || tokio::time::Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(5)).await; // sleep-ok: paused (virtual) time, deadline poll
    };
    let mut graveyard: Vec<String> = graveyard.into_iter().map(JobId::into_string).collect();
    graveyard.sort();
    assert_eq!(graveyard, ["bogus", "doomed"], "both end in the store's DLQ");
    assert!(h.dlq().await.is_empty(), "nothing in the reference's default DLQ");
}

/// The health record carries the worker's cumulative completed and failed
/// counts and its jobs in flight per queue, so a reader (the dashboard)
/// derives rates and per-queue active counts with no store call per job.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_carries_cumulative_counts_and_jobs_in_flight_per_queue() {
    let h = Harness::new(
        ScriptedRunner::new(4)
            .on("success", Behavior::Reply(success))
            .on("fail", Behavior::Reply(fail))
            .on("hang", Behavior::Hang),
    );
    h.enqueue("ok1", "success", json!({"value": "a"}), |_| {}).await;
    h.enqueue("ok2", "success", json!({"value": "b"}), |_| {}).await;
    h.enqueue("bad", "fail", json!({}), |j| j.max_retries = 1).await;
    h.enqueue("held", "hang", json!({}), |j| j.queue = QueueName::new("slow")).await;
    let mut config = h.config(&["default", "slow"]);
    config.heartbeat_interval = Duration::from_secs(1);
    let _w = h.start(config);
    h.wait_for("ok1", JobStatus::Completed).await;
    h.wait_for("ok2", JobStatus::Completed).await;
    h.wait_for("bad", JobStatus::Failed).await;
    h.wait_for("held", JobStatus::Active).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let worker = loop {
        let infos = h.store.worker_infos().await.unwrap();
        if let Some(w) = infos.into_iter().find(|w| w.completed_jobs == Some(2)) {
            break w;
        }
        assert!(tokio::time::Instant::now() < deadline, "no heartbeat counted the completions");
        tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: paused (virtual) time
    };
    assert_eq!(worker.failed_jobs, Some(1));
    assert_eq!(worker.active_jobs, Some(1));
    assert_eq!(
        worker.active_by_queue,
        Some(std::collections::BTreeMap::from([("rrq:queue:slow".to_owned(), 1)])),
        "the running job is counted under its queue, idle queues left out"
    );
}

/// A job of a dead worker whose lost attempt used its budget is moved to the
/// DLQ by this worker's recovery: the heartbeat counts it as failed too.
#[tokio::test(start_paused = true)]
async fn the_heartbeat_counts_jobs_its_recovery_dead_letters_as_failed() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    h.enqueue("orphan", "success", json!({}), |j| j.max_retries = 1).await;
    h.claim_as_dead_worker().await;
    let mut config = h.config(&[]);
    config.heartbeat_interval = Duration::from_secs(1);
    let _w = h.start(config);
    h.wait_for("orphan", JobStatus::Failed).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let infos = h.store.worker_infos().await.unwrap();
        if infos.iter().any(|w| w.failed_jobs == Some(1)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the recovered failure is never counted: {infos:?}");
        tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: paused (virtual) time
    }
    assert_eq!(h.dlq().await, ["orphan"]);
}
