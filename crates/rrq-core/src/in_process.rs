//! Handlers in the worker's own process: a [`Runner`] over an
//! [`rrq_runner::Registry`], for services that embed a worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use rrq_pool::{PoolError, Runner, RunnerHealth};
use rrq_protocol::{ExecutionOutcome, ExecutionRequest, OutcomeError, error_types};
use rrq_runner::Registry;
use tokio::sync::Semaphore;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// Runs requests with handlers registered in this process: no socket, no
/// child process. The handlers are the same as a socket runner's
/// ([`rrq_runner::Registry`]), so one handler can serve either way.
#[derive(Debug)]
pub struct InProcessRunner {
    registry: Arc<Registry>,
    slots: Arc<Semaphore>,
    capacity: usize,
    running: Mutex<HashMap<String, InFlight>>,
    /// Set when shutdown begins: no new requests.
    closing: CancellationToken,
    /// Set when the grace period is over: running handlers are cancelled.
    stopping: CancellationToken,
}

/// A request `execute` is working on.
#[derive(Debug)]
struct InFlight {
    /// Asks the handler to stop (or the request, before it starts, not to run).
    cancel: CancellationToken,
    /// The handler's task, once it has a slot.
    task: Option<AbortHandle>,
    /// Cancelled when the handler's task has ended (returned or aborted).
    ended: CancellationToken,
}

