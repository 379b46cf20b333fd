//! Interoperability with the reference Python package (rrq 0.11.1 from PyPI):
//! its client enqueues, its runner executes, our worker orchestrates, and the
//! end state matches the golden snapshots recorded from the reference.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rrq_protocol::{DlqName, JobId};
use rrq_store::{InspectStore, JobStatus, RedisStore};
use rrq_test_support::{TestRedis, python};
use serde_json::{Value, json};

use crate::support::{TempDir, assert_success, free_ports, rrq_bin, wait_with_deadline};

/// Handlers of the golden scenarios, for the reference Python runner.
const HANDLERS_PY: &str = r#"
import asyncio
from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings
from rrq.exc import RetryJob

def make(prefix):
    registry = Registry()

    async def success(request):
        return "ok:" + request.params["value"]

    async def retry(request):
        if request.context.attempt == 1:
            raise RetryJob(defer_seconds=0.01)
        return "ok:" + request.params["value"]

    async def fail(request):
        raise ValueError("boom: " + request.params["value"])

    async def timeout(request):
        await asyncio.sleep(2)  # sleep-ok: the handler outlives its 1 s timeout
        return "late"

    async def route(request):
        return prefix + request.params["value"]

    async def echo(request):
        ctx = request.context
        return {"echo": request.params, "attempt": ctx.attempt, "queue": ctx.queue_name,
                "trace_context": ctx.trace_context, "worker_id": ctx.worker_id}

    for name, fn in [("success", success), ("retry", retry), ("fail", fail),
                     ("timeout", timeout), ("route", route), ("echo", echo)]:
        registry.register(name, fn)
    return PythonRunnerSettings(registry=registry)

settings = make("py:")
alt_settings = make("alt:")
"#;

/// Scenario settings common to every golden file.
const GOLDEN_RRQ: &str = r#"default_job_timeout_seconds = 1
default_result_ttl_seconds = 10
default_max_retries = 3
default_poll_delay_seconds = 0.01
worker_shutdown_grace_period_seconds = 0.2
base_retry_delay_seconds = 0.01
max_retry_delay_seconds = 0.05
runner_shutdown_term_grace_seconds = 0.5
"#;

struct Scenario<'a> {
    name: &'a str,
    /// Extra `[rrq]` lines.
    rrq: &'a str,
    /// Runner name → settings object in the handler module.
    runners: &'a [(&'a str, &'a str)],
    /// Extra tables after the runners.
    tail: &'a str,
    /// Python literal: list of (function, options dict).
    enqueue: &'a str,
    queues: &'a [&'a str],
}

fn python_runner_tables(venv: &python::Venv, dir: &TempDir, runners: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (name, settings) in runners {
        let port = free_ports(1);
        out.push_str(&format!(
            "[rrq.runners.{name}]\ncmd = [\"{bin}\", \"--settings\", \"handlers.{settings}\"]\ntcp_port = {port}\npool_size = 1\nmax_in_flight = 4\nenv = {{ PYTHONPATH = \"{dir}\" }}\n\n",
            bin = venv.runner().display(),
            dir = dir.path().display(),
        ));
    }
    out
}

/// Enqueues with the reference Python client; returns the ids it reported.
fn python_enqueue(venv: &python::Venv, dsn: &str, jobs: &str) -> Vec<String> {
    let script = format!(
        r#"
import asyncio, json, os
from rrq.client import RRQClient

async def main():
    # The golden scenarios' producer defaults.
    client = RRQClient(config={{"redis_dsn": os.environ["RRQ_TEST_DSN"], "max_retries": 3,
                               "job_timeout_seconds": 1, "result_ttl_seconds": 10}})
    ids = []
    for function, options in {jobs}:
        ids.append(await client.enqueue(function, options))
    await client.close()
    print(json.dumps(ids))

asyncio.run(main())
"#
    );
    let out = venv.run_script(&script, &[("RRQ_TEST_DSN", dsn)]);
    serde_json::from_str(out.trim().lines().last().unwrap_or("[]")).expect("enqueue script prints the ids")
}

