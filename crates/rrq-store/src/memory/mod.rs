//! [`MemoryStore`]: the [`Store`](crate::Store) semantics in process memory.
//!
//! It models the same keys as Redis (job hashes, queue and lease sorted sets,
//! locks and dedup keys with expiry, DLQ lists, event streams) so that the
//! conformance suite can hold both stores to one behaviour. Every verb takes
//! the one state mutex for its whole duration, which makes it as atomic as a
//! Lua script. Key expiry (locks, dedup keys, finished jobs) follows the
//! store's [`Clock`], just as Redis expiry follows the server's clock; data
//! timestamps come from the `now` arguments.
//!
//! Expired keys are dropped when next touched, and finished jobs are swept by
//! [`WorkerStore::recover`](crate::WorkerStore::recover), so an embedded store does not grow without bound.
//!
//! The files mirror `redis/`, so each Lua script and its Rust twin read side
//! by side: `state.rs` is the data model (what Redis itself provides),
//! `common.rs` the twin of `redis/scripts/common.lua`, and `enqueue.rs`,
//! `worker.rs`, `inspect.rs`, `admin.rs` hold the verbs of the same families
//! as their Redis namesakes.

mod admin;
mod common;
mod enqueue;
mod inspect;
mod state;
mod worker;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc};

use self::state::State;
use crate::clock::{Clock, SystemClock};
use crate::error::StoreError;
use crate::job::{Job, JobDefaults, JobParseError, NewJob};
use crate::store::{
    AdminStore, AttemptCount, CancelResult, ClaimBatch, ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence,
    InspectStore, Lease, LeaseState, QueueInfo, Recovery, Signal, WorkerHealth, WorkerRecord, WorkerStore,
};

/// The [`Store`](crate::Store) in memory, for tests and for embedding RRQ without Redis.
/// Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    /// The queue of jobs without one (see [`MemoryStore::with_defaults`]).
    defaults: Arc<JobDefaults>,
}

struct Inner {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// Woken whenever an event is appended to any job's stream (the same
    /// one as [`State::appended`]).
    events: Arc<Notify>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("clock", &self.inner.clock).finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose keys expire by `clock` (use a
    /// [`ManualClock`](crate::ManualClock) to expire locks in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            inner: {
                let events = Arc::new(Notify::new());
                let state = State { appended: events.clone(), ..State::default() };
                Arc::new(Inner { state: Mutex::new(state), clock, events })
            },
            defaults: Arc::new(JobDefaults::default()),
        }
    }

    /// Sets the defaults used where a call has none of its own: the queue
    /// [`AdminStore::cancel`](crate::AdminStore::cancel) assumes for a job without `queue_name` (the DLQ is
    /// there for parity with [`RedisStore`](crate::RedisStore)).
    #[must_use]
    pub fn with_defaults(self, defaults: JobDefaults) -> Self {
        MemoryStore { defaults: Arc::new(defaults), ..self }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied verb
        // visible to Redis semantics we care about; keep serving.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, with the store clock's current time.
    fn state(&self) -> (MutexGuard<'_, State>, DateTime<Utc>) {
        let now = self.inner.clock.now();
        (self.lock(), now)
    }
}

#[async_trait]
impl EnqueueStore for MemoryStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        enqueue::enqueue(self, job, mode)
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        enqueue::enqueue_batch(self, jobs)
    }
}

#[async_trait]
impl WorkerStore for MemoryStore {
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        worker::claim(self, req)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        worker::renew(self, leases, ttl)
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &Json,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        worker::complete(self, lease, result, now, defaults)
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        worker::retry(self, lease, error, ready_at, now, defaults)
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        worker::dead_letter(self, lease, reason, attempt, now, defaults)
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        worker::release(self, lease, reason, now)
    }

    async fn finish_cancelled(&self, lease: &Lease, _now: DateTime<Utc>) -> Result<Fence, StoreError> {
        worker::finish_cancelled(self, lease, _now)
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        worker::heartbeat(self, health, ttl)
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize, defaults: &JobDefaults) -> Result<Recovery, StoreError> {
        worker::recover(self, now, limit, defaults)
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        worker::subscribe_ready(self)
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        worker::cron_tick(self, entry)
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        worker::record_cron_tick(self, entry, tick)
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        inspect::unique_lock_ttl(self, key)
    }
}

#[async_trait]
impl InspectStore for MemoryStore {
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        inspect::job(self, id)
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        inspect::job_fields(self, id)
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        inspect::job_fields_batch(self, ids)
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        inspect::wait_job_event(self, id, after, timeout).await
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        inspect::queue_len(self, queue)
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        inspect::dlq_ids(self, dlq, offset, limit)
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        inspect::dlq_len(self, dlq)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        inspect::queues(self)
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        inspect::queue_entries(self, queue, offset, limit)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        inspect::workers(self)
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        inspect::job_ids(self, limit)
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        admin::paused(self)
    }
}

#[async_trait]
impl AdminStore for MemoryStore {
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        admin::pause(self, queue)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        admin::resume(self, queue)
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError> {
        admin::cancel(self, id)
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        admin::dlq_requeue(self, dlq, id, target, now)
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        admin::dlq_purge(self, dlq, ids)
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        admin::put_job_fields(self, id, fields)
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        admin::delete_matching(self, pattern, dry_run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::JobStatus;
    use crate::store::ClaimRequest;

    #[tokio::test]
    async fn a_status_nobody_writes_is_quarantined_at_claim_unrun() {
        let store = MemoryStore::new();
        let now = SystemClock.now();
        let queue = QueueName::new("q");
        for id in ["odd", "fine"] {
            let job = NewJob {
                id: JobId::new(id),
                function_name: "f".into(),
                params: Default::default(),
                queue: queue.clone(),
                enqueue_time: now,
                scheduled_time: now,
                max_retries: 3,
                job_timeout_seconds: 30,
                result_ttl_seconds: 60,
                trace_context: Default::default(),
                correlation_context: Default::default(),
                unique_key: None,
            };
            store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        }
        {
            let (mut st, clock_now) = store.state();
            st.set_fields("odd", clock_now, &[("status", "BANANA".into())]);
        }
        let req = ClaimRequest {
            queue,
            worker_id: "w".into(),
            max: 5,
            now,
            lease_ttl: Duration::from_secs(30),
            max_payload_bytes: usize::MAX,
        };
        let batch = store.claim(req).await.unwrap();
        assert_eq!(batch.jobs.iter().map(|c| c.lease.job_id.as_str()).collect::<Vec<_>>(), ["fine"]);
        assert_eq!(batch.dropped, [JobId::new("odd")]);
        let odd = store.job(&JobId::new("odd")).await.unwrap().unwrap().unwrap();
        assert_eq!(odd.status, Some(JobStatus::Failed));
        assert_eq!(
            odd.last_error.as_deref(),
            Some("job field `status` is invalid (\"BANANA\"): not a known job status")
        );
        assert_eq!((odd.current_retries, odd.start_time), (0, None), "no attempt was made");
        assert_eq!(store.dlq_ids(&DlqName::new("default"), 0, 10).await.unwrap(), [JobId::new("odd")]);
    }
}
