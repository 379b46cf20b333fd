//! The twin of `redis/scripts/common.lua`: the fence, the end of an
//! attempt, the unique-lock release, the DLQ move and the cancelled end,
//! as every outcome needs them.

use chrono::{DateTime, TimeDelta, Utc};
use rrq_protocol::{DlqName, JobId};

use super::state::State;
use crate::job::JobStatus;
use crate::keys;
use crate::shared::{self};
use crate::store::{Fence, Lease};

impl State {
    /// The DLQ a job names in `dlq_name`, else `fallback` (the scripts'
    /// `full_name(dlq_name, dlq_prefix, default_dlq)`).
    pub(super) fn dlq_of(&mut self, id: &str, fallback: &DlqName, now: DateTime<Utc>) -> DlqName {
        self.field(id, "dlq_name", now).and_then(|d| DlqName::parse(&d)).unwrap_or_else(|| fallback.clone())
    }

    pub(super) fn lock_owner(&mut self, id: &JobId, now: DateTime<Utc>) -> Option<String> {
        self.string_value(&keys::lock(id), now)
    }

    pub(super) fn holds(&mut self, lease: &Lease, now: DateTime<Utc>) -> bool {
        if self.lock_owner(&lease.job_id, now).as_deref() != Some(lease.worker_id.as_str()) {
            return false;
        }
        match self.hash(lease.job_id.as_str(), now) {
            Some(h) => h.get("start_time") == Some(&lease.token) && h.get("worker_id") == Some(&lease.worker_id),
            None => false,
        }
    }

    pub(super) fn already_recorded(&mut self, lease: &Lease, status: JobStatus, now: DateTime<Utc>) -> bool {
        match self.hash(lease.job_id.as_str(), now) {
            Some(h) => {
                h.get("start_time") == Some(&lease.token)
                    && h.get("worker_id") == Some(&lease.worker_id)
                    && h.get("status").map(String::as_str) == Some(status.as_str())
            }
            None => false,
        }
    }

    /// The common head of every fenced write (`check_fence` in
    /// common.lua): `Some(fence)` when the write must not happen (stale, or
    /// already applied by an earlier call that recorded one of `recorded`).
    pub(super) fn check_fence(&mut self, lease: &Lease, recorded: &[JobStatus], now: DateTime<Utc>) -> Option<Fence> {
        if self.holds(lease, now) {
            return None;
        }
        if recorded.iter().any(|s| self.already_recorded(lease, *s, now)) {
            return Some(Fence::Applied);
        }
        if self.lock_owner(&lease.job_id, now).as_deref() != Some(lease.worker_id.as_str()) {
            self.zrem(&keys::active(&lease.worker_id), lease.job_id.as_str());
        }
        Some(Fence::Stale)
    }

    pub(super) fn end_attempt(&mut self, lease: &Lease, now: DateTime<Utc>) {
        if self.lock_owner(&lease.job_id, now).as_deref() == Some(lease.worker_id.as_str()) {
            self.strings.remove(&keys::lock(&lease.job_id));
        }
        self.zrem(&keys::active(&lease.worker_id), lease.job_id.as_str());
        self.zrem(keys::LEASES, lease.job_id.as_str());
    }

    pub(super) fn release_unique(&mut self, id: &str, now: DateTime<Utc>) {
        if let Some(unique) = self.field(id, "job_unique_key", now).filter(|u| !u.is_empty()) {
            let key = keys::unique_lock(&unique);
            if self.string_value(&key, now).as_deref() == Some(id) {
                self.strings.remove(&key);
            }
        }
    }

    /// Ends a job CANCELLED, as `end_cancelled` in redis/scripts/common.lua: flag
    /// cleared, unique lock released if held by the job, `cancelled` event.
    pub(super) fn end_cancelled(&mut self, id: &str, now: DateTime<Utc>) {
        self.set_fields(id, now, &[("status", JobStatus::Cancelled.as_str().into())]);
        self.del_fields(id, now, &["cancel_requested"]);
        self.release_unique(id, now);
        self.add_event(id, now);
    }

    /// The stored payload's length: `job_params`, or a 0.9.9 job's
    /// `job_args` + `job_kwargs` (`HSTRLEN` in redis/scripts/claim.lua).
    pub(super) fn payload_len(&mut self, id: &str, now: DateTime<Utc>) -> usize {
        let Some(h) = self.hash(id, now) else { return 0 };
        let len = |name: &str| h.get(name).map_or(0, String::len);
        match len("job_params") {
            0 => len("job_args") + len("job_kwargs"),
            n => n,
        }
    }

    pub(super) fn cancel_requested(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        self.field(id, "cancel_requested", now).as_deref() == Some("1")
    }

    pub(super) fn move_to_dlq(&mut self, id: &str, dlq: &DlqName, reason: &str, completion: &str, now: DateTime<Utc>) {
        self.set_fields(
            id,
            now,
            &[("status", "FAILED".into()), ("last_error", reason.into()), ("completion_time", completion.into())],
        );
        self.add_event(id, now);
        self.lists.entry(keys::dlq(dlq).to_owned()).or_default().push_front(id.to_owned());
        self.expire_job(id, Some(now + TimeDelta::seconds(shared::DLQ_TTL_SECONDS)));
    }
}
