//! `rrq queue list | inspect | stats | pause | resume`.

use std::time::Duration;

use rrq_producer::EnqueueOptions;
use rrq_store::{AttemptCount, WorkerStore};
use serde_json::json;

use crate::{Env, is_rfc3339};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_list_shows_sizes_and_pause_state() {
    let env = Env::new().await;
    let run = env.rrq(&["queue", "list"]).ok();
    assert_eq!(run.stdout.trim(), "No active queues found");
    assert_eq!(env.rrq(&["queue", "list", "--json"]).ok().json(), json!([]));

    for n in 0..2 {
        env.enqueue("send_email", json!({"n": n}), "emails").await;
    }
    env.enqueue("report", json!({}), "default").await;
    let run = env.rrq(&["queue", "pause", "emails"]).ok();
    assert!(run.stdout.contains("Queue 'rrq:queue:emails' paused"), "{}", run.stdout);
    let run = env.rrq(&["queue", "pause", "emails"]).ok();
    assert!(run.stdout.contains("was already paused"), "{}", run.stdout);

    let run = env.rrq(&["queue", "list"]).ok();
    assert_eq!(run.cells("Queue"), ["Queue", "Pending", "Paused", "Oldest", "Newest"]);
    let emails = run.cells("rrq:queue:emails");
    assert_eq!(&emails[..3], ["rrq:queue:emails", "2", "yes"], "{}", run.stdout);
    assert!(run.line("rrq:queue:emails").ends_with("ago"), "relative times: {}", run.stdout);
    assert_eq!(&run.cells("rrq:queue:default")[..3], ["rrq:queue:default", "1", "no"]);
    assert_eq!(run.line("Total:"), "Total: 3 pending jobs");

    let list = env.rrq(&["queue", "list", "--json"]).ok().json();
    let emails = list.as_array().unwrap().iter().find(|q| q["queue"] == "rrq:queue:emails").expect("emails listed");
    assert_eq!((emails["pending"].clone(), emails["paused"].clone()), (json!(2), json!(true)));
    assert!(is_rfc3339(&emails["oldest"]) && is_rfc3339(&emails["newest"]), "{emails}");

    let run = env.rrq(&["queue", "resume", "rrq:queue:emails", "--json"]).ok();
    assert_eq!(run.json(), json!({"queue": "rrq:queue:emails", "paused": false, "changed": true}));
    assert!(env.rrq(&["queue", "resume", "emails"]).ok().stdout.contains("was not paused"));

    // A paused queue without jobs shows up only with --show-empty.
    env.rrq(&["queue", "pause", "idle"]).ok();
    let names = |v: serde_json::Value| -> Vec<String> {
        v.as_array().unwrap().iter().map(|q| q["queue"].as_str().unwrap().to_owned()).collect()
    };
    assert!(!names(env.rrq(&["queue", "list", "--json"]).ok().json()).contains(&"rrq:queue:idle".to_owned()));
    let all = names(env.rrq(&["queue", "list", "--show-empty", "--json"]).ok().json());
    assert!(all.contains(&"rrq:queue:idle".to_owned()), "{all:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_inspect_pages_through_jobs_in_ready_order() {
    let env = Env::new().await;
    let mut ids = Vec::new();
    for (i, delay) in [30u64, 10, 20].into_iter().enumerate() {
        let options = EnqueueOptions { defer_by: Some(Duration::from_secs(delay)), ..EnqueueOptions::queue("work") };
        ids.push(env.producer.enqueue(&format!("step_{i}"), json!({"i": i}), options).await.unwrap());
    }
    // Ready order: the 10 s job, the 20 s job, the 30 s job.
    let order = [&ids[1], &ids[2], &ids[0]];

    let run = env.rrq(&["queue", "inspect", "work", "--limit", "2"]).ok();
    assert_eq!(run.cells("#"), ["#", "Job", "ID", "Function", "Status", "Scheduled", "Retries"]);
    let first = run.cells("1 ");
    assert_eq!(&first[..4], ["1", order[0].as_str(), "step_1", "PENDING"], "{}", run.stdout);
    assert_eq!(first[4], "in", "a deferred job is ready in the future: {}", run.stdout);
    assert_eq!(first.last().map(String::as_str), Some("0"), "no retries yet");
    assert_eq!(run.cells("2 ")[1], order[1].as_str());
    assert_eq!(run.line("Showing"), "Showing 1-2 of 3 jobs in rrq:queue:work");
    assert_eq!(run.line("Use"), "Use --offset 2 to see more");

    let page = env.rrq(&["queue", "inspect", "rrq:queue:work", "--offset", "2", "--json"]).ok().json();
    let rows = page.as_array().unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["position"], 3);
    assert_eq!(rows[0]["job_id"], order[2].as_str());
    assert_eq!(rows[0]["job"]["function_name"], "step_0");
    assert_eq!(rows[0]["job"]["job_params"], json!({"i": 0}));
    assert!(is_rfc3339(&rows[0]["scheduled"]));

    let missing = env.rrq(&["queue", "inspect", "nope"]).code(5);
    assert!(missing.stderr.contains("Queue 'rrq:queue:nope' not found"), "{}", missing.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_stats_counts_jobs_by_status() {
    let env = Env::new().await;
    for n in 0..4 {
        env.enqueue("crunch", json!({"n": n}), "stats").await;
    }
    let mut leases = env.claim("stats", 2).await;
    let doomed = leases.pop().unwrap();
    let fence = env.store.dead_letter(&doomed, "boom", AttemptCount::Counted, chrono::Utc::now()).await.unwrap();
    assert_eq!(fence, rrq_store::Fence::Applied);

    let stats = env.rrq(&["queue", "stats", "--json"]).ok().json();
    let row = &stats["queues"][0];
    assert_eq!(row["queue"], "rrq:queue:stats");
    assert_eq!(
        [&row["total"], &row["pending"], &row["active"], &row["completed"], &row["failed"], &row["dlq"]],
        [&json!(4), &json!(2), &json!(1), &json!(0), &json!(1), &json!(1)],
        "{stats}"
    );
    assert!(row["avg_wait_seconds"].as_f64().is_some_and(|w| w >= 0.0), "{stats}");
    assert_eq!(stats["scan_complete"], true);

    let run = env.rrq(&["queue", "stats"]).ok();
    assert_eq!(
        run.cells("Queue"),
        ["Queue", "Total", "Pending", "Active", "Completed", "Failed", "DLQ", "Avg", "Wait"]
    );
    assert_eq!(&run.cells("rrq:queue:stats")[..7], ["rrq:queue:stats", "4", "2", "1", "0", "1", "1"]);
    assert!(!run.stdout.contains("Note:"), "a complete scan needs no note");

    // A scan capped below the number of jobs says so.
    let run = env.rrq(&["queue", "stats", "--max-scan", "1"]).ok();
    assert!(
        run.stdout.contains("Note: Active/Completed/Failed counts based on scanning up to 1 jobs."),
        "{}",
        run.stdout
    );

    // An explicitly named queue without jobs is shown with zeros.
    let run = env.rrq(&["queue", "stats", "--queue", "empty", "--json"]).ok().json();
    assert_eq!(run["queues"][0]["queue"], "rrq:queue:empty");
    assert_eq!(run["queues"][0]["total"], 0);
    assert_eq!(env.rrq(&["queue", "stats", "--queue", "empty"]).ok().cells("rrq:queue:empty")[1], "0");
}
