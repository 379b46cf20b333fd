//! Poison input: job hashes no producer of ours would write, injected
//! straight into Redis, and configuration files that cannot work. Each bad
//! job ends in the DLQ with a reason naming the problem while the worker
//! keeps running the good ones; a bad configuration stops start-up with the
//! key or line named.

use std::time::Duration;

use rrq_producer::Producer;
use rrq_protocol::{DlqName, JobId};
use rrq_store::{Clock, InspectStore, SystemClock, format_timestamp, keys};
use rrq_test_support::TestRedis;
use serde_json::json;

use super::harness::{Config, Orchestrator, Reply, redis, redis_with, statuses, store, tally, wait_all_completed};
use crate::report;
use crate::support::{TempDir, run_rrq};

/// The fields of a well-formed job, as the reference producer writes them.
fn good_fields(id: &str) -> Vec<(String, String)> {
    [
        ("id", id),
        ("function_name", "echo"),
        ("job_params", r#"{"ok":true}"#),
        ("enqueue_time", &format_timestamp(SystemClock.now())),
        ("status", "PENDING"),
        ("current_retries", "0"),
        ("max_retries", "3"),
        ("job_timeout_seconds", "10"),
        ("result_ttl_seconds", "3600"),
        ("queue_name", "rrq:queue:default"),
        ("result", "null"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// One bad job: a good hash with one field replaced, and what its DLQ reason
/// must name.
struct Poison<'a> {
    id: &'a str,
    field: &'a str,
    value: &'a str,
    reason: &'a str,
}

/// Writes a job hash with `overrides` applied and queues its id, ready now.
fn inject(port: u16, id: &str, overrides: &[(&str, &str)]) {
    let mut fields = good_fields(id);
    for (k, v) in overrides {
        match fields.iter_mut().find(|(name, _)| name == k) {
            Some(field) => field.1 = (*v).to_owned(),
            None => fields.push(((*k).to_owned(), (*v).to_owned())),
        }
    }
    let key = keys::job(&JobId::new(id));
    let mut args: Vec<&[u8]> = vec![b"HSET", key.as_bytes()];
    for (k, v) in &fields {
        args.push(k.as_bytes());
        args.push(v.as_bytes());
    }
    let reply = redis_with(port, &args, Duration::from_secs(10)).expect("HSET");
    assert!(matches!(reply, Reply::Int(_)), "{reply:?}");
    queue(port, id);
}

fn queue(port: u16, id: &str) {
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis();
    assert_eq!(redis(port, &["ZADD", "rrq:queue:default", &now_ms.to_string(), id]), Reply::Int(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_jobs_are_quarantined_in_the_dlq_and_the_worker_carries_on() {
    const T: &str = "poison";
    let redis_server = TestRedis::private();
    let port = redis_server.port();
    let dir = TempDir::new("fault-poison");
    let mut config = Config::rust(redis_server.url(), 1, 4);
    config.rrq = "max_payload_bytes = 65536".into();
    let path = config.write(&dir, "rrq.toml");

    let huge = json!({"blob": "x".repeat(200_000)}).to_string();
    let poisons = [
        Poison { id: "p-json", field: "job_params", value: "{not json", reason: "job_params" },
        Poison { id: "p-timeout", field: "job_timeout_seconds", value: "-5", reason: "Invalid job timeout: -5" },
        Poison { id: "p-status", field: "status", value: "BANANA", reason: "BANANA" },
        Poison { id: "p-time", field: "enqueue_time", value: "yesterday", reason: "enqueue_time" },
        Poison { id: "p-huge", field: "job_params", value: &huge, reason: "max_payload_bytes" },
        Poison {
            id: "p-handler",
            field: "function_name",
            value: "no_such_handler",
            reason: "No handler registered for function 'no_such_handler'",
        },
    ];
    let good: Vec<JobId> = (0..20).map(|i| JobId::new(format!("good-{i}"))).collect();
    for (i, p) in poisons.iter().enumerate() {
        inject(port, good[i].as_str(), &[]);
        inject(port, p.id, &[(p.field, p.value)]);
    }
    // A job key of the wrong type.
    assert_eq!(redis(port, &["SET", "rrq:job:p-type", "a plain string"]), Reply::Status("OK".into()));
    queue(port, "p-type");
    for id in &good[poisons.len()..] {
        inject(port, id.as_str(), &[]);
    }
    let mut expected: Vec<(String, String)> = poisons.iter().map(|p| (p.id.to_owned(), p.reason.to_owned())).collect();
    expected.push(("p-type".into(), "job key had type string".into()));
    report!(
        T,
        "injected: {} poison jobs {:?} among {} good ones",
        expected.len(),
        expected.iter().map(|e| &e.0).collect::<Vec<_>>(),
        good.len()
    );

    let mut worker = Orchestrator::start(&dir, &path, "worker");
    let store = store(redis_server.url()).await;
    wait_all_completed(&store, &good, Duration::from_secs(30)).await;
    let dlq = DlqName::new("default");
    let poison_ids: Vec<JobId> = expected.iter().map(|(id, _)| JobId::new(id)).collect();
    super::harness::poll_until(Duration::from_secs(20), "every poison job in the DLQ", async || {
        (store.dlq_len(&dlq).await.ok()? >= poison_ids.len() as u64).then_some(())
    })
    .await;
    let fields = store.job_fields_batch(&poison_ids).await.unwrap();
    let mut wrong = Vec::new();
    for ((id, reason), f) in expected.iter().zip(&fields) {
        let f = f.as_ref().expect("the poison job's hash exists");
        let last_error = f.get("last_error").cloned().unwrap_or_default();
        report!(T, "observed: {id} -> {} {last_error:?}", f.get("status").map_or("?", String::as_str));
        if f.get("status").map(String::as_str) != Some("FAILED") || !last_error.contains(reason.as_str()) {
            wrong.push(format!("{id}: {f:?}"));
        }
    }
    let mut in_dlq: Vec<JobId> = store.dlq_ids(&dlq, 0, 100).await.unwrap();
    in_dlq.sort();
    let mut want = poison_ids.clone();
    want.sort();
    let good_states = tally(&statuses(&store, &good).await.unwrap());
    report!(T, "observed: good jobs {good_states:?}; DLQ holds {} ids; worker running", in_dlq.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(in_dlq, want, "exactly the poison jobs are dead-lettered");
    assert_eq!(
        redis(port, &["GET", "rrq:quarantine:p-type"]).text().as_deref(),
        Some("a plain string"),
        "the foreign value is kept"
    );
    assert!(worker.is_running(), "no poison stops the worker");
    // And it still takes new work.
    let producer = Producer::new(redis_server.url()).await.unwrap();
    let after = producer.enqueue("echo", json!({}), Default::default()).await.unwrap();
    assert!(producer.wait_for_completion(&after, Duration::from_secs(20)).await.unwrap().is_some());
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_cron_schedule_stops_start_up_naming_the_entry() {
    const T: &str = "poison_cron";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-cron");
    let text = Config::rust(redis.url(), 1, 1).render();
    let text = format!("{text}\n[[rrq.cron_jobs]]\nfunction_name = \"echo\"\nschedule = \"61 * * * *\"\n");
    let path = dir.write("rrq.toml", &text);
    let out = run_rrq(&["worker", "run", "--config", path.to_str().unwrap()], &[], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    report!(T, "injected: schedule \"61 * * * *\"; observed exit {:?}: {}", out.status.code(), stderr.trim());
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("rrq.cron_jobs[0]"), "the entry is named: {stderr}");
    assert!(stderr.contains("61 * * * *"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_toml_stops_start_up_naming_the_line() {
    const T: &str = "poison_toml";
    let redis = TestRedis::private();
    let dir = TempDir::new("fault-toml");
    let text =
        Config::rust(redis.url(), 1, 1).render().replacen("default_max_retries = 5", "default_max_retries = = 5", 1);
    let line = text.lines().position(|l| l.contains("= = 5")).unwrap() + 1;
    let path = dir.write("rrq.toml", &text);
    let out = run_rrq(&["worker", "run", "--config", path.to_str().unwrap()], &[], Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&out.stderr);
    report!(
        T,
        "injected: `default_max_retries = = 5` on line {line}; observed exit {:?}: {}",
        out.status.code(),
        stderr.trim()
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&format!("line {line}")), "the line is named: {stderr}");
}
