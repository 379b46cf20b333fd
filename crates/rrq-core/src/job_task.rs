//! One attempt of one job: dispatch to a runner, classify, record.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rrq_pool::{PoolError, Runner};
use rrq_protocol::{ExecutionContext, ExecutionOutcome, ExecutionRequest, OutcomeStatus, PROTOCOL_VERSION};
use rrq_store::{AttemptCount, Clock, Fence, Job, Lease, Store, StoreError};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use crate::policy::{Attempt, Backoff, Decision, Routing, decide};

/// What the worker loop asks of a running attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    /// Keep going.
    Run,
    /// Someone cancelled the job: ask the runner to stop, record CANCELLED.
    Cancel,
    /// The lock is (about to be) lost: stop the runner (cancel, then
    /// terminate) and give the attempt up without writing anything (a
    /// success that arrives while stopping is still recorded, fenced).
    Lost,
    /// The worker is shutting down and the grace period is over: stop the
    /// runner likewise, then put the job back on its queue.
    Shutdown,
}

/// How an attempt ended, for the worker's counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    Completed,
    Retried,
    DeadLettered,
    Cancelled,
    Released,
    /// The lease was lost or the write was fenced off: another owner decides.
    Abandoned,
}

/// What every attempt and cron firing of one worker reads: store, clock,
/// runners, policies and limits (read-only once the worker runs).
#[derive(Debug)]
pub(crate) struct WorkerContext {
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub runners: BTreeMap<String, Arc<dyn Runner>>,
    pub backoff: Backoff,
    pub routing: Routing,
    pub worker_id: String,
    pub lease_ttl: Duration,
    pub max_payload_bytes: usize,
    /// How long a stopping attempt waits for the runner to answer its cancel.
    pub cancel_grace: Duration,
    /// Longest wait for `Runner::terminate` to confirm the process is gone.
    pub terminate_budget: Duration,
}

/// The longest timeout handed to a runner: 100 years.
const MAX_RUNNER_TIMEOUT_SECS: u64 = 100 * 365 * 24 * 3600;

const SHUTDOWN_MESSAGE: &str = "Job execution interrupted by worker shutdown. Re-queued.";

