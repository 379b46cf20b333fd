//! The worker: one event loop that claims, dispatches, renews, heartbeats,
//! recovers and shuts down.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_pool::Runner;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{
    ClaimRequest, Claimed, Clock, Lease, LeaseState, Store, StoreError, SystemClock, WorkerHealth, format_timestamp,
};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::cron_task::CronTask;
use crate::error::CoreError;
use crate::job_task::{self, Control, Ending, Shared};
use crate::telemetry;

/// Counters of what a worker did, returned when it stops.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WorkerStats {
    /// Jobs claimed.
    pub claimed: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that ended in a scheduled retry.
    pub retried: u64,
    /// Jobs moved to the DLQ (including quarantined ones).
    pub dead_lettered: u64,
    /// Running jobs cancelled on request.
    pub cancelled: u64,
    /// Jobs put back on their queue at shutdown.
    pub released: u64,
    /// Attempts abandoned because the lease was lost.
    pub abandoned: u64,
    /// Jobs of dead workers this worker recovered.
    pub recovered: u64,
    /// Cron ticks whose job this worker created.
    pub cron_enqueued: u64,
    /// Cron ticks left alone: another worker had created the job, or an
    /// earlier job of a `unique` entry still held its lock.
    pub cron_skipped: u64,
}

/// A worker: takes jobs from queues in a store and runs them on runners.
///
/// Build it with [`Worker::new`], add runners with [`Worker::runner`], then
/// [`Worker::run`] it on the caller's tokio runtime until the token is
/// cancelled (or, in burst mode, until no work is left).
#[derive(Debug)]
pub struct Worker {
    config: WorkerConfig,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    runners: BTreeMap<String, Arc<dyn Runner>>,
}

struct Running {
    lease: Lease,
    control: watch::Sender<Control>,
    last_renewed: Instant,
}

/// How long shutdown waits for unfinished jobs to be put back on their queue.
const RELEASE_WINDOW: Duration = Duration::from_secs(5);

/// Consecutive non-outage store failures after which the worker gives up.
const FATAL_AFTER: u32 = 20;

impl Worker {
    /// A worker over `store` with no runners yet, on the system clock.
    pub fn new(config: WorkerConfig, store: Arc<dyn Store>) -> Self {
        Self { config, store, clock: Arc::new(SystemClock), runners: BTreeMap::new() }
    }

    /// Replaces the clock (tests use a manual one).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Adds a runner under `name` (the name used by routes and `name#` prefixes).
    pub fn runner(mut self, name: impl Into<String>, runner: Arc<dyn Runner>) -> Self {
        self.runners.insert(name.into(), runner);
        self
    }

    /// The worker's id.
    pub fn id(&self) -> &str {
        &self.config.worker_id
    }

    /// How many jobs the worker runs at once: the sum of its runners' capacities.
    pub fn concurrency(&self) -> usize {
        self.runners.values().map(|r| r.capacity()).sum::<usize>().max(1)
    }

    /// Runs until `shutdown` is cancelled (or, in burst mode, until no job is
    /// ready and none is running), then drains: running jobs get the grace
    /// period, and those still running after it go back to their queue.
    /// Runners are shut down before this returns.
    pub async fn run(self, shutdown: CancellationToken) -> Result<WorkerStats, CoreError> {
        if self.runners.is_empty() {
            return Err(CoreError::Config("a worker needs at least one runner".to_owned()));
        }
        let concurrency = self.concurrency();
        let config = self.config;
        let shared = Arc::new(Shared {
            store: self.store.clone(),
            clock: self.clock.clone(),
            runners: self.runners,
            defaults: config.defaults.clone(),
            backoff: config.backoff,
            routing: config.routing.clone(),
            worker_id: config.worker_id.clone(),
            lease_ttl: config.lease_ttl,
            max_payload_bytes: config.max_payload_bytes,
        });
        let mut state = LoopState::new(config, shared, concurrency);
        let span = info_span!("worker", worker_id = %state.config.worker_id);
        let result = state.run(shutdown).instrument(span).await;
        let grace = state.config.shutdown_grace;
        for runner in state.shared.runners.values() {
            runner.shutdown(grace.min(Duration::from_secs(5))).await;
        }
        result.map(|()| state.stats)
    }
}

