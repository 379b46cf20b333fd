//! `rrq job show | list | cancel | retry | replay | trace`.

use chrono::{TimeDelta, Utc};
use rrq_producer::EnqueueOptions;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Fence, InspectStore, JobDefaults, WorkerStore};
use serde_json::json;

use crate::{Env, is_rfc3339};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_show_prints_fields_raw_and_typed() {
    let env = Env::new().await;
    let id = env.enqueue("send_email", json!({"to": "a@example.com", "n": 3}), "emails").await;

    let run = env.rrq(&["job", "show", id.as_str()]).ok();
    assert_eq!(run.stdout.lines().next(), Some(format!("Job {id}").as_str()));
    assert_eq!(run.cells("function_name"), ["function_name", "send_email"]);
    assert_eq!(run.cells("status"), ["status", "PENDING"]);
    assert_eq!(run.cells("queue_name"), ["queue_name", "rrq:queue:emails"]);
    assert!(run.line("enqueue_time").ends_with("ago)"), "times also read relatively: {}", run.stdout);

    let typed = env.rrq(&["job", "show", id.as_str(), "--json"]).ok().json();
    assert_eq!(typed["job_params"], json!({"to": "a@example.com", "n": 3}));
    assert_eq!(typed["current_retries"], 0);
    assert_eq!(typed["status"], "PENDING");
    assert!(is_rfc3339(&typed["enqueue_time"]));

    // `get` is an alias; --raw keeps every field the string Redis holds.
    let raw = env.rrq(&["job", "get", id.as_str(), "--raw"]).ok().json();
    let params: serde_json::Value = serde_json::from_str(raw["job_params"].as_str().expect("a string")).unwrap();
    assert_eq!(params, json!({"to": "a@example.com", "n": 3}));
    assert_eq!(raw["current_retries"], "0");

    let missing = env.rrq(&["job", "show", "no-such-job"]).code(5);
    assert!(missing.stderr.contains("Job 'no-such-job' not found"), "{}", missing.stderr);
    assert!(missing.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_list_filters_and_sorts_newest_first() {
    let env = Env::new().await;
    let now = Utc::now();
    let mut ids = Vec::new();
    for (age, function, queue) in [(30, "alpha", "one"), (20, "beta", "two"), (10, "alpha", "two")] {
        let options =
            EnqueueOptions { enqueue_time: Some(now - TimeDelta::seconds(age)), ..EnqueueOptions::queue(queue) };
        ids.push(env.producer.enqueue(function, json!({}), options).await.unwrap());
    }
    env.claim("one", 1).await; // the oldest job becomes ACTIVE
    let listed = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["job", "list", "--json"];
        all.extend(args);
        let v = env.rrq(&all).ok().json();
        v.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    let id = |i: usize| ids[i].to_string();
    assert_eq!(listed(&[]), [id(2), id(1), id(0)], "newest first");
    assert_eq!(listed(&["--function", "alpha"]), [id(2), id(0)]);
    assert_eq!(listed(&["--queue", "two"]), [id(2), id(1)]);
    assert_eq!(listed(&["--queue", "rrq:queue:two", "--function", "beta"]), [id(1)]);
    assert_eq!(listed(&["--status", "active"]), [id(0)], "status filters ignore case");
    assert_eq!(listed(&["--status", "PENDING", "--limit", "1"]), [id(2)]);
    assert!(listed(&["--function", "gamma"]).is_empty());

    let run = env.rrq(&["job", "list", "--limit", "2"]).ok();
    assert_eq!(run.cells("Job ID"), ["Job", "ID", "Function", "Queue", "Status", "Enqueued", "Duration"]);
    let newest = run.cells(&id(2));
    assert_eq!(&newest[..4], [id(2).as_str(), "alpha", "rrq:queue:two", "PENDING"]);
    assert_eq!(&newest[5..], ["ago", "N/A"], "relative enqueue time, no duration yet: {}", run.stdout);
    assert_eq!(run.line("Showing"), "Showing the 2 newest of 3 matching jobs; use --limit 3 to see all");

    let bad = env.rrq(&["job", "list", "--status", "done"]).code(2);
    assert!(bad.stderr.contains("unknown status 'done'"), "{}", bad.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_cancel_stops_waiting_and_running_jobs() {
    let env = Env::new().await;
    let waiting = env.enqueue("slow", json!({}), "default").await;
    let run = env.rrq(&["job", "cancel", waiting.as_str()]).ok();
    assert_eq!(run.stdout.trim(), format!("Job '{waiting}' cancelled successfully"));
    assert_eq!(env.field(&waiting, "status").await.as_deref(), Some("CANCELLED"));
    assert_eq!(env.store.queue_len(&QueueName::new("default")).await.unwrap(), 0);

    let again = env.rrq(&["job", "cancel", waiting.as_str()]).code(1);
    assert!(again.stderr.contains("cannot be cancelled: its status is CANCELLED"), "{}", again.stderr);

    let running = env.enqueue("slow", json!({}), "default").await;
    env.claim("default", 1).await;
    let run = env.rrq(&["job", "cancel", running.as_str(), "--json"]).ok();
    assert_eq!(run.json(), json!({"job_id": running.as_str(), "result": "cancel_requested"}));
    assert_eq!(env.field(&running, "cancel_requested").await.as_deref(), Some("1"));

    env.rrq(&["job", "cancel", "ghost"]).code(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_retry_requeues_a_failed_job_to_its_own_queue() {
    let env = Env::new().await;
    let id = env.failed("send_email", "emails", "smtp down").await;
    assert_eq!(env.field(&id, "status").await.as_deref(), Some("FAILED"));

    let run = env.rrq(&["job", "retry", id.as_str()]).ok();
    assert_eq!(run.stdout.trim(), format!("Job '{id}' requeued from rrq:dlq:default to rrq:queue:emails"));
    assert_eq!(env.field(&id, "status").await.as_deref(), Some("PENDING"));
    assert_eq!(env.store.queue_len(&QueueName::new("emails")).await.unwrap(), 1);
    assert_eq!(env.store.dlq_len(&JobDefaults::default().dlq).await.unwrap(), 0);

    let again = env.rrq(&["job", "retry", id.as_str()]).code(1);
    assert!(again.stderr.contains("is PENDING; only FAILED jobs can be retried"), "{}", again.stderr);
    env.rrq(&["job", "retry", "ghost"]).code(5);

    let other = env.failed("send_email", "outbox", "again").await;
    let json = env.rrq(&["job", "retry", other.as_str(), "--json"]).ok().json();
    assert_eq!(json, json!({"job_id": other.as_str(), "dlq": "rrq:dlq:default", "queue": "rrq:queue:outbox"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_replay_enqueues_a_copy() {
    let env = Env::new().await;
    let original = env.enqueue("resize", json!({"w": 640}), "images").await;

    let run = env.rrq(&["job", "replay", original.as_str()]).ok();
    let copy = JobId::new(run.stdout.trim().strip_prefix("Job replayed with new ID: ").expect(&run.stdout));
    assert_ne!(copy, original);
    let job = env.store.job(&copy).await.unwrap().unwrap().unwrap();
    assert_eq!((job.function_name.as_str(), job.params.get("w")), ("resize", Some(&json!(640))));
    assert_eq!(job.queue_name, Some(QueueName::new("images")));

    let json = env.rrq(&["job", "replay", original.as_str(), "--queue", "retries", "--json"]).ok().json();
    assert_eq!(json["job_id"], original.as_str());
    assert_eq!(json["queue"], "rrq:queue:retries");
    let copy = JobId::new(json["new_job_id"].as_str().unwrap());
    assert_eq!(env.field(&copy, "queue_name").await.as_deref(), Some("rrq:queue:retries"));
    assert_eq!(env.store.queue_len(&QueueName::new("retries")).await.unwrap(), 1);

    env.rrq(&["job", "replay", "ghost"]).code(5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_trace_shows_the_timeline() {
    let env = Env::new().await;
    let id = env.enqueue("crunch", json!({}), "default").await;
    let lease = env.claim("default", 1).await.pop().unwrap();
    let done = env.store.complete(&lease, &json!({"ok": true}), Utc::now()).await;
    assert_eq!(done.unwrap(), Fence::Applied);

    let run = env.rrq(&["job", "trace", id.as_str()]).ok();
    assert_eq!(run.stdout.lines().next(), Some(format!("Job trace for {id}").as_str()));
    assert_eq!(run.cells("Event"), ["Event", "Time", "Since", "previous", "Details"]);
    assert!(run.line("Enqueued").ends_with("Function: crunch"), "{}", run.stdout);
    assert!(run.line("Started").ends_with("Worker: cli-test-worker"), "{}", run.stdout);
    assert!(run.line("Finished").ends_with("Status: COMPLETED"), "{}", run.stdout);
    assert!(run.line("Finished").contains(" +"), "the step from the start is shown: {}", run.stdout);
    assert!(run.line("Total Duration:").len() > "Total Duration: ".len());

    let trace = env.rrq(&["job", "trace", id.as_str(), "--json"]).ok().json();
    let events: Vec<&str> = trace["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["Enqueued", "Started", "Finished"]);
    assert!(trace["events"].as_array().unwrap().iter().all(|e| is_rfc3339(&e["time"])));
    assert_eq!(trace["events"][0]["since_previous_seconds"], serde_json::Value::Null);
    assert!(trace["total_duration_seconds"].as_f64().is_some_and(|d| d >= 0.0));
    assert_eq!(trace["status"], "COMPLETED");

    env.rrq(&["job", "trace", "ghost"]).code(5);
}
