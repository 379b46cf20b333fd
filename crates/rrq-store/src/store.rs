//! The `Store` trait: the domain verbs every other crate uses to change jobs.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::StoreError;
use crate::job::{Job, JobDefaults, JobParseError, JobStatus, NewJob};
use crate::view::{JobView, SyntheticJob, WorkerInfo};

/// How an enqueue treats duplicates.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum EnqueueMode {
    /// Plain enqueue; fails with [`StoreError::JobIdTaken`] if the id exists.
    Standard,
    /// Idempotent enqueue: while `rrq:idempotency:{key}` names a live job,
    /// return that job instead of creating one.
    Idempotent {
        /// The caller's key (always prefixed with `rrq:idempotency:`).
        key: String,
        /// Key TTL (raised to cover a longer deferral).
        ttl: Duration,
    },
    /// Leading-edge rate limit: at most one job per `window` for `key`.
    RateLimited {
        /// Rate-limit key (prefixed with `rrq:rate_limit:` unless already).
        key: String,
        /// The window (TTL rounded up to whole seconds).
        window: Duration,
    },
    /// Trailing-edge debounce: later calls within `window` update the pending job.
    Debounced {
        /// Debounce key (prefixed with `rrq:debounce:` unless already).
        key: String,
        /// The window (TTL rounded up to whole seconds).
        window: Duration,
    },
    /// The orchestrator's unique lock (cron entries with `unique = true`):
    /// the job is always created, with `job_unique_key` = `key`. When
    /// `rrq:lock:unique:{key}` is free, the job takes it (value: the job id,
    /// expiry: `ttl`); while it is held with an expiry, the job is deferred
    /// to at least its `enqueue_time` plus the lock's remaining TTL and the
    /// lock is left alone (a lock without expiry defers nothing). The lock is
    /// released, owner-checked, when its job completes or is dead-lettered.
    /// A taken job id fails with [`StoreError::JobIdTaken`] without touching
    /// the lock.
    UniqueLock {
        /// The unique key (e.g. `cron:{function_name}`), without the
        /// `rrq:lock:unique:` prefix.
        key: String,
        /// Lock TTL (rounded up to whole seconds). The reference's rule is
        /// the caller's: max(`default_unique_job_lock_ttl_seconds`, job
        /// timeout + lock extension + 1 s, deferral + 1 s).
        ttl: Duration,
    },
}

/// What an enqueue did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Enqueued {
    /// A new job was created.
    Created(JobId),
    /// An existing job now represents the request (idempotency hit or
    /// debounce update).
    Existing(JobId),
    /// The rate limiter dropped the request.
    RateLimited,
}

impl Enqueued {
    /// The id that represents the request, if any.
    pub fn job_id(&self) -> Option<&JobId> {
        match self {
            Enqueued::Created(id) | Enqueued::Existing(id) => Some(id),
            Enqueued::RateLimited => None,
        }
    }
}

/// Proof that a worker holds a job: the fencing token of one attempt.
///
/// Every outcome write checks that the job's lock is still held by
/// `worker_id` and that the hash still records this attempt's `token`
/// (its `start_time`); otherwise the write is dropped ([`Fence::Stale`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Lease {
    /// The job.
    pub job_id: JobId,
    /// The worker holding it.
    pub worker_id: String,
    /// The attempt's token (the `start_time` string written by the claim).
    pub token: String,
    /// The queue the job was claimed from.
    pub queue: QueueName,
}

/// Whether a move to the DLQ counts the attempt that led to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptCount {
    /// The attempt ran and failed: `current_retries` goes up by one.
    Counted,
    /// The job never ran (an unparsable job quarantined at claim):
    /// `current_retries` is left as it is.
    NotCounted,
}

/// Whether a fenced write was applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Fence {
    /// The write was applied.
    Applied,
    /// The lease was no longer ours (expired and taken over, or the job was
    /// changed by someone else); nothing was written.
    Stale,
}

/// The state of a lease, as seen when renewing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours; the lock TTL was extended.
    Held,
    /// Still ours, and a cancel of the job was requested: stop the attempt.
    CancelRequested,
    /// No longer ours: abandon the attempt without writing an outcome.
    Lost,
}

