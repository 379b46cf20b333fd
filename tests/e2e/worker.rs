//! The worker with the example Rust runner: one job of each kind of outcome.

use std::time::Duration;

use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::{DlqName, JobId};
use rrq_store::{InspectStore, RedisStore};
use rrq_test_support::TestRedis;
use serde_json::json;

use crate::support::{TempDir, assert_success, run_rrq, rust_runner_config};

fn with_id(id: &str) -> EnqueueOptions {
    EnqueueOptions { job_id: Some(id.to_owned()), ..Default::default() }
}

#[tokio::test(flavor = "multi_thread")]
async fn burst_worker_runs_every_outcome_kind_with_the_rust_runner() {
    let redis = TestRedis::private();
    let dir = TempDir::new("rust-burst");
    let config = dir.write("rrq.toml", &rust_runner_config(&redis, "", 2, 8));
    let producer = Producer::new(redis.url()).await.expect("connect");

    producer.enqueue("echo", json!({"x": 1}), with_id("ok")).await.unwrap();
    producer
        .enqueue("fail", json!({"value": "z"}), EnqueueOptions { max_retries: Some(2), ..with_id("bad") })
        .await
        .unwrap();
    producer
        .enqueue("sleep", json!({"seconds": 5}), EnqueueOptions { job_timeout_seconds: Some(1), ..with_id("slow") })
        .await
        .unwrap();
    producer.enqueue("nope", json!({}), with_id("missing")).await.unwrap();
    producer.enqueue("rust#success", json!({"value": "v"}), with_id("prefixed")).await.unwrap();
    producer.enqueue("other#success", json!({"value": "v"}), with_id("no-runner")).await.unwrap();

    // Burst mode does not wait for jobs scheduled in the future, so run until
    // the retries are spent: the worker is started again while work remains.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out =
            run_rrq(&["worker", "run", "--burst", "--config", config.to_str().unwrap()], &[], Duration::from_secs(30));
        assert_success(&out);
        let status = producer.status(&JobId::new("bad")).await.unwrap().unwrap().status;
        if status == Some(JobStatus::Failed) || std::time::Instant::now() > deadline {
            break;
        }
    }

    let get = |id: &'static str| {
        let p = producer.clone();
        async move { p.job(&JobId::new(id)).await.unwrap().unwrap() }
    };
    let ok = get("ok").await;
    assert_eq!(ok.status, Some(JobStatus::Completed));
    assert_eq!(ok.result.as_ref().unwrap()["echo"], json!({"x": 1}));

    let bad = get("bad").await;
    assert_eq!((bad.status, bad.current_retries), (Some(JobStatus::Failed), 2));
    assert_eq!(bad.last_error.as_deref(), Some("boom: z"));

    let slow = get("slow").await;
    assert_eq!((slow.status, slow.current_retries), (Some(JobStatus::Failed), 1));
    assert_eq!(slow.last_error.as_deref(), Some("Job timed out after 1s."));

    let missing = get("missing").await;
    assert_eq!(missing.status, Some(JobStatus::Failed));
    assert_eq!(missing.last_error.as_deref(), Some("No handler registered for function 'nope'"));

    assert_eq!(get("prefixed").await.result, Some(json!("ok:v")));
    assert_eq!(get("no-runner").await.last_error.as_deref(), Some("No runner configured for 'other'."));

    let store = RedisStore::connect(redis.url()).await.unwrap();
    let mut dlq: Vec<String> =
        store.dlq_ids(&DlqName::new("default"), 0, 100).await.unwrap().into_iter().map(JobId::into_string).collect();
    dlq.sort();
    assert_eq!(dlq, ["bad", "missing", "no-runner", "slow"]);
}

