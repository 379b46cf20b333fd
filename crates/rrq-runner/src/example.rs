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
//!
//! In `{value}`, a string is inserted as is, an absent value as `None` and
//! anything else as JSON.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{HandlerError, HandlerResult, JobContext, Registry, run_from_args};

/// The example handlers (see the module documentation).
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
    r
}

/// Leaves without answering, as a runner hit by a fatal bug would.
async fn crash(_: Value, _ctx: JobContext) -> HandlerResult<()> {
    std::process::exit(1)
}

/// Entry point of the example runner binaries: serves [`registry`] on the
/// address from `--tcp-socket` and exits with status 1 on error.
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
struct ValueParams {
    value: Option<Value>,
}

#[derive(Deserialize)]
struct RetryParams {
    value: Option<Value>,
    delay: Option<f64>,
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
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_handler_is_registered() {
        let r = registry();
        for name in ["echo", "noop", "sleep", "fail", "retry_once", "success", "timeout", "record", "crash"] {
            assert!(r.contains(name), "{name}");
        }
        assert_eq!(r.len(), 9);
    }

    #[test]
    fn values_are_shown_like_the_python_examples() {
        assert_eq!(show(Some(&json!("q"))), "q");
        assert_eq!(show(None), "None");
        assert_eq!(show(Some(&json!(3))), "3");
        assert_eq!(seconds(-1.0), Duration::ZERO);
    }
}
