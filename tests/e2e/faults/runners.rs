//! Runner faults: a runner SIGKILLed mid-job, a runner that hangs past the job
//! timeout, and a runner that breaks the protocol in every way a frame can
//! break. The worker survives each, retries the job, and replaces or
//! reconnects to the process.

use std::time::{Duration, Instant};

use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::{DlqName, JobId};
use rrq_store::InspectStore;
use rrq_test_support::TestRedis;
use serde_json::json;

use super::harness::{Config, Orchestrator, is_alive, poll_until, send_signal, store};
use crate::report;
use crate::support::TempDir;

/// The fake runner's source.
pub const FAKE_RUNNER: &str = include_str!("fake_runner.py");

fn with_id(id: &str) -> EnqueueOptions {
    EnqueueOptions { job_id: Some(id.to_owned()), ..Default::default() }
}

/// A worker whose only runner is the fake runner (one process, one request
/// at a time).
fn fake_config(redis: &TestRedis, dir: &TempDir, runner: &str) -> std::path::PathBuf {
    let script = dir.write("fake_runner.py", FAKE_RUNNER);
    let mut config = Config::rust(redis.url(), 1, 1);
    config.cmd = vec!["python3".into(), script.to_str().unwrap().into()];
    config.runner = runner.to_owned();
    config.write(dir, "rrq.toml")
}

