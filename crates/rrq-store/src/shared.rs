//! Decisions both stores make the same way before touching any data: TTLs of
//! the dedup keys, validation of enqueue modes, the retry time's encoding.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::{epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::job::{MAX_DURATION_SECONDS, NewJob};
use crate::keys::Layout;
use crate::store::EnqueueMode;

/// Messages written by the store itself (not by the worker's policy).
pub(crate) mod messages {
    /// `last_error` of a job re-queued by orphan recovery.
    pub(crate) const RECOVERED: &str = "Recovered after lock expiry or worker crash.";

    /// `last_error` of a queued job whose stored `status` is none RRQ or the
    /// reference writes (a value over 100 bytes is not quoted).
    pub(crate) fn unknown_status(raw: &str) -> String {
        let shown = if raw.len() > 100 { format!("a {}-byte value", raw.len()) } else { format!("\"{raw}\"") };
        format!("job field `status` is invalid ({shown}): not a known job status")
    }

    /// `last_error` of a job whose payload is over the claim's limit (the
    /// worker's own wording for the same check).
    pub(crate) fn payload_too_large(size: usize, max: usize) -> String {
        format!("Job payload is {size} bytes, over max_payload_bytes ({max}). Moved to DLQ.")
    }

    /// `last_error` of a job whose lost attempt used up its budget.
    pub(crate) fn worker_lost(attempt: u32, max: u32) -> String {
        format!("Worker lost while running the job (attempt {attempt} of {max}); moved to DLQ.")
    }
}

/// What a claim does with a queued job, by its stored `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimAs {
    /// Waiting or orphaned (`PENDING`, `RETRYING`, `ACTIVE`, or no status).
    Runnable,
    /// Finished (`COMPLETED`, `FAILED`, `CANCELLED`): dropped from the queue.
    Finished,
    /// A value nobody writes: quarantined to the DLQ, unrun.
    Unknown,
}

/// Classifies a stored `status` (trimmed, case-insensitive).
pub(crate) fn claim_as(status: Option<&str>) -> ClaimAs {
    let status = status.map(str::trim).unwrap_or_default();
    if status.is_empty() {
        return ClaimAs::Runnable;
    }
    match crate::job::JobStatus::parse(status) {
        Some(s) if s.is_terminal() => ClaimAs::Finished,
        Some(_) => ClaimAs::Runnable,
        None => ClaimAs::Unknown,
    }
}

/// Seven days: the expiry of a dead-lettered job and its events stream.
pub(crate) const DLQ_TTL_SECONDS: i64 = 604_800;

/// A duration rounded up to whole seconds, at most [`MAX_DURATION_SECONDS`]
/// (a TTL Redis always accepts).
pub(crate) fn ceil_seconds(d: Duration) -> u64 {
    let max = MAX_DURATION_SECONDS.unsigned_abs();
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0)).min(max)
}

/// A lease TTL in milliseconds: at least 1, at most [`MAX_DURATION_SECONDS`].
pub(crate) fn lease_ms(d: Duration) -> i64 {
    let max = MAX_DURATION_SECONDS * 1000;
    i64::try_from(d.as_millis()).unwrap_or(max).clamp(1, max)
}

/// The most attempts a stored counter or limit may mean (`count` in
/// redis/scripts/common.lua).
const MAX_COUNT: i64 = u32::MAX as i64;

/// A stored count as the scripts read it (`count` in redis/scripts/common.lua):
/// floored, within `0..=u32::MAX`; `fallback` when missing, not a number or
/// NaN.
pub(crate) fn count(value: Option<&str>, fallback: i64) -> i64 {
    match value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|f| !f.is_nan()) {
        None => fallback,
        Some(f) => (f.floor().clamp(0.0, MAX_COUNT as f64)) as i64,
    }
}

/// The attempt counter after one more attempt (`next_count` in
/// redis/scripts/common.lua): never past `u32::MAX`.
pub(crate) fn next_count(value: Option<&str>) -> i64 {
    (count(value, 0) + 1).min(MAX_COUNT)
}

