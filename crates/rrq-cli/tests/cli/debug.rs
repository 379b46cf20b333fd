//! `rrq debug submit | clear | generate-jobs | generate-workers | stress-test`
//! and `rrq runner python`.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::Utc;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{InspectStore, parse_timestamp};
use serde_json::{Value, json};

use crate::{Env, Scratch, rrq_in};

/// Ids of the stored jobs whose id starts with `prefix`.
async fn ids_with_prefix(env: &Env, prefix: &str) -> Vec<JobId> {
    let mut ids: Vec<JobId> =
        env.store.job_ids(0).await.unwrap().into_iter().filter(|id| id.as_str().starts_with(prefix)).collect();
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_enqueues_kwargs_as_params_with_args_and_delay() {
    let env = Env::new().await;
    let run = env
        .rrq(&["debug", "submit", "send_email", "--kwargs", r#"{"k":1}"#, "--args", "[1,2]", "--queue", "mail"])
        .ok();
    let id = run.line("Job submitted: ").trim_start_matches("Job submitted: ").to_owned();
    assert_eq!(run.line("Function:"), "Function: send_email");
    let id = JobId::new(id);
    let params: Value = serde_json::from_str(&env.field(&id, "job_params").await.unwrap()).unwrap();
    assert_eq!(params, json!({"args": [1, 2], "k": 1}));
    assert_eq!(env.field(&id, "queue_name").await.as_deref(), Some("rrq:queue:mail"));
    assert_eq!(env.store.queue_entries(&QueueName::new("mail"), 0, 10).await.unwrap()[0].0, id);

    // --delay defers; --json reports; the default queue is the settings' one.
    let out = env.rrq(&["debug", "submit", "report", "--delay", "30", "--json"]).ok().json();
    assert_eq!((out["function"].clone(), out["queue"].clone()), (json!("report"), json!("rrq:queue:default")));
    let id = JobId::new(out["job_id"].as_str().unwrap());
    let scheduled = parse_timestamp(&env.field(&id, "next_scheduled_run_time").await.unwrap()).unwrap();
    let enqueued = parse_timestamp(&env.field(&id, "enqueue_time").await.unwrap()).unwrap();
    let deferral = scheduled - enqueued;
    assert_eq!(deferral.num_seconds(), 30, "deferred by --delay");
    assert_eq!(env.field(&id, "job_params").await.as_deref(), Some("{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_refuses_bad_json_with_a_usage_error() {
    let env = Env::new().await;
    let cases: [(&[&str], &str); 4] = [
        (&["--args", "[1,"], "--args must be valid JSON array: "),
        (&["--args", r#"{"a":1}"#], "--args must be a JSON array"),
        (&["--args", "[1]", "--kwargs", r#"{"args":2}"#], "--args conflicts with kwargs key 'args'"),
        (&["--kwargs", "{oops"], "--kwargs must be a valid JSON object"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["debug", "submit", "f"];
        args.extend_from_slice(extra);
        let run = env.rrq(&args).code(2);
        assert!(run.stderr.contains(message), "{extra:?}: {}", run.stderr);
    }
    assert!(env.store.queues().await.unwrap().is_empty(), "nothing was enqueued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_jobs_writes_jobs_in_the_asked_states_and_queues_only_pending_ones() {
    let env = Env::new().await;
    let args: Vec<&str> = "debug generate-jobs --count 12 --queue alpha --queue beta --status pending \
         --status COMPLETED --status failed --age-hours 2 --batch-size 5 --json"
        .split_whitespace()
        .collect();
    let out = env.rrq(&args).ok().json();
    assert_eq!(out["generated"], 12);
    assert_eq!(out["queues"], json!(["rrq:queue:alpha", "rrq:queue:beta"]));
    let prefix = out["id_prefix"].as_str().unwrap().to_owned();
    let micros = prefix.strip_prefix("test_job_").expect("ids are test_job_{µs}");
    assert!(micros.len() >= 16 && micros.bytes().all(|b| b.is_ascii_digit()), "{prefix}");

    let ids = ids_with_prefix(&env, "test_job_").await;
    let expected: BTreeSet<String> = (0..12).map(|i| format!("{prefix}_{i}")).collect();
    assert_eq!(ids.iter().map(|i| i.as_str().to_owned()).collect::<BTreeSet<_>>(), expected);
    let mut pending = 0;
    for id in &ids {
        let fields = env.store.job_fields(id).await.unwrap().unwrap();
        let status = fields["status"].as_str();
        assert!(["PENDING", "COMPLETED", "FAILED"].contains(&status), "{fields:?}");
        assert!(["rrq:queue:alpha", "rrq:queue:beta"].contains(&fields["queue_name"].as_str()), "{fields:?}");
        assert_eq!(fields["max_retries"], "3");
        let retries: u32 = fields["current_retries"].parse().unwrap();
        assert!(retries <= 3, "{fields:?}");
        let params: Value = serde_json::from_str(&fields["job_params"]).unwrap();
        assert!(["arg", "count", "user_id", "priority"].iter().all(|k| params.get(k).is_some()), "{params}");
        let age = Utc::now() - parse_timestamp(&fields["enqueue_time"]).unwrap();
        assert!(age.num_seconds() >= 0 && age.num_seconds() <= 2 * 3_600 + 60, "{fields:?}");
        pending += usize::from(status == "PENDING");
        let job = env.store.job(id).await.unwrap().unwrap();
        assert!(job.is_ok(), "a synthetic job reads as a job: {job:?}");
    }
    let queued = env.store.queue_len(&QueueName::new("alpha")).await.unwrap()
        + env.store.queue_len(&QueueName::new("beta")).await.unwrap();
    assert_eq!(queued as usize, pending, "only pending jobs are queued");
    let counted: u64 = out["statuses"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    assert_eq!(counted, 12);

    let run = env.rrq(&["debug", "generate-jobs", "--count", "3"]).ok();
    assert_eq!(run.line("Generated"), "Generated 3 fake jobs across 4 queues");
    assert_eq!(ids_with_prefix(&env, "test_job_").await.len(), 15);

    let run = env.rrq(&["debug", "generate-jobs", "--status", "sleeping"]).code(2);
    assert!(run.stderr.contains("--status \"sleeping\" is not one of"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_counts_asks_and_deletes_matching_keys() {
    let env = Env::new().await;
    let run = env.rrq(&["debug", "clear"]).ok();
    assert_eq!(run.stdout.trim(), "No keys found matching pattern: test_*");

    env.rrq(&["debug", "generate-jobs", "--count", "4", "--status", "completed"]).ok();
    let kept = env.enqueue("keep_me", json!({}), "default").await;
    let pattern = "rrq:job:test_job_*";

    // Without --confirm and without a terminal to ask on: refused.
    let run = env.rrq(&["debug", "clear", "--pattern", pattern]).code(2);
    assert_eq!(run.stdout.trim(), format!("Found 4 keys matching pattern: {pattern}"));
    assert!(run.stderr.contains("Delete 4 keys?") && run.stderr.contains("pass --confirm"), "{}", run.stderr);
    assert_eq!(ids_with_prefix(&env, "test_job_").await.len(), 4, "nothing deleted");

    // Everything, only with --confirm.
    for everything in ["*", ""] {
        let run = env.rrq(&["debug", "clear", "--pattern", everything]).code(2);
        assert!(run.stderr.contains("pass --confirm"), "{}", run.stderr);
    }

    let run = env.rrq(&["debug", "clear", "--pattern", pattern, "--confirm"]).ok();
    assert_eq!(run.line("Found"), format!("Found 4 keys matching pattern: {pattern}"));
    assert_eq!(run.line("Deleted"), "Deleted 4 keys");
    assert!(ids_with_prefix(&env, "test_job_").await.is_empty());
    assert!(env.store.job_fields(&kept).await.unwrap().is_some(), "other keys are untouched");

    let out = env.rrq(&["debug", "clear", "--pattern", "rrq:queue:*", "--confirm", "--json"]).ok().json();
    assert_eq!(out, json!({"pattern": "rrq:queue:*", "matched": 1, "deleted": 1}));
    assert_eq!(env.store.queue_len(&QueueName::new("default")).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generate_workers_writes_health_records_for_the_duration() {
    let env = Env::new().await;
    let started = Instant::now();
    let run = env.rrq(&["debug", "generate-workers", "--count", "3", "--duration", "1"]).ok();
    let took = started.elapsed();
    assert_eq!(run.line("Simulating"), "Simulating 3 workers for 1 seconds...");
    assert_eq!(run.stdout.lines().last(), Some("Worker simulation complete"));
    assert!(!run.stdout.contains("remaining"), "no progress line without a terminal: {}", run.stdout);
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(10), "{took:?}");

    let workers = env.store.workers().await.unwrap();
    let ids: Vec<&str> = workers.iter().map(|w| w.worker_id.as_str()).collect();
    assert_eq!(ids, ["test_worker_0", "test_worker_1", "test_worker_2"]);
    for w in &workers {
        let ttl = w.ttl.expect("health records expire");
        assert!(ttl <= Duration::from_secs(60) && ttl > Duration::from_secs(50), "{w:?}");
        let health = w.health.as_ref().expect("JSON record");
        assert!(health["timestamp"].is_u64(), "timestamp is an integer epoch: {health}");
        assert_eq!(health["worker_id"], w.worker_id.as_str());
    }
    let run = env.rrq(&["health"]).ok();
    assert!(run.stdout.contains("test_worker_1"), "{}", run.stdout);

    let out = env.rrq(&["debug", "generate-workers", "--count", "1", "--duration", "0", "--json"]).ok().json();
    assert_eq!(out, json!({"workers": 1, "duration_seconds": 0, "heartbeat_rounds": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stress_test_enqueues_at_the_rate_into_the_given_queues() {
    let env = Env::new().await;
    let started = Instant::now();
    let args =
        ["debug", "stress-test", "--jobs-per-second", "4", "--duration", "2", "--queues", "s1", "--queues", "s2"];
    let run = env.rrq(&args).ok();
    let took = started.elapsed();
    assert_eq!(run.line("Starting"), "Starting stress test: 4 jobs/sec for 2s");
    assert_eq!(run.stdout.lines().last(), Some("Stress test complete: 8 jobs submitted"));
    assert!(took >= Duration::from_millis(1_900) && took < Duration::from_secs(15), "paced: {took:?}");

    let mut numbers = BTreeSet::new();
    let mut batches = BTreeSet::new();
    for q in ["s1", "s2"] {
        for (id, _) in env.store.queue_entries(&QueueName::new(q), 0, 100).await.unwrap() {
            let fields = env.store.job_fields(&id).await.unwrap().unwrap();
            assert_eq!(fields["function_name"], "stress_test_job");
            let params: Value = serde_json::from_str(&fields["job_params"]).unwrap();
            numbers.insert(params["job_number"].as_u64().unwrap());
            batches.insert(params["batch"].as_u64().unwrap());
        }
    }
    assert_eq!(numbers, (0..8).collect::<BTreeSet<u64>>());
    assert_eq!(batches, BTreeSet::from([0, 1]));

    let out = env.rrq(&["debug", "stress-test", "--jobs-per-second", "3", "--duration", "1", "--json"]).ok().json();
    assert_eq!(out["submitted"], 3);
    assert_eq!(out["queues"], json!({"rrq:queue:stress_test": 3}));
    assert_eq!(env.store.queue_len(&QueueName::new("stress_test")).await.unwrap(), 3);
}

/// A directory holding an executable `rrq-runner` shell script.
fn fake_runner(script: &str) -> Scratch {
    use std::os::unix::fs::PermissionsExt;
    let dir = Scratch::create();
    dir.write("rrq-runner", &format!("#!/bin/sh\n{script}\n"));
    std::fs::set_permissions(dir.path("rrq-runner"), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn runner_python_passes_its_options_and_reports_failures() {
    let cwd = Scratch::create();
    let args = ["runner", "python", "--settings", "app.settings", "--tcp-socket", "127.0.0.1:1"];

    let empty = Scratch::create();
    let run = rrq_in(cwd.root(), &args, &[("PATH", empty.root().to_str().unwrap())]).code(1);
    assert!(run.stderr.contains("rrq-runner was not found on PATH") && run.stderr.contains("pip install rrq"));

    let echo = fake_runner(r#"echo "args: $*""#);
    let run = rrq_in(cwd.root(), &args, &[("PATH", echo.root().to_str().unwrap())]).ok();
    assert_eq!(run.stdout.trim(), "args: --settings app.settings --tcp-socket 127.0.0.1:1");

    let failing = fake_runner("exit 3");
    let run = rrq_in(cwd.root(), &args, &[("PATH", failing.root().to_str().unwrap())]).code(1);
    assert_eq!(run.stderr.trim(), "Error: rrq-runner exited with status 3");

    let run = rrq_in(cwd.root(), &["runner", "python", "--settings", "app.settings"], &[]).code(2);
    assert!(run.stderr.contains("--tcp-socket"), "{}", run.stderr);
}

#[test]
fn runner_python_starts_the_reference_runner_and_stops_it_on_sigterm() {
    let venv = rrq_test_support::python::venv();
    let dir = Scratch::create();
    dir.write(
        "handlers.py",
        "from rrq.registry import Registry\nfrom rrq.runner_settings import PythonRunnerSettings\n\n\
         registry = Registry()\n\nasync def hello(request):\n    return 'hi'\n\n\
         registry.register('hello', hello)\nsettings = PythonRunnerSettings(registry=registry)\n",
    );
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let path = format!("{}:{}", venv.root().join("bin").display(), std::env::var("PATH").unwrap_or_default());
    let socket = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrq-cli"))
        .args(["runner", "python", "--settings", "handlers.settings", "--tcp-socket", &socket])
        .current_dir(dir.root())
        .env("PATH", path)
        .env("PYTHONPATH", dir.root())
        .stdin(Stdio::null())
        .spawn()
        .expect("start rrq runner python");

    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&socket).is_err() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("rrq runner python exited before listening: {status}");
        }
        assert!(Instant::now() < deadline, "the runner did not listen on {socket} within 60 s");
        std::thread::sleep(Duration::from_millis(100)); // sleep-ok: deadline poll
    }

    let term = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rrq runner python did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50)); // sleep-ok: deadline poll
    };
    assert!(status.success(), "a forwarded SIGTERM is a clean stop: {status}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(&socket).is_ok() {
        assert!(Instant::now() < deadline, "the Python runner outlived rrq (still listening on {socket})");
        std::thread::sleep(Duration::from_millis(100)); // sleep-ok: deadline poll
    }
}
