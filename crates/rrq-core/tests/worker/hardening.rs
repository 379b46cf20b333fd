//! Reliability II: attempts identified by their lease, panics, starved
//! renewal, stopping runners before handing jobs back, claims at shutdown.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::TimeDelta;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{AdminStore, ClaimRequest, Clock, InspectStore, JobStatus, WorkerStore};
use serde_json::json;
use tokio::time::Instant;

use crate::Harness;
use crate::hooked::HookedStore;
use crate::support::{Behavior, ScriptedRunner, success};

/// Polls (in virtual time) until `cond` holds; fails at `deadline`.
async fn until(deadline: Instant, what: &str, mut cond: impl FnMut() -> bool) {
    while !cond() {
        assert!(Instant::now() < deadline, "{what}: not by the deadline");
        tokio::time::sleep(Duration::from_millis(5)).await; // sleep-ok: paused (virtual) time
    }
}

fn index_of(log: &[String], entry: &str) -> Option<usize> {
    log.iter().position(|e| e == entry)
}

#[tokio::test(start_paused = true)]
async fn an_old_attempts_end_does_not_drop_the_new_attempt_of_the_same_job() {
    let h = Harness::new(ScriptedRunner::new(4).on("slow", Behavior::After(Duration::from_secs(30), success)));
    h.enqueue("j", "slow", json!({"value": "v"}), |j| j.job_timeout_seconds = 300).await;
    // The old attempt takes a while to end once told its lease is lost.
    *h.runner.cancel_delay.lock().unwrap() = Duration::from_secs(20);
    let _w = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Active).await;
    tokio::time::sleep(Duration::from_secs(1)).await; // sleep-ok: paused (virtual) time
    // The lock vanishes (as if it had expired) and recovery re-queues the
    // job, ready at 16 s: this same worker claims it again while the old
    // attempt is still ending.
    h.store.delete_matching("rrq:lock:job:j", false).await.unwrap();
    let later = h.clock.now() + TimeDelta::seconds(15);
    let recovered = h.store.recover(later, 10).await.unwrap();
    assert_eq!(recovered.requeued, [JobId::new("j")]);
    let job = h.wait_for("j", JobStatus::Completed).await;
    let attempts: Vec<u32> = h.runner.calls_for("j").iter().map(|c| c.context.attempt).collect();
    assert_eq!(attempts, [1, 2], "the second attempt kept its lease and finished");
    assert_eq!(job.current_retries, 1);
}

#[tokio::test(start_paused = true)]
async fn a_job_with_an_absurd_timeout_does_not_pin_the_worker() {
    let h = Harness::new(ScriptedRunner::new(1).on("success", Behavior::Reply(success)));
    let early = h.clock.now() - TimeDelta::seconds(1);
    h.enqueue("poison", "success", json!({}), |j| j.scheduled_time = early).await;
    // As the Python client (or any producer that skips RRQ's enqueue
    // validation) writes it: Python's sys.maxsize.
    let absurd = BTreeMap::from([("job_timeout_seconds".to_owned(), (1_i64 << 62).to_string())]);
    h.store.put_job_fields(&JobId::new("poison"), &absurd).await.unwrap();
    for i in 0..10 {
        h.enqueue(&format!("good{i}"), "success", json!({}), |_| {}).await;
    }
    let _w = h.start(h.config(&[]));
    for i in 0..10 {
        h.wait_for(&format!("good{i}"), JobStatus::Completed).await;
    }
    let poison = h.job("poison").await;
    assert!(matches!(poison.status, Some(JobStatus::Completed | JobStatus::Failed)), "{poison:?}");
    let sent = h.runner.calls_for("poison")[0].context.deadline.clone().unwrap_or_default();
    assert!(sent.starts_with("2126-"), "the runner gets a bounded timeout and deadline: {sent}");
}