/// A stored number of seconds as the scripts read it (`seconds` in
/// redis/scripts/common.lua): floored, within +-[`MAX_DURATION_SECONDS`]; `fallback`
/// (bounded the same way) when missing, not a number or NaN.
pub(crate) fn seconds(value: Option<&str>, fallback: i64) -> i64 {
    let max = MAX_DURATION_SECONDS as f64;
    match value.and_then(|v| v.trim().parse::<f64>().ok()).filter(|f| !f.is_nan()) {
        None => fallback.clamp(-MAX_DURATION_SECONDS, MAX_DURATION_SECONDS),
        Some(f) => f.floor().clamp(-max, max) as i64,
    }
}

/// Refuses a new job whose durations no store can honour: a negative
/// timeout, and a timeout or result TTL over [`MAX_DURATION_SECONDS`]. A
/// negative result TTL keeps its reference meaning (leave the expiry
/// unchanged) down to `-MAX_DURATION_SECONDS`.
pub(crate) fn check_job(job: &NewJob) -> Result<(), StoreError> {
    let max = MAX_DURATION_SECONDS;
    let checks =
        [("job_timeout_seconds", job.job_timeout_seconds, 0), ("result_ttl_seconds", job.result_ttl_seconds, -max)];
    for (what, value, min) in checks {
        if !(min..=max).contains(&value) {
            return Err(StoreError::InvalidInput {
                what,
                reason: format!("{value} is outside {min}..={max} seconds (the maximum is 100 years)"),
            });
        }
    }
    Ok(())
}

/// The dedup key, its TTL in whole seconds and the enqueue kind, after
/// validating the mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No dedup key.
    Standard,
    /// `rrq:idempotency:{key}` with this TTL (0 = no expiry).
    Idempotent { key: String, ttl: u64 },
    /// `rrq:rate_limit:{key}` with this TTL (at least 1).
    RateLimited { key: String, ttl: u64 },
    /// `rrq:debounce:{key}` with this TTL (at least 1).
    Debounced { key: String, ttl: u64 },
    /// `rrq:lock:unique:{unique}` (`key`) with this TTL (at least 1); the
    /// job's `job_unique_key` is `unique`.
    UniqueLock { key: String, unique: String, ttl: u64 },
}

/// Validates every job of a batch of standard enqueues, before any is
/// written.
pub(crate) fn check_batch(jobs: &[NewJob]) -> Result<(), StoreError> {
    jobs.iter().try_for_each(|job| plan(job, &EnqueueMode::Standard, &Layout::single()).map(drop))
}

/// Validates a mode and computes its key and TTL for `job`.
/// Keys are named by `layout` (the memory store's is the single one).
pub(crate) fn plan(job: &NewJob, mode: &EnqueueMode, layout: &Layout) -> Result<Plan, StoreError> {
    if job.id.as_str().is_empty() {
        return Err(StoreError::InvalidInput { what: "job id", reason: "must not be empty".to_owned() });
    }
    check_job(job)?;
    let key_of = |what: &'static str, key: &str| {
        if key.trim().is_empty() {
            Err(StoreError::InvalidInput { what, reason: "must not be blank".to_owned() })
        } else {
            Ok(key.to_owned())
        }
    };
    let window = |what: &'static str, window: Duration| {
        if window.is_zero() {
            Err(StoreError::InvalidInput { what, reason: "must be positive".to_owned() })
        } else {
            Ok(ceil_seconds(window).max(1))
        }
    };
    Ok(match mode {
        EnqueueMode::Standard => Plan::Standard,
        EnqueueMode::Idempotent { key, ttl } => {
            // The key must outlive a deferral, or a duplicate could slip in
            // before the job even ran.
            let deferral = (job.scheduled_time - job.enqueue_time).to_std().unwrap_or_default();
            let ttl = if ttl.is_zero() { 0 } else { ceil_seconds(*ttl).max(ceil_seconds(deferral)) };
            Plan::Idempotent { key: layout.idempotency(&key_of("idempotency key", key)?), ttl }
        }
        EnqueueMode::RateLimited { key, window: w } => Plan::RateLimited {
            key: layout.rate_limit(&key_of("rate-limit key", key)?),
            ttl: window("rate-limit window", *w)?,
        },
        EnqueueMode::Debounced { key, window: w } => {
            Plan::Debounced { key: layout.debounce(&key_of("debounce key", key)?), ttl: window("debounce window", *w)? }
        }
        EnqueueMode::UniqueLock { key, ttl } => {
            let unique = key_of("unique key", key)?;
            Plan::UniqueLock { key: layout.unique_lock(&unique), unique, ttl: window("unique lock TTL", *ttl)? }
        }
    })
}

