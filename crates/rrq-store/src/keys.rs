//! Every Redis key RRQ reads or writes. No other module (and no other crate)
//! spells a key.

use rrq_protocol::{DlqName, JobId, QueueName};

/// Prefix of job hashes.
pub const JOB_PREFIX: &str = "rrq:job:";
/// Prefix of job locks.
pub const LOCK_PREFIX: &str = "rrq:lock:job:";
/// Prefix of orchestrator unique locks.
pub const UNIQUE_LOCK_PREFIX: &str = "rrq:lock:unique:";
/// Prefix of per-worker active-job sets.
pub const ACTIVE_PREFIX: &str = "rrq:active:jobs:";
/// Prefix of worker health records.
pub const HEALTH_PREFIX: &str = "rrq:health:worker:";
/// Prefix of job event streams.
pub const EVENTS_PREFIX: &str = "rrq:events:job:";
/// Prefix of idempotency keys.
pub const IDEMPOTENCY_PREFIX: &str = "rrq:idempotency:";
/// Prefix of rate-limit keys.
pub const RATE_LIMIT_PREFIX: &str = "rrq:rate_limit:";
/// Prefix of debounce keys.
pub const DEBOUNCE_PREFIX: &str = "rrq:debounce:";

/// RRQ extension (ignored by the reference): lease index, a ZSET of running
/// job ids scored by lock expiry in epoch ms; orphan recovery reads it instead
/// of scanning the keyspace.
pub const LEASES: &str = "rrq:leases";
/// RRQ extension: SET of paused full queue keys.
pub const PAUSED: &str = "rrq:paused_queues";
/// RRQ extension: pub/sub channel carrying a queue key when jobs become ready.
pub const READY_CHANNEL: &str = "rrq:ready";
/// RRQ extension: pub/sub channel carrying a job id when a cancel of the
/// running job is requested.
pub const CANCEL_CHANNEL: &str = "rrq:cancel";
/// RRQ extension: ZSET of cron entry ids scored by the last tick handled
/// (epoch seconds), read by workers that start after missed ticks.
pub const CRON_TICKS: &str = "rrq:cron:ticks";
/// RRQ extension: prefix under which a job key of the wrong type is preserved
/// when it is quarantined.
pub const QUARANTINE_PREFIX: &str = "rrq:quarantine:";

/// `rrq:job:{id}`.
pub fn job(id: &JobId) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// `rrq:lock:job:{id}`.
pub fn lock(id: &JobId) -> String {
    format!("{LOCK_PREFIX}{id}")
}

/// `rrq:events:job:{id}`.
pub fn events(id: &JobId) -> String {
    format!("{EVENTS_PREFIX}{id}")
}

/// `rrq:active:jobs:{worker}`.
pub fn active(worker_id: &str) -> String {
    format!("{ACTIVE_PREFIX}{worker_id}")
}

/// `rrq:health:worker:{worker}`.
pub fn health(worker_id: &str) -> String {
    format!("{HEALTH_PREFIX}{worker_id}")
}

/// The queue's own key (already full).
pub fn queue(q: &QueueName) -> &str {
    q.as_str()
}

/// The DLQ's own key (already full).
pub fn dlq(d: &DlqName) -> &str {
    d.as_str()
}

/// `rrq:idempotency:{key}` (always prefixed, as the reference does).
pub fn idempotency(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// `rrq:rate_limit:{key}` (prefixed unless already).
pub fn rate_limit(key: &str) -> String {
    prefixed(RATE_LIMIT_PREFIX, key)
}

/// `rrq:debounce:{key}` (prefixed unless already).
pub fn debounce(key: &str) -> String {
    prefixed(DEBOUNCE_PREFIX, key)
}

/// `rrq:lock:unique:{key}`.
pub fn unique_lock(key: &str) -> String {
    format!("{UNIQUE_LOCK_PREFIX}{key}")
}

fn prefixed(prefix: &str, key: &str) -> String {
    if key.starts_with(prefix) { key.to_owned() } else { format!("{prefix}{key}") }
}
