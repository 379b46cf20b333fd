//! Claiming: fair polling across queues, and starting what was claimed.

use chrono::{DateTime, Utc};
use rrq_protocol::QueueName;
use rrq_store::{ClaimRequest, Claimed, Lease, StoreError};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::{LoopState, continue_trace};
use crate::error::CoreError;
use crate::job_task::{self, Control, Ending};
use crate::lease_watch::{AttemptId, Running};
use crate::telemetry;

use std::future::Future;
use std::time::Duration;

/// How long a claim in flight when shutdown comes may still take (it may
/// already have run, so its jobs are worth putting back).
const CLAIM_AT_SHUTDOWN: Duration = Duration::from_secs(5);

impl LoopState {
    /// One fair polling cycle; returns how many jobs were claimed.
    pub(super) async fn claim_cycle(&mut self, shutdown: &CancellationToken) -> Result<usize, CoreError> {
        self.want_claim = false;
        let free = self.concurrency.saturating_sub(self.attempts.len());
        let n = self.config.queues.len();
        self.next_poll = Instant::now() + self.poll_interval();
        if free == 0 {
            // Claim again as soon as a running job finishes.
            self.want_claim = true;
            self.status = "idle (concurrency limit)";
            return Ok(0);
        }
        self.status = "polling";
        let fair_share = free.div_ceil(n).max(1);
        let start = self.rotation % n;
        self.rotation = self.rotation.wrapping_add(1);
        let mut remaining = free;
        let mut claimed = 0;
        let mut has_more = vec![false; n];
        for pass in 0..2 {
            for i in 0..n {
                let idx = (start + i) % n;
                if remaining == 0 || (pass == 1 && !has_more[idx]) || shutdown.is_cancelled() {
                    continue;
                }
                let want = if pass == 0 { remaining.min(fair_share) } else { remaining };
                let queue = self.config.queues[idx].clone();
                let got = self.claim_from(&queue, want, shutdown).await?;
                has_more[idx] = got == want;
                remaining -= got;
                claimed += got;
            }
            if remaining == 0 || !has_more.iter().any(|m| *m) {
                break;
            }
        }
        // Every slot filled: more work is probably waiting; claim again as
        // soon as slots free up.
        self.want_claim = remaining == 0;
        self.status = if claimed > 0 { "running" } else { "idle (no jobs)" };
        Ok(claimed)
    }

    async fn claim_from(
        &mut self,
        queue: &QueueName,
        want: usize,
        shutdown: &CancellationToken,
    ) -> Result<usize, CoreError> {
        let claimed_at = self.ctx.clock.now();
        let req = ClaimRequest {
            queue: queue.clone(),
            worker_id: self.config.worker_id.clone(),
            max: want,
            now: claimed_at,
            lease_ttl: self.config.lease_ttl,
            max_payload_bytes: self.ctx.max_payload_bytes,
        };
        // The locks last at least the TTL from when the claim was sent.
        let sent = Instant::now();
        let store = self.ctx.store.clone();
        let claim = store.claim(req);
        tokio::pin!(claim);
        let result: Result<_, StoreError> = tokio::select! {
            biased;
            r = &mut claim => r,
            () = shutdown.cancelled() => match tokio::time::timeout(CLAIM_AT_SHUTDOWN, &mut claim).await {
                Ok(r) => r,
                Err(_) => {
                    warn!(queue = %queue, "a claim in flight at shutdown did not finish; what it took waits for recovery");
                    return Ok(0);
                }
            },
        };
        let batch = match result {
            Ok(b) => {
                self.store_failures = 0;
                b
            }
            Err(e) => {
                if shutdown.is_cancelled() {
                    return Ok(0);
                }
                self.store_failure("claim", e)?;
                return Ok(0);
            }
        };
        if !batch.dropped.is_empty() {
            debug!(queue = %queue, dropped = batch.dropped.len(), "dropped vanished or finished jobs from the queue");
        }
        if let Some(wait) = batch.next_ready.and_then(|next| wake_for(next, claimed_at, self.ctx.clock.now())) {
            self.next_poll = self.next_poll.min(Instant::now() + wait);
        }
        let got = batch.jobs.len();
        let held_until = sent + self.config.lease_ttl;
        for claimed in batch.jobs {
            if shutdown.is_cancelled() {
                self.hand_back(claimed, held_until);
            } else {
                self.start(claimed, held_until);
            }
        }
        Ok(got)
    }