/// Checks a cron entry id (the member of the cron tick record).
pub(crate) fn cron_entry(entry: &str) -> Result<(), StoreError> {
    if entry.trim().is_empty() {
        return Err(StoreError::InvalidInput { what: "cron entry", reason: "must not be blank".to_owned() });
    }
    Ok(())
}

/// When a job enqueued under a held unique lock becomes ready: its own
/// scheduled time, pushed to at least its enqueue time plus the lock's
/// remaining TTL (`remaining_ms` > 0), in queue-score milliseconds. `None`
/// when the job is not pushed back.
pub(crate) fn unique_deferral(job: &NewJob, remaining_ms: i64) -> Option<i64> {
    let at = epoch_ms(job.enqueue_time).saturating_add(remaining_ms);
    (remaining_ms > 0 && at > epoch_ms(job.scheduled_time)).then_some(at)
}

/// Whether a new job is ready at once: scheduled at or before its own
/// `enqueue_time`, the enqueuing caller's "now" (then the enqueue wakes
/// workers).
pub(crate) fn ready_at_enqueue(job: &NewJob) -> bool {
    is_due(job.scheduled_time, job.enqueue_time)
}

/// Whether a job scheduled at `at` is ready at `now` (queue scores have
/// millisecond precision).
pub(crate) fn is_due(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    epoch_ms(at) <= epoch_ms(now)
}

/// A time truncated to whole milliseconds.
pub(crate) fn truncate_ms(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(epoch_ms(t)).unwrap_or(t)
}

/// The `next_scheduled_run_time` written by a retry: millisecond precision.
pub(crate) fn retry_time_text(ready_at: DateTime<Utc>) -> String {
    format_timestamp(truncate_ms(ready_at))
}

/// The `result` field for a success: compact JSON.
pub(crate) fn result_json(result: &serde_json::Value) -> String {
    result.to_string()
}

/// A health record as the reference writes it: compact JSON, keys sorted.
pub(crate) fn health_json(health: &crate::store::WorkerHealth) -> Result<String, StoreError> {
    let value = serde_json::to_value(health)
        .map_err(|e| StoreError::InvalidInput { what: "worker health", reason: e.to_string() })?;
    Ok(sorted(value).to_string())
}

