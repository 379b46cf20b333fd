//! Reads for inspection tools and waiters: job hashes, queue and DLQ
//! listings, worker health records (found by `SCAN`, read in chunks of one
//! script call), and the blocking wait on a job's events stream.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;

use super::RedisStore;
use super::reply::{self, array, int, protocol, strict_text, text};
use super::scripts::{InspectJobs, InspectQueues, InspectWorkers, LuaScript};
use crate::error::StoreError;
use crate::job::{Job, JobParseError};
use crate::keys;
use crate::store::{QueueInfo, WorkerRecord};

/// Keys asked for per `SCAN` step, and keys per inspection script call.
pub(super) const SCAN_COUNT: usize = 500;
/// Extra time a blocking read may take beyond its block time.
const BLOCK_MARGIN: Duration = Duration::from_secs(5);

pub(super) async fn job(store: &RedisStore, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
    let key = keys::job(id);
    match store.inner.client.hgetall::<Value, _>(&key).await {
        Ok(v) => {
            let f = reply::fields("job", v)?;
            Ok(if f.is_empty() { None } else { Some(Job::from_fields(id.as_str(), &f)) })
        }
        Err(e) if e.details().starts_with("WRONGTYPE") => {
            let found: String = store.inner.client.r#type(&key).await.map_err(|e| store.error("job", e))?;
            Ok(Some(Err(JobParseError::WrongType { found })))
        }
        Err(e) => Err(store.error("job", e)),
    }
}

pub(super) async fn job_fields(store: &RedisStore, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
    let v = store.inner.client.hgetall::<Value, _>(keys::job(id)).await.map_err(|e| store.error("job_fields", e))?;
    let f = reply::fields("job_fields", v)?;
    Ok(if f.is_empty() { None } else { Some(f.into_iter().collect()) })
}

pub(super) async fn job_fields_batch(
    store: &RedisStore,
    ids: &[JobId],
) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(SCAN_COUNT) {
        let hashes = store.run(InspectJobs(chunk.iter().map(keys::job).collect())).await?;
        if hashes.len() != chunk.len() {
            return Err(protocol(InspectJobs::OP, format!("{} hashes for {} ids", hashes.len(), chunk.len())));
        }
        out.extend(hashes.into_iter().map(|f| if f.is_empty() { None } else { Some(f.into_iter().collect()) }));
    }
    Ok(out)
}

pub(super) async fn wait_job_event(
    store: &RedisStore,
    id: &JobId,
    after: Option<String>,
    timeout: Duration,
) -> Result<Option<String>, StoreError> {
    let pool = store.blocking().await?;
    let client = pool.acquire().await;
    let after = after.unwrap_or_else(|| "$".to_owned());
    let block_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    // BLOCK 0 would wait forever: a zero timeout is a plain read.
    let block = (!timeout.is_zero()).then(|| block_ms.max(1));
    let options = Options { timeout: Some(timeout + BLOCK_MARGIN), max_attempts: Some(1), ..Default::default() };
    match client.with_options(&options).xread::<Value, _, _>(Some(1), block, keys::events(id), after).await {
        Ok(v) => Ok(reply::first_entry_id(v)),
        // A block that ends without data may surface as a timeout.
        Err(e) if *e.kind() == ErrorKind::Timeout => Ok(None),
        Err(e) => Err(store.error("wait_job_event", e)),
    }
}

pub(super) async fn queue_len(store: &RedisStore, queue: &QueueName) -> Result<u64, StoreError> {
    store.inner.client.zcard(keys::queue(queue)).await.map_err(|e| store.error("queue_len", e))
}

pub(super) async fn dlq_len(store: &RedisStore, dlq: &DlqName) -> Result<u64, StoreError> {
    store.inner.client.llen(keys::dlq(dlq)).await.map_err(|e| store.error("dlq_len", e))
}

pub(super) async fn dlq_ids(
    store: &RedisStore,
    dlq: &DlqName,
    offset: usize,
    limit: usize,
) -> Result<Vec<JobId>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let start = i64::try_from(offset).unwrap_or(i64::MAX);
    let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)).saturating_sub(1);
    let listed: Value =
        store.inner.client.lrange(keys::dlq(dlq), start, stop).await.map_err(|e| store.error("dlq_ids", e))?;
    reply::ids("dlq_ids", listed)
}

pub(super) async fn queues(store: &RedisStore) -> Result<Vec<QueueInfo>, StoreError> {
    let keys = scan(store, InspectQueues::OP, QueueName::PREFIX, "zset", 0).await?;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(SCAN_COUNT) {
        let spans = store.run(InspectQueues(chunk.to_vec())).await?;
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

pub(super) async fn queue_entries(
    store: &RedisStore,
    queue: &QueueName,
    offset: usize,
    limit: usize,
) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
    const OP: &str = "queue_entries";
    if limit == 0 {
        return Ok(Vec::new());
    }
    let stop = offset.saturating_add(limit) - 1;
    let args = vec![keys::queue(queue).to_owned(), offset.to_string(), stop.to_string(), "WITHSCORES".to_owned()];
    let flat = array(OP, store.command(OP, "ZRANGE", args).await?)?;
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
        let id = reply::job_id(OP, &member)?;
        let at = reply::score_time(&score).ok_or_else(|| protocol(OP, format!("bad score {score:?}")))?;
        out.push((id, at));
    }
    Ok(out)
}

pub(super) async fn workers(store: &RedisStore) -> Result<Vec<WorkerRecord>, StoreError> {
    let keys = scan(store, InspectWorkers::OP, keys::HEALTH_PREFIX, "string", 0).await?;
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(SCAN_COUNT) {
        let records = store.run(InspectWorkers(chunk.to_vec())).await?;
        for (key, record) in chunk.iter().zip(records) {
            if record.pttl == -2 {
                continue; // expired between the scan and the read
            }
            out.push(WorkerRecord {
                worker_id: key[keys::HEALTH_PREFIX.len()..].to_owned(),
                health: record.value.and_then(|s| serde_json::from_str::<Json>(&s).ok()),
                ttl: u64::try_from(record.pttl).ok().map(Duration::from_millis),
            });
        }
    }
    out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
    Ok(out)
}

pub(super) async fn job_ids(store: &RedisStore, limit: usize) -> Result<Vec<JobId>, StoreError> {
    let keys = scan(store, "job_ids", keys::JOB_PREFIX, "hash", limit).await?;
    Ok(keys.into_iter().map(|k| JobId::new(&k[keys::JOB_PREFIX.len()..])).collect())
}

pub(super) async fn unique_lock_ttl(store: &RedisStore, key: &str) -> Result<Option<Duration>, StoreError> {
    const OP: &str = "unique_lock_ttl";
    let ms = int(OP, &store.command(OP, "PTTL", vec![keys::unique_lock(key)]).await?)?;
    Ok(u64::try_from(ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis))
}

/// Keys matching `prefix*` of one Redis type, each once; stops early once
/// `limit` keys were found (`0` = no limit).
async fn scan(
    store: &RedisStore,
    op: &'static str,
    prefix: &str,
    kind: &str,
    limit: usize,
) -> Result<Vec<String>, StoreError> {
    let pattern = format!("{}*", glob_escape(prefix));
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

/// Escapes glob characters so a prefix matches literally in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