struct LoopState {
    config: WorkerConfig,
    shared: Arc<Shared>,
    concurrency: usize,
    running: HashMap<JobId, Running>,
    tasks: JoinSet<(JobId, Ending)>,
    stats: WorkerStats,
    /// Rotating start index for fair polling.
    rotation: usize,
    /// Claim as soon as there is room (a signal arrived, or the last claim
    /// filled every free slot so more work is likely waiting).
    want_claim: bool,
    /// When to look for work without being told.
    next_poll: Instant,
    status: &'static str,
    store_failures: u32,
    cron: CronTask,
}

impl LoopState {
    fn new(config: WorkerConfig, shared: Arc<Shared>, concurrency: usize) -> Self {
        let cron = CronTask::new(&config, shared.clock.now());
        Self {
            config,
            shared,
            concurrency,
            running: HashMap::new(),
            tasks: JoinSet::new(),
            stats: WorkerStats::default(),
            rotation: 0,
            want_claim: true,
            next_poll: Instant::now(),
            status: "polling",
            store_failures: 0,
            cron,
        }
    }

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), CoreError> {
        info!(
            queues = ?self.config.queues.iter().map(QueueName::as_str).collect::<Vec<_>>(),
            concurrency = self.concurrency,
            burst = self.config.burst,
            "worker started"
        );
        let mut ready = match self.shared.store.subscribe_ready().await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(error = %e, "no ready signals; falling back to polling");
                None
            }
        };
        let start = Instant::now();
        let mut renew = interval_at(start + self.config.renew_interval, self.config.renew_interval);
        renew.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut heartbeat = interval_at(start, self.config.heartbeat_interval.min(Duration::from_secs(60)));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut recovery = interval_at(start, self.config.recovery_interval);
        recovery.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            self.reap_finished();
            if self.want_claim || Instant::now() >= self.next_poll {
                // A store call can hang until its command timeout during an
                // outage; shutdown must not wait for it.
                let claimed = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    r = self.claim_cycle() => r,
                };
                let claimed = match claimed {
                    Ok(n) => n,
                    Err(fatal) => {
                        // Running jobs still get the grace period and are put
                        // back rather than left to orphan recovery.
                        self.drain().await;
                        return Err(fatal);
                    }
                };
                if self.config.burst && claimed == 0 && self.running.is_empty() {
                    info!("burst mode: no job ready and none running; stopping");
                    break;
                }
            }
            let cron_at = self.cron.wakeup(self.shared.clock.now());
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(done) = self.tasks.join_next(), if !self.tasks.is_empty() => self.finished(done),
                signal = recv_ready(&mut ready) => match signal {
                    Some(queue) => {
                        if self.config.queues.contains(&queue) {
                            self.want_claim = true;
                        }
                    }
                    None => {
                        warn!("ready signal channel closed; falling back to polling");
                        ready = None;
                    }
                },
                () = sleep_until(self.next_poll), if !self.want_claim => {}
                _ = renew.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = self.renew() => {}
                },
                _ = heartbeat.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = self.heartbeat() => {}
                },
                _ = recovery.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    () = self.recover() => {}
                },
                () = sleep_until(cron_at.unwrap_or(self.next_poll)), if cron_at.is_some() => {
                    self.cron.run(&self.shared, &mut self.stats).await;
                }
            }
        }
        self.drain().await;
        Ok(())
    }

    fn reap_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next() {
            self.finished(done);
        }
    }

    fn finished(&mut self, done: Result<(JobId, Ending), tokio::task::JoinError>) {
        let (id, ending) = match done {
            Ok(v) => v,
            Err(e) => {
                error!(error = %e, "job task panicked; its job will be recovered when its lease expires");
                return;
            }
        };
        self.running.remove(&id);
        telemetry::in_flight(self.running.len());
        let s = &mut self.stats;
        match ending {
            Ending::Completed => s.completed += 1,
            Ending::Retried => {
                s.retried += 1;
                // A deferred retry publishes no ready signal, and the last
                // claim predates it: claim again now, so that the queue's
                // head tells the worker when the retry is due.
                self.want_claim = true;
            }
            Ending::DeadLettered => s.dead_lettered += 1,
            Ending::Cancelled => s.cancelled += 1,
            Ending::Released => s.released += 1,
            Ending::Abandoned => s.abandoned += 1,
        }
    }

    /// One fair polling cycle; returns how many jobs were claimed.
    async fn claim_cycle(&mut self) -> Result<usize, CoreError> {
        self.want_claim = false;
        let free = self.concurrency.saturating_sub(self.running.len());
        let n = self.config.queues.len();
        self.next_poll = Instant::now() + self.config.poll_interval;
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
                if remaining == 0 || (pass == 1 && !has_more[idx]) {
                    continue;
                }
                let want = if pass == 0 { remaining.min(fair_share) } else { remaining };
                let queue = self.config.queues[idx].clone();
                let got = self.claim_from(&queue, want).await?;
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

    async fn claim_from(&mut self, queue: &QueueName, want: usize) -> Result<usize, CoreError> {
        let claimed_at = self.shared.clock.now();
        let req = ClaimRequest {
            queue: queue.clone(),
            worker_id: self.config.worker_id.clone(),
            max: want,
            now: claimed_at,
            lease_ttl: self.config.lease_ttl,
        };
        let batch = match self.shared.store.claim(req).await {
            Ok(b) => {
                self.store_failures = 0;
                b
            }
            Err(e) => {
                self.store_failure("claim", e)?;
                return Ok(0);
            }
        };
        if !batch.dropped.is_empty() {
            debug!(queue = %queue, dropped = batch.dropped.len(), "dropped vanished or finished jobs from the queue");
        }
        if let Some(wait) = batch.next_ready.and_then(|next| wake_for(next, claimed_at, self.shared.clock.now())) {
            self.next_poll = self.next_poll.min(Instant::now() + wait);
        }
        let got = batch.jobs.len();
        for claimed in batch.jobs {
            self.start(claimed);
        }
        Ok(got)
    }

    fn start(&mut self, claimed: Claimed) {
        self.stats.claimed += 1;
        let Claimed { lease, job } = claimed;
        let (tx, mut rx) = watch::channel(Control::Run);
        let shared = self.shared.clone();
        let id = lease.job_id.clone();
        let span = info_span!(
            "rrq.job",
            otel.kind = "consumer",
            job_id = %lease.job_id,
            queue = %lease.queue,
            attempt = tracing::field::Empty,
            function = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let task_lease = lease.clone();
        match job {
            Ok(job) => {
                span.record("attempt", job.attempt());
                span.record("function", job.function_name.as_str());
                continue_trace(&span, job.trace_context.as_ref());
                let id2 = id.clone();
                let (queue, function) = (lease.queue.as_str().to_owned(), job.function_name.clone());
                let started = Instant::now();
                self.tasks.spawn(
                    async move {
                        let ending = job_task::run(shared, task_lease, job, rx).await;
                        tracing::Span::current().record("outcome", tracing::field::debug(ending));
                        telemetry::ended(&queue, &function, ending, started.elapsed());
                        (id2, ending)
                    }
                    .instrument(span),
                );
            }
            Err(parse_error) => {
                let id2 = id.clone();
                self.tasks.spawn(
                    async move {
                        let reason = format!("Failed to parse claimed job definition ({parse_error}). Moved to DLQ.");
                        let ending = job_task::dead_letter(&shared, &task_lease, &reason, false, &mut rx).await;
                        (id2, ending)
                    }
                    .instrument(span),
                );
            }
        }
        telemetry::claimed(lease.queue.as_str());
        self.running.insert(id, Running { lease, control: tx, last_renewed: Instant::now() });
        telemetry::in_flight(self.running.len());
    }

    async fn renew(&mut self) {
        if self.running.is_empty() {
            return;
        }
        let (ids, leases): (Vec<JobId>, Vec<Lease>) =
            self.running.iter().map(|(id, r)| (id.clone(), r.lease.clone())).unzip();
        match self.shared.store.renew(&leases, self.config.lease_ttl).await {
            Ok(states) => {
                let now = Instant::now();
                for (id, state) in ids.iter().zip(states) {
                    let Some(r) = self.running.get_mut(id) else { continue };
                    match state {
                        LeaseState::Held => r.last_renewed = now,
                        LeaseState::CancelRequested => {
                            r.last_renewed = now;
                            r.control.send_if_modified(|c| {
                                let changed = *c == Control::Run;
                                if changed {
                                    *c = Control::Cancel;
                                }
                                changed
                            });
                        }
                        LeaseState::Lost => {
                            let _ = r.control.send(Control::Lost);
                        }
                    }
                }
            }
            Err(e) => {
                warn!(error = %e, "could not renew job locks");
                // Abandon attempts whose lock may expire before the next
                // renewal, before another worker may take the job over.
                let limit = self.config.lease_ttl.saturating_sub(self.config.renew_interval);
                for r in self.running.values() {
                    if r.last_renewed.elapsed() >= limit {
                        let _ = r.control.send(Control::Lost);
                    }
                }
            }
        }
    }

    async fn heartbeat(&mut self) {
        let health = WorkerHealth {
            active_jobs: self.running.len() as u64,
            concurrency_limit: self.concurrency as u64,
            queues: self.config.queues.iter().map(|q| q.as_str().to_owned()).collect(),
            status: self.status.to_owned(),
            timestamp: serde_json::Value::String(format_timestamp(self.shared.clock.now())),
            worker_id: self.config.worker_id.clone(),
        };
        if let Err(e) = self.shared.store.heartbeat(&health, self.config.health_ttl).await {
            warn!(error = %e, "could not write the health record");
        }
        for queue in &self.config.queues {
            if let Ok(n) = self.shared.store.queue_len(queue).await {
                telemetry::queue_depth(queue.as_str(), n);
            }
        }
        for (name, runner) in &self.shared.runners {
            telemetry::runner_restarts(name, runner.health().restarts);
        }
    }

    async fn recover(&mut self) {
        match self.shared.store.recover(self.shared.clock.now(), 100, &self.config.defaults).await {
            Ok(r) => {
                let n = r.requeued.len() + r.dead_lettered.len();
                if n > 0 {
                    self.stats.recovered += n as u64;
                    info!(
                        requeued = r.requeued.len(),
                        dead_lettered = r.dead_lettered.len(),
                        "recovered orphaned jobs"
                    );
                    self.want_claim = true;
                }
            }
            Err(e) => warn!(error = %e, "orphan recovery failed"),
        }
    }

    fn store_failure(&mut self, op: &'static str, e: StoreError) -> Result<(), CoreError> {
        match e {
            StoreError::Unavailable { .. } => {
                warn!(op, error = %e, "redis unavailable; will retry");
                self.next_poll = Instant::now() + Duration::from_millis(500);
                Ok(())
            }
            other => {
                self.store_failures += 1;
                warn!(op, error = %other, failures = self.store_failures, "store error");
                if self.store_failures >= FATAL_AFTER {
                    return Err(CoreError::Store { op, source: other });
                }
                self.next_poll = Instant::now() + Duration::from_millis(200 * u64::from(self.store_failures.min(10)));
                Ok(())
            }
        }
    }

    /// Graceful stop: no more claims; running jobs get the grace period
    /// (locks keep being renewed), then the rest go back to their queues.
    async fn drain(&mut self) {
        self.reap_finished();
        if self.running.is_empty() {
            return;
        }
        info!(running = self.running.len(), grace_s = self.config.shutdown_grace.as_secs_f64(), "draining");
        let deadline = Instant::now() + self.config.shutdown_grace;
        let mut renew = interval_at(Instant::now() + self.config.renew_interval, self.config.renew_interval);
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => self.finished(done),
                _ = renew.tick() => {
                    let _ = tokio::time::timeout_at(deadline, self.renew()).await;
                }
                () = sleep_until(deadline) => break,
            }
        }
        for r in self.running.values() {
            let _ = r.control.send(Control::Shutdown);
        }
        // Putting jobs back is one quick write each; if Redis does not answer
        // (an outage at shutdown) the leases expire and recovery re-runs them.
        let hard_stop = Instant::now() + RELEASE_WINDOW;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next() => self.finished(done),
                () = sleep_until(hard_stop) => {
                    warn!(left = self.tasks.len(), "could not put every job back; orphan recovery will re-run them");
                    self.tasks.abort_all();
                    while let Some(done) = self.tasks.join_next().await {
                        self.finished(done);
                    }
                }
            }
        }
    }
}

/// Makes the job's span a child of the producer's span, when the job carries
/// a trace context the installed propagator understands.
fn continue_trace(span: &tracing::Span, carrier: Option<&std::collections::BTreeMap<String, String>>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(carrier) = carrier else { return };
    let carrier: HashMap<String, String> = carrier.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&carrier));
    let _ = span.set_parent(parent);
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

async fn recv_ready(rx: &mut Option<mpsc::Receiver<QueueName>>) -> Option<QueueName> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
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
