//! The worker's verbs: the twins of `claim.lua`, `renew.lua`, the outcome
//! scripts, `recover.lua` and `cron_tick.lua`, plus heartbeat and the
//! ready subscription.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rrq_protocol::{DlqName, JobId};
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::MemoryStore;

/// Ready signals buffered per subscriber before new ones are dropped.
const READY_BUFFER: usize = 256;
use super::state::{ZSet, after, count, queue_of};
use crate::clock::{epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::job::{Job, JobDefaults, JobStatus};
use crate::keys;
use crate::shared::{self, ClaimAs, messages};
use crate::store::{
    AttemptCount, ClaimBatch, ClaimRequest, Claimed, Fence, Lease, LeaseState, Recovery, Signal, WorkerHealth,
    WorkerStore,
};

#[async_trait]
impl WorkerStore for MemoryStore {
    fn job_defaults(&self) -> &JobDefaults {
        &self.defaults
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let (mut st, clock_now) = self.state();
        let queue_key = keys::queue(&req.queue).to_owned();
        if st.paused.contains(&queue_key) {
            return Ok(ClaimBatch { paused: true, ..ClaimBatch::default() });
        }
        let now_ms = epoch_ms(req.now);
        let token = format_timestamp(req.now);
        let ttl_ms = shared::lease_ms(req.lease_ttl);
        let lease_ttl = Duration::from_millis(ttl_ms.unsigned_abs());
        let mut batch = ClaimBatch::default();
        let candidates = st.zsets.get(&queue_key).map(|z| z.up_to(now_ms, req.max * 4)).unwrap_or_default();
        for id in candidates {
            if batch.jobs.len() >= req.max {
                break;
            }
            let job_id = JobId::new(id.as_str());
            // None: the hash is gone.
            let status = st.hash(&id, clock_now).map(|h| h.get("status").cloned());
            match status {
                None => {
                    st.zrem(&queue_key, &id);
                    batch.dropped.push(job_id);
                }
                Some(raw) => match shared::claim_as(raw.as_deref()) {
                    ClaimAs::Finished => {
                        st.zrem(&queue_key, &id);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Unknown => {
                        st.zrem(&queue_key, &id);
                        let reason = messages::unknown_status(raw.as_deref().unwrap_or_default());
                        st.move_to_dlq(&id, &self.defaults.dlq, &reason, &token, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable if st.cancel_requested(&id, clock_now) => {
                        st.zrem(&queue_key, &id);
                        st.end_cancelled(&id, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable if st.payload_len(&id, clock_now) > req.max_payload_bytes => {
                        st.zrem(&queue_key, &id);
                        let size = st.payload_len(&id, clock_now);
                        let reason = messages::payload_too_large(size, req.max_payload_bytes);
                        let dlq = st.dlq_of(&id, &self.defaults.dlq, clock_now);
                        st.move_to_dlq(&id, &dlq, &reason, &token, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable => {
                        if st.string(&keys::lock(&job_id), clock_now).is_some() {
                            continue;
                        }
                        st.set_string(keys::lock(&job_id), req.worker_id.clone(), Some(after(clock_now, lease_ttl)));
                        st.zrem(&queue_key, &id);
                        st.set_fields(
                            &id,
                            clock_now,
                            &[
                                ("status", JobStatus::Active.as_str().into()),
                                ("start_time", token.clone()),
                                ("worker_id", req.worker_id.clone()),
                            ],
                        );
                        st.zset(&keys::active(&req.worker_id)).add(&id, req.now.timestamp());
                        st.zset(keys::LEASES).add(&id, now_ms.saturating_add(ttl_ms));
                        let fields: HashMap<String, String> =
                            st.hash(&id, clock_now).map(|h| h.clone().into_iter().collect()).unwrap_or_default();
                        let job = Job::from_fields(&id, &fields);
                        let lease = Lease {
                            job_id,
                            worker_id: req.worker_id.clone(),
                            token: token.clone(),
                            queue: req.queue.clone(),
                        };
                        batch.jobs.push(Claimed { lease, job });
                    }
                },
            }
        }
        batch.next_ready =
            st.zsets.get(&queue_key).and_then(ZSet::first).and_then(DateTime::<Utc>::from_timestamp_millis);
        Ok(batch)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        let (mut st, now) = self.state();
        let expiry = after(now, Duration::from_millis(shared::lease_ms(ttl).unsigned_abs()));
        Ok(leases
            .iter()
            .map(|lease| {
                if !st.holds(lease, now) {
                    return LeaseState::Lost;
                }
                if let Some(lock) = st.strings.get_mut(&keys::lock(&lease.job_id)) {
                    lock.expires_at = Some(expiry);
                }
                st.zset(keys::LEASES).add(lease.job_id.as_str(), epoch_ms(expiry));
                if st.field(lease.job_id.as_str(), "cancel_requested", now).as_deref() == Some("1") {
                    LeaseState::CancelRequested
                } else {
                    LeaseState::Held
                }
            })
            .collect())
    }

    async fn complete(&self, lease: &Lease, result: &Json, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, &[JobStatus::Completed], clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        st.set_fields(
            id,
            clock_now,
            &[
                ("result", shared::result_json(result)),
                ("completion_time", format_timestamp(now)),
                ("status", JobStatus::Completed.as_str().into()),
            ],
        );
        st.add_event(id, clock_now);
        let ttl =
            shared::seconds(st.field(id, "result_ttl_seconds", clock_now).as_deref(), self.defaults.result_ttl_seconds);
        if ttl > 0 {
            st.expire_job(id, Some(clock_now + TimeDelta::seconds(ttl)));
        } else if ttl == 0 {
            st.expire_job(id, None);
        }
        st.release_unique(id, clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, &[JobStatus::Retrying, JobStatus::Cancelled], clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        let retries = shared::next_count(st.field(id, "current_retries", clock_now).as_deref());
        if st.cancel_requested(id, clock_now) {
            st.set_fields(id, clock_now, &[("current_retries", retries.to_string()), ("last_error", error.into())]);
            st.end_cancelled(id, clock_now);
            st.end_attempt(lease, clock_now);
            return Ok(Fence::Applied);
        }
        let queue = queue_of(st.field(id, "queue_name", clock_now).as_ref(), &self.defaults.queue);
        st.set_fields(
            id,
            clock_now,
            &[
                ("current_retries", retries.to_string()),
                ("status", JobStatus::Retrying.as_str().into()),
                ("last_error", error.into()),
                ("next_scheduled_run_time", shared::retry_time_text(ready_at)),
            ],
        );
        st.zset(keys::queue(&queue)).add(id, epoch_ms(ready_at));
        st.end_attempt(lease, clock_now);
        if shared::is_due(ready_at, now) {
            st.publish(&queue);
        }
        Ok(Fence::Applied)
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, &[JobStatus::Failed], clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        if attempt == AttemptCount::Counted {
            let retries = shared::next_count(st.field(id, "current_retries", clock_now).as_deref());
            st.set_fields(id, clock_now, &[("current_retries", retries.to_string())]);
        }
        let dlq = st.dlq_of(id, &self.defaults.dlq, clock_now);
        st.move_to_dlq(id, &dlq, reason, &format_timestamp(now), clock_now);
        st.release_unique(id, clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, &[], clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        if st.cancel_requested(id, clock_now) {
            st.end_cancelled(id, clock_now);
            st.end_attempt(lease, clock_now);
            return Ok(Fence::Applied);
        }
        st.set_fields(id, clock_now, &[("status", JobStatus::Pending.as_str().into())]);
        if let Some(reason) = reason {
            st.set_fields(id, clock_now, &[("last_error", reason.into())]);
        }
        st.del_fields(id, clock_now, &["start_time", "worker_id"]);
        st.zset(keys::queue(&lease.queue)).add(id, epoch_ms(now));
        st.end_attempt(lease, clock_now);
        st.publish(&lease.queue);
        Ok(Fence::Applied)
    }

    async fn finish_cancelled(&self, lease: &Lease) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, &[JobStatus::Cancelled], clock_now) {
            return Ok(f);
        }
        st.end_cancelled(lease.job_id.as_str(), clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        let json = shared::health_json(health)?;
        let (mut st, now) = self.state();
        let expires = after(now, Duration::from_secs(shared::health_ttl(ttl)));
        st.set_string(keys::health(&health.worker_id), json, Some(expires));
        Ok(())
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize) -> Result<Recovery, StoreError> {
        let defaults = &*self.defaults;
        let (mut st, clock_now) = self.state();
        st.sweep(clock_now);
        let now_ms = epoch_ms(now);
        let mut out = Recovery::default();
        let candidates = st.zsets.get(keys::LEASES).map(|z| z.up_to(now_ms, limit)).unwrap_or_default();
        for id in candidates {
            let job_id = JobId::new(id.as_str());
            if let Some(lock) = st.string(&keys::lock(&job_id), clock_now) {
                // Still held: fix the index score to the lock's real expiry.
                let left = lock.expires_at.map_or(60_000, |t| (t - clock_now).num_milliseconds().max(1));
                st.zset(keys::LEASES).add(&id, now_ms.saturating_add(left));
                continue;
            }
            let Some(h) = st.hash(&id, clock_now) else {
                st.zrem(keys::LEASES, &id);
                continue;
            };
            let status = h.get("status").and_then(|s| JobStatus::parse(s));
            let worker = h.get("worker_id").cloned();
            let cancel = h.get("cancel_requested").map(String::as_str) == Some("1");
            if status == Some(JobStatus::Active) && cancel {
                st.end_cancelled(&id, clock_now);
                out.cancelled.push(job_id);
            } else if status == Some(JobStatus::Active) {
                let attempt = shared::next_count(h.get("current_retries").map(String::as_str));
                let max = count(h.get("max_retries"), i64::from(defaults.max_retries));
                let queue = queue_of(h.get("queue_name"), &defaults.queue);
                let dlq = h.get("dlq_name").and_then(|d| DlqName::parse(d)).unwrap_or_else(|| defaults.dlq.clone());
                h.insert("current_retries".into(), attempt.to_string());
                if attempt >= max {
                    let reason = messages::worker_lost(
                        u32::try_from(attempt).unwrap_or(u32::MAX),
                        u32::try_from(max.max(0)).unwrap_or(u32::MAX),
                    );
                    st.move_to_dlq(&id, &dlq, &reason, &format_timestamp(now), clock_now);
                    st.release_unique(&id, clock_now);
                    out.dead_lettered.push(job_id);
                } else {
                    st.set_fields(
                        &id,
                        clock_now,
                        &[
                            ("status", JobStatus::Pending.as_str().into()),
                            ("last_error", messages::RECOVERED.into()),
                            ("next_scheduled_run_time", format_timestamp(now)),
                        ],
                    );
                    st.del_fields(&id, clock_now, &["start_time", "worker_id"]);
                    st.zset(keys::queue(&queue)).add(&id, now_ms);
                    st.publish(&queue);
                    out.requeued.push(job_id);
                }
            }
            if let Some(w) = worker.filter(|w| !w.is_empty()) {
                st.zrem(&keys::active(&w), &id);
            }
            st.zrem(keys::LEASES, &id);
        }
        Ok(out)
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        let (tx, rx) = mpsc::channel(READY_BUFFER);
        self.lock().ready.push(tx);
        Ok(rx)
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        shared::cron_entry(entry)?;
        let st = self.lock();
        let secs = st.zsets.get(keys::CRON_TICKS).and_then(|z| z.scores.get(entry).copied());
        Ok(secs.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        shared::cron_entry(entry)?;
        let mut st = self.lock();
        let ticks = st.zset(keys::CRON_TICKS);
        if ticks.scores.get(entry).is_none_or(|recorded| *recorded < tick.timestamp()) {
            ticks.add(entry, tick.timestamp());
        }
        Ok(())
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let (mut st, now) = self.state();
        let expires_at = st.string(&keys::unique_lock(key), now).and_then(|lock| lock.expires_at);
        Ok(expires_at.and_then(|t| (t - now).to_std().ok()).filter(|left| !left.is_zero()))
    }
}
