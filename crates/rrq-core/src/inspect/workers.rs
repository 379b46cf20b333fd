//! The live workers, from the health records they refresh while running.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rrq_store::{Store, StoreError, WorkerInfo};
use serde::Serialize;

/// One live worker (one unexpired health record).
///
/// Records written by other tools may lack members; what is missing is
/// `null` (and `readable` is false when the record is not JSON at all).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorkerRow {
    /// The worker id.
    pub worker_id: String,
    /// The poll-loop state the worker reported (`running`, `polling`,
    /// `idle (no jobs)`, `shutting down`, ...).
    pub status: Option<String>,
    /// Jobs running in the worker when it wrote the record.
    pub active_jobs: Option<u64>,
    /// Those jobs per full queue key, queues with none left out (`null`
    /// when the writer does not report it).
    pub active_by_queue: Option<BTreeMap<String, u64>>,
    /// Jobs the worker may run at once.
    pub concurrency_limit: Option<u64>,
    /// Full queue keys the worker polls (`rrq:queue:NAME`).
    pub queues: Vec<String>,
    /// Jobs the worker completed since it started (`null` when the writer
    /// does not report it).
    pub completed_jobs: Option<u64>,
    /// Jobs the worker moved to a DLQ since it started (`null` when the
    /// writer does not report it).
    pub failed_jobs: Option<u64>,
    /// When the record was written.
    #[serde(serialize_with = "super::rfc3339_opt")]
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Seconds between the heartbeat and the time of the listing.
    pub heartbeat_age_seconds: Option<f64>,
    /// Seconds until the record expires (the worker is presumed dead then);
    /// `null` when it has no expiry.
    pub ttl_seconds: Option<u64>,
    /// Whether the record parsed as JSON.
    pub readable: bool,
}

/// Seconds from `from` to `to`, with sub-second precision.
fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    let d = to - from;
    d.num_microseconds().map_or_else(|| d.num_seconds() as f64, |us| us as f64 / 1e6)
}

/// The row of one worker, with ages measured at `now`.
pub fn worker_row(worker: &WorkerInfo, now: DateTime<Utc>) -> WorkerRow {
    WorkerRow {
        worker_id: worker.worker_id.clone(),
        status: worker.status.clone(),
        active_jobs: worker.active_jobs,
        active_by_queue: worker.active_by_queue.clone(),
        concurrency_limit: worker.concurrency_limit,
        queues: worker.queues.clone().unwrap_or_default(),
        completed_jobs: worker.completed_jobs,
        failed_jobs: worker.failed_jobs,
        last_heartbeat: worker.last_heartbeat,
        heartbeat_age_seconds: worker.last_heartbeat.map(|t| seconds_between(t, now)),
        ttl_seconds: worker.ttl.map(|t| t.as_secs()),
        readable: worker.health.is_some(),
    }
}

/// Every live worker, sorted by id (one keyspace scan: for a command or a
/// background task, never per request).
pub async fn worker_rows(store: &dyn Store, now: DateTime<Utc>) -> Result<Vec<WorkerRow>, StoreError> {
    let mut rows: Vec<WorkerRow> = store.worker_infos().await?.iter().map(|w| worker_row(w, now)).collect();
    rows.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        rrq_store::parse_timestamp(s).unwrap()
    }

    #[test]
    fn a_worker_becomes_a_row_with_its_age_and_missing_members_as_none() {
        let worker = WorkerInfo {
            worker_id: "w1".into(),
            status: Some("running".into()),
            active_jobs: Some(2),
            concurrency_limit: Some(4),
            queues: Some(vec!["q-a".into()]),
            last_heartbeat: Some(at("2030-01-01T00:00:00Z")),
            completed_jobs: Some(9),
            failed_jobs: Some(1),
            active_by_queue: Some(BTreeMap::from([("q-a".to_owned(), 2)])),
            ttl: Some(Duration::from_secs(55)),
            health: Some(json!({})),
        };
        let r = worker_row(&worker, at("2030-01-01T00:00:12.5Z"));
        assert_eq!((r.status.as_deref(), r.active_jobs, r.concurrency_limit), (Some("running"), Some(2), Some(4)));
        assert_eq!(r.queues, ["q-a"]);
        assert_eq!((r.completed_jobs, r.failed_jobs), (Some(9), Some(1)));
        assert_eq!((r.heartbeat_age_seconds, r.ttl_seconds, r.readable), (Some(12.5), Some(55), true));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["last_heartbeat"], "2030-01-01T00:00:00+00:00");
        assert_eq!(v["active_by_queue"], json!({"q-a": 2}));

        let broken = WorkerInfo {
            worker_id: "w2".into(),
            status: None,
            active_jobs: None,
            concurrency_limit: None,
            queues: None,
            last_heartbeat: None,
            completed_jobs: None,
            failed_jobs: None,
            active_by_queue: None,
            ttl: None,
            health: None,
        };
        let r = worker_row(&broken, at("2030-01-01T00:00:00Z"));
        assert_eq!((r.status.as_deref(), r.active_jobs, r.last_heartbeat, r.readable), (None, None, None, false));
        assert!(r.queues.is_empty());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!((&v["last_heartbeat"], &v["active_by_queue"]), (&Value::Null, &Value::Null));
    }
}
