//! The example runner: a handful of handlers that end-to-end tests and demos
//! drive through a real process.
//!
//! | handler | params | behaviour |
//! |---|---|---|
//! | `echo` | any | `{"echo": params, "attempt", "job_id", "queue"}` |
//! | `noop` | any | `null` |
//! | `sleep` | `seconds` (float) | sleeps, then `"slept"` |
//! | `fail` | `value` | always fails with `boom: {value}` |
//! | `retry_once` | `value`, `delay` (s, default 0.01) | asks for a retry after `delay` on attempt 1, then `"ok:{value}"` |
//! | `success` | `value` | `"ok:{value}"` |
//! | `timeout` | any | sleeps 2 s, then `"late"` |
//! | `record` | `path`, `seconds` (default 0.05) | appends `{job_id, attempt, start, end}` (epoch seconds) as one JSON line to `path`, sleeping `seconds` in between |
//! | `crash` | any | exits the process with status 1 mid-request |
//! | `rrq_check.echo` | any | `{"params", "job_id", "attempt", "trace_context"}` of the request |
//! | `rrq_check.sleep` | `seconds` | sleeps, then `"slept"` (stops when cancelled or at the deadline) |
//! | `rrq_check.fail` | `message` | fails with exactly `message` |
//! | `rrq_check.retry` | `delay` | asks for a retry after `delay` seconds |
//!
//! The `rrq_check.*` handlers are the ones `rrq runner check` calls (see
//! docs/RUNNER_PROTOCOL.md, "Conformance kit").
//! | `chaos` | `path`, `seconds`, `outcome` (`ok`, `fail`, `retry`), `ignore_cancel` | appends a start line and an end line (`{"ev", "job", "attempt", "pid", "ppid", "t", "outcome"}`) to `path`; in between sleeps `seconds`, without yielding to a cancel when `ignore_cancel`; an execution dropped (cancelled, timed out) ends with outcome `dropped`; `fail` fails, `retry` asks for a retry on attempt 1 |
//!
//! In `{value}`, a string is inserted as is, an absent value as `None` and
//! anything else as JSON.

use std::io::Write;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{HandlerError, HandlerResult, JobContext, Registry, run_from_args};

/// The example handlers (see the module documentation).
///
/// ```
/// let registry = rrq_runner::example::registry();
/// assert!(registry.contains("echo") && registry.contains("rrq_check.sleep"));
/// ```
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register("echo", |params: Map<String, Value>, ctx: JobContext| async move {
        let mut out = json!({"echo": params, "attempt": ctx.attempt, "job_id": ctx.job_id, "queue": ctx.queue});
        // The trace carrier as received, when the job has one (for tracing tests).
        if let Some(carrier) = ctx.trace_context {
            out["trace_context"] = json!(carrier);
        }
        Ok(out)
    });
    r.register("noop", |_: Value, _ctx: JobContext| async move { HandlerResult::Ok(Value::Null) });
    r.register("sleep", |p: SleepParams, _ctx: JobContext| async move {
        tokio::time::sleep(seconds(p.seconds)).await;
        Ok("slept")
    });
    r.register("fail", |p: ValueParams, _ctx: JobContext| async move {
        HandlerResult::<()>::Err(HandlerError::failed(format!("boom: {}", show(p.value.as_ref()))))
    });
    r.register("retry_once", |p: RetryParams, ctx: JobContext| async move {
        if ctx.attempt <= 1 {
            let delay = seconds(p.delay.unwrap_or(0.01));
            return Err(HandlerError::retry_after("retry requested", delay));
        }
        Ok(format!("ok:{}", show(p.value.as_ref())))
    });
    r.register("success", |p: ValueParams, _ctx: JobContext| async move {
        HandlerResult::Ok(format!("ok:{}", show(p.value.as_ref())))
    });
    r.register("timeout", |_: Value, _ctx: JobContext| async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        HandlerResult::Ok("late")
    });
    r.register("record", |p: RecordParams, ctx: JobContext| async move {
        let start = epoch_seconds();
        tokio::time::sleep(seconds(p.seconds.unwrap_or(0.05))).await;
        let end = epoch_seconds();
        let line = json!({"job_id": ctx.job_id, "attempt": ctx.attempt, "start": start, "end": end});
        let mut text = serde_json::to_string(&line)?;
        text.push('\n');
        // One write on an O_APPEND file: concurrent runners do not interleave lines.
        std::fs::OpenOptions::new().create(true).append(true).open(&p.path)?.write_all(text.as_bytes())?;
        HandlerResult::Ok(line)
    });
    r.register("crash", crash);
    r.register("chaos", chaos);
    register_check_handlers(&mut r);
    r
}

/// Registers the handlers `rrq runner check` exercises: `rrq_check.echo`,
/// `rrq_check.sleep`, `rrq_check.fail` and `rrq_check.retry`.
///
/// ```
/// let mut registry = rrq_runner::Registry::new();
/// rrq_runner::example::register_check_handlers(&mut registry);
/// assert!(registry.contains("rrq_check.echo"));
/// ```
pub fn register_check_handlers(r: &mut Registry) {
    r.register("rrq_check.echo", |params: Map<String, Value>, ctx: JobContext| async move {
        HandlerResult::Ok(json!({
            "params": params,
            "job_id": ctx.job_id,
            "attempt": ctx.attempt,
            "trace_context": ctx.trace_context,
        }))
    });
    r.register("rrq_check.sleep", |p: SleepParams, _ctx: JobContext| async move {
        tokio::time::sleep(seconds(p.seconds)).await;
        HandlerResult::Ok("slept")
    });
    r.register("rrq_check.fail", |p: MessageParams, _ctx: JobContext| async move {
        HandlerResult::<()>::Err(HandlerError::failed(p.message))
    });
    r.register("rrq_check.retry", |p: DelayParams, _ctx: JobContext| async move {
        HandlerResult::<()>::Err(HandlerError::retry_after("retry requested", seconds(p.delay)))
    });
}

