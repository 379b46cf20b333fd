//! Reads for inspection tools and waiters: job hashes, queue and DLQ
//! listings, worker health records (found by `SCAN`, read in chunks of one
//! script call), and the blocking wait on a job's events stream.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;

use super::RedisStore;
use super::reply::{self, array, protocol, strict_text, text};
use super::scripts::{InspectJobs, InspectQueues, InspectWorkers, LuaScript};
use crate::clock::epoch_ms;
use crate::error::StoreError;
use crate::job::{Job, JobParseError};
use crate::keys::{self, Shard};
use crate::store::{InspectStore, QueueInfo, WorkerRecord};

/// Keys asked for per `SCAN` step, and keys per inspection script call.
pub(super) const SCAN_COUNT: usize = 500;
/// Extra time a blocking read may take beyond its block time.
const BLOCK_MARGIN: Duration = Duration::from_secs(5);

#[async_trait]
impl InspectStore for RedisStore {
    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        let key = self.layout.job(id);
        match self.inner.client.hgetall::<Value, _>(&key).await {
            Ok(v) => {
                let f = reply::fields("job", v)?;
                Ok(if f.is_empty() { None } else { Some(Job::from_fields(id.as_str(), &f)) })
            }
            Err(e) if e.details().starts_with("WRONGTYPE") => {
                let found: String = self.inner.client.r#type(&key).await.map_err(|e| self.error("job", e))?;
                Ok(Some(Err(JobParseError::WrongType { found })))
            }
            Err(e) => Err(self.error("job", e)),
        }
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let v = self
            .inner
            .client
            .hgetall::<Value, _>(self.layout.job(id))
            .await
            .map_err(|e| self.error("job_fields", e))?;
        let f = reply::fields("job_fields", v)?;
        Ok(if f.is_empty() { None } else { Some(f.into_iter().collect()) })
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        if self.layout.is_sharded() {
            // One script call reads jobs of one shard: each shard's ids in
            // turn, the answers put back in the order asked.
            let mut out = vec![None; ids.len()];
            for (_, indices) in self.by_shard(ids, |id| self.layout.shard_of(id)) {
                let group: Vec<JobId> = indices.iter().map(|&i| ids[i].clone()).collect();
                for (i, fields) in indices.into_iter().zip(self.job_fields_in_chunks(&group).await?) {
                    out[i] = fields;
                }
            }
            return Ok(out);
        }
        self.job_fields_in_chunks(ids).await
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let pool = self.blocking().await?;
        let client = pool.acquire().await;
        let after = after.unwrap_or_else(|| "$".to_owned());
        let block_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // BLOCK 0 would wait forever: a zero timeout is a plain read.
        let block = (!timeout.is_zero()).then(|| block_ms.max(1));
        let options = Options { timeout: Some(timeout + BLOCK_MARGIN), max_attempts: Some(1), ..Default::default() };
        match client.with_options(&options).xread::<Value, _, _>(Some(1), block, self.layout.events(id), after).await {
            Ok(v) => Ok(reply::first_entry_id(v)),
            // A block that ends without data may surface as a timeout.
            Err(e) if *e.kind() == ErrorKind::Timeout => Ok(None),
            Err(e) => Err(self.error("wait_job_event", e)),
        }
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        if self.layout.is_sharded() {
            return self.sum_over_shards("queue_len", "ZCARD", |shard| self.layout.queue(queue, shard)).await;
        }
        self.inner.client.zcard(self.layout.queue(queue, Shard::FIRST)).await.map_err(|e| self.error("queue_len", e))
    }

    async fn queue_ready_len(&self, queue: &QueueName, now: DateTime<Utc>) -> Result<u64, StoreError> {
        const OP: &str = "queue_ready_len";
        // One `ZCOUNT` per shard (one on a single server). Scores are epoch
        // ms: `< now_ms + 1` is "ready time at or before now".
        let below = format!("({}", epoch_ms(now).saturating_add(1));
        let counts = self.layout.shards().map(|shard| {
            self.command(OP, "ZCOUNT", vec![self.layout.queue(queue, shard), "-inf".to_owned(), below.clone()])
        });
        let mut total = 0u64;
        for count in futures::future::join_all(counts).await {
            total += reply::count(OP, &count?)?;
        }
        Ok(total)
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.layout.is_sharded() {
            return self.dlq_ids_sharded(dlq, offset, limit).await;
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)).saturating_sub(1);
        let listed: Value = self
            .inner
            .client
            .lrange(self.layout.dlq(dlq, Shard::FIRST), start, stop)
            .await
            .map_err(|e| self.error("dlq_ids", e))?;
        reply::ids("dlq_ids", listed)
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        if self.layout.is_sharded() {
            return self.sum_over_shards("dlq_len", "LLEN", |shard| self.layout.dlq(dlq, shard)).await;
        }
        self.inner.client.llen(self.layout.dlq(dlq, Shard::FIRST)).await.map_err(|e| self.error("dlq_len", e))
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        if self.layout.is_sharded() {
            return self.queues_sharded().await;
        }
        let keys = scan(self, InspectQueues::OP, QueueName::PREFIX, "zset", 0).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_COUNT) {
            let spans = self.run(InspectQueues(chunk.to_vec())).await?;
            for (key, span) in chunk.iter().zip(spans) {
                if span.len > 0 {
                    out.push(QueueInfo {
                        queue: QueueName::new(key),
                        len: span.len,
                        oldest: span.oldest,
                        newest: span.newest,
                    });
                }
            }
        }
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        const OP: &str = "queue_entries";
        if limit == 0 {
            return Ok(Vec::new());
        }
        if self.layout.is_sharded() {
            return self.queue_entries_sharded(queue, offset, limit).await;
        }
        // Redis indexes with signed 64-bit integers: a larger offset is past
        // the end anyway, and must not become an error.
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)).saturating_sub(1);
        let args =
            vec![self.layout.queue(queue, Shard::FIRST), start.to_string(), stop.to_string(), "WITHSCORES".to_owned()];
        scored_entries(OP, self.command(OP, "ZRANGE", args).await?)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let prefix = self.layout.health_prefix();
        let keys = if self.layout.is_sharded() {
            // One slot (`{global}`), on whichever master holds it now.
            let pattern = format!("{}*", keys::glob_escape(&prefix));
            let found = self.scan_masters(InspectWorkers::OP, &pattern, Some("string"), 0).await?;
            found.into_iter().filter_map(|k| String::from_utf8(k).ok()).collect()
        } else {
            scan(self, InspectWorkers::OP, &prefix, "string", 0).await?
        };
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_COUNT) {
            let records = self.run(InspectWorkers(chunk.to_vec())).await?;
            for (key, record) in chunk.iter().zip(records) {
                if record.pttl == -2 {
                    continue; // expired between the scan and the read
                }
                out.push(WorkerRecord {
                    worker_id: key[prefix.len()..].to_owned(),
                    health: record.value.and_then(|s| serde_json::from_str::<Json>(&s).ok()),
                    ttl: u64::try_from(record.pttl).ok().map(Duration::from_millis),
                });
            }
        }
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        if self.layout.is_sharded() {
            let pattern = self.layout.shards_glob(keys::JOB_PREFIX);
            let found = self.scan_masters("job_ids", &pattern, Some("hash"), limit).await?;
            let ids = found.into_iter().filter_map(|k| String::from_utf8(k).ok());
            return Ok(ids.filter_map(|k| self.layout.job_of_key(&k)).collect());
        }
        let prefix = self.layout.on_shard(Shard::FIRST, keys::JOB_PREFIX);
        let keys = scan(self, "job_ids", &prefix, "hash", limit).await?;
        Ok(keys.into_iter().map(|k| JobId::new(&k[prefix.len()..])).collect())
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        let mut names: Vec<String> =
            self.inner.client.smembers(self.layout.paused(Shard::FIRST)).await.map_err(|e| self.error("paused", e))?;
        names.sort();
        if self.layout.is_sharded() {
            // The first shard's copy of every shard's set, in its keys.
            return Ok(names.iter().filter_map(|n| self.layout.queue_of(n)).map(|(queue, _)| queue).collect());
        }
        Ok(names.iter().map(|n| QueueName::new(n)).collect())
    }
}