#[tokio::test(start_paused = true)]
async fn a_panicking_attempt_is_dead_lettered_and_frees_its_slot() {
    let h = Harness::new(ScriptedRunner::new(1).on("panic", Behavior::Panic).on("success", Behavior::Reply(success)));
    let early = h.clock.now() - TimeDelta::seconds(1);
    h.enqueue("bad", "panic", json!({}), |j| {
        j.max_retries = 5;
        j.scheduled_time = early;
    })
    .await;
    for i in 0..10 {
        h.enqueue(&format!("good{i}"), "success", json!({}), |_| {}).await;
    }
    let _w = h.start(h.config(&[]));
    for i in 0..10 {
        h.wait_for(&format!("good{i}"), JobStatus::Completed).await;
    }
    let bad = h.wait_for("bad", JobStatus::Failed).await;
    let reason = bad.last_error.unwrap_or_default();
    assert!(reason.contains("panicked") && reason.contains("scripted runner bug"), "{reason}");
    assert_eq!(bad.current_retries, 1, "the attempt is counted, so a panic cannot loop");
    assert_eq!(h.runner.calls_for("bad").len(), 1);
    assert_eq!(h.dlq().await, ["bad"]);
}

#[tokio::test(start_paused = true)]
async fn a_hung_store_cannot_keep_an_attempt_running_past_its_lease() {
    let h = Harness::new(ScriptedRunner::new(2).on("stubborn", Behavior::Stubborn));
    let store = HookedStore::new(h.store.clone(), h.runner.log.clone());
    h.enqueue("j", "stubborn", json!({}), |j| j.job_timeout_seconds = 300).await;
    let start = Instant::now();
    let _w = h.start_on(h.config(&[]), store.clone());
    h.wait_for("j", JobStatus::Active).await;
    // The first renewal (at 3 s) goes through; then every periodic command
    // hangs. The last confirmed renewal was sent at 3 s: the lock lapses at 18 s.
    let hang_at = start + Duration::from_millis(5_500);
    tokio::time::sleep_until(hang_at).await; // sleep-ok: paused (virtual) time
    assert!(store.log.lock().unwrap().iter().any(|e| e == "store:renew"), "renewed once");
    for op in ["claim", "heartbeat", "renew", "recover"] {
        store.hang(op);
    }
    let lapse = start + Duration::from_secs(18);
    until(lapse, "the runner is terminated before the lease lapses", || {
        store.log.lock().unwrap().iter().any(|e| e == "terminate:j")
    })
    .await;
    // Nothing is written for the job afterwards, however long it goes on.
    tokio::time::sleep(Duration::from_secs(60)).await; // sleep-ok: paused (virtual) time
    let log = store.log.lock().unwrap().clone();
    let stopped = index_of(&log, "terminate:j").unwrap();
    assert!(index_of(&log, "cancel:j").is_some_and(|c| c < stopped), "{log:?}");
    let late: Vec<&String> = log[stopped..].iter().filter(|e| e.starts_with("store:") && e.ends_with(":j")).collect();
    assert!(late.is_empty(), "written after the attempt was abandoned: {late:?}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_terminates_a_runner_that_ignores_cancel_before_releasing() {
    let h = Harness::new(ScriptedRunner::new(2).on("stubborn", Behavior::Stubborn));
    let store = HookedStore::new(h.store.clone(), h.runner.log.clone());
    h.enqueue("j", "stubborn", json!({}), |j| j.job_timeout_seconds = 300).await;
    let worker = h.start_on(h.config(&[]), store.clone());
    h.wait_for("j", JobStatus::Active).await;
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.released, 1);
    let log = store.log.lock().unwrap().clone();
    let cancel = index_of(&log, "cancel:j").expect("cancel sent");
    let terminate = index_of(&log, "terminate:j").expect("runner terminated");
    let release = index_of(&log, "store:release:j").expect("job released");
    assert!(cancel < terminate && terminate < release, "{log:?}");
    let job = h.job("j").await;
    assert_eq!((job.status, job.current_retries), (Some(JobStatus::Pending), 0));
}

#[tokio::test(start_paused = true)]
async fn a_success_reply_to_the_shutdown_cancel_is_recorded() {
    let h = Harness::new(ScriptedRunner::new(2).on("finisher", Behavior::OnCancel(success)));
    h.enqueue("j", "finisher", json!({"value": "late"}), |j| j.job_timeout_seconds = 300).await;
    let worker = h.start(h.config(&[]));
    h.wait_for("j", JobStatus::Active).await;
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!((stats.completed, stats.released), (1, 0));
    let job = h.job("j").await;
    assert_eq!((job.status, job.result), (Some(JobStatus::Completed), Some(json!("ok:late"))));
    let log = h.runner.log.lock().unwrap().clone();
    assert!(!log.iter().any(|e| e == "terminate:j"), "the runner answered: no need to kill it: {log:?}");
}