impl InProcessRunner {
    /// A runner executing at most `concurrency` requests at once.
    pub fn new(registry: Registry, concurrency: usize) -> Self {
        let capacity = concurrency.max(1);
        Self {
            registry: Arc::new(registry),
            slots: Arc::new(Semaphore::new(capacity)),
            capacity,
            running: Mutex::new(HashMap::new()),
            closing: CancellationToken::new(),
            stopping: CancellationToken::new(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, InFlight>> {
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Removes a request from the running set however its future ends; a
/// handler whose `execute` was dropped (timed out) is aborted.
struct Registered<'a> {
    runner: &'a InProcessRunner,
    request_id: String,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.runner.running().remove(&self.request_id) {
            entry.cancel.cancel();
            if let Some(task) = entry.task {
                task.abort();
            }
        }
    }
}

/// Marks a handler task as ended when it is dropped (it returned or was aborted).
struct Ended(CancellationToken);

impl Drop for Ended {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

#[async_trait]
impl Runner for InProcessRunner {
    async fn execute(&self, request: ExecutionRequest, timeout: Duration) -> Result<ExecutionOutcome, PoolError> {
        if self.closing.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        let request_id = request.request_id.clone();
        let cancel = self.stopping.child_token();
        let ended = CancellationToken::new();
        self.running()
            .insert(request_id.clone(), InFlight { cancel: cancel.clone(), task: None, ended: ended.clone() });
        let _registered = Registered { runner: self, request_id: request_id.clone() };
        let work = async {
            let permit = tokio::select! {
                p = self.slots.clone().acquire_owned() => p.map_err(|_| PoolError::ShuttingDown)?,
                () = cancel.cancelled() => {
                    return Ok(ExecutionOutcome::error(
                        &request,
                        OutcomeError::with_kind("Job cancelled", error_types::CANCELLED),
                    ));
                }
            };
            let registry = self.registry.clone();
            let token = cancel.clone();
            let done = Ended(ended);
            let handle = tokio::spawn(async move {
                let _permit = permit;
                let _done = done;
                registry.execute(&request, token).await
            });
            if let Some(entry) = self.running().get_mut(&request_id) {
                entry.task = Some(handle.abort_handle());
            }
            match handle.await {
                Ok(outcome) => Ok(outcome),
                Err(e) if e.is_cancelled() => Err(PoolError::transport("in-process handler was terminated")),
                Err(e) => Err(PoolError::transport_caused_by("in-process handler task failed", e)),
            }
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(result) => result,
            Err(_) => Err(PoolError::Timeout(timeout)),
        }
    }

    async fn cancel(&self, _job_id: &str, request_id: &str) {
        if let Some(entry) = self.running().get(request_id) {
            entry.cancel.cancel();
        }
    }

    async fn terminate(&self, _job_id: &str, request_id: &str) {
        let ended = {
            let running = self.running();
            let Some(entry) = running.get(request_id) else { return };
            entry.cancel.cancel();
            match &entry.task {
                Some(task) => {
                    task.abort();
                    entry.ended.clone()
                }
                // Not started: the cancel above keeps it from ever running.
                None => return,
            }
        };
        ended.cancelled().await;
    }

    fn capacity(&self) -> usize {
        self.capacity
    }

    fn health(&self) -> RunnerHealth {
        let in_flight = self.running().len();
        let ready = usize::from(!self.closing.is_cancelled());
        RunnerHealth { ready, configured: 1, in_flight, restarts: 0, crash_looping: 0 }
    }

    async fn shutdown(&self, grace: Duration) {
        self.closing.cancel();
        // Every slot free again means nothing is running any more.
        let all = u32::try_from(self.capacity).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(grace, self.slots.acquire_many(all)).await;
        self.stopping.cancel();
        self.slots.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrq_protocol::{ExecutionContext, OutcomeStatus, PROTOCOL_VERSION};
    use rrq_runner::{HandlerResult, JobContext};
    use serde_json::{Value, json};

    fn request(function: &str, id: &str) -> ExecutionRequest {
        ExecutionRequest {
            protocol_version: PROTOCOL_VERSION.into(),
            request_id: id.into(),
            job_id: format!("job-{id}"),
            function_name: function.into(),
            params: json!({"name": "rrq"}).as_object().cloned().unwrap(),
            context: ExecutionContext {
                job_id: format!("job-{id}"),
                attempt: 1,
                enqueue_time: "2026-11-28T00:00:00Z".into(),
                queue_name: "rrq:queue:default".into(),
                deadline: None,
                trace_context: None,
                correlation_context: None,
                worker_id: None,
            },
        }
    }

    fn registry() -> Registry {
        let mut r = Registry::new();
        r.register("greet", |p: Value, _ctx: JobContext| async move {
            HandlerResult::Ok(format!("hello {}", p["name"].as_str().unwrap_or("?")))
        });
        r.register("deaf", |_p: Value, _ctx: JobContext| async move {
            std::future::pending::<()>().await;
            HandlerResult::Ok("never")
        });
        r.register("wait", |_p: Value, ctx: JobContext| async move {
            ctx.cancelled().await;
            HandlerResult::Ok("never")
        });
        r
    }

    #[tokio::test]
    async fn runs_registered_handlers() {
        let runner = InProcessRunner::new(registry(), 2);
        let out = runner.execute(request("greet", "1"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(out.status, OutcomeStatus::Success);
        assert_eq!(out.result, Some(json!("hello rrq")));
        let missing = runner.execute(request("nope", "2"), Duration::from_secs(5)).await.unwrap();
        assert_eq!(missing.error_kind(), Some("handler_not_found"));
    }

    #[tokio::test(start_paused = true)]
    async fn cancels_and_times_out() {
        let runner = Arc::new(InProcessRunner::new(registry(), 2));
        let r = runner.clone();
        let pending = tokio::spawn(async move { r.execute(request("wait", "c"), Duration::from_secs(60)).await });
        while runner.health().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        runner.cancel("job-c", "c").await;
        let out = pending.await.unwrap().unwrap();
        assert_eq!(out.error_kind(), Some("cancelled"));
        let err = runner.execute(request("wait", "t"), Duration::from_secs(1)).await.unwrap_err();
        assert!(matches!(err, PoolError::Timeout(_)));
        assert_eq!(runner.health().in_flight, 0, "a timed-out request is forgotten");
    }

    #[tokio::test(start_paused = true)]
    async fn terminate_aborts_the_handler_task_and_frees_its_slot() {
        let runner = Arc::new(InProcessRunner::new(registry(), 1));
        let r = runner.clone();
        let pending = tokio::spawn(async move { r.execute(request("deaf", "d"), Duration::from_secs(600)).await });
        while runner.health().in_flight == 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await; // sleep-ok: paused time; the handler is running
        assert!(!pending.is_finished());
        runner.terminate("job-d", "d").await;
        let err = pending.await.unwrap().unwrap_err();
        assert!(matches!(err, PoolError::Transport { .. }), "{err:?}");
        // Its slot is free again: the next request runs at once.
        let out = runner.execute(request("greet", "g"), Duration::from_secs(1)).await.unwrap();
        assert_eq!(out.status, OutcomeStatus::Success);
        runner.terminate("job-d", "d").await; // idempotent
    }
}
