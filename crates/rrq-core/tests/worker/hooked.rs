//! A `Store` wrapper that can make chosen commands hang, delay a claim's
//! answer, and record the order of commands in a log shared with the runner.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{
    AdminStore, AttemptCount, CancelResult, ClaimBatch, ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence,
    InspectStore, Job, JobDefaults, JobParseError, Lease, LeaseState, MemoryStore, NewJob, QueueInfo, Recovery,
    StoreError, WorkerHealth, WorkerRecord, WorkerStore,
};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::support::EventLog;

#[derive(Debug)]
pub struct HookedStore {
    pub inner: Arc<MemoryStore>,
    /// Commands that never answer while listed.
    hang: Mutex<HashSet<&'static str>>,
    /// When set, a claim's answer waits for this token (after the claim ran).
    pub claim_gate: Mutex<Option<CancellationToken>>,
    pub log: EventLog,
}

/// Commands that are only reads; not logged.
const READS: &[&str] = &[
    "job",
    "job_fields",
    "job_fields_batch",
    "wait_job_event",
    "queue_len",
    "dlq_ids",
    "queues",
    "queue_entries",
    "workers",
    "job_ids",
    "dlq_len",
    "unique_lock_ttl",
    "cron_tick",
    "paused",
    "subscribe_ready",
];

impl HookedStore {
    pub fn new(inner: Arc<MemoryStore>, log: EventLog) -> Arc<Self> {
        Arc::new(Self { inner, hang: Mutex::new(HashSet::new()), claim_gate: Mutex::new(None), log })
    }

    /// Makes `op` hang (every call from now on).
    pub fn hang(&self, op: &'static str) {
        self.hang.lock().unwrap().insert(op);
    }

    fn log(&self, entry: String) {
        self.log.lock().unwrap().push(entry);
    }

    async fn enter(&self, op: &'static str, job: &str) {
        if self.hang.lock().unwrap().contains(op) {
            self.log(format!("hang:{op}"));
            std::future::pending::<()>().await;
        }
        if !READS.contains(&op) {
            self.log(if job.is_empty() { format!("store:{op}") } else { format!("store:{op}:{job}") });
        }
    }
}

#[async_trait]
impl EnqueueStore for HookedStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        self.enter("enqueue", "").await;
        self.inner.enqueue(job, mode).await
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        self.enter("enqueue_batch", "").await;
        self.inner.enqueue_batch(jobs).await
    }
}

#[async_trait]
impl WorkerStore for HookedStore {
    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        self.enter("claim", "").await;
        let batch = self.inner.claim(req).await;
        let gate = self.claim_gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            // The script ran; the answer arrives only once the gate opens.
            gate.cancelled().await;
        }
        if let Ok(b) = &batch {
            for c in &b.jobs {
                self.log(format!("claimed:{}", c.lease.job_id.as_str()));
            }
        }
        batch
    }

    fn job_defaults(&self) -> &JobDefaults {
        self.inner.job_defaults()
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        self.enter("renew", "").await;
        self.inner.renew(leases, ttl).await
    }

    async fn complete(&self, lease: &Lease, result: &Value, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        self.enter("complete", lease.job_id.as_str()).await;
        self.inner.complete(lease, result, now).await
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        self.enter("retry", lease.job_id.as_str()).await;
        self.inner.retry(lease, error, ready_at, now).await
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        self.enter("dead_letter", lease.job_id.as_str()).await;
        self.inner.dead_letter(lease, reason, attempt, now).await
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        self.enter("release", lease.job_id.as_str()).await;
        self.inner.release(lease, reason, now).await
    }

    async fn finish_cancelled(&self, lease: &Lease) -> Result<Fence, StoreError> {
        self.enter("finish_cancelled", lease.job_id.as_str()).await;
        self.inner.finish_cancelled(lease).await
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        self.enter("heartbeat", "").await;
        self.inner.heartbeat(health, ttl).await
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize) -> Result<Recovery, StoreError> {
        self.enter("recover", "").await;
        self.inner.recover(now, limit).await
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<rrq_store::Signal>, StoreError> {
        self.enter("subscribe_ready", "").await;
        self.inner.subscribe_ready().await
    }

    fn ready_signals(&self) -> rrq_store::ReadySignals {
        self.inner.ready_signals()
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        self.enter("unique_lock_ttl", "").await;
        self.inner.unique_lock_ttl(key).await
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.enter("cron_tick", "").await;
        self.inner.cron_tick(entry).await
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        self.enter("record_cron_tick", "").await;
        self.inner.record_cron_tick(entry, tick).await
    }
}

#[async_trait]
impl InspectStore for HookedStore {
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        self.enter("job", "").await;
        self.inner.job(id).await
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        self.enter("job_fields", "").await;
        self.inner.job_fields(id).await
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        self.enter("job_fields_batch", "").await;
        self.inner.job_fields_batch(ids).await
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        self.enter("wait_job_event", "").await;
        self.inner.wait_job_event(id, after, timeout).await
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        self.enter("paused", "").await;
        self.inner.paused().await
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        self.enter("queue_len", "").await;
        self.inner.queue_len(queue).await
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        self.enter("dlq_ids", "").await;
        self.inner.dlq_ids(dlq, offset, limit).await
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        self.enter("queues", "").await;
        self.inner.queues().await
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        self.enter("queue_entries", "").await;
        self.inner.queue_entries(queue, offset, limit).await
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        self.enter("workers", "").await;
        self.inner.workers().await
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        self.enter("job_ids", "").await;
        self.inner.job_ids(limit).await
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        self.enter("dlq_len", "").await;
        self.inner.dlq_len(dlq).await
    }
}

#[async_trait]
impl AdminStore for HookedStore {
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        self.enter("pause", "").await;
        self.inner.pause(queue).await
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        self.enter("resume", "").await;
        self.inner.resume(queue).await
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError> {
        self.enter("cancel", "").await;
        self.inner.cancel(id).await
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        self.enter("dlq_purge", "").await;
        self.inner.dlq_purge(dlq, ids).await
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.enter("dlq_requeue", "").await;
        self.inner.dlq_requeue(dlq, id, target, now).await
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        self.enter("put_job_fields", "").await;
        self.inner.put_job_fields(id, fields).await
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        self.enter("delete_matching", "").await;
        self.inner.delete_matching(pattern, dry_run).await
    }
}
