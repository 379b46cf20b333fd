//! Operators' verbs: pause and resume, cancel, DLQ requeue and purge, and
//! the debug verbs that write fields or delete keys by pattern.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};

use super::RedisStore;
use super::inspect::SCAN_COUNT;
use super::reply::{self, array, protocol, text};
use super::scripts::{Cancel, DlqPurge, DlqRequeue};
use crate::clock::{epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::keys::{self, Shard};
use crate::store::{AdminStore, CancelResult};

/// Ids per script call in [`dlq_purge`]: each is one `LREM` that stops at
/// its entry, so one call stays short even on a long DLQ.
const PURGE_CHUNK: usize = 100;

#[async_trait]
impl AdminStore for RedisStore {
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        // Every shard's paused set (a claim reads its own shard's): the
        // single layout has one. Repeating after an error is harmless.
        let layout = &self.layout;
        let adds = layout.shards().map(|shard| async move {
            let added: i64 = self
                .inner
                .client
                .sadd(layout.paused(shard), layout.queue(queue, shard))
                .await
                .map_err(|e| self.error("pause", e))?;
            Ok::<_, StoreError>(added)
        });
        let mut changed = false;
        for added in futures::future::join_all(adds).await {
            changed |= added? > 0;
        }
        Ok(changed)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        let layout = &self.layout;
        let removals = layout.shards().map(|shard| async move {
            let removed: i64 = self
                .inner
                .client
                .srem(layout.paused(shard), layout.queue(queue, shard))
                .await
                .map_err(|e| self.error("resume", e))?;
            Ok::<_, StoreError>(removed)
        });
        let mut changed = false;
        for removed in futures::future::join_all(removals).await {
            changed |= removed? > 0;
        }
        // Resuming adds nothing to the queue, so no keyspace event tells
        // workers to claim its waiting jobs: say so on the ready channel
        // (any shard's key names the queue).
        self.inner
            .client
            .publish::<(), _, _>(keys::READY_CHANNEL, layout.queue(queue, Shard::FIRST))
            .await
            .map_err(|e| self.error("resume", e))?;
        Ok(changed)
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError> {
        self.run(Cancel { layout: &self.layout, id, default_queue: &self.defaults.queue }).await
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let call = DlqRequeue {
            layout: &self.layout,
            dlq,
            queue: target,
            id,
            now_ms: epoch_ms(now),
            now_text: format_timestamp(now),
        };
        self.run(call).await
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        // One script call touches one shard's DLQ and jobs (the single
        // layout: one group of every id, in the order given).
        let mut taken = 0u64;
        for (_, indices) in self.by_shard(ids, |id| self.layout.shard_of(id)) {
            let group: Vec<JobId> = indices.into_iter().map(|i| ids[i].clone()).collect();
            for chunk in group.chunks(PURGE_CHUNK) {
                taken += self.run(DlqPurge { layout: &self.layout, dlq, ids: chunk }).await?;
            }
        }
        Ok(taken)
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        let mut args = vec![self.layout.job(id)];
        for (k, v) in fields {
            args.extend([k.clone(), v.clone()]);
        }
        self.command("put_job_fields", "HSET", args).await?;
        Ok(())
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        const OP: &str = "delete_matching";
        if self.layout.is_sharded() {
            return self.delete_matching_sharded(pattern, dry_run).await;
        }
        let mut cursor = "0".to_owned();
        // Key names as bytes: a name that is not UTF-8 is deleted as it is.
        let mut found = std::collections::BTreeSet::<Vec<u8>>::new();
        loop {
            let args = vec![cursor, "MATCH".to_owned(), pattern.to_owned(), "COUNT".to_owned(), SCAN_COUNT.to_string()];
            let mut reply = array(OP, self.command(OP, "SCAN", args).await?)?.into_iter();
            let (Some(next), Some(keys)) = (reply.next(), reply.next()) else {
                return Err(protocol(OP, "expected {cursor, keys}"));
            };
            cursor = text(&next).ok_or_else(|| protocol(OP, "cursor is not text"))?;
            for key in array(OP, keys)? {
                let name = match key {
                    Value::Bytes(b) => b.to_vec(),
                    other => other.as_string().ok_or_else(|| protocol(OP, "key is not text"))?.into_bytes(),
                };
                found.insert(name);
            }
            if cursor == "0" {
                break;
            }
        }
        if dry_run {
            return Ok(found.len() as u64);
        }
        let keys: Vec<Vec<u8>> = found.into_iter().collect();
        let mut deleted = 0u64;
        let del = fred::types::CustomCommand::new_static("DEL", fred::types::ClusterHash::FirstKey, false);
        for chunk in keys.chunks(SCAN_COUNT) {
            let args: Vec<Value> = chunk.iter().map(|k| Value::Bytes(k.clone().into())).collect();
            let reply: Value = self.inner.client.custom(del.clone(), args).await.map_err(|e| self.error(OP, e))?;
            deleted += reply::count(OP, &reply)?;
        }
        Ok(deleted)
    }
}
