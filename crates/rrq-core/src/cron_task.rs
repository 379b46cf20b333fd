//! Applies the cron scheduler's decisions: enqueues due ticks through the
//! store. The decisions themselves are in [`crate::cron`].

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_store::{JobDefaults, NewJob, StoreError, format_timestamp};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::WorkerConfig;
use crate::cron::{CronJob, CronScheduler};
use crate::job_task::WorkerContext;
use crate::worker::WorkerStats;

/// The worker's cron state: the scheduler, and the catch-up still to do.
#[derive(Debug)]
pub(crate) struct CronTask {
    scheduler: CronScheduler,
    /// The unique-lock TTL of a `unique` entry's job.
    lock_ttl: Duration,
    /// The worker's start, until the catch-up runs were looked up.
    catch_up_from: Option<DateTime<Utc>>,
}

/// What became of one due tick.
enum Fired {
    /// This worker created the tick's job.
    Enqueued,
    /// Nothing to do: another worker created the job, or the unique lock
    /// is held by an earlier job of the entry.
    Skipped,
    /// The store failed; the tick is not recorded.
    Failed,
}

impl CronTask {
    /// The cron state of a worker starting at `start`; its jobs take the
    /// store's `defaults`.
    pub(crate) fn new(config: &WorkerConfig, defaults: &JobDefaults, start: DateTime<Utc>) -> CronTask {
        let timeout = Duration::from_secs(u64::try_from(defaults.job_timeout_seconds).unwrap_or(0));
        // The reference's rule; a cron job is never deferred, so the
        // deferral term is one second.
        let lock_ttl = config
            .unique_lock_ttl
            .max(timeout.saturating_add(config.lock_extension).saturating_add(Duration::from_secs(1)));
        let scheduler = CronScheduler::new(config.cron.clone(), start);
        for job in scheduler.jobs() {
            let next = job.next_after(start);
            info!(
                entry = job.key(),
                name = job.name(),
                function = job.function_name(),
                schedule = job.schedule(),
                timezone = %job.timezone(),
                next = next.map(format_timestamp).as_deref().unwrap_or("never"),
                "cron entry scheduled"
            );
            if job.has_numeric_weekdays() {
                warn!(
                    entry = job.key(),
                    name = job.name(),
                    schedule = job.schedule(),
                    "cron weekday numbers count 0 or 7 as Sunday (the reference counted 1 as Sunday); \
                     prefer names such as MON-FRI"
                );
            }
        }
        let catch_up_from = config.cron.iter().any(CronJob::catches_up).then_some(start);
        CronTask { scheduler, lock_ttl, catch_up_from }
    }

    /// When the worker loop should call [`CronTask::run`] next, given the
    /// wall time `now`; `None` when no entry will ever fire.
    pub(crate) fn wakeup(&self, now: DateTime<Utc>) -> Option<Instant> {
        if self.catch_up_from.is_some() {
            return Some(Instant::now());
        }
        let at = self.scheduler.next_wakeup()?;
        Some(Instant::now() + (at - now).to_std().unwrap_or(Duration::ZERO))
    }

    /// Enqueues every tick due now (and, the first time, the catch-up runs).
    pub(crate) async fn run(&mut self, ctx: &WorkerContext, stats: &mut WorkerStats) {
        let mut due = Vec::new();
        if let Some(start) = self.catch_up_from.take() {
            for job in self.scheduler.jobs().iter().filter(|j| j.catches_up()) {
                match ctx.store.cron_tick(job.id()).await {
                    Ok(recorded) => {
                        if let Some(tick) = job.catch_up_tick(recorded, start) {
                            info!(
                                entry = job.key(),
                                name = job.name(),
                                function = job.function_name(),
                                last = recorded.map(format_timestamp).as_deref().unwrap_or(""),
                                tick = %format_timestamp(tick),
                                "cron ticks were missed; enqueueing one catch-up run"
                            );
                            due.push((job.clone(), tick));
                        }
                    }
                    Err(e) => warn!(
                        entry = job.key(),
                        name = job.name(),
                        error = %e,
                        "could not read the last cron tick; no catch-up"
                    ),
                }
            }
        }
        due.extend(self.scheduler.due(ctx.clock.now()));
        for (job, tick) in due {
            match self.fire(ctx, &job, tick).await {
                Fired::Enqueued => stats.cron_enqueued += 1,
                Fired::Skipped => stats.cron_skipped += 1,
                Fired::Failed => {}
            }
        }
    }

