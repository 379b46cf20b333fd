//! `rrq dlq list | stats | inspect | requeue | retry-all | purge`.

use rrq_protocol::{DlqName, QueueName};
use rrq_store::{AdminStore, AttemptCount, InspectStore, WorkerStore};
use serde_json::json;

use crate::Env;

/// Three failed jobs: two `send` jobs of `emails`, one `report` of the default queue.
async fn three_failed(env: &Env) -> [rrq_protocol::JobId; 3] {
    [
        env.failed("send", "emails", "smtp refused").await,
        env.failed("send", "emails", "smtp refused").await,
        env.failed("report", "default", "disk full").await,
    ]
}

fn dlq() -> DlqName {
    DlqName::new("default")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_stats_and_inspect_describe_failed_jobs() {
    let env = Env::new().await;
    let empty = env.rrq(&["dlq", "list"]).ok();
    assert_eq!(empty.stdout.trim(), "No jobs found in DLQ: rrq:dlq:default");
    assert_eq!(env.rrq(&["dlq", "stats"]).ok().stdout.trim(), "DLQ 'rrq:dlq:default' is empty");
    let [a, b, c] = three_failed(&env).await;

    let run = env.rrq(&["dlq", "list"]).ok();
    assert_eq!(run.cells("Job ID"), ["Job", "ID", "Function", "Queue", "Error", "Failed", "At", "Retries"]);
    let row = run.cells(c.as_str());
    assert_eq!(&row[..5], [c.as_str(), "report", "rrq:queue:default", "disk", "full"], "{}", run.stdout);
    assert_eq!(row.last().map(String::as_str), Some("1"), "the counted attempt");
    assert_eq!(run.line("Showing"), "Showing 1-3 of 3 jobs");
    assert!(!run.stdout.contains("--offset"));

    let page = env.rrq(&["dlq", "list", "--limit", "1", "--offset", "1", "--batch-size", "1"]).ok();
    assert_eq!(page.line("Showing"), "Showing 2-2 of 3 jobs");
    assert_eq!(page.line("Use"), "Use --offset 2 to see more");

    let emails = env.rrq(&["dlq", "list", "--queue", "emails", "--json"]).ok().json();
    let ids: Vec<&str> = emails.as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
    assert_eq!(emails[0]["last_error"], "smtp refused");
    assert_eq!(emails[0]["status"], "FAILED");
    let report = env.rrq(&["dlq", "list", "--function", "report", "--raw"]).ok().json();
    assert_eq!((report["id"].as_str(), report["current_retries"].as_str()), (Some(c.as_str()), Some("1")));

    let stats = env.rrq(&["dlq", "stats"]).ok();
    assert_eq!(stats.line("DLQ:"), "DLQ: rrq:dlq:default");
    assert_eq!(stats.line("Total jobs:"), "Total jobs: 3");
    assert_eq!(stats.line("Avg retries:"), "Avg retries: 1.00");
    assert_eq!(stats.line("- send"), "  - send: 2");
    assert_eq!(stats.line("- (2x)"), "  - (2x) smtp refused");
    let stats = env.rrq(&["dlq", "stats", "--json"]).ok().json();
    assert_eq!(stats["total"], 3);
    assert_eq!(stats["top_queues"][0], json!({"queue": "rrq:queue:emails", "count": 2}));
    assert_eq!(stats["top_functions"][1], json!({"function": "report", "count": 1}));
    assert_eq!(stats["top_errors"][0], json!({"error": "smtp refused", "count": 2}));

    let inspect = env.rrq(&["dlq", "inspect", a.as_str()]).ok();
    assert_eq!(inspect.stdout.lines().next(), Some(format!("DLQ Job {a}").as_str()));
    assert_eq!(inspect.cells("last_error"), ["last_error", "smtp", "refused"]);
    let raw = env.rrq(&["dlq", "inspect", a.as_str(), "--raw"]).ok().json();
    assert_eq!(raw["status"], "FAILED");
    env.rrq(&["dlq", "inspect", "ghost"]).code(5);

    let other = env.rrq(&["dlq", "list", "--dlq-name", "other"]).ok();
    assert_eq!(other.stdout.trim(), "No jobs found in DLQ: rrq:dlq:other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_requeue_needs_a_selection_and_targets_original_queues() {
    let env = Env::new().await;
    let [a, b, c] = three_failed(&env).await;

    let refused = env.rrq(&["dlq", "requeue"]).code(2);
    assert!(refused.stderr.contains("Refusing to requeue all jobs without --all or filters."), "{}", refused.stderr);

    let dry = env.rrq(&["dlq", "requeue", "--queue", "emails", "--dry-run"]).ok();
    assert_eq!(dry.line("Dry run"), "Dry run: would requeue 2 job(s).");
    for id in [&a, &b] {
        assert_eq!(dry.line(&format!("- {id}")).trim(), format!("- {id} -> rrq:queue:emails"));
    }
    assert_eq!(env.store.dlq_len(&dlq()).await.unwrap(), 3, "a dry run changes nothing");

    let run = env.rrq(&["dlq", "requeue", "--function", "report"]).ok();
    assert_eq!(run.stdout.trim(), "Requeued 1 job(s) to rrq:queue:default", "the job's own queue");
    assert_eq!(env.field(&c, "status").await.as_deref(), Some("PENDING"));
    assert_eq!(env.store.queue_len(&QueueName::new("default")).await.unwrap(), 1);

    let run = env.rrq(&["dlq", "requeue", "--job-id", a.as_str(), "--target-queue", "rescue", "--json"]).ok().json();
    assert_eq!(
        run,
        json!({"dlq": "rrq:dlq:default", "dry_run": false, "requeued": [{"job_id": a.as_str(), "queue": "rrq:queue:rescue"}], "skipped": []})
    );
    let gone = env.rrq(&["dlq", "requeue", "--job-id", a.as_str()]).code(5);
    assert!(gone.stderr.contains(&format!("Job '{a}' is not in DLQ 'rrq:dlq:default'")), "{}", gone.stderr);

    // --all asks first; without a terminal, only --yes confirms.
    let unconfirmed = env.rrq(&["dlq", "requeue", "--all"]).code(2);
    assert!(unconfirmed.stderr.contains("pass --yes"), "{}", unconfirmed.stderr);
    assert_eq!(env.store.dlq_len(&dlq()).await.unwrap(), 1);
    let run = env.rrq(&["dlq", "requeue", "--all", "--yes", "--limit", "5"]).ok();
    assert_eq!(run.stdout.trim(), "Requeued 1 job(s) to rrq:queue:emails");
    assert_eq!(env.field(&b, "queue_name").await.as_deref(), Some("rrq:queue:emails"));
    assert_eq!(env.store.dlq_len(&dlq()).await.unwrap(), 0);
    assert_eq!(
        env.rrq(&["dlq", "requeue", "--all", "--yes"]).ok().stdout.trim(),
        "No jobs in DLQ 'rrq:dlq:default' match; nothing was requeued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_retry_all_and_purge_are_confirmed() {
    let env = Env::new().await;
    three_failed(&env).await;

    let refused = env.rrq(&["dlq", "retry-all"]).code(2);
    assert!(refused.stderr.contains("stdin is not a terminal; pass --yes"), "{}", refused.stderr);
    let run = env.rrq(&["dlq", "retry-all", "--yes", "--target-queue", "again"]).ok();
    assert_eq!(run.stdout.trim(), "Requeued 3 job(s) to rrq:queue:again");
    assert_eq!(env.store.queue_len(&QueueName::new("again")).await.unwrap(), 3);

    // Fail two of them again, then purge.
    let leases = env.claim("again", 2).await;
    for lease in &leases {
        let fence = env.store.dead_letter(lease, "still broken", AttemptCount::Counted, chrono::Utc::now()).await;
        assert_eq!(fence.unwrap(), rrq_store::Fence::Applied);
    }
    let refused = env.rrq(&["dlq", "purge"]).code(2);
    assert!(refused.stderr.contains("Delete all 2 job(s) of rrq:dlq:default?"), "{}", refused.stderr);
    assert_eq!(env.store.dlq_len(&dlq()).await.unwrap(), 2, "nothing deleted without confirmation");

    let purged = env.rrq(&["dlq", "purge", "--yes"]).ok();
    assert_eq!(purged.stdout.trim(), "Purged 2 job(s) from rrq:dlq:default");
    assert_eq!(env.store.dlq_len(&dlq()).await.unwrap(), 0);
    for lease in &leases {
        assert!(env.store.job_fields(&lease.job_id).await.unwrap().is_none(), "{} is deleted", lease.job_id);
    }
    assert_eq!(env.store.queue_len(&QueueName::new("again")).await.unwrap(), 1, "the waiting job is untouched");

    assert_eq!(env.rrq(&["dlq", "purge", "--yes"]).ok().stdout.trim(), "DLQ 'rrq:dlq:default' is empty");
    let json = env.rrq(&["dlq", "purge", "--yes", "--json", "--dlq-name", "other"]).ok().json();
    assert_eq!(json, json!({"dlq": "rrq:dlq:other", "purged": 0}));
}

/// The purge deletes exactly the jobs it asked about: while the user reads
/// the question, one of them is requeued by someone else and a new job is
/// dead-lettered; the new one survives (popping "the oldest N" would take it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_purge_deletes_only_the_jobs_it_confirmed() {
    use std::io::{Read as _, Write as _};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    let env = Env::new().await;
    let first = env.failed("send", "default", "smtp refused").await;
    let second = env.failed("send", "default", "smtp refused").await;

    // `script` gives the binary a terminal on stdin, so it asks and waits.
    let config = env.dir.path("rrq.toml");
    let cmdline = format!("{} dlq purge --config {}", env!("CARGO_BIN_EXE_rrq-cli"), config.display());
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmdline, "/dev/null"])
        .current_dir(env.dir.root())
        .env_remove("RRQ_CONFIG")
        .env_remove("RRQ_REDIS_DSN")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run rrq under script(1)");
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&seen).contains("[y/N]") {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => seen.extend(chunk),
            Err(_) => panic!("no confirmation question: {}", String::from_utf8_lossy(&seen)),
        }
    }
    assert!(String::from_utf8_lossy(&seen).contains("Delete all 2 job(s) of rrq:dlq:default?"));

    // Meanwhile: `first` is requeued elsewhere, a new job fails.
    let now = chrono::Utc::now();
    assert!(env.store.dlq_requeue(&dlq(), &first, &QueueName::new("default"), now).await.unwrap());
    let late = env.failed("late", "other", "late failure").await;

    child.stdin.as_mut().unwrap().write_all(b"y\n").unwrap();
    let status = child.wait().unwrap();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_secs(5)) {
        seen.extend(chunk);
    }
    let out = String::from_utf8_lossy(&seen).into_owned();
    assert!(status.success(), "{out}");
    assert!(out.contains("Purged 1 job(s) from rrq:dlq:default"), "{out}");
    assert_eq!(env.store.dlq_ids(&dlq(), 0, 10).await.unwrap(), vec![late.clone()], "the late job stays in the DLQ");
    assert_eq!(env.field(&late, "status").await.as_deref(), Some("FAILED"), "and is not deleted");
    assert_eq!(env.field(&first, "status").await.as_deref(), Some("PENDING"), "the requeued job is untouched");
    assert!(env.store.job_fields(&second).await.unwrap().is_none(), "the confirmed job is deleted");
}