/// Runs one claimed job to a recorded outcome.
pub(crate) async fn run(
    ctx: Arc<WorkerContext>,
    lease: Lease,
    job: Job,
    mut control: watch::Receiver<Control>,
) -> Ending {
    let timeout_secs = job.timeout_seconds(ctx.store.job_defaults());
    let attempt = job.attempt();
    let max_attempts = job.max_attempts(ctx.store.job_defaults());

    if timeout_secs <= 0 {
        let reason = format!("Invalid job timeout: {timeout_secs}. Must be positive.");
        return dead_letter(&ctx, &lease, &reason, &mut control).await;
    }
    let payload = payload_bytes(&job.params);
    if payload > ctx.max_payload_bytes {
        // Never sent, so no attempt is counted: the job is quarantined.
        let reason = format!(
            "Job payload is {payload} bytes, over max_payload_bytes ({}). Moved to DLQ.",
            ctx.max_payload_bytes
        );
        return quarantine(&ctx, &lease, &reason, &mut control).await;
    }
    let route = match ctx.routing.route(&job.function_name, &lease.queue) {
        Ok(r) => r,
        Err(reason) => return dead_letter(&ctx, &lease, &reason, &mut control).await,
    };
    let Some(runner) = ctx.runners.get(route.runner) else {
        let reason = format!("No runner configured for '{}'.", route.runner);
        return dead_letter(&ctx, &lease, &reason, &mut control).await;
    };

    // Capped so that no runner's `Instant + timeout` can overflow, whatever
    // the job says (a century is "never" for any real job).
    let timeout = Duration::from_secs(u64::try_from(timeout_secs).unwrap_or(u64::MAX).min(MAX_RUNNER_TIMEOUT_SECS));
    // The timer starts before the deadline is computed, so the orchestrator's
    // timer is never later than the runner's; when the runner still answers
    // `timeout` first, `decide` records the orchestrator's message anyway, so
    // `last_error` is the same either way.
    let started = tokio::time::Instant::now();
    let deadline = later(ctx.clock.now(), timeout);
    let request_id = next_request_id();
    let request = ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: request_id.clone(),
        job_id: job.id.as_str().to_owned(),
        function_name: route.handler.to_owned(),
        params: job.params,
        context: ExecutionContext {
            job_id: job.id.as_str().to_owned(),
            attempt,
            enqueue_time: wire_timestamp(job.enqueue_time),
            queue_name: lease.queue.as_str().to_owned(),
            deadline: Some(wire_timestamp(deadline)),
            trace_context: job.trace_context,
            correlation_context: job.correlation_context,
            worker_id: Some(ctx.worker_id.clone()),
        },
    };
    debug!(job_id = %lease.job_id, runner = route.runner, handler = route.handler, attempt, "dispatching");

    let mut execution = std::pin::pin!(runner.execute(request, timeout));
    let mut cancel_sent = false;
    let result = loop {
        tokio::select! {
            // A reply that is there wins over any control message.
            biased;
            r = &mut execution => break r,
            changed = control.changed() => {
                let now = if changed.is_ok() { *control.borrow_and_update() } else { Control::Shutdown };
                match now {
                    Control::Run => {}
                    Control::Cancel => {
                        if !cancel_sent {
                            cancel_sent = true;
                            runner.cancel(lease.job_id.as_str(), &request_id).await;
                        }
                    }
                    Control::Lost | Control::Shutdown => {
                        let reply = stop_runner(&ctx, runner.as_ref(), &lease, &request_id, execution.as_mut()).await;
                        // A success that arrives while stopping is recorded
                        // (through the fence, so only while still held).
                        if let Some(Ok(outcome)) = reply
                            && outcome.status == OutcomeStatus::Success
                            && !cancel_sent
                        {
                            break Ok(outcome);
                        }
                        if now == Control::Lost {
                            warn!(job_id = %lease.job_id, "lock lost while running; runner stopped, attempt abandoned");
                            return Ending::Abandoned;
                        }
                        return release(&ctx, &lease, &mut control).await;
                    }
                }
            }
        }
    };

    if cancel_sent {
        let fence = write(&ctx, &mut control, "finish_cancelled", || ctx.store.finish_cancelled(&lease)).await;
        return ended(fence, Ending::Cancelled, &lease);
    }
    if matches!(result, Err(PoolError::ShuttingDown)) {
        return release(&ctx, &lease, &mut control).await;
    }
    let deadline_passed = started.elapsed().saturating_add(Duration::from_millis(50)) >= timeout;
    let attempt_facts = Attempt { number: attempt, max_attempts, timeout_secs, deadline_passed };
    match decide(attempt_facts, result, &ctx.backoff) {
        Decision::Complete(value) => {
            let fence =
                write(&ctx, &mut control, "complete", || ctx.store.complete(&lease, &value, ctx.clock.now())).await;
            ended(fence, Ending::Completed, &lease)
        }
        Decision::Retry { error, delay } => {
            tracing::Span::current().record("error", tracing::field::display(&error));
            let fence = write(&ctx, &mut control, "retry", || {
                let now = ctx.clock.now();
                let ready_at = later(now, delay);
                ctx.store.retry(&lease, &error, ready_at, now)
            })
            .await;
            debug!(job_id = %lease.job_id, attempt, error = %error, delay_ms = delay.as_millis() as u64, "retry scheduled");
            ended(fence, Ending::Retried, &lease)
        }
        Decision::DeadLetter { reason } => dead_letter(&ctx, &lease, &reason, &mut control).await,
    }
}

/// `now + delay`, saturating at the largest representable time: job-supplied
/// durations must never overflow.
/// A time as the runner protocol writes it: RFC 3339 in UTC with a `Z`
/// suffix, fractional digits only when non-zero (3, 6 or 9 of them).
fn wire_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

pub(crate) fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(delay).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Stops the runner's work on a request before the job is handed back:
/// sends a cancel and waits up to the cancel grace for the execution to
/// resolve (its reply is returned), else terminates the request's process
/// and returns once that is confirmed (or the terminate budget is spent).
async fn stop_runner(
    ctx: &WorkerContext,
    runner: &dyn Runner,
    lease: &Lease,
    request_id: &str,
    mut execution: Pin<&mut (impl Future<Output = Result<ExecutionOutcome, PoolError>> + ?Sized)>,
) -> Option<Result<ExecutionOutcome, PoolError>> {
    let job_id = lease.job_id.as_str();
    let grace_over = tokio::time::Instant::now() + ctx.cancel_grace;
    let mut cancel = std::pin::pin!(runner.cancel(job_id, request_id));
    let mut cancel_sent = false;
    loop {
        tokio::select! {
            biased;
            r = &mut execution => return Some(r),
            () = &mut cancel, if !cancel_sent => cancel_sent = true,
            () = tokio::time::sleep_until(grace_over) => break,
        }
    }
    warn!(job_id, grace_ms = ctx.cancel_grace.as_millis() as u64, "runner did not stop on cancel; terminating it");
    if tokio::time::timeout(ctx.terminate_budget, runner.terminate(job_id, request_id)).await.is_err() {
        error!(
            job_id,
            budget_ms = ctx.terminate_budget.as_millis() as u64,
            "runner did not confirm termination in time; handing the job back anyway"
        );
    }
    None
}

