//! Inspection and administration over every shard and every master of a
//! Redis Cluster (the sharded layout). The single layout never comes here.
//!
//! * Key scans (`queues`, `job_ids`, `workers`, `delete_matching`) send
//!   `SCAN` to every master the client's routing table names, each on its
//!   own connection (a `SCAN` sent like other commands would be routed by
//!   its cursor, as if it were a key, and see one node only).
//! * What is read or written per key afterwards goes in calls whose keys
//!   share one slot: one script call per shard for the queue spans, one
//!   `DEL` per slot for `delete_matching`.
//! * Listings merge the shards: a queue's entries by ready time (a merge
//!   of every shard's first `offset + limit` entries), a DLQ shard after
//!   shard.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use futures::StreamExt;
use rrq_protocol::{DlqName, JobId, QueueName};

use super::RedisStore;
use super::inspect::{SCAN_COUNT, scored_entries};
use super::reply::{self, array, protocol, text};
use super::scripts::InspectQueues;
use crate::error::StoreError;
use crate::keys::{Layout, Shard, key_slot};
use crate::store::{InspectStore, QueueInfo};

/// Refuses a cluster older than Redis 7.0 ([`StoreError::ClusterTooOld`]):
/// the scripts' `SPUBLISH` would fail there after their writes. One node is
/// asked (a cluster mid-upgrade is not told apart), and a user refused
/// `INFO` is let through.
async fn check_version(client: &Client, dsn: &str) -> Result<(), StoreError> {
    let cmd = fred::types::CustomCommand::new_static("INFO", fred::types::ClusterHash::Random, false);
    let info: String = match client.custom(cmd, vec!["server"]).await {
        Ok(info) => info,
        // A user without `INFO` (a read-only account) is not asked.
        Err(e) if e.details().contains("NOPERM") => return Ok(()),
        Err(e) => return Err(super::connect::classify(dsn, "connect", e)),
    };
    match redis_version(&info) {
        Some((version, major)) if major < 7 => Err(StoreError::ClusterTooOld { version: version.to_owned() }),
        _ => Ok(()),
    }
}

/// The `redis_version` of an `INFO server` reply, and its major number.
fn redis_version(info: &str) -> Option<(&str, u32)> {
    let version = info.lines().find_map(|l| l.strip_prefix("redis_version:"))?.trim();
    let major = version.split('.').next()?.parse().ok()?;
    Some((version, major))
}

/// Script calls and commands in flight at once when a listing fans out.
const IN_FLIGHT: usize = 16;

/// Records the layout's shard count in the cluster unless one is recorded
/// (`SET … NX`), and refuses a store whose count differs from the record
/// ([`StoreError::ShardCountMismatch`]). The single layout records nothing;
/// a user refused the write (`NOPERM`) only compares.
pub(super) async fn check_shard_count(client: &Client, layout: &Layout, dsn: &str) -> Result<(), StoreError> {
    const OP: &str = "connect";
    let Some(record) = layout.shard_count_record() else { return Ok(()) };
    check_version(client, dsn).await?;
    let ours = layout.shard_count().to_string();
    let failed = |e: Error| super::connect::classify(dsn, OP, e);
    // A record deleted between the two commands (`rrq debug clear`) is
    // written again on the next turn.
    for _ in 0..3 {
        // A user without write access (a read-only inspection account) can
        // still compare with the record, and records nothing.
        let may_write =
            match client.set::<Option<String>, _, _>(&record, ours.as_str(), None, Some(SetOptions::NX), false).await {
                Ok(Some(_)) => return Ok(()),
                Ok(None) => true,
                Err(e) if e.details().contains("NOPERM") => false,
                Err(e) => return Err(failed(e)),
            };
        let recorded: Option<String> = client.get(&record).await.map_err(failed)?;
        match recorded {
            None if !may_write => return Ok(()),
            None => continue,
            Some(recorded) if recorded == ours => return Ok(()),
            Some(recorded) => {
                return Err(StoreError::ShardCountMismatch { configured: layout.shard_count(), recorded, record });
            }
        }
    }
    Err(protocol(OP, format!("`{record}` kept disappearing while the shard count was compared with it")))
}

impl RedisStore {
    /// The keys matching the glob `pattern` on every master, each once, as
    /// bytes (a name that is not UTF-8 stays as it is); only keys of Redis
    /// type `kind` when given. Stops early once `limit` keys were found
    /// (`0` = no limit). A master that cannot be asked fails the call: a
    /// scan that silently skipped a node would under-report.
    pub(super) async fn scan_masters(
        &self,
        op: &'static str,
        pattern: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let masters = self
            .inner
            .client
            .cached_cluster_state()
            .map(|state| state.unique_primary_nodes())
            .filter(|masters| !masters.is_empty())
            .ok_or_else(|| self.unavailable("the cluster's routing table names no master"))?;
        let scans = masters.into_iter().map(|server| self.scan_node(op, server, pattern, kind, limit));
        let mut found = BTreeSet::new();
        for keys in futures::future::join_all(scans).await {
            found.extend(keys?);
        }
        let mut keys: Vec<Vec<u8>> = found.into_iter().collect();
        if limit > 0 {
            keys.truncate(limit);
        }
        Ok(keys)
    }