fn http_get(port: u16, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics listener");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_worker_serves_metrics_and_health() {
    let redis = TestRedis::private();
    let dir = TempDir::new("metrics");
    let port = crate::support::free_ports(1);
    let config =
        dir.write("rrq.toml", &rust_runner_config(&redis, &format!("metrics_listen = \"127.0.0.1:{port}\""), 1, 4));
    let producer = Producer::new(redis.url()).await.expect("connect");
    producer.enqueue("echo", json!({"x": 1}), with_id("m1")).await.unwrap();
    producer
        .enqueue("fail", json!({"value": "v"}), EnqueueOptions { max_retries: Some(1), ..with_id("m2") })
        .await
        .unwrap();

    let worker = std::process::Command::new(crate::support::rrq_bin())
        .args(["worker", "run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG_FORMAT", "text")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start worker");
    let done = producer.wait_for_completion(&JobId::new("m2"), Duration::from_secs(30)).await.unwrap();
    assert_eq!(done.and_then(|r| r.status), Some(JobStatus::Failed));
    producer.wait_for_completion(&JobId::new("m1"), Duration::from_secs(30)).await.unwrap().expect("m1 done");

    // Redis shows an outcome as soon as its write applies; the worker counts
    // it once the reply reaches the job's task: poll the counters briefly.
    let counted = [
        r#"rrq_jobs_completed_total{queue="rrq:queue:default",function="echo"} 1"#,
        r#"rrq_jobs_dead_lettered_total{queue="rrq:queue:default",function="fail"} 1"#,
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let (status, body) = loop {
        let (status, body) = http_get(port, "/metrics");
        if counted.iter().all(|c| body.contains(c)) || std::time::Instant::now() > deadline {
            break (status, body);
        }
        std::thread::sleep(Duration::from_millis(20)); // sleep-ok: deadline poll of /metrics
    };
    assert!(status.contains("200"), "{status}");
    for c in counted {
        assert!(body.contains(c), "{c} missing:\n{body}");
    }
    assert!(body.contains("rrq_job_duration_seconds_bucket"), "{body}");
    let (status, body) = http_get(port, "/healthz");
    assert!(status.contains("200"), "{status} {body}");
    let health: serde_json::Value = serde_json::from_str(&body).expect("health JSON");
    assert_eq!(health["redis"], "ok");
    assert_eq!(health["runners"]["rust"]["up"], true);
    assert_eq!(health["pickup"]["mode"], "notified", "keyspace notifications are live: {health}");

    // Redis gone: the worker stays up but reports itself unavailable.
    drop(redis);
    let (status, body) = http_get(port, "/healthz");
    assert!(status.contains("503"), "{status} {body}");

    let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let out = crate::support::wait_with_deadline(worker, Duration::from_secs(30));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("Serving /metrics and /healthz on http://127.0.0.1:{port}"))
    );
}

/// Reads a child's stdout line by line on a thread, so a test can wait for a
/// line with a deadline.
struct Lines {
    rx: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(stdout: std::process::ChildStdout) -> Self {
        use std::io::BufRead;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { rx, seen: Vec::new() }
    }

    fn wait_for(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line containing {needle:?} within {limit:?}; saw:\n{}", self.seen.join("\n")),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_mode_restarts_the_worker_on_matching_changes() {
    let redis = TestRedis::private();
    let dir = TempDir::new("watch");
    let src = dir.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("app.py"), "x = 1\n").unwrap();
    let marker = dir.path().join("pre-restart-ran");
    let extra = format!("[rrq.watch]\npre_restart_cmds = [[\"touch\", \"{}\"]]\n", marker.display());
    let config = dir.write("rrq.toml", &format!("{}\n{extra}", rust_runner_config(&redis, "", 2, 4)));
    let producer = Producer::new(redis.url()).await.expect("connect");

    let mut child = std::process::Command::new(crate::support::rrq_bin())
        .args(["worker", "watch", "--config", config.to_str().unwrap(), "--path", src.to_str().unwrap()])
        .env("RUST_LOG_FORMAT", "text")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start rrq worker watch");
    let mut lines = Lines::new(child.stdout.take().unwrap());
    lines.wait_for("Watching", Duration::from_secs(20));
    lines.wait_for("Running watch pre-restart command: touch", Duration::from_secs(20));

    producer.enqueue("echo", json!({"n": 1}), with_id("before")).await.unwrap();
    let before = producer.wait_for_completion(&JobId::new("before"), Duration::from_secs(20)).await.unwrap();
    assert_eq!(before.and_then(|r| r.status), Some(JobStatus::Completed));
    assert!(marker.exists(), "the pre-restart command ran before the worker started");

    // A file outside the include globs changes first, then a Python file.
    std::fs::write(src.join("notes.md"), "ignored\n").unwrap();
    std::fs::write(src.join("app.py"), "x = 2\n").unwrap();
    let change = lines.wait_for("Change detected", Duration::from_secs(20));
    assert!(change.contains("app.py") && !change.contains("notes.md"), "{change}");
    lines.wait_for("Restarting worker...", Duration::from_secs(20));

    producer.enqueue("echo", json!({"n": 2}), with_id("after")).await.unwrap();
    let after = producer.wait_for_completion(&JobId::new("after"), Duration::from_secs(20)).await.unwrap();
    assert_eq!(after.and_then(|r| r.status), Some(JobStatus::Completed));

    let _ = std::process::Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let status = crate::support::wait_with_deadline(child, Duration::from_secs(20)).status;
    assert!(status.success(), "watch mode exits cleanly on SIGTERM: {status:?}");
}