/// The size of a job's params as the JSON sent to the runner.
fn payload_bytes(params: &serde_json::Map<String, serde_json::Value>) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a map of JSON values always serialises.
    let _ = serde_json::to_writer(&mut count, params);
    count.0
}

/// A fresh request id: a random per-process base plus a counter, formatted
/// as a UUID. Unique within the process by construction and across
/// processes by the random base, without a `getrandom` call per job.
fn next_request_id() -> String {
    use std::sync::LazyLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static BASE: LazyLock<u128> = LazyLock::new(|| uuid::Uuid::new_v4().as_u128());
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    uuid::Uuid::from_u128(BASE.wrapping_add(u128::from(n))).to_string()
}

/// Moves a claimed job to the DLQ, counting the attempt that led there.
pub(crate) async fn dead_letter(
    ctx: &WorkerContext,
    lease: &Lease,
    reason: &str,
    control: &mut watch::Receiver<Control>,
) -> Ending {
    info!(job_id = %lease.job_id, queue = %lease.queue, reason, "moving job to the dead letter queue");
    tracing::Span::current().record("error", reason);
    let fence = write(ctx, control, "dead_letter", || {
        ctx.store.dead_letter(lease, reason, AttemptCount::Counted, ctx.clock.now())
    })
    .await;
    ended(fence, Ending::DeadLettered, lease)
}

/// Moves a claimed job that must not run (unreadable, payload over the
/// limit) to the DLQ unrun, without counting an attempt.
pub(crate) async fn quarantine(
    ctx: &WorkerContext,
    lease: &Lease,
    reason: &str,
    control: &mut watch::Receiver<Control>,
) -> Ending {
    info!(job_id = %lease.job_id, queue = %lease.queue, reason, "quarantining job to the dead letter queue");
    tracing::Span::current().record("error", reason);
    let fence = write(ctx, control, "quarantine", || ctx.store.quarantine(lease, reason, ctx.clock.now())).await;
    ended(fence, Ending::DeadLettered, lease)
}

/// How long putting a job back may take: one quick write; if Redis does not
/// answer (an outage at shutdown) the lease expires and recovery re-runs it.
pub(crate) const RELEASE_WINDOW: Duration = Duration::from_secs(5);

/// Puts the job back on its queue without counting an attempt.
pub(crate) async fn release(ctx: &WorkerContext, lease: &Lease, control: &mut watch::Receiver<Control>) -> Ending {
    let put_back = write(ctx, control, "release", || ctx.store.release(lease, Some(SHUTDOWN_MESSAGE), ctx.clock.now()));
    let fence = tokio::time::timeout(RELEASE_WINDOW, put_back).await.ok().flatten();
    ended(fence, Ending::Released, lease)
}

fn ended(fence: Option<Fence>, ending: Ending, lease: &Lease) -> Ending {
    match fence {
        Some(Fence::Applied) => ending,
        Some(Fence::Stale) => {
            warn!(job_id = %lease.job_id, "outcome dropped: the job is no longer held by this attempt");
            Ending::Abandoned
        }
        None => Ending::Abandoned,
    }
}

/// Runs a store write, retrying transient failures with backoff until it is
/// applied, fenced off, or the lease is given up (then recovery takes over).
async fn write<F, Fut>(
    ctx: &WorkerContext,
    control: &mut watch::Receiver<Control>,
    op: &'static str,
    mut try_write: F,
) -> Option<Fence>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Fence, StoreError>>,
{
    let give_up = tokio::time::Instant::now() + ctx.lease_ttl;
    let mut delay = Duration::from_millis(50);
    loop {
        match try_write().await {
            Ok(fence) => return Some(fence),
            Err(e) => {
                // At shutdown there is no time to wait out an outage: the
                // lease expires and orphan recovery re-runs the job.
                let stop = matches!(*control.borrow(), Control::Lost | Control::Shutdown);
                if stop || tokio::time::Instant::now() + delay >= give_up {
                    warn!(op, error = %e, "giving up on recording an outcome; orphan recovery will re-run the job");
                    return None;
                }
                warn!(op, error = %e, retry_in_ms = delay.as_millis() as u64, "store write failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_saturate_instead_of_overflowing() {
        let now = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        assert_eq!(later(now, Duration::from_secs(1 << 62)), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(now, Duration::MAX), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(DateTime::<Utc>::MAX_UTC, Duration::from_secs(1)), DateTime::<Utc>::MAX_UTC);
        assert_eq!(later(now, Duration::from_secs(5)), now + TimeDelta::seconds(5));
    }

    #[test]
    fn request_ids_are_distinct_uuids() {
        let (a, b) = (next_request_id(), next_request_id());
        assert_ne!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok(), "{a}");
    }
}
