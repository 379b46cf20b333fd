//! The sampler's reads: queues and workers found by the (scanning)
//! discovery, and the counts the overview shows.

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, QueueName};
use rrq_store::{Store, StoreError, WorkerRecord};
use serde::Serialize;
use serde_json::Value;

/// Queue names found by a keyspace scan, and worker records: the slow,
/// scanning reads, refreshed in the background only.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Discovery {
    /// Queues that held jobs at the last scan.
    pub queues: Vec<QueueName>,
    /// Workers with a live health record at the last scan.
    pub workers: Vec<WorkerView>,
    /// When the scan finished.
    pub at: Option<DateTime<Utc>>,
}

/// Runs the scanning reads (`queues`, `workers`).
pub async fn discover(store: &dyn Store, now: DateTime<Utc>) -> Result<Discovery, StoreError> {
    let queues = store.queues().await?.into_iter().map(|q| q.queue).collect();
    let workers = store.workers().await?.iter().map(worker_view).collect();
    Ok(Discovery { queues, workers, at: Some(now) })
}

/// A worker as the dashboard shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WorkerView {
    /// The worker id.
    pub worker_id: String,
    /// Poll-loop state, when the record has one.
    pub status: Option<String>,
    /// Jobs running in it.
    pub active_jobs: Option<u64>,
    /// Jobs it may run at once.
    pub concurrency_limit: Option<u64>,
    /// Queues it polls (full keys).
    pub queues: Vec<String>,
    /// When the record was written, as stored.
    pub timestamp: Option<Value>,
    /// Seconds before the record expires.
    pub ttl_seconds: Option<f64>,
}

fn worker_view(r: &WorkerRecord) -> WorkerView {
    let h = r.health.as_ref();
    let get = |name: &str| h.and_then(|h| h.get(name));
    WorkerView {
        worker_id: r.worker_id.clone(),
        status: get("status").and_then(Value::as_str).map(str::to_owned),
        active_jobs: get("active_jobs").and_then(Value::as_u64),
        concurrency_limit: get("concurrency_limit").and_then(Value::as_u64),
        queues: get("queues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        timestamp: get("timestamp").cloned(),
        ttl_seconds: r.ttl.map(|t| t.as_secs_f64()),
    }
}

/// Counts of one queue.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue (full key).
    pub queue: String,
    /// The name without its prefix.
    pub name: String,
    /// Jobs whose ready time has come.
    pub ready: u64,
    /// Jobs waiting for a later time (deferred or retrying).
    pub scheduled: u64,
    /// Whether workers skip it.
    pub paused: bool,
}

/// Ready and scheduled counts of a queue: the length, then a binary search
/// over the sorted set's scores for the first entry after `now` (about
/// log2(len) reads of one entry each; never a scan).
pub async fn queue_counts(
    store: &dyn Store,
    queue: &QueueName,
    now: DateTime<Utc>,
    paused: bool,
) -> Result<QueueCounts, StoreError> {
    let len = store.queue_len(queue).await?;
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = store.queue_entries(queue, mid as usize, 1).await?;
        match entry.first() {
            Some((_, at)) if *at <= now => lo = mid + 1,
            Some(_) => hi = mid,
            // The queue shrank meanwhile: what is left is all before `mid`.
            None => hi = mid,
        }
    }
    let ready = lo.min(len);
    Ok(QueueCounts {
        queue: queue.as_str().to_owned(),
        name: queue.bare().to_owned(),
        ready,
        scheduled: len - ready,
        paused,
    })
}

/// The paused queues.
pub async fn paused(store: &dyn Store) -> Result<Vec<QueueName>, StoreError> {
    store.paused().await
}

/// Entries in a DLQ.
pub async fn dlq_len(store: &dyn Store, dlq: &DlqName) -> Result<u64, StoreError> {
    store.dlq_len(dlq).await
}