/// Parameters of one claim call.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    /// The queue to take ready jobs from.
    pub queue: QueueName,
    /// The claiming worker.
    pub worker_id: String,
    /// At most this many jobs.
    pub max: usize,
    /// Jobs with a score at or before this time are ready.
    pub now: DateTime<Utc>,
    /// TTL of the job lock; the worker renews it while the job runs.
    pub lease_ttl: Duration,
    /// A job whose stored payload (`job_params`, or a 0.9.9 job's
    /// `job_args` + `job_kwargs`) is longer than this many bytes is moved to
    /// its DLQ unrun (no attempt counted) and listed in
    /// [`ClaimBatch::dropped`]; its hash is never read whole.
    pub max_payload_bytes: usize,
}

/// One claimed job.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The lease to present with the outcome.
    pub lease: Lease,
    /// The parsed job, or why it could not be parsed (quarantine it).
    pub job: Result<Job, JobParseError>,
}

/// The result of one claim call.
#[derive(Clone, Debug, Default)]
pub struct ClaimBatch {
    /// Jobs now held by the worker, in claim order.
    pub jobs: Vec<Claimed>,
    /// Ids dropped from the queue without running: their hash was gone,
    /// their status was terminal, or they were quarantined to the default
    /// DLQ (a key of another type, a status nobody writes).
    pub dropped: Vec<JobId>,
    /// When the next job of this queue becomes ready, if the queue is not empty.
    pub next_ready: Option<DateTime<Utc>>,
    /// Whether the queue is paused (nothing was claimed).
    pub paused: bool,
}

/// A worker's health record (`rrq:health:worker:{id}`).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WorkerHealth {
    /// Jobs running in the worker.
    pub active_jobs: u64,
    /// Jobs the worker may run at once.
    pub concurrency_limit: u64,
    /// Full queue keys polled, sorted.
    pub queues: Vec<String>,
    /// Poll-loop state (`running`, `polling`, `idle (no jobs)`, ...).
    pub status: String,
    /// When the record was written (RFC 3339).
    pub timestamp: Value,
    /// The worker id.
    pub worker_id: String,
    /// Jobs this worker completed since it started (an RRQ addition,
    /// omitted when `None`; readers tolerate its absence). Cumulative, so a
    /// reader derives a rate from two records of the same worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_jobs: Option<u64>,
    /// Jobs this worker moved to a DLQ since it started (an RRQ addition,
    /// like `completed_jobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_jobs: Option<u64>,
    /// Jobs running in this worker per full queue key, queues with none
    /// left out (an RRQ addition, like `completed_jobs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_by_queue: Option<BTreeMap<String, u64>>,
}

/// What one orphan-recovery pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Jobs put back on their queue.
    pub requeued: Vec<JobId>,
    /// Jobs whose lost attempt exhausted their budget: moved to the DLQ.
    pub dead_lettered: Vec<JobId>,
    /// Jobs whose cancel was requested while they ran: ended `CANCELLED`
    /// instead of running again.
    pub cancelled: Vec<JobId>,
}

/// Result of cancelling a job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CancelResult {
    /// A pending job was removed from its queue and marked `CANCELLED`.
    Cancelled,
    /// A running job was flagged; the worker running it will stop it.
    CancelRequested,
    /// No such job.
    NotFound,
    /// The job is in a state that cannot be cancelled.
    NotCancellable(Option<JobStatus>),
}

/// A queue as inspection tools list it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueInfo {
    /// The queue.
    pub queue: QueueName,
    /// Jobs in it (ready or scheduled).
    pub len: u64,
    /// The lowest ready time (queue score), if the queue is not empty.
    pub oldest: Option<DateTime<Utc>>,
    /// The highest ready time (queue score), if the queue is not empty.
    pub newest: Option<DateTime<Utc>>,
}

/// A worker health record as inspection tools see it.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerRecord {
    /// The worker id (the key suffix).
    pub worker_id: String,
    /// The record's JSON, or `None` when it is not a JSON value (synthetic or
    /// foreign records may lack members, so it is not parsed further).
    pub health: Option<Value>,
    /// Time left before the record expires; `None` when it has no expiry.
    pub ttl: Option<Duration>,
}

/// A wake-up the store pushes to a worker (see [`WorkerStore::subscribe_ready`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Signal {
    /// Jobs may have become ready (or been scheduled) in this queue: claim
    /// from it, and let the claim's head arm the timer for deferred ones.
    Ready(QueueName),
    /// A cancel of this running job was requested: the worker running it
    /// stops the attempt now instead of at its next lease renewal.
    Cancel(JobId),
}

