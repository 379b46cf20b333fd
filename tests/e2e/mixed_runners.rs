//! `rrq worker run` drives a pool of TypeScript runners (sdks/typescript)
//! beside a pool of reference Python runners (rrq 0.11.1), with jobs routed
//! to each by queue (`[rrq.runner_routes]`): every job ends in the state its
//! outcome maps to, on the runner its queue names.

use std::time::Duration;

use rrq_producer::{EnqueueOptions, Producer};
use rrq_protocol::{DlqName, JobId};
use rrq_store::{InspectStore, JobStatus, RedisStore};
use rrq_test_support::{TestRedis, node, python};
use serde_json::{Value, json};

use crate::support::{TempDir, assert_success, free_ports, run_rrq};

const HANDLERS_PY: &str = r#"
from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings

async def echo(request):
    return {"runner": "python", "echo": request.params, "queue": request.context.queue_name}

registry = Registry()
registry.register("echo", echo)
settings = PythonRunnerSettings(registry=registry)
"#;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread")]
async fn worker_runs_a_node_pool_beside_a_python_pool_routed_by_queue() {
    let venv = python::venv();
    let ts = node::typescript_runner();
    let redis = TestRedis::private();
    let dir = TempDir::new("mixed-runners");
    dir.write("handlers.py", HANDLERS_PY);
    let (py_port, node_port) = (free_ports(1), free_ports(2));
    let config = format!(
        r#"[rrq]
redis_dsn = "{dsn}"
default_runner_name = "python"
default_job_timeout_seconds = 10
default_max_retries = 3
base_retry_delay_seconds = 0.01
max_retry_delay_seconds = 0.05
worker_shutdown_grace_period_seconds = 1
runner_shutdown_term_grace_seconds = 2

[rrq.runners.python]
cmd = ["{py}", "--settings", "handlers.settings"]
tcp_port = {py_port}
pool_size = 1
max_in_flight = 4
env = {{ PYTHONPATH = "{dir}" }}

[rrq.runners.node]
cmd = ["{node}", "{main}"]
tcp_port = {node_port}
pool_size = 2
max_in_flight = 8

[rrq.runner_routes]
"rrq:queue:ts" = "node"
"#,
        dsn = redis.url(),
        py = venv.runner().display(),
        dir = dir.path().display(),
        node = ts[0],
        main = ts[1],
    );
    let config_path = dir.write("rrq.toml", &config);

    let producer = Producer::new(redis.url()).await.expect("connect the producer");
    let enqueue = |function: &'static str, params: Value, queue: &'static str, traced: bool| {
        let producer = &producer;
        async move {
            let mut options = EnqueueOptions::queue(queue);
            if traced {
                options.trace_context.insert("traceparent".into(), TRACEPARENT.into());
            }
            producer.enqueue(function, params, options).await.expect("enqueue")
        }
    };
    let py_echo = enqueue("echo", json!({"n": 1}), "default", false).await;
    let ts_echo = enqueue("rrq_check.echo", json!({"n": 2}), "ts", true).await;
    let ts_retry = enqueue("retry_once", json!({"value": "v"}), "ts", false).await;
    let ts_missing = enqueue("echo_in_python_only", json!({}), "ts", false).await;
    let ts_sleeps: Vec<JobId> = {
        let mut ids = Vec::new();
        for _ in 0..6 {
            ids.push(enqueue("rrq_check.sleep", json!({"seconds": 0.2}), "ts", false).await);
        }
        ids
    };

    let out = run_rrq(
        &["worker", "run", "--burst", "--queue", "default", "--queue", "ts", "--config", config_path.to_str().unwrap()],
        &[],
        Duration::from_secs(90),
    );
    assert_success(&out);

    let store = RedisStore::connect(redis.url()).await.expect("connect the store");
    let job = |id: JobId| {
        let store = &store;
        async move { store.job(&id).await.expect("read job").expect("job exists").expect("job parses") }
    };

    let py = job(py_echo).await;
    assert_eq!(py.status, Some(JobStatus::Completed));
    assert_eq!(py.result, Some(json!({"runner": "python", "echo": {"n": 1}, "queue": "rrq:queue:default"})));

    let traced = job(ts_echo.clone()).await;
    assert_eq!(traced.status, Some(JobStatus::Completed), "{:?}", traced.last_error);
    let result = traced.result.expect("a result");
    assert_eq!(result["params"], json!({"n": 2}), "ran on the TypeScript runner");
    assert_eq!(result["job_id"], json!(ts_echo.as_str()));
    assert_eq!(result["trace_context"]["traceparent"], TRACEPARENT, "trace context reaches the handler");

    let retried = job(ts_retry).await;
    assert_eq!(retried.status, Some(JobStatus::Completed));
    assert_eq!(retried.result, Some(json!("ok:v")));
    assert_eq!(retried.current_retries, 1, "one retry requested by the handler");

    let missing = job(ts_missing.clone()).await;
    assert_eq!(missing.status, Some(JobStatus::Failed));
    // One attempt, counted as the reference counts it; no retry.
    assert_eq!(missing.current_retries, 1, "handler_not_found is not retried");
    assert!(
        missing
            .last_error
            .as_deref()
            .is_some_and(|e| e.contains("No handler registered for function 'echo_in_python_only'")),
        "{:?}",
        missing.last_error
    );
    let dlq = store.dlq_ids(&DlqName::new("default"), 0, 100).await.expect("read the DLQ");
    assert!(dlq.contains(&ts_missing));

    for id in ts_sleeps {
        let j = job(id).await;
        assert_eq!(j.status, Some(JobStatus::Completed));
        assert_eq!(j.result, Some(json!("slept")));
    }
}