    /// One master's part of [`RedisStore::scan_masters`].
    async fn scan_node(
        &self,
        op: &'static str,
        server: Server,
        pattern: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<BTreeSet<Vec<u8>>, StoreError> {
        let node = self.inner.client.with_options(&Options { cluster_node: Some(server), ..Default::default() });
        let scan = CustomCommand::new_static("SCAN", ClusterHash::Random, false);
        let mut cursor = "0".to_owned();
        let mut found = BTreeSet::new();
        loop {
            let mut args =
                vec![cursor, "MATCH".to_owned(), pattern.to_owned(), "COUNT".to_owned(), SCAN_COUNT.to_string()];
            if let Some(kind) = kind {
                args.extend(["TYPE".to_owned(), kind.to_owned()]);
            }
            let answer: Value = node.custom(scan.clone(), args).await.map_err(|e| self.error(op, e))?;
            let mut answer = array(op, answer)?.into_iter();
            let (Some(next), Some(keys)) = (answer.next(), answer.next()) else {
                return Err(protocol(op, "expected {cursor, keys}"));
            };
            cursor = text(&next).ok_or_else(|| protocol(op, "cursor is not text"))?;
            for key in array(op, keys)? {
                found.insert(match key {
                    Value::Bytes(b) => b.to_vec(),
                    other => other.as_string().ok_or_else(|| protocol(op, "key is not text"))?.into_bytes(),
                });
            }
            if cursor == "0" || (limit > 0 && found.len() >= limit) {
                return Ok(found);
            }
        }
    }

    /// [`InspectStore::queues`](crate::InspectStore::queues) on a cluster:
    /// every shard's ready sets, one script call per shard (and chunk), each
    /// logical queue once with its length summed and the earliest and
    /// latest ready time of any shard.
    pub(super) async fn queues_sharded(&self) -> Result<Vec<QueueInfo>, StoreError> {
        const OP: &str = "queues";
        let pattern = self.layout.shards_glob(QueueName::PREFIX);
        let mut per_shard: BTreeMap<Shard, Vec<(String, QueueName)>> = BTreeMap::new();
        for key in self.scan_masters(OP, &pattern, Some("zset"), 0).await? {
            let Ok(key) = String::from_utf8(key) else { continue };
            if let Some((queue, shard)) = self.layout.queue_of(&key) {
                per_shard.entry(shard).or_default().push((key, queue));
            }
        }
        let calls: Vec<Vec<(String, QueueName)>> = per_shard
            .into_values()
            .flat_map(|keys| keys.chunks(SCAN_COUNT).map(<[_]>::to_vec).collect::<Vec<_>>())
            .collect();
        let mut answers = futures::stream::iter(calls.into_iter().map(|chunk| async move {
            let keys = chunk.iter().map(|(key, _)| key.clone()).collect();
            self.run(InspectQueues(keys)).await.map(|spans| (chunk, spans))
        }))
        .buffer_unordered(IN_FLIGHT);
        let mut merged: BTreeMap<QueueName, QueueInfo> = BTreeMap::new();
        while let Some(answer) = answers.next().await {
            let (chunk, spans) = answer?;
            for ((_, queue), span) in chunk.into_iter().zip(spans) {
                if span.len == 0 {
                    continue;
                }
                let info =
                    merged.entry(queue.clone()).or_insert(QueueInfo { queue, len: 0, oldest: None, newest: None });
                info.len += span.len;
                info.oldest = earliest(info.oldest, span.oldest);
                info.newest = info.newest.max(span.newest);
            }
        }
        Ok(merged.into_values().collect())
    }

    /// [`InspectStore::queue_entries`](crate::InspectStore::queue_entries) on
    /// a cluster: the first `offset + limit` entries of every shard (one
    /// `ZRANGE` each, sent together; at most the whole queue), merged by
    /// ready time, then by id (the order of equal scores within one sorted
    /// set).
    pub(super) async fn queue_entries_sharded(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        const OP: &str = "queue_entries";
        // A page past the end (a crafted offset) would read every entry:
        // one `ZCARD` per shard answers it instead.
        if offset > 0 && u64::try_from(offset).unwrap_or(u64::MAX) >= self.queue_len(queue).await? {
            return Ok(Vec::new());
        }
        let stop = i64::try_from(offset.saturating_add(limit)).unwrap_or(i64::MAX).saturating_sub(1);
        let heads = self.layout.shards().map(|shard| async move {
            let args = vec![self.layout.queue(queue, shard), "0".to_owned(), stop.to_string(), "WITHSCORES".to_owned()];
            scored_entries(OP, self.command(OP, "ZRANGE", args).await?)
        });
        let mut all = Vec::new();
        for entries in futures::stream::iter(heads).buffered(IN_FLIGHT).collect::<Vec<_>>().await {
            all.extend(entries?);
        }
        all.sort_by(|(a_id, a_at), (b_id, b_at)| a_at.cmp(b_at).then_with(|| a_id.as_str().cmp(b_id.as_str())));
        Ok(all.into_iter().skip(offset).take(limit).collect())
    }

    /// [`InspectStore::dlq_ids`](crate::InspectStore::dlq_ids) on a cluster:
    /// shard after shard in shard order, each shard's list newest first.
    /// One `LLEN` per shard (sent together) finds where `offset` falls, then
    /// one `LRANGE` per shard the page covers.
    pub(super) async fn dlq_ids_sharded(
        &self,
        dlq: &DlqName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobId>, StoreError> {
        const OP: &str = "dlq_ids";
        let lens = self.layout.shards().map(|shard| async move {
            let len = self.command(OP, "LLEN", vec![self.layout.dlq(dlq, shard)]).await?;
            Ok::<_, StoreError>((shard, usize::try_from(reply::int(OP, &len)?).unwrap_or(0)))
        });
        let mut ranges = Vec::new();
        let (mut skip, mut want) = (offset, limit);
        for len in futures::stream::iter(lens).buffered(IN_FLIGHT).collect::<Vec<_>>().await {
            let (shard, len) = len?;
            if want == 0 {
                break;
            }
            if skip >= len {
                skip -= len;
                continue;
            }
            let take = want.min(len - skip);
            ranges.push((shard, skip, take));
            (skip, want) = (0, want - take);
        }
        let pages = ranges.into_iter().map(|(shard, start, take)| async move {
            let index = |i: usize| i64::try_from(i).unwrap_or(i64::MAX);
            let (start, stop) = (index(start), index(start + take).saturating_sub(1));
            let args = vec![self.layout.dlq(dlq, shard), start.to_string(), stop.to_string()];
            reply::ids(OP, self.command(OP, "LRANGE", args).await?)
        });
        let mut out = Vec::new();
        for page in futures::stream::iter(pages).buffered(IN_FLIGHT).collect::<Vec<_>>().await {
            out.extend(page?);
        }
        Ok(out)
    }

    /// [`AdminStore::delete_matching`](crate::AdminStore::delete_matching) on
    /// a cluster: the keys of every master, deleted with one `DEL` per slot
    /// (and chunk).
    pub(super) async fn delete_matching_sharded(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        const OP: &str = "delete_matching";
        let keys = self.scan_masters(OP, pattern, None, 0).await?;
        if dry_run {
            return Ok(keys.len() as u64);
        }
        let mut per_slot: BTreeMap<u16, Vec<Vec<u8>>> = BTreeMap::new();
        for key in keys {
            per_slot.entry(key_slot(&key)).or_default().push(key);
        }
        let del = CustomCommand::new_static("DEL", ClusterHash::FirstKey, false);
        let calls: Vec<Vec<Value>> = per_slot
            .into_values()
            .flat_map(|keys| {
                keys.chunks(SCAN_COUNT)
                    .map(|chunk| chunk.iter().map(|k| Value::Bytes(k.clone().into())).collect())
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut deletes = futures::stream::iter(calls.into_iter().map(|args| {
            let del = del.clone();
            async move {
                let answer: Value = self.inner.client.custom(del, args).await.map_err(|e| self.error(OP, e))?;
                reply::count(OP, &answer)
            }
        }))
        .buffer_unordered(IN_FLIGHT);
        let mut deleted = 0u64;
        while let Some(count) = deletes.next().await {
            deleted += count?;
        }
        Ok(deleted)
    }
}

/// The earlier of two optional times (`None` only when both are).
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::redis_version;

    #[test]
    fn the_server_version_is_read_from_info() {
        let info = "# Server\r\nredis_version:6.2.14\r\nredis_mode:cluster\r\n";
        assert_eq!(redis_version(info), Some(("6.2.14", 6)));
        assert_eq!(redis_version("redis_version:7.0.15\r\n"), Some(("7.0.15", 7)));
        assert_eq!(redis_version("redis_version:unstable\r\n"), None);
        assert_eq!(redis_version("# Server\r\n"), None);
    }
}
