//! The sampler's reads: queues and workers found by the (scanning)
//! discovery, and the counts the overview shows.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, QueueName};
use rrq_store::{Store, StoreError, WorkerInfo};
use serde::Serialize;

/// Queue names found by a keyspace scan, and worker records: the slow,
/// scanning reads, refreshed in the background only.
#[derive(Clone, Debug, Default)]
pub struct Discovery {
    /// Queues that held jobs at the last scan.
    pub queues: Vec<QueueName>,
    /// Workers with a live health record at the last scan, sorted by id.
    pub workers: Vec<WorkerInfo>,
    /// When the scan finished.
    pub at: Option<DateTime<Utc>>,
}

/// Runs the scanning reads (`queues`, `workers`).
pub async fn discover(store: &dyn Store, now: DateTime<Utc>) -> Result<Discovery, StoreError> {
    let queues = store.queues().await?.into_iter().map(|q| q.queue).collect();
    let mut workers = store.worker_infos().await?;
    workers.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(Discovery { queues, workers, at: Some(now) })
}

/// Jobs running per full queue key, summed over the workers' health
/// records (the in-flight counts their heartbeats carry; a worker whose
/// record lacks them adds nothing).
pub fn active_by_queue(workers: &[WorkerInfo]) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for (queue, n) in workers.iter().filter_map(|w| w.active_by_queue.as_ref()).flatten() {
        *out.entry(queue.clone()).or_insert(0u64) += n;
    }
    out
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
    /// Jobs of this queue running in workers, from the in-flight counts
    /// of their last heartbeats (as of the last discovery).
    pub active: u64,
    /// Whether workers skip it.
    pub paused: bool,
}

/// Ready and scheduled counts of a queue: the length, then the jobs ready
/// by `now` ([`InspectStore::queue_ready_len`](rrq_store::InspectStore::queue_ready_len):
/// one count per shard of the Redis store, one on a single server; never a
/// scan). `active` comes from the last discovery
/// ([`active_by_queue`]), not from the store.
pub async fn queue_counts(
    store: &dyn Store,
    queue: &QueueName,
    now: DateTime<Utc>,
    paused: bool,
    active: u64,
) -> Result<QueueCounts, StoreError> {
    let len = store.queue_len(queue).await?;
    // The queue may have grown between the two reads.
    let ready = store.queue_ready_len(queue, now).await?.min(len);
    Ok(QueueCounts {
        queue: queue.as_str().to_owned(),
        name: queue.bare().to_owned(),
        ready,
        scheduled: len - ready,
        active,
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
