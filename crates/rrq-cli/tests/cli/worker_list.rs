//! `rrq worker list`: the live workers, from their health records.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rrq_store::prelude::*;
use rrq_store::{WorkerHealth, format_timestamp};
use serde_json::json;

use crate::{Env, is_rfc3339};

fn health(id: &str, active: u64, queues: &[&str], status: &str, age_secs: i64) -> WorkerHealth {
    WorkerHealth {
        active_jobs: active,
        concurrency_limit: 8,
        queues: queues.iter().map(|q| (*q).to_owned()).collect(),
        status: status.to_owned(),
        timestamp: json!(format_timestamp(Utc::now() - TimeDelta::seconds(age_secs))),
        worker_id: id.to_owned(),
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_list_is_empty_but_successful_without_workers() {
    let env = Env::new().await;
    let run = env.rrq(&["worker", "list"]).ok();
    assert_eq!(run.stdout.trim(), "No live workers found");
    assert_eq!(env.rrq(&["worker", "list", "--json"]).ok().json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_list_shows_each_live_worker_as_a_table_and_as_json() {
    let env = Env::new().await;
    let busy = health("worker-b", 3, &["rrq:queue:default", "rrq:queue:emails"], "running", 40);
    let idle = health("worker-a", 0, &["rrq:queue:low"], "idle (no jobs)", 2);
    env.store.heartbeat(&busy, Duration::from_secs(70)).await.unwrap();
    env.store.heartbeat(&idle, Duration::from_secs(70)).await.unwrap();

    let run = env.rrq(&["worker", "list"]).ok();
    assert_eq!(
        run.cells("Worker ID"),
        ["Worker", "ID", "Status", "In", "Flight", "Limit", "Queues", "Heartbeat", "Expires"]
    );
    let rows: Vec<&str> = run.stdout.lines().skip(1).take(2).collect();
    assert!(rows[0].starts_with("worker-a") && rows[1].starts_with("worker-b"), "sorted by id: {rows:?}");
    let b = run.line("worker-b");
    assert!(b.contains("running") && b.contains("default, emails"), "bare queue names: {b}");
    assert!(b.contains("40s ago") || b.contains("41s ago"), "heartbeat age: {b}");
    assert_eq!(run.cells("worker-b")[1..3], ["running", "3"]);
    assert!(run.stdout.contains("2 live workers, 3 jobs in flight"), "{}", run.stdout);

    let json = env.rrq(&["worker", "list", "--json"]).ok().json();
    let rows = json.as_array().expect("an array of workers");
    assert_eq!(rows.len(), 2);
    let b = &rows[1];
    assert_eq!(b["worker_id"], "worker-b");
    assert_eq!(b["status"], "running");
    assert_eq!(b["active_jobs"], 3);
    assert_eq!(b["concurrency_limit"], 8);
    assert_eq!(b["queues"], json!(["rrq:queue:default", "rrq:queue:emails"]));
    assert!(is_rfc3339(&b["last_heartbeat"]), "{b}");
    let age = b["heartbeat_age_seconds"].as_f64().expect("an age in seconds");
    assert!((39.0..60.0).contains(&age), "{age}");
    assert!(b["ttl_seconds"].as_u64().is_some_and(|t| t > 0 && t <= 70), "{b}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_list_needs_redis_like_the_other_commands() {
    let env = Env::new().await;
    env.dir.write("rrq.toml", "[rrq]\nredis_dsn = \"redis://127.0.0.1:1/0\"\n");
    let run = env.rrq(&["worker", "list"]).code(4);
    assert!(run.stderr.contains("cannot connect to Redis"), "{}", run.stderr);
}
