//! `rrq job enqueue` without a worker (waiting on a real worker is covered
//! end to end in tests/e2e/operator.rs).

use rrq_protocol::{JobId, QueueName};
use rrq_store::parse_timestamp;
use rrq_store::prelude::*;
use serde_json::{Value, json};

use crate::Env;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_prints_the_id_and_stores_function_params_and_queue() {
    let env = Env::new().await;
    let run = env.rrq(&["job", "enqueue", "send_email", "--params", r#"{"to":"a@b.c","n":2}"#, "--queue", "mail"]);
    let run = run.ok();
    let id = JobId::new(run.stdout.trim());
    assert_eq!(run.stdout.lines().count(), 1, "only the id, for scripts: {}", run.stdout);
    assert_eq!(env.field(&id, "function_name").await.as_deref(), Some("send_email"));
    let params: Value = serde_json::from_str(&env.field(&id, "job_params").await.unwrap()).unwrap();
    assert_eq!(params, json!({"to": "a@b.c", "n": 2}));
    assert_eq!(env.store.queue_entries(&QueueName::new("mail"), 0, 10).await.unwrap()[0].0, id);

    // No --params means none; --defer schedules; --json reports.
    let out = env.rrq(&["job", "enqueue", "report", "--defer", "90", "--json"]).ok().json();
    assert_eq!(out["function"], "report");
    assert_eq!(out["queue"], "rrq:queue:default");
    assert_eq!(out["params"], json!({}));
    assert_eq!(out["defer_seconds"], 90.0);
    assert_eq!(out["created"], true);
    let id = JobId::new(out["job_id"].as_str().unwrap());
    let scheduled = parse_timestamp(&env.field(&id, "next_scheduled_run_time").await.unwrap()).unwrap();
    let enqueued = parse_timestamp(&env.field(&id, "enqueue_time").await.unwrap()).unwrap();
    assert_eq!((scheduled - enqueued).num_seconds(), 90, "deferred by --defer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_unique_key_returns_the_first_job_while_it_lives() {
    let env = Env::new().await;
    let args = ["job", "enqueue", "sync", "--unique-key", "sync-42", "--json"];
    let first = env.rrq(&args).ok().json();
    let second = env.rrq(&args).ok().json();
    assert_eq!(first["job_id"], second["job_id"]);
    assert_eq!((first["created"].clone(), second["created"].clone()), (json!(true), json!(false)));
    assert_eq!(first["unique_key"], "sync-42");
    assert_eq!(env.store.queue_len(&QueueName::new("default")).await.unwrap(), 1, "one job");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_options_are_usage_errors_naming_the_option() {
    let env = Env::new().await;
    let cases: [(&[&str], &str); 5] = [
        (&["--params", "{oops"], "--params must be a valid JSON object: "),
        (&["--params", "[1,2]"], "--params must be a JSON object"),
        (&["--defer", "-5"], "--defer"),
        (&["--queue", ""], "--queue needs a non-empty queue name"),
        (&["--timeout", "5"], "--wait"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["job", "enqueue", "f"];
        args.extend_from_slice(extra);
        let run = env.rrq(&args).code(2);
        assert!(run.stderr.contains(message), "{extra:?}: {}", run.stderr);
    }
    let run = env.rrq(&["job", "enqueue", " "]).code(2);
    assert!(run.stderr.contains("FUNCTION"), "{}", run.stderr);
    assert!(env.store.queues().await.unwrap().is_empty(), "nothing was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_without_a_worker_times_out_with_a_failure() {
    let env = Env::new().await;
    let run = env.rrq(&["job", "enqueue", "never_runs", "--wait", "--timeout", "0.5", "--json"]).code(1);
    let out = run.json();
    assert_eq!(out["status"], "PENDING", "still waiting: {out}");
    assert_eq!(out["finished"], false);
    assert!(run.stderr.contains("did not finish within 0.5s"), "{}", run.stderr);
}