/// Which queue changes reach [`WorkerStore::subscribe_ready`]'s channel.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReadySignals {
    /// No subscription yet.
    NotSubscribed,
    /// Every write that adds a job to a queue is signalled, whoever made it
    /// (Redis keyspace notifications, or the in-memory store): the worker's
    /// poll is only a safety net and may be slow.
    Complete,
    /// Only RRQ's own writes are signalled; jobs added by other producers
    /// (the reference's Python client, `redis-cli`) wait for the next poll.
    /// `reason` says why (for logs and `/healthz`).
    Partial {
        /// Why keyspace notifications are not in use.
        reason: String,
    },
}

/// Domain verbs over job state, for every audience: [`EnqueueStore`]
/// (producers), [`WorkerStore`] (the worker's life cycle), [`InspectStore`]
/// (status and inspection) and [`AdminStore`] (operators). Every verb that
/// changes more than one key is one atomic step, and every verb may be
/// retried after a connection error without changing the result.
///
/// Implemented for every type that implements the four; code that needs
/// only one audience's verbs can take that trait instead.
pub trait Store: EnqueueStore + WorkerStore + InspectStore + AdminStore {}

impl<T: EnqueueStore + WorkerStore + InspectStore + AdminStore> Store for T {}

/// The producer's verbs: creating jobs.
#[async_trait]
pub trait EnqueueStore: Send + Sync + std::fmt::Debug + 'static {
    /// Creates a job (or resolves a duplicate as `mode` says).
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError>;

    /// Creates many standard jobs in one round trip. Each job gets its own
    /// result (a taken id fails only that job).
    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError>;

    /// A fresh id for a job the caller enqueues in `mode` without an id of
    /// its own (a random UUID). On a Redis Cluster a job enqueued under a
    /// deduplication key must be on the key's shard, so the cluster store
    /// draws ids until one is.
    fn new_job_id(&self, mode: &EnqueueMode) -> JobId {
        let _ = mode;
        JobId::new(uuid::Uuid::new_v4().to_string())
    }

    /// The id to enqueue a job under in `mode` when every caller derives the
    /// same `id` by rule (a cron tick's `ENTRY:TICK`), so that duplicates
    /// still meet on the id: `id` itself wherever the store accepts it
    /// (always outside a Redis Cluster, and for a standard enqueue), else the
    /// first of `id~0`, `id~1`, … on the deduplication key's shard, the same
    /// for every caller.
    fn fitted_job_id(&self, id: JobId, mode: &EnqueueMode) -> JobId {
        let _ = mode;
        id
    }

    /// Waits until at least `replicas` replicas hold every write this store
    /// has made so far, at most `timeout` (Redis `WAIT`); `0` returns at
    /// once. Producers with `[rrq] min_replicas_acked` call it after each
    /// enqueue, so that an acknowledged job survives a failover. A store
    /// without replicas (the default implementation) confirms nothing.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotReplicated`] when fewer replicas confirm in time.
    async fn confirm_replicated(&self, replicas: u32, timeout: Duration) -> Result<(), StoreError> {
        if replicas == 0 {
            return Ok(());
        }
        Err(StoreError::NotReplicated { wanted: replicas, acked: 0, timeout })
    }
}

