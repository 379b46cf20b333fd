//! `rrq health` (alias `check`) and `rrq completions`.

use std::time::Duration;

use rrq_store::{WorkerHealth, WorkerStore};
use serde_json::json;

use crate::{Env, Scratch, is_rfc3339, rrq_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_lists_live_workers_and_fails_without_any() {
    let env = Env::new().await;
    let none = env.rrq(&["health"]).code(1);
    assert_eq!(none.stdout.trim(), "Worker Health Check: FAIL (No active workers found)");
    assert_eq!(env.rrq(&["check", "--json"]).code(1).json(), json!({"healthy": false, "workers": []}));

    let health = WorkerHealth {
        active_jobs: 2,
        concurrency_limit: 8,
        queues: vec!["rrq:queue:default".into(), "rrq:queue:emails".into()],
        status: "idle (no jobs)".into(),
        timestamp: json!(rrq_store::format_timestamp(chrono::Utc::now())),
        worker_id: "worker-7".into(),
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    };
    env.store.heartbeat(&health, Duration::from_secs(60)).await.unwrap();

    let run = env.rrq(&["check"]).ok();
    assert_eq!(run.line("Worker Health Check"), "Worker Health Check: Found 1 active worker(s):");
    assert_eq!(
        run.cells("Worker ID"),
        ["Worker", "ID", "Status", "Active", "Jobs", "Queues", "Last", "Heartbeat", "TTL"]
    );
    let row = run.line("worker-7");
    assert!(row.contains("idle (no jobs)") && row.contains("rrq:queue:default, rrq:queue:emails"), "{row}");
    assert!(row.contains(" ago "), "relative heartbeat: {row}");

    let json = env.rrq(&["health", "--json"]).ok().json();
    assert_eq!(json["healthy"], true);
    let w = &json["workers"][0];
    assert_eq!((w["worker_id"].as_str(), w["active_jobs"].as_u64()), (Some("worker-7"), Some(2)));
    assert!(is_rfc3339(&w["last_heartbeat"]));
    assert!(w["ttl_seconds"].as_u64().is_some_and(|t| t > 0 && t <= 60), "{w}");
}

#[test]
fn completions_are_printed_for_each_shell_without_a_config() {
    let dir = Scratch::create();
    for (shell, marker) in [("bash", "complete -F"), ("zsh", "#compdef rrq"), ("fish", "complete -c rrq")] {
        let run = rrq_in(dir.root(), &["completions", shell], &[]).ok();
        assert!(run.stdout.contains(marker), "{shell}: {}", &run.stdout[..run.stdout.len().min(300)]);
        assert!(run.stdout.contains("retry-all"), "{shell} completes nested commands");
    }
    let bad = rrq_in(dir.root(), &["completions", "tcsh"], &[]).code(2);
    assert!(bad.stderr.contains("invalid value 'tcsh'"), "{}", bad.stderr);
}