#[tokio::test(start_paused = true)]
async fn replies_at_the_end_of_the_grace_period_are_recorded() {
    let h = Harness::new(ScriptedRunner::new(8).on("slow", Behavior::After(Duration::from_secs(1), success)));
    for i in 0..8 {
        h.enqueue(&format!("j{i}"), "slow", json!({}), |_| {}).await;
    }
    let worker = h.start(h.config(&[]));
    for i in 0..8 {
        h.wait_for(&format!("j{i}"), JobStatus::Active).await;
    }
    // The grace period (1 s) ends at the very instant the replies arrive.
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!((stats.completed, stats.released), (8, 0));
}

#[tokio::test(start_paused = true)]
async fn a_claim_in_flight_at_shutdown_is_released_at_once() {
    let h = Harness::new(ScriptedRunner::new(2).on("success", Behavior::Reply(success)));
    let store = HookedStore::new(h.store.clone(), h.runner.log.clone());
    *store.claim_gate.lock().unwrap() = Some(h.shutdown.clone());
    h.enqueue("j", "success", json!({}), |j| j.max_retries = 1).await;
    let worker = h.start_on(h.config(&[]), store.clone());
    // The claim ran (the job is ACTIVE) but its answer waits for shutdown.
    h.wait_for("j", JobStatus::Active).await;
    h.shutdown.cancel();
    let stats = worker.await.unwrap().unwrap();
    assert_eq!(stats.released, 1);
    let job = h.job("j").await;
    assert_eq!((job.status, job.current_retries), (Some(JobStatus::Pending), 0), "{job:?}");
    assert_eq!(h.store.queue_len(&QueueName::new("default")).await.unwrap(), 1);
    assert!(h.runner.calls_for("j").is_empty(), "a job claimed at shutdown is not started");
}

#[tokio::test(start_paused = true)]
async fn recovery_keeps_going_while_passes_come_back_full() {
    let h = Harness::new(ScriptedRunner::new(1000).on("success", Behavior::Reply(success)));
    for i in 0..600 {
        h.enqueue(&format!("o{i}"), "success", json!({}), |j| j.job_timeout_seconds = 3600).await;
    }
    let claimed = h
        .store
        .claim(ClaimRequest {
            queue: QueueName::new("default"),
            worker_id: "rrq_worker_dead_0000".into(),
            max: 600,
            now: h.clock.now(),
            lease_ttl: Duration::from_secs(15),
            max_payload_bytes: usize::MAX,
        })
        .await
        .unwrap();
    assert_eq!(claimed.jobs.len(), 600);
    let start = Instant::now();
    let _w = h.start(h.config(&[]));
    for i in 0..600 {
        let job = h.wait_for(&format!("o{i}"), JobStatus::Completed).await;
        assert_eq!(job.current_retries, 1);
    }
    assert!(start.elapsed() <= Duration::from_secs(35), "recovered after {:?}", start.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_cron_tick_hung_in_the_store_does_not_hold_up_shutdown() {
    let h = Harness::new(ScriptedRunner::new(1).on("tick", Behavior::Reply(success)));
    let store = HookedStore::new(h.store.clone(), h.runner.log.clone());
    for op in ["cron_tick", "unique_lock_ttl", "enqueue", "record_cron_tick"] {
        store.hang(op);
    }
    let mut config = h.config(&[]);
    let every_second =
        rrq_core::CronJob::new(rrq_core::CronEntry::new("rrq.cron_jobs[0]", "tick", "* * * * * *"), h.clock.now())
            .unwrap();
    config.cron = vec![every_second];
    let start = Instant::now();
    let worker = h.start_on(config, store.clone());
    until(start + Duration::from_secs(5), "a tick reached the hung store", || {
        store.log.lock().unwrap().iter().any(|e| e.starts_with("hang:"))
    })
    .await;
    let asked = Instant::now();
    h.shutdown.cancel();
    let stopped = tokio::time::timeout(Duration::from_secs(60), worker).await;
    assert!(stopped.is_ok(), "the worker waited on the hung cron tick instead of stopping");
    assert!(asked.elapsed() < Duration::from_secs(2), "stopped {:?} after the request", asked.elapsed());
}
