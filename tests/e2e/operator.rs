//! The operator commands against a running worker with the example Rust
//! runner: `worker list` sees it, `job enqueue --wait` gets results and
//! failures back, and the worker's logs name cron entries.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use rrq_test_support::TestRedis;
use serde_json::{Value, json};

use crate::support::{TempDir, rrq_bin, run_rrq, rust_runner_config, wait_with_deadline};

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn show(out: &Output) -> String {
    format!("exit {:?}\nstdout:\n{}\nstderr:\n{}", out.status, stdout(out), String::from_utf8_lossy(&out.stderr))
}

#[tokio::test(flavor = "multi_thread")]
async fn operator_commands_see_a_running_worker_and_wait_for_its_results() {
    let redis = TestRedis::private();
    let dir = TempDir::new("operator");
    let cron = "\n[[rrq.cron_jobs]]\nname = \"nightly-report\"\nfunction_name = \"echo\"\nschedule = \"0 0 3 * * *\"\n";
    let config = dir.write("rrq.toml", &format!("{}{cron}", rust_runner_config(&redis, "", 1, 4)));
    let config = config.to_str().expect("utf-8 path");
    let rrq = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--config", config]);
        run_rrq(&all, &[], Duration::from_secs(60))
    };

    let worker = Command::new(rrq_bin())
        .args(["worker", "run", "--config", config])
        .env("RUST_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start worker");

    // The worker writes its health record once it runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let workers = loop {
        let out = rrq(&["worker", "list", "--json"]);
        assert!(out.status.success(), "{}", show(&out));
        let rows: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        if rows.as_array().is_some_and(|r| !r.is_empty()) || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(50)); // sleep-ok: deadline poll for the first heartbeat
    };
    let w = &workers[0];
    assert_eq!(w["queues"], json!(["rrq:queue:default"]), "{workers}");
    assert_eq!(w["concurrency_limit"], 4, "pool_size × max_in_flight: {workers}");
    assert!(w["heartbeat_age_seconds"].as_f64().is_some_and(|a| a < 30.0), "{workers}");
    let table = rrq(&["worker", "list"]);
    let worker_id = w["worker_id"].as_str().expect("an id");
    assert!(stdout(&table).lines().any(|l| l.starts_with(worker_id) && l.contains("default")), "{}", show(&table));

    let ok = rrq(&["job", "enqueue", "echo", "--params", r#"{"x":1}"#, "--wait", "--timeout", "30", "--json"]);
    assert!(ok.status.success(), "{}", show(&ok));
    let ok: Value = serde_json::from_slice(&ok.stdout).expect("JSON");
    assert_eq!((ok["finished"].clone(), ok["status"].clone()), (json!(true), json!("COMPLETED")), "{ok}");
    assert_eq!(ok["result"]["echo"], json!({"x": 1}), "{ok}");

    let failed = rrq(&["job", "enqueue", "fail", "--params", r#"{"value":"z"}"#, "--wait", "--timeout", "30"]);
    assert_eq!(failed.status.code(), Some(1), "a failed job exits 1: {}", show(&failed));
    let text = stdout(&failed);
    assert!(text.contains("Status: FAILED") && text.contains("Error: boom: z"), "{}", show(&failed));

    let _ = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let out = wait_with_deadline(worker, Duration::from_secs(30));
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(
        logs.lines().any(|l| l.contains("cron entry scheduled") && l.contains("nightly-report")),
        "the scheduler's log names the entry:\n{logs}"
    );
}
