//! Enqueues: the twins of `enqueue*.lua` (standard, idempotent,
//! rate-limited, debounced, unique, batch).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::DateTime;
use rrq_protocol::JobId;

use super::MemoryStore;
use super::state::{after, queue_of};
use crate::clock::epoch_ms;
use crate::error::StoreError;
use crate::job::NewJob;
use crate::keys;
use crate::shared::{self, Plan};
use crate::store::{EnqueueMode, EnqueueStore, Enqueued};

#[async_trait]
impl EnqueueStore for MemoryStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        let plan = shared::plan(&job, &mode, &keys::Layout::single())?;
        let (mut st, now) = self.state();
        let id = job.id.as_str().to_owned();
        match plan {
            Plan::Standard | Plan::Idempotent { .. } => {
                if let Plan::Idempotent { key, .. } = &plan
                    && let Some(existing) = st.string_value(key, now)
                {
                    if st.has_hash(&existing, now) {
                        return Ok(Enqueued::Existing(JobId::new(existing)));
                    }
                    st.strings.remove(key);
                }
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                if let Plan::Idempotent { key, ttl } = plan {
                    let expires = (ttl > 0).then(|| after(now, Duration::from_secs(ttl)));
                    st.set_string(key, id, expires);
                }
                st.write_job(&job);
                Ok(Enqueued::Created(job.id))
            }
            Plan::RateLimited { key, ttl } => {
                if st.string(&key, now).is_some() {
                    return Ok(Enqueued::RateLimited);
                }
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                st.set_string(key, id, Some(after(now, Duration::from_secs(ttl))));
                st.write_job(&job);
                Ok(Enqueued::Created(job.id))
            }
            Plan::Debounced { key, ttl } => {
                let expires = Some(after(now, Duration::from_secs(ttl)));
                if let Some(holder) = st.string_value(&key, now)
                    && st.field(&holder, "status", now).as_deref() == Some("PENDING")
                {
                    let old_queue = queue_of(st.field(&holder, "queue_name", now).as_ref(), &job.queue);
                    let new: HashMap<&str, String> = job.to_fields().into_iter().collect();
                    let mut pairs: Vec<(&str, String)> = [
                        "function_name",
                        "job_params",
                        "next_scheduled_run_time",
                        "max_retries",
                        "job_timeout_seconds",
                        "result_ttl_seconds",
                        "queue_name",
                    ]
                    .into_iter()
                    .map(|n| (n, new[n].clone()))
                    .collect();
                    if let Some(tc) = new.get("trace_context") {
                        pairs.push(("trace_context", tc.clone()));
                    }
                    match new.get("correlation_context") {
                        Some(cc) => pairs.push(("correlation_context", cc.clone())),
                        None => st.del_fields(&holder, now, &["correlation_context"]),
                    }
                    st.set_fields(&holder, now, &pairs);
                    if old_queue != job.queue {
                        st.zrem(keys::queue(&old_queue), &holder);
                    }
                    st.zset(keys::queue(&job.queue)).add(&holder, epoch_ms(job.scheduled_time));
                    if let Some(s) = st.strings.get_mut(&key) {
                        s.expires_at = expires;
                    }
                    if shared::ready_at_enqueue(&job) {
                        st.publish(&job.queue);
                    }
                    return Ok(Enqueued::Existing(JobId::new(holder)));
                }
                st.strings.remove(&key);
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                st.set_string(key, id, expires);
                st.write_job(&job);
                Ok(Enqueued::Created(job.id))
            }
            Plan::UniqueLock { key, unique, ttl } => {
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                let mut job = job;
                job.unique_key = Some(unique);
                // What Redis' PTTL would say: absent, no expiry, or ms left.
                match st.string(&key, now).map(|lock| lock.expires_at) {
                    None => st.set_string(key, id, Some(after(now, Duration::from_secs(ttl)))),
                    Some(None) => {}
                    Some(Some(expires_at)) => {
                        let remaining = epoch_ms(expires_at) - epoch_ms(now);
                        if let Some(at) = shared::unique_deferral(&job, remaining) {
                            job.scheduled_time = DateTime::from_timestamp_millis(at).unwrap_or(job.scheduled_time);
                        }
                    }
                }
                st.write_job(&job);
                Ok(Enqueued::Created(job.id))
            }
        }
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        shared::check_batch(&jobs)?;
        let (mut st, now) = self.state();
        let mut ready = BTreeSet::new();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            if st.has_hash(job.id.as_str(), now) {
                out.push(Err(StoreError::JobIdTaken(job.id)));
                continue;
            }
            if st.insert_job(&job) {
                ready.insert(job.queue.clone());
            }
            out.push(Ok(Enqueued::Created(job.id)));
        }
        for queue in &ready {
            st.publish(queue);
        }
        Ok(out)
    }
}