    /// Enqueues the job of one tick, unless another worker did (or a tick
    /// at or after it was recorded) or the entry's unique lock is held;
    /// records every tick it handled (for the check above and catch-up).
    async fn fire(&self, ctx: &WorkerContext, job: &CronJob, tick: DateTime<Utc>) -> Fired {
        let mode = job.enqueue_mode(self.lock_ttl);
        // On a Redis Cluster a unique entry's job must be on its lock's
        // shard: the store fits the tick's id alike for every worker, so a
        // tick enqueued twice still meets on one id.
        let id = ctx.store.fitted_job_id(job.job_id(tick), &mode);
        let tick_text = format_timestamp(tick);
        let span = info_span!(
            "rrq.cron",
            otel.kind = "producer",
            job_id = %id,
            cron = job.name(),
            function = job.function_name()
        );
        let fired = async {
            // The job id alone stops a second enqueue only while the job hash
            // lives; the recorded tick stops it after the hash expired (a
            // worker whose clock lags, a restart inside the window).
            match ctx.store.cron_tick(job.id()).await {
                Ok(Some(recorded)) if recorded >= tick => {
                    debug!(job_id = %id, tick = %tick_text, "cron tick already handled");
                    return Fired::Skipped;
                }
                Ok(_) => {}
                Err(e) => warn!(entry = job.key(), error = %e, "could not read the last cron tick; relying on the job id"),
            }
            let lock = job.unique_lock_key();
            if let Some(key) = &lock {
                match ctx.store.unique_lock_ttl(key).await {
                    Ok(None) => {}
                    Ok(Some(left)) => {
                        info!(
                            name = job.name(),
                            function = job.function_name(),
                            tick = %tick_text,
                            lock = %key,
                            lock_left_s = left.as_secs(),
                            "cron tick skipped: an earlier job still holds the unique lock"
                        );
                        return Fired::Skipped;
                    }
                    Err(e) => {
                        warn!(function = job.function_name(), tick = %tick_text, error = %e, "could not read the unique lock; tick dropped");
                        return Fired::Failed;
                    }
                }
            }
            let now = ctx.clock.now();
            let defaults = ctx.store.job_defaults();
            let queue = job.queue().cloned().unwrap_or_else(|| defaults.queue.clone());
            let new = NewJob {
                id: id.clone(),
                function_name: job.function_name().to_owned(),
                params: job.params().clone(),
                queue: queue.clone(),
                enqueue_time: now,
                scheduled_time: now,
                max_retries: defaults.max_retries,
                job_timeout_seconds: defaults.job_timeout_seconds,
                result_ttl_seconds: defaults.result_ttl_seconds,
                trace_context: current_trace(),
                correlation_context: BTreeMap::new(),
                unique_key: lock.clone(),
            };
            match ctx.store.enqueue(new, mode.clone()).await {
                Ok(_) => {
                    info!(
                        job_id = %id,
                        name = job.name(),
                        function = job.function_name(),
                        queue = %queue,
                        tick = %tick_text,
                        "cron job enqueued"
                    );
                    Fired::Enqueued
                }
                Err(StoreError::JobIdTaken(_)) => {
                    debug!(job_id = %id, tick = %tick_text, "cron tick already enqueued by another worker");
                    Fired::Skipped
                }
                Err(e) => {
                    warn!(job_id = %id, tick = %tick_text, error = %e, "could not enqueue a cron job; tick dropped");
                    Fired::Failed
                }
            }
        }
        .instrument(span)
        .await;
        if !matches!(fired, Fired::Failed)
            && let Err(e) = ctx.store.record_cron_tick(job.id(), tick).await
        {
            warn!(entry = job.key(), name = job.name(), tick = %tick_text, error = %e, "could not record the cron tick");
        }
        fired
    }
}

/// The current span's OpenTelemetry context as a job's trace carrier (empty
/// unless the application installed a propagator).
fn current_trace() -> BTreeMap<String, String> {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut carrier = HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
    carrier.into_iter().filter(|(_, v)| !v.is_empty()).collect()
}
