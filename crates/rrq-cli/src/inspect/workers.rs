//! The live workers, from the health records they refresh while running.

use chrono::{DateTime, Utc};
use rrq_store::{Store, StoreError, WorkerRecord, parse_timestamp};
use serde::Serialize;
use serde_json::Value;

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
    /// Jobs the worker may run at once.
    pub concurrency_limit: Option<u64>,
    /// Full queue keys the worker polls (`rrq:queue:NAME`).
    pub queues: Vec<String>,
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

/// The time a health record was written: RFC 3339 text or epoch seconds.
pub fn heartbeat_time(health: &Value) -> Option<DateTime<Utc>> {
    match health.get("timestamp")? {
        Value::String(s) => parse_timestamp(s),
        Value::Number(n) => {
            let secs = n.as_f64().filter(|s| s.is_finite())?;
            DateTime::from_timestamp_micros((secs * 1e6) as i64)
        }
        _ => None,
    }
}

/// The row of one health record, with ages measured at `now`.
pub fn row(record: &WorkerRecord, now: DateTime<Utc>) -> WorkerRow {
    let h = record.health.as_ref();
    let member = |name: &str| h.and_then(|h| h.get(name));
    let last_heartbeat = h.and_then(heartbeat_time);
    WorkerRow {
        worker_id: record.worker_id.clone(),
        status: member("status").and_then(Value::as_str).map(str::to_owned),
        active_jobs: member("active_jobs").and_then(Value::as_u64),
        concurrency_limit: member("concurrency_limit").and_then(Value::as_u64),
        queues: member("queues")
            .and_then(Value::as_array)
            .map(|qs| qs.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        last_heartbeat,
        heartbeat_age_seconds: last_heartbeat.map(|t| crate::output::seconds_between(t, now)),
        ttl_seconds: record.ttl.map(|t| t.as_secs()),
        readable: h.is_some(),
    }
}

/// Every live worker, sorted by id.
pub async fn workers(store: &dyn Store, now: DateTime<Utc>) -> Result<Vec<WorkerRow>, StoreError> {
    let mut rows: Vec<WorkerRow> = store.workers().await?.iter().map(|r| row(r, now)).collect();
    rows.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn heartbeats_are_read_as_text_or_epoch_seconds() {
        let text = json!({"timestamp": "2030-01-01T00:00:00+00:00"});
        let epoch = json!({"timestamp": 1_893_456_000.5});
        assert_eq!(heartbeat_time(&text), parse_timestamp("2030-01-01T00:00:00Z"));
        assert_eq!(heartbeat_time(&epoch), parse_timestamp("2030-01-01T00:00:00.5Z"));
        assert_eq!(heartbeat_time(&json!({})), None);
        assert_eq!(heartbeat_time(&json!({"timestamp": true})), None);
    }

    #[test]
    fn a_record_becomes_a_row_with_its_age_and_missing_members_as_none() {
        let record = WorkerRecord {
            worker_id: "w1".into(),
            health: Some(json!({
                "status": "running", "active_jobs": 2, "concurrency_limit": 4,
                "queues": ["rrq:queue:a", 7], "timestamp": "2030-01-01T00:00:00Z",
            })),
            ttl: Some(Duration::from_secs(55)),
        };
        let r = row(&record, at("2030-01-01T00:00:12.5Z"));
        assert_eq!((r.status.as_deref(), r.active_jobs, r.concurrency_limit), (Some("running"), Some(2), Some(4)));
        assert_eq!(r.queues, ["rrq:queue:a"], "non-text queue members are skipped");
        assert_eq!((r.heartbeat_age_seconds, r.ttl_seconds, r.readable), (Some(12.5), Some(55), true));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["last_heartbeat"], "2030-01-01T00:00:00+00:00");

        let broken = WorkerRecord { worker_id: "w2".into(), health: None, ttl: None };
        let r = row(&broken, at("2030-01-01T00:00:00Z"));
        assert_eq!((r.status.as_deref(), r.active_jobs, r.last_heartbeat, r.readable), (None, None, None, false));
        assert_eq!(serde_json::to_value(&r).unwrap()["last_heartbeat"], Value::Null);
    }
}