/// The worker's life cycle: claim, lease renewal, outcomes (each fenced on
/// the attempt's lease), heartbeat, orphan recovery, cron ticks and the
/// wake-ups that drive its loop.
#[async_trait]
pub trait WorkerStore: Send + Sync + std::fmt::Debug + 'static {
    /// The values used where a job hash lacks a field (queue, DLQ, attempts,
    /// timeout, result TTL). They are the store's: every verb that needs one
    /// (a claim's quarantine, an outcome, recovery, a cancel) reads them here,
    /// and so does the worker, so no two copies can disagree. Set them with
    /// `with_defaults` when the store is built.
    fn job_defaults(&self) -> &JobDefaults;

    /// Atomically takes up to `max` ready jobs of a queue, skipping (and
    /// dropping) terminal or vanished ones.
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError>;

    /// Extends the locks of running jobs; returns, per lease, whether it is
    /// still held and whether someone asked to cancel the job.
    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError>;

    /// Records success: stores `result`, `COMPLETED`, the `completed` event and
    /// the result TTL; releases the lock and unique lock.
    async fn complete(&self, lease: &Lease, result: &Value, now: DateTime<Utc>) -> Result<Fence, StoreError>;

    /// Counts the failed attempt and schedules the next one at `ready_at` on
    /// the job's own queue.
    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError>;

    /// Moves the job to its DLQ with `reason` as `last_error`, counting the
    /// attempt or not as `attempt` says.
    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError>;

    /// Moves a claimed job that must not run (its hash does not parse, its
    /// payload is over the limit) to its DLQ with `reason` as `last_error`,
    /// unrun: no attempt is counted.
    async fn quarantine(&self, lease: &Lease, reason: &str, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        self.dead_letter(lease, reason, AttemptCount::NotCounted, now).await
    }

    /// Puts a claimed job back on the queue it was claimed from, ready now,
    /// without counting an attempt (shutdown, lost lock before dispatch).
    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError>;

    /// Ends a running job whose cancel was requested: `CANCELLED`, lock and
    /// active entry released. Like [`AdminStore::cancel`], it writes no time
    /// (the reference records none for a cancel), so it takes none.
    async fn finish_cancelled(&self, lease: &Lease) -> Result<Fence, StoreError>;

    /// Writes a worker's health record with a TTL.
    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError>;

    /// Re-queues (or dead-letters, when the lost attempt used up the budget)
    /// up to `limit` running jobs whose lock has expired. Finds them through
    /// the lease index, never by scanning the keyspace.
    async fn recover(&self, now: DateTime<Utc>, limit: usize) -> Result<Recovery, StoreError>;

    /// A channel of wake-ups: a queue whenever jobs are added to it, and the
    /// id of a running job whose cancel was requested (best effort: a missed
    /// signal only delays pickup to the next poll, a cancel to the next lease
    /// renewal). The subscription is live when this returns: a change made
    /// after it is signalled.
    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError>;

    /// Which changes [`WorkerStore::subscribe_ready`] reports (as of the latest
    /// subscription); the worker polls slowly only when they are
    /// [`ReadySignals::Complete`].
    fn ready_signals(&self) -> ReadySignals {
        ReadySignals::Partial { reason: "this store signals only its own writes".to_owned() }
    }

    /// The last tick recorded for a cron entry (by [`WorkerStore::record_cron_tick`]
    /// of any worker); `None` when none was recorded.
    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// Records that a cron entry's `tick` (whole seconds) was handled. The
    /// record never moves back: an older tick than the recorded one is
    /// ignored.
    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError>;

    /// Time left on the orchestrator unique lock `rrq:lock:unique:{key}`:
    /// `Some` while it is held with an expiry; `None` when it is free or has
    /// no expiry (which the reference treats as not held).
    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError>;
}

/// Reads for status queries and inspection tools: jobs, queues, DLQs,
/// worker health, and the wait for a job's next event.
#[async_trait]
pub trait InspectStore: Send + Sync + std::fmt::Debug + 'static {
    /// Reads and parses a job; `Ok(None)` when it does not exist.
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError>;

    /// Raw hash fields of a job, as stored. Inspection tools read
    /// [`InspectStore::job_view`] instead, which names no field.
    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError>;

    /// Raw hash fields of many jobs, in the order of `ids`; `None` where no
    /// job hash exists. Reads in chunks (one round trip each), so inspection
    /// tools can load thousands of jobs without a round trip per job.
    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError>;

    /// A job as inspection tools see it (every known field typed, the stored
    /// hash kept, its parse problem named); `Ok(None)` when it does not exist.
    async fn job_view(&self, id: &JobId) -> Result<Option<JobView>, StoreError> {
        Ok(self.job_fields(id).await?.map(|raw| JobView::from_fields(id, raw)))
    }

    /// [`InspectStore::job_view`] of many jobs, in the order of `ids`; `None`
    /// where no job exists. Reads as [`InspectStore::job_fields_batch`] does.
    async fn job_views(&self, ids: &[JobId]) -> Result<Vec<Option<JobView>>, StoreError> {
        let hashes = self.job_fields_batch(ids).await?;
        Ok(ids.iter().zip(hashes).map(|(id, raw)| raw.map(|raw| JobView::from_fields(id, raw))).collect())
    }

    /// Blocks up to `timeout` for a new entry in the job's events stream
    /// after `after` (`None` = only entries newer than now). Returns the id of
    /// the entry seen, if any.
    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError>;

    /// Number of jobs in a queue (ready or scheduled).
    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError>;

    /// Ids in a DLQ, newest first, `offset..offset+limit`. On a Redis
    /// Cluster the DLQ is one list per shard: the ids come shard after shard
    /// (in shard order), newest first within each, so pages of an unchanged
    /// DLQ add up to the whole without repeats.
    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError>;

    /// Number of ids in a DLQ (dangling ones included).
    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError>;

    /// Every queue that holds jobs, sorted by name. Finds them by scanning
    /// queue keys: meant for inspection tools, not for the worker's hot path.
    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError>;

    /// How many jobs of a queue are ready at `now` (ready time at or before
    /// it); the rest of [`InspectStore::queue_len`] is scheduled later. The
    /// default searches the entries by ready time (about log2(len) reads of
    /// one entry, never a scan); `RedisStore` counts with one `ZCOUNT` per
    /// shard (one on a single server), since on a cluster an entry's rank
    /// costs a read of every shard's head.
    async fn queue_ready_len(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let len = self.queue_len(queue).await?;
        let (mut lo, mut hi) = (0u64, len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = self.queue_entries(queue, usize::try_from(mid).unwrap_or(usize::MAX), 1).await?;
            match entry.first() {
                Some((_, at)) if *at <= now => lo = mid + 1,
                Some(_) => hi = mid,
                // The queue shrank meanwhile: what is left is all before `mid`.
                None => hi = mid,
            }
        }
        Ok(lo.min(len))
    }

    /// Entries of a queue in ready order, `offset..offset+limit`: job id and
    /// ready time. On a Redis Cluster the order runs across the shards (by
    /// ready time, then id), and a page costs reading the first
    /// `offset + limit` entries of every shard: page from the start.
    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError>;

    /// The health records of all workers that wrote one recently (scan of
    /// the health keys), sorted by worker id.
    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError>;

    /// [`InspectStore::workers`], each record's members typed.
    async fn worker_infos(&self) -> Result<Vec<WorkerInfo>, StoreError> {
        Ok(self.workers().await?.into_iter().map(WorkerInfo::from).collect())
    }

    /// Ids of stored jobs, in no particular order; at most `limit` of them
    /// (`0` = all). A keyspace scan: meant for inspection tools.
    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError>;

    /// The paused queues.
    async fn paused(&self) -> Result<Vec<QueueName>, StoreError>;
}