/// The golden snapshot of one job (see the golden README).
async fn snapshot(store: &RedisStore, id: &str, dlq: &[JobId], extended: bool) -> Value {
    let job = store.job(&JobId::new(id)).await.expect("read job").expect("job exists").expect("job parses");
    let status = job.status.expect("known status");
    let mut snap = json!({
        "status": status.as_str(),
        "current_retries": job.current_retries,
        "max_retries": job.max_retries,
        "result": job.result,
        "last_error": if status == JobStatus::Completed { None } else { job.last_error },
        "in_dlq": dlq.iter().any(|d| d.as_str() == id),
    });
    if extended {
        let deferred = job
            .next_scheduled_run_time
            .map(|t| (t - job.enqueue_time).num_microseconds().unwrap_or(0) > 1000)
            .unwrap_or(false);
        snap["queue_name"] = json!(job.queue_name.map(|q| q.as_str().to_owned()));
        snap["unique_key"] = json!(job.unique_key);
        snap["deferred"] = json!(deferred);
    }
    snap
}

async fn run_golden(s: Scenario<'_>) {
    let venv = python::venv();
    let redis = TestRedis::private();
    let dir = TempDir::new(s.name);
    dir.write("handlers.py", HANDLERS_PY);
    let config = format!(
        "[rrq]\nredis_dsn = \"{}\"\ndefault_runner_name = \"{}\"\n{GOLDEN_RRQ}{}\n\n{}{}",
        redis.url(),
        s.runners[0].0,
        s.rrq,
        python_runner_tables(&venv, &dir, s.runners),
        s.tail
    );
    let config_path = dir.write("rrq.toml", &config);

    let ids = python_enqueue(&venv, redis.url(), s.enqueue);
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}/e2e/golden/{}.json", env!("CARGO_MANIFEST_DIR"), s.name))
            .expect("read golden file"),
    )
    .expect("golden file is JSON");
    let job_ids: Vec<String> = expected["jobs"].as_object().expect("jobs").keys().cloned().collect();
    for id in &ids {
        assert!(job_ids.contains(id), "the Python client returned an unexpected id {id}");
    }

    let mut args =
        vec!["worker".to_owned(), "run".to_owned(), "--config".to_owned(), config_path.display().to_string()];
    for q in s.queues {
        args.push("--queue".to_owned());
        args.push((*q).to_owned());
    }
    let worker = Command::new(rrq_bin())
        .args(&args)
        .env("RUST_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the worker");

    // Poll until every job is terminal (COMPLETED or FAILED), with a deadline.
    let store: Arc<RedisStore> = Arc::new(RedisStore::connect(redis.url()).await.expect("connect"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut done = true;
        for id in &job_ids {
            let status = match store.job(&JobId::new(id.as_str())).await.expect("read job") {
                Some(Ok(job)) => job.status,
                _ => None,
            };
            done &= matches!(status, Some(JobStatus::Completed | JobStatus::Failed));
        }
        if done {
            break;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
            let out = wait_with_deadline(worker, Duration::from_secs(10));
            panic!("scenario {} did not finish\nworker stderr:\n{}", s.name, String::from_utf8_lossy(&out.stderr));
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: polling Redis state with a deadline
    }
    let status = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status().expect("kill");
    assert!(status.success());
    let out = wait_with_deadline(worker, Duration::from_secs(20));
    assert_success(&out);

    let dlq = store.dlq_ids(&DlqName::new("default"), 0, 1000).await.expect("read DLQ");
    let extended = expected["jobs"].as_object().unwrap().values().next().unwrap().get("queue_name").is_some();
    let mut got = BTreeMap::new();
    for id in &job_ids {
        got.insert(id.clone(), snapshot(&store, id, &dlq, extended).await);
    }
    let got = Value::Object(got.into_iter().collect());
    assert_eq!(got, expected["jobs"], "end state of golden scenario `{}`", s.name);
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_basic_with_the_reference_python_client_and_runner() {
    run_golden(Scenario {
        name: "basic",
        rrq: "",
        runners: &[("python", "settings")],
        tail: "",
        enqueue: r#"[
            ("success", {"job_id": "job-success", "params": {"value": "alpha"}}),
            ("retry", {"job_id": "job-retry", "params": {"value": "beta"}}),
            ("fail", {"job_id": "job-fail", "params": {"value": "gamma"}, "max_retries": 2}),
            ("timeout", {"job_id": "job-timeout", "job_timeout_seconds": 1}),
            ("missing_handler", {"job_id": "job-missing"}),
        ]"#,
        queues: &["default", "rrq:queue:custom"],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_retry_backoff() {
    run_golden(Scenario {
        name: "retry_backoff",
        rrq: "",
        runners: &[("python", "settings")],
        tail: "",
        enqueue: r#"[("fail", {"job_id": "job-retry-backoff", "params": {"value": "backoff"}, "max_retries": 3})]"#,
        queues: &[],
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn golden_routing_between_two_python_runners() {
    run_golden(Scenario {
        name: "routing",
        rrq: "",
        runners: &[("python", "settings"), ("alt", "alt_settings")],
        tail: "[rrq.runner_routes]\n\"rrq:queue:routed\" = \"alt\"\n",
        enqueue: r#"[
            ("route", {"job_id": "job-route-default", "params": {"value": "alpha"}}),
            ("route", {"job_id": "job-route-alt", "params": {"value": "beta"}, "queue_name": "rrq:queue:routed"}),
        ]"#,
        queues: &["default", "rrq:queue:routed"],
    })
    .await;
}

/// A job our Rust producer enqueues is read correctly by the reference
/// Python client, before and after our worker runs it on the Python runner.
#[tokio::test(flavor = "multi_thread")]
async fn rust_producer_jobs_are_read_by_the_python_client() {
    let venv = python::venv();
    let redis = TestRedis::private();
    let dir = TempDir::new("rust-producer");
    dir.write("handlers.py", HANDLERS_PY);

    let producer = rrq_producer::Producer::new(redis.url()).await.expect("connect");
    let mut options = rrq_producer::EnqueueOptions { job_id: Some("from-rust".into()), ..Default::default() };
    options
        .trace_context
        .insert("traceparent".into(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into());
    let id = producer.enqueue("echo", json!({"msg": "hello", "n": 42}), options).await.expect("enqueue");
    assert_eq!(id.as_str(), "from-rust");

    let read_status = r#"
import asyncio, json, os
from rrq.client import RRQClient
async def main():
    c = RRQClient(config={"redis_dsn": os.environ["RRQ_TEST_DSN"]})
    r = await c.get_job_status("from-rust")
    await c.close()
    print(json.dumps({"status": r.status.value, "result": r.result, "last_error": r.last_error}))
asyncio.run(main())
"#;
    let before: Value = serde_json::from_str(venv.run_script(read_status, &[("RRQ_TEST_DSN", redis.url())]).trim())
        .expect("status JSON");
    assert_eq!(before, json!({"status": "PENDING", "result": null, "last_error": null}));

    let config = format!(
        "[rrq]\nredis_dsn = \"{}\"\n\n{}",
        redis.url(),
        python_runner_tables(&venv, &dir, &[("python", "settings")])
    );
    let config_path = dir.write("rrq.toml", &config);
    let out = crate::support::run_rrq(
        &["worker", "run", "--burst", "--config", config_path.to_str().unwrap()],
        &[],
        Duration::from_secs(60),
    );
    assert_success(&out);

    let wait = r#"
import asyncio, json, os
from rrq.client import RRQClient
async def main():
    c = RRQClient(config={"redis_dsn": os.environ["RRQ_TEST_DSN"]})
    r = await c.wait_for_completion("from-rust", timeout_seconds=10)
    await c.close()
    print(json.dumps({"status": r.status.value, "result": r.result, "last_error": r.last_error}))
asyncio.run(main())
"#;
    let after: Value =
        serde_json::from_str(venv.run_script(wait, &[("RRQ_TEST_DSN", redis.url())]).trim()).expect("status JSON");
    assert_eq!(after["status"], "COMPLETED");
    assert_eq!(after["result"]["echo"], json!({"msg": "hello", "n": 42}));
    assert_eq!(after["result"]["attempt"], 1);
    assert_eq!(after["result"]["queue"], "rrq:queue:default");
    assert_eq!(
        after["result"]["trace_context"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert!(after["result"]["worker_id"].as_str().unwrap().starts_with("rrq_worker_"));
}

/// The reference orchestrator (the binary shipped in the 0.11.1 wheel) runs
/// jobs our Rust producer enqueued, on the reference Python runner.
#[tokio::test(flavor = "multi_thread")]
async fn the_reference_orchestrator_runs_jobs_of_our_producer() {
    let venv = python::venv();
    let redis = TestRedis::private();
    let dir = TempDir::new("reference-orchestrator");
    dir.write("handlers.py", HANDLERS_PY);
    let config = format!(
        "[rrq]\nredis_dsn = \"{}\"\n{GOLDEN_RRQ}\n{}",
        redis.url(),
        python_runner_tables(&venv, &dir, &[("python", "settings")])
    );
    let config_path = dir.write("rrq.toml", &config);

    let producer = rrq_producer::Producer::new(redis.url()).await.expect("connect");
    let with_id = |id: &str| rrq_producer::EnqueueOptions { job_id: Some(id.into()), ..Default::default() };
    producer.enqueue("success", json!({"value": "alpha"}), with_id("ours-ok")).await.unwrap();
    producer
        .enqueue(
            "fail",
            json!({"value": "gamma"}),
            rrq_producer::EnqueueOptions { max_retries: Some(1), ..with_id("ours-fail") },
        )
        .await
        .unwrap();

    let out = wait_with_deadline(
        Command::new(venv.reference_orchestrator())
            .args(["worker", "run", "--burst", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the reference orchestrator"),
        Duration::from_secs(60),
    );
    assert_success(&out);

    let ok = producer.status(&JobId::new("ours-ok")).await.unwrap().expect("job exists");
    assert_eq!(ok.status, Some(JobStatus::Completed));
    assert_eq!(ok.result, Some(json!("ok:alpha")));
    let failed = producer.status(&JobId::new("ours-fail")).await.unwrap().expect("job exists");
    assert_eq!(failed.status, Some(JobStatus::Failed));
    assert_eq!(failed.last_error.as_deref(), Some("boom: gamma"));
}

/// Every enqueue mode of the reference Python client writes jobs our store
/// reads field for field.
#[tokio::test(flavor = "multi_thread")]
async fn python_client_enqueue_modes_are_read_by_our_store() {
    let venv = python::venv();
    let redis = TestRedis::private();
    let script = r#"
import asyncio, json, os
from datetime import datetime, timezone
from rrq.client import RRQClient

async def main():
    c = RRQClient(config={"redis_dsn": os.environ["RRQ_TEST_DSN"], "max_retries": 4, "job_timeout_seconds": 30})
    out = {}
    out["plain"] = await c.enqueue("echo", {"job_id": "plain", "params": {"msg": "hello", "n": 42, "nested": {"a": [1, 2]}},
        "trace_context": {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}})
    out["deferred"] = await c.enqueue("echo", {"job_id": "deferred", "queue_name": "low",
        "defer_until": datetime(2030, 1, 1, tzinfo=timezone.utc), "max_retries": 1, "job_timeout_seconds": 7, "result_ttl_seconds": 0})
    out["idem1"] = await c.enqueue_with_unique_key("echo", "order-42", {"job_id": "idem-a"})
    out["idem2"] = await c.enqueue_with_unique_key("echo", "order-42", {"job_id": "idem-b"})
    out["rate1"] = await c.enqueue_with_rate_limit("echo", {"rate_limit_key": "user-7", "rate_limit_seconds": 2.5})
    out["rate2"] = await c.enqueue_with_rate_limit("echo", {"rate_limit_key": "user-7", "rate_limit_seconds": 2.5})
    out["deb1"] = await c.enqueue_with_debounce("echo", {"debounce_key": "doc-9", "debounce_seconds": 5, "params": {"v": 1}})
    out["deb2"] = await c.enqueue_with_debounce("echo", {"debounce_key": "doc-9", "debounce_seconds": 5, "params": {"v": 2}})
    await c.close()
    print(json.dumps(out))

asyncio.run(main())
"#;
    let out: Value =
        serde_json::from_str(venv.run_script(script, &[("RRQ_TEST_DSN", redis.url())]).trim()).expect("ids JSON");
    let store = RedisStore::connect(redis.url()).await.expect("connect");
    let job = |id: String| {
        let store = &store;
        async move { store.job(&JobId::new(id)).await.unwrap().expect("job exists").expect("job parses") }
    };

    let plain = job("plain".into()).await;
    assert_eq!(plain.function_name, "echo");
    assert_eq!(Value::Object(plain.params.clone()), json!({"msg": "hello", "n": 42, "nested": {"a": [1, 2]}}));
    assert_eq!(plain.status, Some(JobStatus::Pending));
    assert_eq!((plain.current_retries, plain.max_retries), (0, Some(4)));
    assert_eq!(plain.job_timeout_seconds, Some(30));
    assert_eq!(plain.queue_name.unwrap().as_str(), "rrq:queue:default");
    assert_eq!(plain.trace_context.unwrap()["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");

    let deferred = job("deferred".into()).await;
    assert_eq!(deferred.queue_name.unwrap().as_str(), "rrq:queue:low");
    assert_eq!(deferred.next_scheduled_run_time.unwrap().to_rfc3339(), "2030-01-01T00:00:00+00:00");
    assert_eq!(
        (deferred.max_retries, deferred.job_timeout_seconds, deferred.result_ttl_seconds),
        (Some(1), Some(7), Some(0))
    );

    assert_eq!(out["idem1"], "idem-a");
    assert_eq!(out["idem2"], "idem-a", "the idempotency key returns the first job");
    assert!(out["rate1"].is_string());
    assert!(out["rate2"].is_null(), "the second call inside the window is dropped");
    assert_eq!(out["deb1"], out["deb2"], "the debounced call updates the pending job");
    let debounced = job(out["deb1"].as_str().unwrap().to_owned()).await;
    assert_eq!(Value::Object(debounced.params), json!({"v": 2}));
}

/// The runner pool drives the reference Python runner and recovers it: a
/// killed process is replaced, a hung request times out and its process is
/// replaced, and requests succeed again each time.
#[tokio::test(flavor = "multi_thread")]
async fn the_pool_recovers_the_reference_python_runner() {
    use rrq_pool::{PoolConfig, PoolError, ProcessPool, Runner};
    use rrq_protocol::{ExecutionContext, ExecutionRequest, OutcomeStatus, PROTOCOL_VERSION};

    let venv = python::venv();
    let dir = TempDir::new("pool-python");
    dir.write("handlers.py", HANDLERS_PY);
    let mut config = PoolConfig::managed(
        "python",
        vec![venv.runner().display().to_string(), "--settings".into(), "handlers.settings".into()],
        free_ports(1),
    );
    config.env.insert("PYTHONPATH".into(), dir.path().display().to_string());
    config.term_grace = Duration::from_millis(500);
    let pool = ProcessPool::start(config).await.expect("the Python runner starts");
    let request = |n: u32, function: &str| ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.into(),
        request_id: format!("req-{n}"),
        job_id: format!("job-{n}"),
        function_name: function.into(),
        params: json!({"value": format!("v{n}")}).as_object().cloned().unwrap(),
        context: ExecutionContext {
            job_id: format!("job-{n}"),
            attempt: 1,
            enqueue_time: "2026-11-28T00:00:00Z".into(),
            queue_name: "rrq:queue:default".into(),
            deadline: None,
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_worker_test_1".into()),
        },
    };
    // Succeeds eventually: right after a kill the first tries may meet the
    // replacement still starting.
    async fn until_success(pool: &ProcessPool, mut make: impl FnMut(u32) -> ExecutionRequest) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(60);
        for n in 0.. {
            match pool.execute(make(n), Duration::from_secs(10)).await {
                Ok(o) if o.status == OutcomeStatus::Success => return n,
                other => assert!(Instant::now() < deadline, "the pool never recovered: {other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: retrying with a deadline
        }
        unreachable!()
    }

    let first = pool.execute(request(0, "success"), Duration::from_secs(10)).await.expect("round trip");
    assert_eq!(first.result, Some(json!("ok:v0")));

    let pid = pool.pids()[0].expect("a running process");
    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
    until_success(&pool, |n| request(100 + n, "success")).await;
    let replaced = pool.pids()[0].expect("a running process");
    assert_ne!(replaced, pid, "the killed process was replaced");
    println!("injected: SIGKILL of Python runner {pid}; observed: replaced by {replaced}");

    let timed_out = pool.execute(request(1, "timeout"), Duration::from_millis(300)).await;
    assert!(matches!(timed_out, Err(PoolError::Timeout(_))), "{timed_out:?}");
    until_success(&pool, |n| request(200 + n, "success")).await;
    println!("injected: a hung request; observed: timeout, then successful requests");

    pool.shutdown(Duration::from_secs(1)).await;
    // Gone, or a zombie nobody reaped yet: either way no longer running.
    let stat = std::fs::read_to_string(format!("/proc/{replaced}/stat")).unwrap_or_default();
    assert!(stat.is_empty() || stat.contains(") Z "), "runner {replaced} survived the pool's shutdown: {stat}");
}

/// The reference Python client as the producer of an idle worker with a slow
/// poll: its jobs (it publishes no ready signal) are picked up through
/// keyspace notifications, and its `wait_for_completion` (blocking on the
/// events stream for 0.4 s per read) is woken by the completion at once,
/// although the stream now expires a minute after the event.
#[tokio::test(flavor = "multi_thread")]
async fn python_client_jobs_are_picked_up_and_waited_for_at_once() {
    use crate::worker_redis::{Env, QUICK, Worker, config};
    let venv = python::venv();
    let env = Env::new("python-pickup").await;
    let rrq = format!("{QUICK}\ndefault_poll_delay_seconds = 5");
    let cfg = config(&env.dir, "rrq.toml", &env.redis, &rrq, "", 1);
    let worker = Worker::start("python-pickup", &cfg, &[]);
    env.ready(&worker).await;
    let script = r#"
import asyncio, json, os, time
from rrq.client import RRQClient
async def main():
    c = RRQClient(config={"redis_dsn": os.environ["RRQ_TEST_DSN"]})
    out = []
    for i in range(5):
        start = time.monotonic()
        job_id = await c.enqueue("sleep", {"params": {"seconds": 0.5}})
        r = await c.wait_for_completion(job_id, timeout_seconds=20, block_interval_seconds=0.4)
        out.append({"status": r.status.value if r else None, "ms": (time.monotonic() - start) * 1000})
    await c.close()
    print(json.dumps(out))
asyncio.run(main())
"#;
    let out = venv.run_script(script, &[("RRQ_TEST_DSN", env.redis.url())]);
    let runs: Vec<Value> = serde_json::from_str(out.trim().lines().last().unwrap_or("[]")).expect("JSON");
    assert_eq!(runs.len(), 5, "{out}");
    let mut ms: Vec<f64> = runs.iter().map(|r| r["ms"].as_f64().unwrap()).collect();
    println!("python client: enqueue -> wait_for_completion returned, ms: {ms:?}");
    for r in &runs {
        assert_eq!(r["status"], "COMPLETED", "{runs:?}");
    }
    ms.sort_by(f64::total_cmp);
    // The job sleeps 0.5 s, so the client is blocked on the stream (from
    // `$`) before the completion (a noop job can complete before the client's
    // XREAD starts; that read then blocks for its whole interval: the
    // reference client's own race). Blocks are 0.4 s (the reference client
    // fails a read blocking 0.5 s or more with "timed out"): woken by the
    // entry, the client returns just after 0.5 s; re-reading only after each
    // block, at 0.8 s. Without keyspace notifications the pickup waits for
    // the 5 s poll.
    assert!(ms[0] >= 500.0, "the job slept 0.5 s: {ms:?}");
    assert!(
        ms[2] < 700.0 && ms[4] < 2000.0,
        "enqueue to completion seen by the client: {ms:?} ms\n{}",
        worker.output()
    );
}
