//! `rrq cron list`: the configured cron entries, their next runs and the
//! last tick the workers recorded.

use chrono::{DateTime, Utc};
use rrq_store::prelude::*;
use serde_json::{Value, json};

use crate::{Env, is_rfc3339};

/// Two entries that fire only in 2099, so their next runs are known.
fn config(env: &Env) -> String {
    format!(
        r#"[rrq]
redis_dsn = "{dsn}"
default_queue_name = "main"

[[rrq.cron_jobs]]
name = "morning-report"
function_name = "report"
schedule = "0 30 9 * * * 2099"
timezone = "Europe/Paris"
unique = true
queue_name = "reports"

[[rrq.cron_jobs]]
function_name = "cleanup"
schedule = "0 0 0 1 1 * 2099"
"#,
        dsn = env.redis.url()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_list_shows_names_schedules_next_runs_and_the_last_tick() {
    let env = Env::new().await;
    env.dir.write("rrq.toml", &config(&env));

    let json = env.rrq(&["cron", "list", "--json"]).ok().json();
    let rows = json.as_array().expect("an array of entries");
    assert_eq!(rows.len(), 2);
    let report = &rows[0];
    assert_eq!(report["name"], "morning-report");
    assert_eq!(report["named"], true);
    assert_eq!(report["key"], "rrq.cron_jobs[0]");
    assert_eq!(report["function"], "report");
    assert_eq!(report["schedule"], "0 30 9 * * * 2099");
    assert_eq!(report["timezone"], "Europe/Paris");
    assert_eq!(report["unique"], true);
    assert_eq!(report["catch_up"], false);
    assert_eq!(report["queue"], "rrq:queue:reports");
    assert_eq!(
        report["next_runs"],
        json!(["2099-01-01T08:30:00+00:00", "2099-01-02T08:30:00+00:00", "2099-01-03T08:30:00+00:00"]),
        "09:30 in Paris (UTC+1 in winter)"
    );
    assert_eq!(
        report["next_runs_local"],
        json!(["2099-01-01T09:30:00+01:00", "2099-01-02T09:30:00+01:00", "2099-01-03T09:30:00+01:00"])
    );
    assert_eq!(report["last_tick"], Value::Null);
    assert_eq!(report["last_job_id"], Value::Null);
    let id = report["id"].as_str().expect("the entry id").to_owned();
    assert!(id.starts_with("cron:report:"), "{id}");

    let cleanup = &rows[1];
    assert_eq!(cleanup["name"], "cleanup (0 0 0 1 1 * 2099)", "a derived name");
    assert_eq!(cleanup["named"], false);
    assert_eq!((cleanup["timezone"].as_str(), cleanup["queue"].as_str()), (Some("UTC"), Some("rrq:queue:main")));
    assert_eq!(cleanup["next_runs"], json!(["2099-01-01T00:00:00+00:00"]), "the schedule has one tick left");

    // A tick recorded by a worker shows up, with the job it enqueued.
    let tick: DateTime<Utc> = "2030-05-04T07:30:00Z".parse().unwrap();
    env.store.record_cron_tick(&id, tick).await.unwrap();
    let json = env.rrq(&["cron", "list", "--json", "--next", "1"]).ok().json();
    assert_eq!(json[0]["last_tick"], "2030-05-04T07:30:00+00:00");
    assert_eq!(json[0]["last_job_id"], format!("{id}:{}", tick.timestamp()));
    assert_eq!(json[0]["next_runs"].as_array().map(Vec::len), Some(1), "--next 1");
    assert!(is_rfc3339(&json[0]["last_tick"]));

    let run = env.rrq(&["cron", "list"]).ok();
    assert_eq!(
        run.cells("Name"),
        ["Name", "Function", "Schedule", "Time", "Zone", "Unique", "Queue", "Next", "Runs", "Last", "Tick"]
    );
    let row = run.line("morning-report");
    for needed in ["report", "0 30 9 * * * 2099", "Europe/Paris", "yes", "reports", "2099-01-01 09:30:00 CET"] {
        assert!(row.contains(needed), "{needed:?} in {row}");
    }
    assert!(row.contains("2099-01-03 09:30:00 CET"), "three next runs by default: {row}");
    let row = run.line("cleanup");
    assert!(row.contains("2099-01-01 00:00:00 UTC") && row.trim_end().ends_with("never"), "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_list_without_entries_says_so() {
    let env = Env::new().await;
    let run = env.rrq(&["cron", "list"]).ok();
    assert!(run.stdout.starts_with("No cron entries configured"), "{}", run.stdout);
    assert_eq!(env.rrq(&["cron", "list", "--json"]).ok().json(), json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_and_bad_schedules_are_config_errors() {
    let env = Env::new().await;
    let entry = |name: &str, schedule: &str| {
        format!("[[rrq.cron_jobs]]\nname = \"{name}\"\nfunction_name = \"f\"\nschedule = \"{schedule}\"\n")
    };
    let base = format!("[rrq]\nredis_dsn = \"{}\"\n", env.redis.url());
    env.dir.write("rrq.toml", &format!("{base}{}{}", entry("same", "@daily"), entry("same", "@hourly")));
    let run = env.rrq(&["cron", "list"]).code(3);
    assert!(
        run.stderr.contains("rrq.cron_jobs[0]") && run.stderr.contains("rrq.cron_jobs[1]"),
        "names both entries: {}",
        run.stderr
    );
    // The worker refuses to start on the same file.
    let run = env.rrq(&["worker", "run", "--burst"]).code(3);
    assert!(run.stderr.contains("cron entry names must be unique"), "{}", run.stderr);

    env.dir.write("rrq.toml", &format!("{base}{}", entry("bad", "61 * * * *")));
    let run = env.rrq(&["cron", "list"]).code(3);
    assert!(run.stderr.contains("rrq.cron_jobs[0].schedule"), "{}", run.stderr);
    let run = env.rrq(&["cron", "list", "--next", "0"]).code(2);
    assert!(run.stderr.contains("--next"), "{}", run.stderr);
}