    /// Puts a job claimed while shutting down straight back on its queue
    /// (no attempt counted), tracked like any attempt until that is written.
    fn hand_back(&mut self, claimed: Claimed, held_until: Instant) {
        self.stats.claimed += 1;
        let Claimed { lease, job: _ } = claimed;
        telemetry::claimed(lease.queue.as_str());
        info!(job_id = %lease.job_id, queue = %lease.queue, "claimed at shutdown; putting the job back");
        let (tx, mut rx) = watch::channel(Control::Run);
        let ctx = self.ctx.clone();
        let task_lease = lease.clone();
        let span = info_span!("rrq.job", otel.kind = "consumer", job_id = %lease.job_id, queue = %lease.queue);
        self.track(
            lease,
            tx,
            held_until,
            async move { job_task::release(&ctx, &task_lease, &mut rx).await }.instrument(span),
        );
    }

    /// Tracks a new attempt and spawns its task.
    fn track(
        &mut self,
        lease: Lease,
        control: watch::Sender<Control>,
        held_until: Instant,
        task: impl Future<Output = Ending> + Send + 'static,
    ) {
        let id = AttemptId::of(&lease);
        self.attempts.lock().insert(id.clone(), Running { lease, control, held_until, poisoned: false });
        self.spawn_for(id, task);
        telemetry::in_flight(self.attempts.len());
    }

    fn start(&mut self, claimed: Claimed, held_until: Instant) {
        self.stats.claimed += 1;
        let Claimed { lease, job } = claimed;
        let (tx, mut rx) = watch::channel(Control::Run);
        let ctx = self.ctx.clone();
        // Everything known at the claim goes in at creation: each later
        // `record` costs an exporting subscriber a span look-up.
        let (attempt, function) = match &job {
            Ok(job) => (Some(job.attempt()), Some(job.function_name.as_str())),
            Err(_) => (None, None),
        };
        let span = info_span!(
            "rrq.job",
            otel.kind = "consumer",
            job_id = %lease.job_id,
            queue = %lease.queue,
            attempt,
            function,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let task_lease = lease.clone();
        telemetry::claimed(lease.queue.as_str());
        match job {
            Ok(job) => {
                continue_trace(&span, job.trace_context.as_ref());
                let (queue, function) = (lease.queue.as_str().to_owned(), job.function_name.clone());
                let started = Instant::now();
                let task = async move {
                    let ending = job_task::run(ctx, task_lease, job, rx).await;
                    tracing::Span::current().record("outcome", tracing::field::debug(ending));
                    telemetry::ended(&queue, &function, ending, started.elapsed());
                    ending
                };
                self.track(lease, tx, held_until, task.instrument(span));
            }
            Err(parse_error) => {
                let task = async move {
                    let reason = format!("Failed to parse claimed job definition ({parse_error}). Moved to DLQ.");
                    job_task::quarantine(&ctx, &task_lease, &reason, &mut rx).await
                };
                self.track(lease, tx, held_until, task.instrument(span));
            }
        }
    }
}

/// How long to wait before claiming from a queue again because of its next
/// job, ready at `next` (the queue's head after a claim made at
/// `claimed_at`): until a deferred job is due (at once if it became due
/// since). `None` for a head already due at the claim but left there: it is
/// held by another lock owner (or beyond the claim's window), so the
/// regular poll looks again; claiming again at once would spin.
fn wake_for(next: DateTime<Utc>, claimed_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Duration> {
    (next > claimed_at).then(|| (next - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;

    #[test]
    fn a_deferred_head_wakes_the_worker_when_it_is_due() {
        let claimed_at = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let now = claimed_at + TimeDelta::milliseconds(2);
        let next = claimed_at + TimeDelta::milliseconds(500);
        assert_eq!(wake_for(next, claimed_at, now), Some(Duration::from_millis(498)));
        // Due between the claim and now: claim again at once.
        assert_eq!(wake_for(claimed_at + TimeDelta::milliseconds(1), claimed_at, now), Some(Duration::ZERO));
    }

    #[test]
    fn a_head_due_at_the_claim_but_not_taken_waits_for_the_regular_poll() {
        // The claim left a due job in the queue (its lock is held elsewhere):
        // an immediate retry would find it locked again, in a hot loop.
        let claimed_at = DateTime::<Utc>::from_timestamp(1_000, 0).unwrap();
        let now = claimed_at + TimeDelta::milliseconds(2);
        assert_eq!(wake_for(claimed_at, claimed_at, now), None);
        assert_eq!(wake_for(claimed_at - TimeDelta::seconds(5), claimed_at, now), None);
    }
}
