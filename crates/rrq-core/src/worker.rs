//! The worker: one event loop that claims, dispatches, renews, heartbeats,
//! recovers and shuts down.

mod claim;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use rrq_pool::Runner;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Clock, ReadySignals, Signal, Store, StoreError, SystemClock, WorkerHealth, format_timestamp};
use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio::time::{Instant, MissedTickBehavior, interval_at, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::cron_task::CronTask;
use crate::error::{ConfigProblem, CoreError};
use crate::job_task::{self, Control, Ending, RELEASE_WINDOW, WorkerContext};
use crate::lease_watch::{self, AttemptId, Attempts, Timing};
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

/// Orphan recovery takes this many leases per pass, and keeps going while a
/// pass comes back full, up to `MAX_RECOVERY_PASSES` passes per round.
const RECOVERY_BATCH: usize = 100;
const MAX_RECOVERY_PASSES: usize = 20;

/// Extra time, on top of stopping the runner, that the watchdog keeps
/// between abandoning an attempt and the earliest moment its lock can lapse.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

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
            return Err(ConfigProblem::NoRunner.into());
        }
        let concurrency = self.concurrency();
        let mut config = self.config;
        if config.queues.is_empty() {
            config.queues.push(self.store.job_defaults().queue.clone());
        }
        let ctx = Arc::new(WorkerContext {
            store: self.store.clone(),
            clock: self.clock.clone(),
            runners: self.runners,
            backoff: config.backoff,
            routing: config.routing.clone(),
            worker_id: config.worker_id.clone(),
            lease_ttl: config.lease_ttl,
            max_payload_bytes: config.max_payload_bytes,
            cancel_grace: config.cancel_grace,
            terminate_budget: config.terminate_budget,
        });
        let mut state = LoopState::new(config, ctx, concurrency);
        let span = info_span!("worker", worker_id = %state.config.worker_id);
        let result = state.run(shutdown).instrument(span).await;
        let grace = state.config.shutdown_grace;
        for runner in state.ctx.runners.values() {
            runner.shutdown(grace.min(Duration::from_secs(5))).await;
        }
        result.map(|()| state.stats)
    }
}

