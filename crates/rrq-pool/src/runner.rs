//! The `Runner` trait: a request goes in, a typed outcome comes out.

use std::time::Duration;

use async_trait::async_trait;
use rrq_protocol::{ExecutionOutcome, ExecutionRequest};

use crate::error::PoolError;

/// Something that executes requests: a pool of runner processes, an
/// in-process handler table, or a scripted fake in tests.
#[async_trait]
pub trait Runner: Send + Sync + std::fmt::Debug + 'static {
    /// Runs one request and waits for its outcome, at most `timeout` in total
    /// (waiting for a free slot included).
    ///
    /// On timeout the implementation stops waiting, makes sure the request can
    /// no longer produce effects it would report (cancel frame, process
    /// termination as the protocol requires) and returns
    /// [`PoolError::Timeout`]. A transport failure fails only this request.
    async fn execute(&self, request: ExecutionRequest, timeout: Duration) -> Result<ExecutionOutcome, PoolError>;

    /// Asks the runner to stop a request in flight (best effort). The pending
    /// `execute` then resolves with the runner's `cancelled` outcome, or with
    /// its own timeout.
    async fn cancel(&self, job_id: &str, request_id: &str);

    /// Makes sure the runner no longer works on a request. When the request is still in flight, the
    /// process that holds it is terminated (its whole process group: SIGTERM, then SIGKILL after the term
    /// grace) and replaced, and this returns only once that process has exited; the pending `execute`
    /// resolves with a transport error, and other requests sharing the process fail the same way. A request
    /// already answered needs nothing; one not yet sent is cancelled locally. Idempotent.
    async fn terminate(&self, job_id: &str, request_id: &str);

    /// How many requests may run at once (`pool_size × max_in_flight`).
    fn capacity(&self) -> usize;

    /// A snapshot of the runner's health.
    fn health(&self) -> RunnerHealth;

    /// Stops accepting requests; waits up to `grace` for requests in flight,
    /// then terminates every process. Idempotent.
    async fn shutdown(&self, grace: Duration);
}

/// Health of one runner (pool).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunnerHealth {
    /// Processes (or slots) ready to take requests.
    pub ready: usize,
    /// Processes configured.
    pub configured: usize,
    /// Requests in flight.
    pub in_flight: usize,
    /// Process restarts since start.
    pub restarts: u64,
    /// Processes that crashed repeatedly and are waiting out a backoff.
    pub crash_looping: usize,
}

impl RunnerHealth {
    /// Whether at least one process can take requests.
    pub fn is_up(&self) -> bool {
        self.ready > 0
    }
}
