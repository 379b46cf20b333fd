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
//! `worker.rs`, `inspect.rs`, `admin.rs` implement the same audience traits
//! as their Redis namesakes.

mod admin;
mod common;
mod enqueue;
mod inspect;
mod state;
mod worker;

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use self::state::State;
use crate::clock::{Clock, SystemClock};
use crate::job::JobDefaults;

/// The [`Store`](crate::Store) in memory, for tests and for embedding RRQ without Redis.
/// Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    /// Job defaults (see [`MemoryStore::with_defaults`]).
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

    /// Sets the job defaults (the `default_*` settings) every verb applies
    /// where a job hash lacks a field, and that a worker on this store reads
    /// through [`WorkerStore::job_defaults`](crate::WorkerStore::job_defaults): the one place they live.
    /// Without this call they are the reference's (`rrq:queue:default`,
    /// `rrq:dlq:default`, 5 attempts, 300 s, a day).
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rrq_protocol::{DlqName, JobId, QueueName};

    use super::*;
    use crate::job::{JobStatus, NewJob};
    use crate::store::{ClaimRequest, EnqueueMode, EnqueueStore, InspectStore, WorkerStore};

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