/// Operators' verbs: pause and resume, cancel, DLQ requeue and purge, and
/// the debug verbs that write fields or delete keys by pattern.
#[async_trait]
pub trait AdminStore: Send + Sync + std::fmt::Debug + 'static {
    /// Pauses a queue: no worker claims from it until it is resumed.
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError>;

    /// Resumes a paused queue.
    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError>;

    /// Cancels a job: a pending one is removed and marked `CANCELLED`, a
    /// running one flagged (and its worker signalled). Nothing it writes
    /// carries a time, so it takes none.
    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError>;

    /// Moves a failed job from a DLQ back to `target` with a fresh attempt
    /// budget. Returns false when the id was not in that DLQ.
    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Removes exactly `ids` from a DLQ (one entry per id given, searched
    /// from the newest end) and deletes each removed id's job (hash and
    /// events stream) while it is still `FAILED`. An id no longer in the DLQ
    /// is skipped and its job left alone; entries that arrived after the ids
    /// were read are never touched. Returns how many entries were removed.
    /// Pass the ids newest first, as [`InspectStore::dlq_ids`] lists them, so each
    /// search stops early; `RedisStore` sends them in chunks of 100 per
    /// script call, so a large purge never blocks the server for long.
    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError>;

    /// **Test verb**: sets the given fields of a job hash as they are (other
    /// fields are kept), without queueing the job, recording an event,
    /// checking the values or setting an expiry: how tests plant the
    /// malformed hashes other producers may write. Nothing in RRQ calls it;
    /// use [`EnqueueStore::enqueue`] to create jobs and
    /// [`AdminStore::insert_synthetic_job`] for synthetic data.
    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError>;

    /// **Admin verb** (`rrq debug generate-jobs`): writes a job hash as a
    /// worker would have left it in `job.status` (replacing the fields it
    /// names, keeping others), without queueing the job, recording an event
    /// or setting an expiry. Workers never call it.
    async fn insert_synthetic_job(&self, job: &SyntheticJob) -> Result<(), StoreError> {
        self.put_job_fields(&job.id, &job.to_fields()).await
    }

    /// **Admin/test verb** (`rrq debug clear`): counts the keys matching the
    /// Redis glob `pattern` (applied to full key names as given, not limited
    /// to RRQ's namespace) and, unless `dry_run`, deletes them. A keyspace
    /// scan, deleted in chunks: not atomic, so keys created meanwhile may
    /// survive. Returns how many keys matched (`dry_run`) or were deleted.
    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError>;
}