/// The `{job_id, attempt, pid}` lines the fake's `slow` and `hang` handlers wrote.
fn starts(marker: &std::path::Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(marker).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("a marker line")).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_runner_killed_mid_job_is_replaced_and_the_job_retried() {
    const T: &str = "runner_sigkill";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-runner-kill");
    let marker = dir.path().join("starts.jsonl");
    let config = fake_config(&redis, &dir, "");
    let producer = Producer::new(redis.url()).await.unwrap();
    let mut worker = Orchestrator::start(&dir, &config, "worker");
    let old = worker.wait_runners(1, Duration::from_secs(20)).await[0];

    let id = producer.enqueue("slow", json!({"marker": marker, "seconds": 3}), with_id("victim")).await.unwrap();
    poll_until(Duration::from_secs(10), "the runner to start the job", async || {
        (!starts(&marker).is_empty()).then_some(())
    })
    .await;
    send_signal(old, "KILL");
    let killed = Instant::now();
    report!(T, "injected: SIGKILL of runner pid {old} while it ran job {id}");

    let done = producer.wait_for_completion(&id, Duration::from_secs(30)).await.unwrap().expect("the job finishes");
    let recovered_in = killed.elapsed();
    let job = producer.job(&id).await.unwrap().unwrap();
    let new = worker.wait_runners(1, Duration::from_secs(5)).await[0];
    let starts = starts(&marker);
    report!(
        T,
        "observed: job {:?} {:.2}s after the kill, on attempt {}, last_error {:?}; runner pid {old} -> {new}; lost 0, duplicated 0",
        done.status,
        recovered_in.as_secs_f64(),
        job.attempt(),
        job.last_error,
    );
    assert_eq!(done.status, Some(JobStatus::Completed));
    assert_eq!(done.result, Some(json!({"handler": "slow", "attempt": 2})), "the killed attempt counts");
    assert!(job.last_error.as_deref().unwrap_or_default().starts_with("Runner transport error:"), "{job:?}");
    assert_ne!(old, new, "a new runner process replaced the killed one");
    assert!(!is_alive(old));
    let attempts: Vec<(u64, u64)> =
        starts.iter().map(|s| (s["attempt"].as_u64().unwrap(), s["pid"].as_u64().unwrap())).collect();
    assert_eq!(attempts, [(1, u64::from(old)), (2, u64::from(new))], "one start per attempt, on each process");
    assert!(worker.is_running(), "the worker survives");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hanging_runner_times_out_and_its_process_is_replaced() {
    const T: &str = "runner_hang";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-runner-hang");
    let marker = dir.path().join("starts.jsonl");
    let config = fake_config(&redis, &dir, "");
    let producer = Producer::new(redis.url()).await.unwrap();
    let mut worker = Orchestrator::start(&dir, &config, "worker");
    let old = worker.wait_runners(1, Duration::from_secs(20)).await[0];

    let options = EnqueueOptions { job_timeout_seconds: Some(1), max_retries: Some(3), ..with_id("hang") };
    let hang = producer.enqueue("hang", json!({"marker": marker}), options).await.unwrap();
    report!(T, "injected: job {hang} never answered by runner pid {old}, with a 1 s job timeout");
    let started = Instant::now();
    let done = producer.wait_for_completion(&hang, Duration::from_secs(20)).await.unwrap().expect("the job ends");
    let timed_out_in = started.elapsed();
    let replaced_in = super::harness::wait_all_dead(&[old], Duration::from_secs(10)).await;
    // The next job runs on a fresh process.
    let next = producer.enqueue("argv", json!({}), with_id("after")).await.unwrap();
    let after = producer.wait_for_completion(&next, Duration::from_secs(20)).await.unwrap().expect("the next job ends");
    let new = worker.wait_runners(1, Duration::from_secs(5)).await[0];
    report!(
        T,
        "observed: {:?} {:?} after {:.2}s; runner pid {old} gone {:.2}s later, replaced by {new}; next job {:?}",
        done.status,
        done.last_error,
        timed_out_in.as_secs_f64(),
        replaced_in.as_secs_f64(),
        after.status
    );
    assert_eq!(done.status, Some(JobStatus::Failed));
    assert_eq!(done.last_error.as_deref(), Some("Job timed out after 1s."));
    assert_eq!(starts(&marker).len(), 1, "a timeout is not retried");
    assert_eq!(after.status, Some(JobStatus::Completed));
    assert_ne!(old, new, "the hung process was replaced");
    let dlq = store(redis.url()).await.dlq_ids(&DlqName::new("default"), 0, 10).await.unwrap();
    assert_eq!(dlq, vec![hang]);
    assert!(worker.is_running());
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}

const FAULTS: [&str; 5] = ["garbage", "oversize", "truncated", "wrong_id", "close"];

#[tokio::test(flavor = "multi_thread")]
async fn protocol_faults_are_transport_errors_the_worker_retries() {
    const T: &str = "runner_protocol";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-protocol");
    // A response that never comes (a wrong request_id) ends as a transport
    // error after this long instead of at the job timeout.
    let path = fake_config(&redis, &dir, "response_timeout_seconds = 1");
    let producer = Producer::new(redis.url()).await.unwrap();
    let mut worker = Orchestrator::start(&dir, &path, "worker");
    let pid = worker.wait_runners(1, Duration::from_secs(20)).await[0];

    // Each fault once, then good answers; and each fault on every attempt.
    let mut healed = Vec::new();
    let mut doomed = Vec::new();
    for fault in FAULTS {
        let options = EnqueueOptions { max_retries: Some(3), ..with_id(&format!("heal-{fault}")) };
        healed.push(producer.enqueue(fault, json!({"bad_attempts": 1}), options).await.unwrap());
        let options = EnqueueOptions { max_retries: Some(2), ..with_id(&format!("doom-{fault}")) };
        doomed.push(producer.enqueue(fault, json!({"bad_attempts": 99}), options).await.unwrap());
    }
    report!(T, "injected: {FAULTS:?} from fake runner pid {pid}, once (max 3 attempts) and always (max 2 attempts)");
    let started = Instant::now();
    for (fault, id) in FAULTS.iter().zip(&healed) {
        let done = producer.wait_for_completion(id, Duration::from_secs(60)).await.unwrap().expect("the job ends");
        let job = producer.job(id).await.unwrap().unwrap();
        report!(
            T,
            "observed: {fault} once -> {:?} on attempt {}, last_error {:?}",
            done.status,
            job.attempt(),
            done.last_error
        );
        assert_eq!(done.status, Some(JobStatus::Completed), "{fault}: {done:?}");
        assert_eq!(done.result, Some(json!({"handler": fault, "attempt": 2})), "{fault}");
        assert!(done.last_error.as_deref().unwrap_or_default().starts_with("Runner transport error: "), "{done:?}");
    }
    let store = store(redis.url()).await;
    for (fault, id) in FAULTS.iter().zip(&doomed) {
        let done = producer.wait_for_completion(id, Duration::from_secs(60)).await.unwrap().expect("the job ends");
        report!(T, "observed: {fault} always -> {:?}, last_error {:?}", done.status, done.last_error);
        assert_eq!(done.status, Some(JobStatus::Failed), "{fault}: {done:?}");
        assert!(done.last_error.as_deref().unwrap_or_default().starts_with("Runner transport error: "), "{done:?}");
    }
    let mut dlq: Vec<JobId> = store.dlq_ids(&DlqName::new("default"), 0, 100).await.unwrap();
    dlq.sort();
    let mut expected = doomed.clone();
    expected.sort();
    assert_eq!(dlq, expected, "exactly the always-faulty jobs are in the DLQ");
    let ok = producer.enqueue("argv", json!({}), with_id("after")).await.unwrap();
    let after = producer.wait_for_completion(&ok, Duration::from_secs(20)).await.unwrap().expect("a good job ends");
    assert_eq!(after.status, Some(JobStatus::Completed));
    report!(T, "observed: all faults handled in {:.2}s; the worker still runs jobs", started.elapsed().as_secs_f64());
    assert!(worker.is_running(), "the worker process survives every fault");
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}