/// Re-orders every object's keys, whatever map the JSON crate was built with.
fn sorted(value: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(entries.into_iter().collect())
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// A health TTL in whole seconds (at least 1, at most [`MAX_DURATION_SECONDS`]).
pub(crate) fn health_ttl(ttl: Duration) -> u64 {
    ttl.as_secs().clamp(1, MAX_DURATION_SECONDS.unsigned_abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_timestamp;
    use rrq_protocol::{JobId, QueueName};

    fn job(enqueue: &str, scheduled: &str) -> NewJob {
        NewJob {
            id: JobId::new("j"),
            function_name: "f".into(),
            params: Default::default(),
            queue: QueueName::new("q"),
            enqueue_time: parse_timestamp(enqueue).unwrap(),
            scheduled_time: parse_timestamp(scheduled).unwrap(),
            max_retries: 5,
            job_timeout_seconds: 300,
            result_ttl_seconds: 86_400,
            trace_context: Default::default(),
            correlation_context: Default::default(),
            unique_key: None,
        }
    }

    #[test]
    fn idempotency_ttl_covers_the_deferral() {
        let j = job("2026-01-01T00:00:00Z", "2026-01-01T00:01:40.5Z");
        let mode = EnqueueMode::Idempotent { key: "order".into(), ttl: Duration::from_secs(30) };
        assert_eq!(
            plan(&j, &mode, &Layout::single()).unwrap(),
            Plan::Idempotent { key: "rrq:idempotency:order".into(), ttl: 101 }
        );
        let mode = EnqueueMode::Idempotent { key: "order".into(), ttl: Duration::from_secs(21_600) };
        assert_eq!(
            plan(&j, &mode, &Layout::single()).unwrap(),
            Plan::Idempotent { key: "rrq:idempotency:order".into(), ttl: 21_600 }
        );
    }

    #[test]
    fn windows_round_up_and_must_be_positive() {
        let j = job("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z");
        let mode = EnqueueMode::RateLimited { key: "rrq:rate_limit:u".into(), window: Duration::from_millis(2500) };
        assert_eq!(
            plan(&j, &mode, &Layout::single()).unwrap(),
            Plan::RateLimited { key: "rrq:rate_limit:u".into(), ttl: 3 }
        );
        let mode = EnqueueMode::Debounced { key: "d".into(), window: Duration::ZERO };
        assert!(matches!(
            plan(&j, &mode, &Layout::single()),
            Err(StoreError::InvalidInput { what: "debounce window", .. })
        ));
        let mode = EnqueueMode::Debounced { key: " ".into(), window: Duration::from_secs(1) };
        assert!(matches!(
            plan(&j, &mode, &Layout::single()),
            Err(StoreError::InvalidInput { what: "debounce key", .. })
        ));
    }

    #[test]
    fn statuses_nobody_writes_are_not_runnable() {
        assert_eq!(claim_as(None), ClaimAs::Runnable);
        assert_eq!(claim_as(Some(" pending ")), ClaimAs::Runnable);
        assert_eq!(claim_as(Some("ACTIVE")), ClaimAs::Runnable);
        assert_eq!(claim_as(Some("retrying")), ClaimAs::Runnable);
        assert_eq!(claim_as(Some("Completed")), ClaimAs::Finished);
        assert_eq!(claim_as(Some("BANANA")), ClaimAs::Unknown);
        assert_eq!(claim_as(Some("UNKNOWN")), ClaimAs::Unknown, "a reporting value, never a stored one");
        assert_eq!(
            messages::unknown_status("BANANA"),
            "job field `status` is invalid (\"BANANA\"): not a known job status"
        );
        assert!(messages::unknown_status(&"x".repeat(101)).contains("(a 101-byte value)"));
    }

    #[test]
    fn retry_times_have_millisecond_precision() {
        let t = parse_timestamp("2026-11-28T00:04:24.171999999Z").unwrap();
        assert_eq!(retry_time_text(t), "2026-11-28T00:04:24.171+00:00");
    }

    #[test]
    fn health_json_is_compact_and_sorted() {
        let h = crate::store::WorkerHealth {
            active_jobs: 0,
            concurrency_limit: 2,
            queues: vec!["rrq:queue:default".into()],
            status: "polling".into(),
            timestamp: serde_json::json!("2026-11-28T00:03:30.262169652+00:00"),
            worker_id: "rrq_worker_9836_3b940c".into(),
            completed_jobs: None,
            failed_jobs: None,
            active_by_queue: None,
        };
        assert_eq!(
            health_json(&h).unwrap(),
            r#"{"active_jobs":0,"concurrency_limit":2,"queues":["rrq:queue:default"],"status":"polling","timestamp":"2026-11-28T00:03:30.262169652+00:00","worker_id":"rrq_worker_9836_3b940c"}"#
        );
        // RRQ's additions come after, in the same sorted order, and leave
        // every reference member as it was.
        let counted = crate::store::WorkerHealth {
            completed_jobs: Some(7),
            failed_jobs: Some(1),
            active_by_queue: Some([("rrq:queue:default".to_owned(), 2)].into()),
            ..h
        };
        assert_eq!(
            health_json(&counted).unwrap(),
            r#"{"active_by_queue":{"rrq:queue:default":2},"active_jobs":0,"completed_jobs":7,"concurrency_limit":2,"failed_jobs":1,"queues":["rrq:queue:default"],"status":"polling","timestamp":"2026-11-28T00:03:30.262169652+00:00","worker_id":"rrq_worker_9836_3b940c"}"#
        );
    }
}
