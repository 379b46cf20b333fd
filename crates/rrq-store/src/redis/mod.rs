//! [`RedisStore`]: the [`Store`](crate::Store) on Redis (or Valkey), in rrq 0.11.1's schema.
//!
//! One file per family:
//! * `connect.rs`: DSN handling, connecting, the connections opened on first
//!   use, and how a client error becomes a [`StoreError`];
//! * `scripts/`: every Lua script beside its typed wrapper (named KEYS and
//!   ARGV, a typed reply), and the check that every key arrives in KEYS;
//! * `enqueue.rs`, `worker.rs`: the producer's and the worker's verbs;
//! * `batch.rs`: the task that records successes in batches;
//! * `inspect.rs`, `admin.rs`: reads for tools, operators' verbs;
//! * `reply.rs`: reply decoding; `notify.rs`: keyspace notifications.
//!
//! Connections: one multiplexed client runs every command and script; a
//! small pool of dedicated connections serves blocking reads (`XREAD BLOCK`)
//! so they never delay other commands; a subscriber connection (opened on
//! first use) listens on the ready and cancel channels and, unless turned
//! off, on keyspace notifications of the queues (see `notify.rs`), so jobs
//! from any producer wake a worker at once. All of them reconnect with an
//! exponential backoff, and every command has a timeout.
//!
//! Writes that touch several keys are single Lua scripts. Successes are
//! recorded in batches: [`WorkerStore::complete`](crate::WorkerStore::complete) hands its attempt to a task that
//! sends everything waiting as one script call (each attempt still fenced on
//! its own lease, with its own reply), so a busy worker makes one call per
//! batch of completions rather than one per job, and an idle one waits for
//! no one.
//! A client never re-sends a command after a lost reply
//! (`max_command_attempts = 1`), and the scripts are written so that a caller
//! re-running one after an error cannot apply it twice. A claim that fails on
//! the connection is asked once more with the same token; the repeat returns
//! the jobs a lost run took, so a dropped reply does not orphan them.

mod admin;
mod batch;
mod connect;
mod enqueue;
mod inspect;
mod notify;
mod options;
mod reply;
mod scripts;
#[cfg(feature = "tls")]
mod tls;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::clients::{ExclusivePool, SubscriberClient};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;
use tokio::sync::{OnceCell, mpsc};

pub use self::options::{CA_FILE_ENV, ConnectOptions};
use self::scripts::LuaScript;
use crate::error::StoreError;
use crate::job::{Job, JobDefaults, JobParseError, NewJob};
use crate::store::{
    AdminStore, AttemptCount, CancelResult, ClaimBatch, ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence,
    InspectStore, Lease, LeaseState, QueueInfo, ReadySignals, Recovery, Signal, WorkerHealth, WorkerRecord,
    WorkerStore,
};

/// How long a job's events stream outlives its terminal event by default
/// (see [`RedisStore::with_events_ttl`]).
pub const DEFAULT_EVENTS_TTL: Duration = Duration::from_secs(60);

/// The [`Store`](crate::Store) on Redis. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Where claims quarantine broken jobs, and the queue of jobs without one.
    defaults: Arc<JobDefaults>,
    /// Whether the subscription uses keyspace notifications.
    keyspace: bool,
    /// Expiry of a job's events stream after its terminal event.
    events_ttl: Duration,
}

struct Inner {
    /// Commands and scripts.
    client: Client,
    /// Settings for the connections opened later.
    builder: Builder,
    /// Connections for blocking reads, opened on first use.
    blocking: OnceCell<ExclusivePool>,
    /// The ready-channel subscription, opened on first use.
    subscriber: OnceCell<SubscriberClient>,
    /// Which changes the subscription reports (shared with the task that
    /// re-enables keyspace notifications after a reconnect).
    signals: Arc<Mutex<ReadySignals>>,
    /// The database whose keyspace events are subscribed.
    db: u8,
    /// The DSN with its password masked, for errors.
    dsn: String,
    /// Successes waiting for the batching task (see `batch.rs`).
    completions: mpsc::UnboundedSender<batch::Completion>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("dsn", &self.inner.dsn).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets the defaults used where a call has none of its own: the DLQ that
    /// [`WorkerStore::claim`](crate::WorkerStore::claim) quarantines broken job keys into and the queue
    /// [`AdminStore::cancel`](crate::AdminStore::cancel) assumes for a job without `queue_name`. Both default
    /// to the reference's (`rrq:dlq:default`, `rrq:queue:default`).
    #[must_use]
    pub fn with_defaults(self, defaults: JobDefaults) -> Self {
        RedisStore { defaults: Arc::new(defaults), ..self }
    }