/// Keys matching `prefix*` of one Redis type, each once; stops early once
/// `limit` keys were found (`0` = no limit).
impl RedisStore {
    /// [`InspectStore::job_fields_batch`] for ids of one shard.
    async fn job_fields_in_chunks(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCAN_COUNT) {
            let hashes = self.run(InspectJobs::of(&self.layout, chunk)).await?;
            if hashes.len() != chunk.len() {
                return Err(protocol(InspectJobs::OP, format!("{} hashes for {} ids", hashes.len(), chunk.len())));
            }
            out.extend(hashes.into_iter().map(|f| if f.is_empty() { None } else { Some(f.into_iter().collect()) }));
        }
        Ok(out)
    }

    /// The sum of a counting command (`ZCARD`, `LLEN`) over one key per
    /// shard, asked of every shard at once (sharded layout).
    async fn sum_over_shards(
        &self,
        op: &'static str,
        command: &'static str,
        key: impl Fn(Shard) -> String,
    ) -> Result<u64, StoreError> {
        let counts = self.layout.shards().map(|shard| self.command(op, command, vec![key(shard)]));
        let mut total = 0u64;
        for count in futures::future::join_all(counts).await {
            total += u64::try_from(reply::int(op, &count?)?).unwrap_or(0);
        }
        Ok(total)
    }
}