/// One execution for the chaos harness: a start line, the work, an end line
/// (also when the execution is dropped before it finishes).
async fn chaos(p: ChaosParams, ctx: JobContext) -> HandlerResult<Value> {
    let mut record = ChaosRecord {
        path: p.path.clone(),
        base: json!({"job": ctx.job_id, "attempt": ctx.attempt, "pid": std::process::id(), "ppid": parent_pid()}),
        outcome: None,
    };
    record.write("start", None)?;
    if p.ignore_cancel {
        // Blocks this task: a cancel (or the deadline) cannot interrupt it,
        // the way a handler stuck in blocking code ignores both.
        let d = seconds(p.seconds);
        tokio::task::block_in_place(|| std::thread::sleep(d));
    } else {
        tokio::time::sleep(seconds(p.seconds)).await;
    }
    let outcome = p.outcome.as_deref().unwrap_or("ok").to_owned();
    record.outcome = Some(outcome.clone());
    match outcome.as_str() {
        "fail" => Err(HandlerError::failed(format!("chaos: failed on attempt {}", ctx.attempt))),
        "retry" if ctx.attempt <= 1 => Err(HandlerError::retry_after("chaos: retry", Duration::from_millis(50))),
        _ => Ok(json!({"attempt": ctx.attempt})),
    }
}

/// Writes the end line when dropped: with the outcome when the work finished,
/// `dropped` when the execution was abandoned half-way.
struct ChaosRecord {
    path: String,
    base: Value,
    outcome: Option<String>,
}

impl ChaosRecord {
    fn write(&self, ev: &str, outcome: Option<&str>) -> std::io::Result<()> {
        let mut line = self.base.clone();
        if let Some(map) = line.as_object_mut() {
            map.insert("ev".into(), json!(ev));
            map.insert("t".into(), json!(epoch_seconds()));
            if let Some(o) = outcome {
                map.insert("outcome".into(), json!(o));
            }
        }
        let mut text = line.to_string();
        text.push('\n');
        std::fs::OpenOptions::new().create(true).append(true).open(&self.path)?.write_all(text.as_bytes())
    }
}

impl Drop for ChaosRecord {
    fn drop(&mut self) {
        let outcome = self.outcome.take().unwrap_or_else(|| "dropped".to_owned());
        let _ = self.write("end", Some(&outcome));
    }
}

fn parent_pid() -> u32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok()).unwrap_or(0)
}

/// Leaves without answering, as a runner hit by a fatal bug would.
async fn crash(_: Value, _ctx: JobContext) -> HandlerResult<()> {
    std::process::exit(1)
}

/// Entry point of the example runner binaries: serves [`registry`] on the
/// address from `--tcp-socket` and exits with status 1 on error.
///
/// ```no_run
/// // The whole of src/bin/rrq-example-runner.rs's `main`:
/// rrq_runner::example::main();
/// ```
pub fn main() {
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rrq-example-runner: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run_from_args(registry())) {
        let mut message = format!("rrq-example-runner: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(cause) = source {
            message.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        eprintln!("{message}");
        std::process::exit(1);
    }
}

#[derive(Deserialize)]
struct SleepParams {
    #[serde(default)]
    seconds: f64,
}

#[derive(Deserialize)]
struct MessageParams {
    message: String,
}

#[derive(Deserialize)]
struct DelayParams {
    delay: f64,
}

#[derive(Deserialize)]
struct ValueParams {
    value: Option<Value>,
}

#[derive(Deserialize)]
struct RetryParams {
    value: Option<Value>,
    delay: Option<f64>,
}

#[derive(Deserialize)]
struct ChaosParams {
    path: String,
    #[serde(default)]
    seconds: f64,
    outcome: Option<String>,
    #[serde(default)]
    ignore_cancel: bool,
}

#[derive(Deserialize)]
struct RecordParams {
    path: String,
    seconds: Option<f64>,
}

fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(Duration::ZERO)
}

fn show(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "None".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

fn epoch_seconds() -> f64 {
    crate::clock::now().timestamp_micros() as f64 / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_handler_is_registered() {
        let r = registry();
        for name in ["echo", "noop", "sleep", "fail", "retry_once", "success", "timeout", "record", "crash", "chaos"] {
            assert!(r.contains(name), "{name}");
        }
        for name in ["rrq_check.echo", "rrq_check.sleep", "rrq_check.fail", "rrq_check.retry"] {
            assert!(r.contains(name), "{name}");
        }
        assert_eq!(r.len(), 14);
    }

    #[test]
    fn the_parent_pid_is_read_from_proc() {
        assert!(parent_pid() > 0);
    }

    #[test]
    fn values_are_shown_like_the_python_examples() {
        assert_eq!(show(Some(&json!("q"))), "q");
        assert_eq!(show(None), "None");
        assert_eq!(show(Some(&json!(3))), "3");
        assert_eq!(seconds(-1.0), Duration::ZERO);
    }
}
