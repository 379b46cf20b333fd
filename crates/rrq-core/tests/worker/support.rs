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
    /// Never answer and ignore cancels: only `terminate` (or the timeout) ends it.
    Stubborn,
    /// Answer with this outcome once cancelled (after the cancel was logged).
    OnCancel(fn(&ExecutionRequest) -> ExecutionOutcome),
    /// Fail the transport.
    Transport(&'static str),
    /// Panic inside `execute` (a bug in a runner or in the worker).
    Panic,
}

/// Events of a test in order, shared by the runner and a store wrapper.
pub type EventLog = Arc<Mutex<Vec<String>>>;

/// A runner whose behaviour per handler is scripted, recording every request.
#[derive(Debug)]
pub struct ScriptedRunner {
    script: Mutex<HashMap<String, Behavior>>,
    pub calls: Mutex<Vec<ExecutionRequest>>,
    pub cancels: Mutex<Vec<(String, String)>>,
    pending: Mutex<HashMap<String, Pending>>,
    capacity: usize,
    pub shut_down: Mutex<bool>,
    /// `execute:{job}`, `cancel:{job}`, `terminate:{job}`, `ended:{job}`.
    pub log: EventLog,
    /// How long a `cancel` call takes (a pool may spend a while delivering one).
    pub cancel_delay: Mutex<Duration>,
}

#[derive(Debug)]
struct Pending {
    answer: oneshot::Sender<Result<ExecutionOutcome, PoolError>>,
    behavior: Option<Behavior>,
    request: ExecutionRequest,
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
            log: Arc::new(Mutex::new(Vec::new())),
            cancel_delay: Mutex::new(Duration::ZERO),
        })
    }

    fn event(&self, what: &str, job_id: &str) {
        self.log.lock().unwrap().push(format!("{what}:{job_id}"));
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
        self.event("execute", &request.job_id);
        let behavior = self.script.lock().unwrap().get(&request.function_name).cloned();
        let (tx, rx) = oneshot::channel();
        let pending = Pending { answer: tx, behavior: behavior.clone(), request: request.clone() };
        self.pending.lock().unwrap().insert(request.request_id.clone(), pending);
        let work = async {
            match behavior {
                None => Ok(not_found(&request)),
                Some(Behavior::Reply(f)) => Ok(f(&request)),
                Some(Behavior::After(d, f)) => {
                    tokio::time::sleep(d).await; // sleep-ok: the simulated handler's run time (paused clock)
                    Ok(f(&request))
                }
                Some(Behavior::Hang | Behavior::Stubborn | Behavior::OnCancel(_)) => std::future::pending().await,
                Some(Behavior::Transport(m)) => Err(PoolError::transport(m)),
                Some(Behavior::Panic) => panic!("scripted runner bug"),
            }
        };
        let result = tokio::select! {
            r = work => r,
            Ok(stopped) = rx => stopped,
            () = tokio::time::sleep(timeout) => Err(PoolError::Timeout(timeout)), // sleep-ok: the request timeout
        };
        self.pending.lock().unwrap().remove(&request.request_id);
        self.event("ended", &request.job_id);
        result
    }

    async fn cancel(&self, job_id: &str, request_id: &str) {
        self.cancels.lock().unwrap().push((job_id.to_owned(), request_id.to_owned()));
        self.event("cancel", job_id);
        let delay = *self.cancel_delay.lock().unwrap();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await; // sleep-ok: the simulated cancel delivery (paused clock)
        }
        let mut pending = self.pending.lock().unwrap();
        if matches!(pending.get(request_id).map(|p| &p.behavior), None | Some(Some(Behavior::Stubborn))) {
            return;
        }
        let p = pending.remove(request_id).unwrap();
        let reply = match p.behavior {
            Some(Behavior::OnCancel(f)) => f(&p.request),
            _ => ExecutionOutcome::error(&p.request, OutcomeError::with_kind("Job cancelled", error_types::CANCELLED)),
        };
        let _ = p.answer.send(Ok(reply));
    }

    /// Ends the request at once with a transport error, as a pool does once
    /// it has killed the request's process.
    async fn terminate(&self, job_id: &str, request_id: &str) {
        self.event("terminate", job_id);
        if let Some(p) = self.pending.lock().unwrap().remove(request_id) {
            let _ = p.answer.send(Err(PoolError::transport("runner process terminated")));
        }
    }

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