struct LoopState {
    config: WorkerConfig,
    ctx: Arc<WorkerContext>,
    concurrency: usize,
    /// Running attempts by lease, shared with the renewal watchdog.
    attempts: Attempts,
    tasks: JoinSet<(AttemptId, Ending)>,
    /// Which attempt each task works for, so a panicked task maps back to it.
    task_ids: HashMap<tokio::task::Id, AttemptId>,
    stats: WorkerStats,
    /// Jobs of dead workers this worker's recovery moved to a DLQ (counted
    /// in `stats.recovered` with the requeued ones): the heartbeat's
    /// `failed_jobs` adds them to `stats.dead_lettered`.
    recovered_to_dlq: u64,
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
    fn new(config: WorkerConfig, ctx: Arc<WorkerContext>, concurrency: usize) -> Self {
        let cron = CronTask::new(&config, ctx.store.job_defaults(), ctx.clock.now());
        Self {
            config,
            ctx,
            concurrency,
            attempts: Attempts::default(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            stats: WorkerStats::default(),
            recovered_to_dlq: 0,
            rotation: 0,
            want_claim: true,
            next_poll: Instant::now(),
            status: "polling",
            store_failures: 0,
            cron,
        }
    }

    /// The watchdog's timings: attempts are abandoned `margin` before their
    /// lock could lapse, enough to stop the runner first.
    fn timing(&self) -> Timing {
        let c = &self.config;
        let wanted = c.cancel_grace.saturating_add(c.terminate_budget).saturating_add(SAFETY_MARGIN);
        // Leave every attempt at least one renewal, with a second to answer,
        // before it can be abandoned.
        let room = c.lease_ttl.saturating_sub(c.renew_interval).saturating_sub(Duration::from_secs(1));
        let margin = wanted.min(room);
        if margin < wanted {
            warn!(
                lease_ttl_s = c.lease_ttl.as_secs_f64(),
                wanted_s = wanted.as_secs_f64(),
                "lease TTL too short to stop a runner before the lock lapses; raise the lease TTL"
            );
        }
        Timing { ttl: c.lease_ttl, renew_interval: c.renew_interval, margin }
    }

    async fn run(&mut self, shutdown: CancellationToken) -> Result<(), CoreError> {
        let stop_watchdog = CancellationToken::new();
        let watchdog = tokio::spawn(
            lease_watch::watch(self.attempts.clone(), self.ctx.store.clone(), self.timing(), stop_watchdog.clone())
                .in_current_span(),
        );
        let result = self.event_loop(&shutdown).await;
        self.drain().await;
        stop_watchdog.cancel();
        let _ = watchdog.await;
        result
    }

    async fn event_loop(&mut self, shutdown: &CancellationToken) -> Result<(), CoreError> {
        info!(
            queues = ?self.config.queues.iter().map(QueueName::as_str).collect::<Vec<_>>(),
            concurrency = self.concurrency,
            burst = self.config.burst,
            "worker started"
        );
        let mut ready = match self.ctx.store.subscribe_ready().await {
            Ok(rx) => Some(rx),
            Err(e) => {
                warn!(error = %e, "no ready signals; falling back to polling");
                None
            }
        };
        let start = Instant::now();
        let mut heartbeat = interval_at(start, self.config.heartbeat_interval.min(Duration::from_secs(60)));
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut recovery = interval_at(start, self.config.recovery_interval);
        recovery.set_missed_tick_behavior(MissedTickBehavior::Delay);

        loop {
            self.reap_finished();
            if self.want_claim || Instant::now() >= self.next_poll {
                // A claim in flight when shutdown comes is allowed to finish
                // (bounded): its script may have run, and what it took is
                // put back at once (see `claim_from`).
                let claimed = self.claim_cycle(shutdown).await;
                if shutdown.is_cancelled() {
                    return claimed.map(|_| ());
                }
                let claimed = claimed?;
                if self.config.burst && claimed == 0 && self.attempts.is_empty() {
                    info!("burst mode: no job ready and none running; stopping");
                    return Ok(());
                }
            }
            let cron_at = self.cron.wakeup(self.ctx.clock.now());
            // Every store call below can hang until its command timeout
            // during an outage; shutdown never waits for one.
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => self.finished(done),
                signal = recv_ready(&mut ready) => match signal {
                    Some(Signal::Ready(queue)) => {
                        if self.config.queues.contains(&queue) {
                            self.want_claim = true;
                        }
                    }
                    Some(Signal::Cancel(id)) => self.cancel_requested(&id),
                    Some(_) => {}
                    None => {
                        warn!("ready signal channel closed; falling back to polling");
                        ready = None;
                    }
                },
                () = sleep_until(self.next_poll), if !self.want_claim => {}
                _ = heartbeat.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.heartbeat() => {}
                },
                _ = recovery.tick() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.recover() => {}
                },
                () = sleep_until(cron_at.unwrap_or(self.next_poll)), if cron_at.is_some() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    () = self.cron.run(&self.ctx, &mut self.stats) => {}
                },
            }
        }
    }

    fn reap_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.finished(done);
        }
    }

    /// Spawns `task` for the attempt `id` (already tracked, or tracked next).
    fn spawn_for(&mut self, id: AttemptId, task: impl Future<Output = Ending> + Send + 'static) {
        let key = id.clone();
        let handle = self.tasks.spawn(async move { (key, task.await) }.in_current_span());
        self.task_ids.insert(handle.id(), id);
    }

    fn finished(&mut self, done: Result<(tokio::task::Id, (AttemptId, Ending)), JoinError>) {
        let (id, ending) = match done {
            Ok((task, (id, ending))) => {
                self.task_ids.remove(&task);
                (id, ending)
            }
            Err(e) => return self.task_failed(e),
        };
        self.attempts.lock().remove(&id);
        telemetry::in_flight(self.attempts.len());
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

    /// A job task panicked (or was aborted at the hard stop): its attempt is
    /// dead-lettered, counting the attempt so that a job that always panics
    /// cannot loop, and its slot is freed once that is written.
    fn task_failed(&mut self, e: JoinError) {
        let Some(id) = self.task_ids.remove(&e.id()) else {
            error!(error = %e, "a worker task failed");
            return;
        };
        let mut attempts = self.attempts.lock();
        let Some(running) = attempts.get_mut(&id) else { return };
        if e.is_cancelled() || running.poisoned {
            attempts.remove(&id);
            drop(attempts);
            telemetry::in_flight(self.attempts.len());
            if e.is_panic() {
                error!(job_id = %id.job_id, error = %e, "dead-lettering a panicked attempt panicked too; orphan recovery will handle the job");
            }
            self.stats.abandoned += 1;
            return;
        }
        running.poisoned = true;
        let lease = running.lease.clone();
        let mut control = running.control.subscribe();
        drop(attempts);
        let message = panic_message(e);
        error!(job_id = %id.job_id, panic = %message, "job task panicked; moving the job to the dead letter queue");
        let reason = format!("Job task panicked: {message}. Moved to DLQ.");
        let ctx = self.ctx.clone();
        self.spawn_for(id, async move { job_task::dead_letter(&ctx, &lease, &reason, &mut control).await });
    }

    async fn heartbeat(&mut self) {
        // Counts kept in memory ride the periodic record: readers derive
        // rates from two records, with no write per job.
        let mut active_by_queue = BTreeMap::new();
        for attempt in self.attempts.lock().values() {
            *active_by_queue.entry(attempt.lease.queue.as_str().to_owned()).or_insert(0u64) += 1;
        }
        let health = WorkerHealth {
            completed_jobs: Some(self.stats.completed),
            failed_jobs: Some(self.stats.dead_lettered + self.recovered_to_dlq),
            active_by_queue: Some(active_by_queue),
            active_jobs: self.attempts.len() as u64,
            concurrency_limit: self.concurrency as u64,
            queues: self.config.queues.iter().map(|q| q.as_str().to_owned()).collect(),
            status: self.status.to_owned(),
            timestamp: serde_json::Value::String(format_timestamp(self.ctx.clock.now())),
            worker_id: self.config.worker_id.clone(),
        };
        if let Err(e) = self.ctx.store.heartbeat(&health, self.config.health_ttl).await {
            warn!(error = %e, "could not write the health record");
        }
        for queue in &self.config.queues {
            if let Ok(n) = self.ctx.store.queue_len(queue).await {
                telemetry::queue_depth(queue.as_str(), n);
            }
        }
        for (name, runner) in &self.ctx.runners {
            telemetry::runner_restarts(name, runner.health().restarts);
        }
    }

    /// The regular poll: a slow safety net when the store signals every
    /// queue change, the configured interval when it signals only its own.
    pub(crate) fn poll_interval(&self) -> Duration {
        match self.ctx.store.ready_signals() {
            ReadySignals::Complete => self.config.poll_interval.max(self.config.notified_poll_interval),
            _ => self.config.poll_interval,
        }
    }

    /// A cancel of a job was requested: stop it now if it runs here (the
    /// lease renewal would notice it too, later).
    fn cancel_requested(&mut self, id: &JobId) {
        for (attempt, r) in self.attempts.lock().iter() {
            if &attempt.job_id == id {
                crate::lease_watch::request_cancel(&r.control);
            }
        }
    }

    /// Recovers expired leases of dead workers: passes of `RECOVERY_BATCH`
    /// while a pass comes back full, so a crash with many jobs in flight is
    /// still recovered within one recovery interval.
    async fn recover(&mut self) {
        for _ in 0..MAX_RECOVERY_PASSES {
            match self.ctx.store.recover(self.ctx.clock.now(), RECOVERY_BATCH).await {
                Ok(r) => {
                    let n = r.requeued.len() + r.dead_lettered.len() + r.cancelled.len();
                    if n > 0 {
                        self.stats.recovered += n as u64;
                        self.recovered_to_dlq += r.dead_lettered.len() as u64;
                        info!(
                            requeued = r.requeued.len(),
                            dead_lettered = r.dead_lettered.len(),
                            cancelled = r.cancelled.len(),
                            "recovered orphaned jobs"
                        );
                        self.want_claim = true;
                    }
                    if n < RECOVERY_BATCH {
                        return;
                    }
                }
                Err(e) => {
                    warn!(error = %e, "orphan recovery failed");
                    return;
                }
            }
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
    /// (the watchdog keeps renewing their locks), then each is stopped —
    /// cancel, a short wait for its reply, else its runner is terminated —
    /// and only then put back on its queue.
    async fn drain(&mut self) {
        self.reap_finished();
        if self.tasks.is_empty() {
            return;
        }
        info!(running = self.attempts.len(), grace_s = self.config.shutdown_grace.as_secs_f64(), "draining");
        let deadline = Instant::now() + self.config.shutdown_grace;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next_with_id() => self.finished(done),
                () = sleep_until(deadline) => break,
            }
        }
        self.attempts.stop_all(Control::Shutdown);
        let abandoned_before = self.stats.abandoned;
        // Each task stops its runner, then puts its job back within
        // `RELEASE_WINDOW`; this is only a backstop.
        let hard_stop = Instant::now() + self.ctx.cancel_grace + self.ctx.terminate_budget + RELEASE_WINDOW;
        while !self.tasks.is_empty() {
            tokio::select! {
                Some(done) = self.tasks.join_next_with_id() => self.finished(done),
                () = sleep_until(hard_stop) => {
                    self.tasks.abort_all();
                    while let Some(done) = self.tasks.join_next_with_id().await {
                        self.finished(done);
                    }
                }
            }
        }
        let left = self.stats.abandoned - abandoned_before;
        if left > 0 {
            // Their release was not written (Redis unreachable, or the lease
            // was already gone): their leases expire and recovery re-runs them.
            warn!(left, "could not put every job back; orphan recovery will re-run them");
        }
    }
}

/// The message a task panicked with, when it is text.
fn panic_message(e: JoinError) -> String {
    match e.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-text panic payload".to_owned()),
        Err(e) => e.to_string(),
    }
}

/// Makes the job's span a child of the producer's span, when the job carries
/// a trace context the installed propagator understands.
fn continue_trace(span: &tracing::Span, carrier: Option<&BTreeMap<String, String>>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let Some(carrier) = carrier else { return };
    let parent = opentelemetry::global::get_text_map_propagator(|p| p.extract(&Carrier(carrier)));
    let _ = span.set_parent(parent);
}

/// A job's `trace_context`, read in place by the propagator (no copy per job).
struct Carrier<'a>(&'a BTreeMap<String, String>);

impl opentelemetry::propagation::Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

async fn recv_ready(rx: &mut Option<mpsc::Receiver<Signal>>) -> Option<Signal> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
