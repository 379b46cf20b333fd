//! Every write: retry, cancel and replay of a job, pause and resume of a
//! queue, requeue and purge of DLQ entries (each what the CLI's verb does).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use rrq_producer::{EnqueueOptions, Producer};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{CancelResult, JobStatus, Store, StoreError};
use serde_json::Value;

use super::{DataError, Known, parse};

/// Requeues DLQ entries to their own queue (or the default queue) with a
/// fresh attempt budget. Returns how many were requeued.
pub async fn dlq_requeue(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    ids: &[(JobId, Option<QueueName>)],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for (id, queue) in ids {
        let target = queue.clone().unwrap_or_else(|| known.default_queue.clone());
        if store.dlq_requeue(dlq, id, &target, now).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// The queue of each of `ids` (read from their hashes), for a requeue of
/// a selection.
pub async fn queues_of(store: &dyn Store, ids: &[JobId]) -> Result<Vec<(JobId, Option<QueueName>)>, StoreError> {
    let hashes = store.job_fields_batch(ids).await?;
    Ok(ids
        .iter()
        .zip(hashes)
        .map(|(id, f)| {
            let queue = match parse(id, f) {
                Some(Ok(job)) => job.queue_name,
                _ => None,
            };
            (id.clone(), queue)
        })
        .collect())
}

/// Purges DLQ entries (and their FAILED jobs).
pub async fn dlq_purge(store: &dyn Store, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
    store.dlq_purge(dlq, ids).await
}

/// What `rrq job retry` does: a FAILED job goes from its DLQ back to its
/// queue with a fresh attempt budget. Returns the target queue.
pub async fn retry_job(
    store: &dyn Store,
    known: &Known,
    id: &JobId,
    now: DateTime<Utc>,
) -> Result<QueueName, DataError> {
    let job = match store.job(id).await? {
        None => return Err(DataError::NotFound(id.as_str().to_owned())),
        Some(Err(e)) => return Err(DataError::Conflict(format!("job '{id}' cannot be read: {e}"))),
        Some(Ok(job)) => job,
    };
    if job.status != Some(JobStatus::Failed) {
        let status = job.status.map_or("UNKNOWN", JobStatus::as_str);
        return Err(DataError::Conflict(format!("job '{id}' is {status}; only FAILED jobs can be retried")));
    }
    let dlq = job.dlq_name.unwrap_or_else(|| known.default_dlq.clone());
    let target = job.queue_name.unwrap_or_else(|| known.default_queue.clone());
    if !store.dlq_requeue(&dlq, id, &target, now).await? {
        return Err(DataError::Conflict(format!("job '{id}' is FAILED but not in DLQ '{dlq}'")));
    }
    Ok(target)
}

/// What `rrq job cancel` does. Returns `cancelled` or `cancel_requested`.
pub async fn cancel_job(store: &dyn Store, id: &JobId) -> Result<&'static str, DataError> {
    match store.cancel(id).await? {
        CancelResult::Cancelled => Ok("cancelled"),
        CancelResult::CancelRequested => Ok("cancel_requested"),
        CancelResult::NotFound => Err(DataError::NotFound(id.as_str().to_owned())),
        CancelResult::NotCancellable(status) => {
            let status = status.map_or("UNKNOWN", JobStatus::as_str);
            Err(DataError::Conflict(format!(
                "job '{id}' is {status}; only PENDING, RETRYING and ACTIVE jobs can be cancelled"
            )))
        }
    }
}

/// What `rrq job replay` does: a new job with the same function and params
/// on the original queue. Returns the new id.
pub async fn replay_job(store: Arc<dyn Store>, known: &Known, id: &JobId) -> Result<(JobId, QueueName), DataError> {
    let job = match store.job(id).await? {
        None => return Err(DataError::NotFound(id.as_str().to_owned())),
        Some(Err(e)) => return Err(DataError::Conflict(format!("job '{id}' cannot be replayed: {e}"))),
        Some(Ok(job)) => job,
    };
    let queue = job.queue_name.unwrap_or_else(|| known.default_queue.clone());
    let producer = Producer::with_store(store, known.producer.clone());
    let new_id = producer
        .enqueue(&job.function_name, Value::Object(job.params), EnqueueOptions::queue(queue.as_str()))
        .await
        .map_err(|e| DataError::Conflict(format!("replay failed: {e}")))?;
    Ok((new_id, queue))
}

/// Pauses or resumes a queue; returns whether anything changed.
pub async fn set_paused(store: &dyn Store, queue: &QueueName, pause: bool) -> Result<bool, StoreError> {
    if pause { store.pause(queue).await } else { store.resume(queue).await }
}