/// The `(id, ready time)` pairs of a `ZRANGE … WITHSCORES` answer.
pub(super) fn scored_entries(op: &'static str, answer: Value) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
    let flat = array(op, answer)?;
    let mut out = Vec::with_capacity(flat.len() / 2);
    let mut it = flat.into_iter();
    while let Some(member) = it.next() {
        // RESP3 answers [member, score] pairs, RESP2 a flat list.
        let (member, score) = match member {
            Value::Array(mut pair) if pair.len() == 2 => {
                let score = pair.pop().unwrap_or(Value::Null);
                (pair.pop().unwrap_or(Value::Null), score)
            }
            m => (m, it.next().unwrap_or(Value::Null)),
        };
        let id = reply::job_id(op, &member)?;
        let at = reply::score_time(&score).ok_or_else(|| protocol(op, format!("bad score {score:?}")))?;
        out.push((id, at));
    }
    Ok(out)
}

async fn scan(
    store: &RedisStore,
    op: &'static str,
    prefix: &str,
    kind: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let pattern = format!("{}*", keys::glob_escape(prefix));
    let mut cursor = "0".to_owned();
    let mut found = std::collections::BTreeSet::new();
    loop {
        let args = vec![
            cursor,
            "MATCH".to_owned(),
            pattern.clone(),
            "COUNT".to_owned(),
            SCAN_COUNT.to_string(),
            "TYPE".to_owned(),
            kind.to_owned(),
        ];
        let mut reply = array(op, store.command(op, "SCAN", args).await?)?.into_iter();
        let (Some(next), Some(keys)) = (reply.next(), reply.next()) else {
            return Err(protocol(op, "expected {cursor, keys}"));
        };
        cursor = text(&next).ok_or_else(|| protocol(op, "cursor is not text"))?;
        for key in array(op, keys)? {
            found.insert(strict_text(op, &key, "key")?);
        }
        if cursor == "0" || (limit > 0 && found.len() >= limit) {
            break;
        }
    }
    let mut keys: Vec<String> = found.into_iter().collect();
    if limit > 0 {
        keys.truncate(limit);
    }
    Ok(keys)
}
