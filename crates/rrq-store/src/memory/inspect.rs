//! Reads for inspection tools and waiters (the twins of the `inspect_*.lua`
//! scripts and of the plain reads), and the wait on a job's events stream.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};

use super::MemoryStore;
use super::state::parse_stream_id;
use crate::error::StoreError;
use crate::job::{Job, JobParseError};
use crate::keys;
use crate::store::{InspectStore, QueueInfo, WorkerRecord};

#[async_trait]
impl InspectStore for MemoryStore {
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(st.hash(id.as_str(), now).map(|h| {
            let fields: HashMap<String, String> = h.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Job::from_fields(id.as_str(), &fields)
        }))
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(st.hash(id.as_str(), now).cloned())
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(ids.iter().map(|id| st.hash(id.as_str(), now).cloned()).collect())
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let after = match after {
            Some(s) => parse_stream_id(&s)
                .ok_or_else(|| StoreError::InvalidInput { what: "stream entry id", reason: format!("{s:?}") })?,
            // `$`: only entries added from now on.
            None => {
                let (mut st, now) = self.state();
                st.hash(id.as_str(), now);
                st.streams.get(id.as_str()).and_then(|s| s.value.last().copied()).unwrap_or((0, 0))
            }
        };
        loop {
            let notified = self.inner.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let (mut st, now) = self.state();
                st.hash(id.as_str(), now);
                if let Some(e) = st.streams.get(id.as_str()).and_then(|s| s.value.iter().find(|e| **e > after).copied())
                {
                    return Ok(Some(format!("{}-{}", e.0, e.1)));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        Ok(self.lock().zsets.get(keys::queue(queue)).map_or(0, |z| z.scores.len() as u64))
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        Ok(self
            .lock()
            .lists
            .get(keys::dlq(dlq))
            .map(|l| l.iter().skip(offset).take(limit).map(|i| JobId::new(i.as_str())).collect())
            .unwrap_or_default())
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        Ok(self.lock().lists.get(keys::dlq(dlq)).map_or(0, |l| l.len() as u64))
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let st = self.lock();
        let mut out: Vec<QueueInfo> = st
            .zsets
            .iter()
            .filter(|(key, z)| key.starts_with(QueueName::PREFIX) && !z.scores.is_empty())
            .map(|(key, z)| QueueInfo {
                queue: QueueName::new(key),
                len: z.scores.len() as u64,
                oldest: z.first().and_then(DateTime::<Utc>::from_timestamp_millis),
                newest: z.order.last().and_then(|(s, _)| DateTime::<Utc>::from_timestamp_millis(*s)),
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        let st = self.lock();
        Ok(st
            .zsets
            .get(keys::queue(queue))
            .map(|z| {
                z.order
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .filter_map(|(s, m)| Some((JobId::new(m.as_str()), DateTime::<Utc>::from_timestamp_millis(*s)?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let (mut st, now) = self.state();
        st.sweep(now);
        let mut out: Vec<WorkerRecord> = st
            .strings
            .iter()
            .filter_map(|(key, value)| {
                let worker_id = key.strip_prefix(keys::HEALTH_PREFIX)?;
                Some(WorkerRecord {
                    worker_id: worker_id.to_owned(),
                    health: serde_json::from_str(&value.value).ok(),
                    ttl: value.expires_at.map(|t| (t - now).to_std().unwrap_or_default()),
                })
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let (mut st, now) = self.state();
        st.sweep(now);
        let ids = st.hashes.keys().map(|k| JobId::new(k.as_str()));
        Ok(if limit == 0 { ids.collect() } else { ids.take(limit).collect() })
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        Ok(self.lock().paused.iter().map(|q| QueueName::new(q)).collect())
    }
}
