//! Test doubles: a scripted runner and a clock that follows tokio's (paused) time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rrq_pool::{PoolError, Runner, RunnerHealth};
use rrq_protocol::{ExecutionOutcome, ExecutionRequest, OutcomeError, error_types};
use rrq_store::Clock;
use serde_json::Value;
use tokio::sync::oneshot;

/// Wall time that advances with tokio's clock, so paused-time tests see
/// retries and deferrals become due.
#[derive(Debug)]
pub struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self { base: "2026-11-28T00:00:00Z".parse().unwrap(), start: tokio::time::Instant::now() })
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.base + TimeDelta::from_std(self.start.elapsed()).unwrap()
    }
}

/// What the scripted runner does with a request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Answer at once with this outcome (job/request ids filled in).
    Reply(fn(&ExecutionRequest) -> ExecutionOutcome),
    /// Answer after a delay.
    After(Duration, fn(&ExecutionRequest) -> ExecutionOutcome),
    /// Never answer (until cancelled or timed out).
    Hang,
    /// Fail the transport.
    Transport(&'static str),
}

/// A runner whose behaviour per handler is scripted, recording every request.
#[derive(Debug)]
pub struct ScriptedRunner {
    script: Mutex<HashMap<String, Behavior>>,
    pub calls: Mutex<Vec<ExecutionRequest>>,
    pub cancels: Mutex<Vec<(String, String)>>,
    pending: Mutex<HashMap<String, oneshot::Sender<ExecutionOutcome>>>,
    capacity: usize,
    pub shut_down: Mutex<bool>,
}

impl ScriptedRunner {
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(HashMap::new()),
            calls: Mutex::new(Vec::new()),
            cancels: Mutex::new(Vec::new()),
            pending: Mutex::new(HashMap::new()),
            capacity,
            shut_down: Mutex::new(false),
        })
    }

    pub fn on(self: &Arc<Self>, handler: &str, b: Behavior) -> Arc<Self> {
        self.script.lock().unwrap().insert(handler.to_owned(), b);
        self.clone()
    }

    pub fn calls_for(&self, job_id: &str) -> Vec<ExecutionRequest> {
        self.calls.lock().unwrap().iter().filter(|r| r.job_id == job_id).cloned().collect()
    }
}

pub fn success(r: &ExecutionRequest) -> ExecutionOutcome {
    ExecutionOutcome::success(
        r,
        Value::from(format!("ok:{}", r.params.get("value").and_then(Value::as_str).unwrap_or(""))),
    )
}

pub fn fail(r: &ExecutionRequest) -> ExecutionOutcome {
    ExecutionOutcome::error(r, OutcomeError::message("boom"))
}

pub fn retry_once(r: &ExecutionRequest) -> ExecutionOutcome {
    if r.context.attempt == 1 { ExecutionOutcome::retry(r, "please retry", Some(0.5)) } else { success(r) }
}

fn not_found(r: &ExecutionRequest) -> ExecutionOutcome {
    ExecutionOutcome::error(
        r,
        OutcomeError::with_kind(
            format!("No handler registered for function '{}'", r.function_name),
            error_types::HANDLER_NOT_FOUND,
        ),
    )
}

#[async_trait]
impl Runner for ScriptedRunner {
    async fn execute(&self, request: ExecutionRequest, timeout: Duration) -> Result<ExecutionOutcome, PoolError> {
        self.calls.lock().unwrap().push(request.clone());
        let behavior = self.script.lock().unwrap().get(&request.function_name).cloned();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().insert(request.request_id.clone(), tx);
        let work = async {
            match behavior {
                None => Ok(not_found(&request)),
                Some(Behavior::Reply(f)) => Ok(f(&request)),
                Some(Behavior::After(d, f)) => {
                    tokio::time::sleep(d).await; // sleep-ok: the simulated handler's run time (paused clock)
                    Ok(f(&request))
                }
                Some(Behavior::Hang) => std::future::pending().await,
                Some(Behavior::Transport(m)) => Err(PoolError::Transport(m.to_owned())),
            }
        };
        let result = tokio::select! {
            r = work => r,
            Ok(cancelled) = rx => Ok(cancelled),
            () = tokio::time::sleep(timeout) => Err(PoolError::Timeout(timeout)), // sleep-ok: the request timeout
        };
        self.pending.lock().unwrap().remove(&request.request_id);
        result
    }

    async fn cancel(&self, job_id: &str, request_id: &str) {
        self.cancels.lock().unwrap().push((job_id.to_owned(), request_id.to_owned()));
        if let Some(tx) = self.pending.lock().unwrap().remove(request_id) {
            let outcome = ExecutionOutcome {
                job_id: job_id.to_owned(),
                request_id: Some(request_id.to_owned()),
                status: rrq_protocol::OutcomeStatus::Error,
                result: None,
                error: Some(OutcomeError::with_kind("Job cancelled", error_types::CANCELLED)),
                retry_after_seconds: None,
            };
            let _ = tx.send(outcome);
        }
    }

    // placeholder: rrq-core owns this
    async fn terminate(&self, _job_id: &str, _request_id: &str) {}

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn health(&self) -> RunnerHealth {
        RunnerHealth { ready: 1, configured: 1, ..RunnerHealth::default() }
    }

    async fn shutdown(&self, _grace: Duration) {
        *self.shut_down.lock().unwrap() = true;
    }
}