    /// Whether [`WorkerStore::subscribe_ready`](crate::WorkerStore::subscribe_ready) also listens to keyspace
    /// notifications of the queues (on by default; `[rrq]
    /// keyspace_notifications`). On, the first subscription adds `K` and `z`
    /// to the server's `notify-keyspace-events` (keeping the flags already
    /// set) so that jobs added by any producer are signalled; where the
    /// server refuses `CONFIG`, a warning says so and
    /// [`WorkerStore::ready_signals`](crate::WorkerStore::ready_signals) reports it. Set before the first subscription.
    #[must_use]
    pub fn with_keyspace_notifications(self, on: bool) -> Self {
        RedisStore { keyspace: on, ..self }
    }

    /// How long a job's events stream (`rrq:events:job:{id}`, only a wake-up
    /// for waiters, who start at `$`) is kept after its terminal event, at
    /// most as long as the job's result (`[rrq] job_events_ttl_seconds`,
    /// default [`DEFAULT_EVENTS_TTL`]; at least 1 ms).
    #[must_use]
    pub fn with_events_ttl(self, ttl: Duration) -> Self {
        RedisStore { events_ttl: ttl.max(Duration::from_millis(1)), ..self }
    }

    /// Runs a script through its typed wrapper.
    async fn run<S: LuaScript>(&self, script: S) -> Result<S::Reply, StoreError> {
        let reply = scripts::eval(&self.inner.client, script).await.map_err(|e| self.error(S::OP, e))?;
        S::decode(reply)
    }

    /// Runs one plain command.
    async fn command(&self, op: &'static str, name: &'static str, args: Vec<String>) -> Result<Value, StoreError> {
        let cmd = fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false);
        self.inner.client.custom(cmd, args).await.map_err(|e| self.error(op, e))
    }
}

#[async_trait]
impl EnqueueStore for RedisStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        enqueue::enqueue(self, job, mode).await
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        enqueue::enqueue_batch(self, jobs).await
    }
}

#[async_trait]
impl WorkerStore for RedisStore {
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        worker::claim(self, req).await
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        worker::renew(self, leases, ttl).await
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &Json,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        batch::complete(self, lease, result, now, defaults).await
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        worker::retry(self, lease, error, ready_at, now, defaults).await
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        worker::dead_letter(self, lease, reason, attempt, now, defaults).await
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        worker::release(self, lease, reason, now).await
    }

    async fn finish_cancelled(&self, lease: &Lease, _now: DateTime<Utc>) -> Result<Fence, StoreError> {
        worker::finish_cancelled(self, lease).await
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        worker::heartbeat(self, health, ttl).await
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize, defaults: &JobDefaults) -> Result<Recovery, StoreError> {
        worker::recover(self, now, limit, defaults).await
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        worker::subscribe_ready(self).await
    }

    fn ready_signals(&self) -> ReadySignals {
        self.inner.signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        inspect::unique_lock_ttl(self, key).await
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        worker::cron_tick(self, entry).await
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        worker::record_cron_tick(self, entry, tick).await
    }
}

#[async_trait]
impl InspectStore for RedisStore {
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        inspect::job(self, id).await
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        inspect::job_fields(self, id).await
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        inspect::job_fields_batch(self, ids).await
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        inspect::wait_job_event(self, id, after, timeout).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        admin::paused(self).await
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        inspect::queue_len(self, queue).await
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        inspect::dlq_ids(self, dlq, offset, limit).await
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        inspect::queues(self).await
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        inspect::queue_entries(self, queue, offset, limit).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        inspect::workers(self).await
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        inspect::job_ids(self, limit).await
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        inspect::dlq_len(self, dlq).await
    }
}

#[async_trait]
impl AdminStore for RedisStore {
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        admin::pause(self, queue).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        admin::resume(self, queue).await
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError> {
        admin::cancel(self, id).await
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        admin::dlq_requeue(self, dlq, id, target, now).await
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        admin::dlq_purge(self, dlq, ids).await
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        admin::put_job_fields(self, id, fields).await
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        admin::delete_matching(self, pattern, dry_run).await
    }
}
