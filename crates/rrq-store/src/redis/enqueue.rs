//! Enqueues: one job through the script its [`Plan`] names, or many
//! standard jobs in chunks of one `enqueue_batch.lua` call each.

use std::time::Duration;

use async_trait::async_trait;
use fred::prelude::*;
use futures::StreamExt as _;
use rrq_protocol::JobId;

use super::RedisStore;
use super::reply::protocol;
use super::scripts::{
    BatchJob, Enqueue, EnqueueBatch, EnqueueDebounced, EnqueueRateLimited, EnqueueUnique, LuaScript, NewJobCall,
};
use crate::clock::epoch_ms;
use crate::error::StoreError;
use crate::job::NewJob;
use crate::keys::{Layout, Shard};
use crate::shared::{self, Plan};
use crate::store::{EnqueueMode, EnqueueStore, Enqueued};

/// Jobs per script call in [`enqueue_batch`]. One script over many jobs
/// measured 25-30 % faster than a pipeline of one script call per job;
/// small chunks with [`BATCH_IN_FLIGHT`] always in flight let the client
/// encode while Redis runs (batches of 1,000: 500-job chunks 77,000 jobs/s,
/// 200 about 88,000, 100 about 110,000), and keep each script short.
const BATCH_CHUNK: usize = 100;
/// Chunks of one [`enqueue_batch`] call sent before the first answer is
/// awaited. After an error, chunks other than the failed one may have been
/// applied (as the failed one may have): the call's `Err` says nothing
/// about which jobs exist.
const BATCH_IN_FLIGHT: usize = 4;
/// How much longer than its own timeout a `WAIT` may take to answer.
const WAIT_MARGIN: Duration = Duration::from_secs(5);

#[async_trait]
impl EnqueueStore for RedisStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        let plan = shared::plan(&job, &mode, &self.layout)?;
        if let Some(shard) = dedup_shard(&self.layout, &mode)
            && self.layout.shard_of(&job.id) != shard
        {
            return Err(StoreError::InvalidInput {
                what: "job id",
                reason: format!(
                    "on a Redis Cluster a job enqueued under a deduplication key must have an id of the key's \
                     shard ({} of {}), and `{}` is on shard {}: leave the id out and the store draws one that fits",
                    shard.index(),
                    self.layout.shard_count(),
                    job.id,
                    self.layout.shard_of(&job.id).index()
                ),
            });
        }
        let ready_now = shared::ready_at_enqueue(&job);
        let layout = &self.layout;
        let id = job.id.clone();
        let enqueued = match plan {
            Plan::Standard => {
                self.run(Enqueue { job: NewJobCall::new(layout, &job, 0, ready_now), idempotency_key: None }).await?
            }
            Plan::Idempotent { key, ttl } => {
                self.run(Enqueue { job: NewJobCall::new(layout, &job, ttl, ready_now), idempotency_key: Some(key) })
                    .await?
            }
            Plan::RateLimited { key, ttl } => {
                self.run(EnqueueRateLimited { job: NewJobCall::new(layout, &job, ttl, ready_now), limit_key: key })
                    .await?
            }
            Plan::Debounced { key, ttl } => {
                let call = EnqueueDebounced {
                    job: NewJobCall::new(layout, &job, ttl, ready_now),
                    debounce_key: key,
                    has_trace_context: !job.trace_context.is_empty(),
                    has_correlation_context: !job.correlation_context.is_empty(),
                };
                self.run(call).await?
            }
            Plan::UniqueLock { key, unique, ttl } => {
                let mut job = job;
                job.unique_key = Some(unique);
                let call = EnqueueUnique {
                    job: NewJobCall::new(layout, &job, ttl, ready_now),
                    lock_key: key,
                    enqueue_time: epoch_ms(job.enqueue_time),
                };
                self.run(call).await?
            }
        };
        // A worker in this process asks the job's shard at its next claim.
        if enqueued.is_ok() {
            self.touched(self.layout.shard_of(&id));
        }
        enqueued
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        shared::check_batch(&jobs)?;
        // One script call takes jobs of one shard (the single layout has
        // one): chunks of each shard's jobs, answers put back in order.
        let chunks: Vec<Vec<usize>> = self
            .by_shard(&jobs, |job| self.layout.shard_of(&job.id))
            .into_iter()
            .flat_map(|(_, indices)| indices.chunks(BATCH_CHUNK).map(<[usize]>::to_vec).collect::<Vec<_>>())
            .collect();
        // A few chunks always in flight: the client encodes the next while
        // Redis runs the previous (the connection pipelines them in order).
        let mut chunks = chunks.into_iter();
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut out: Vec<Option<Result<Enqueued, StoreError>>> = (0..jobs.len()).map(|_| None).collect();
        loop {
            while in_flight.len() < BATCH_IN_FLIGHT {
                let Some(chunk) = chunks.next() else { break };
                let jobs = &jobs;
                in_flight.push_back(async move {
                    let reply = enqueue_chunk(self, chunk.iter().map(|&i| &jobs[i]).collect()).await;
                    (chunk, reply)
                });
            }
            let Some((chunk, reply)) = in_flight.next().await else { break };
            for (i, result) in chunk.into_iter().zip(reply?) {
                out[i] = Some(result);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(protocol(EnqueueBatch::OP, "no answer for a job"))))
            .collect())
    }

    fn new_job_id(&self, mode: &EnqueueMode) -> JobId {
        let fresh = || JobId::new(uuid::Uuid::new_v4().to_string());
        match dedup_shard(&self.layout, mode) {
            // About `queue_shards` draws on average.
            Some(shard) => {
                std::iter::repeat_with(fresh).find(|id| self.layout.shard_of(id) == shard).unwrap_or_else(fresh)
            }
            None => fresh(),
        }
    }

    fn fitted_job_id(&self, id: JobId, mode: &EnqueueMode) -> JobId {
        match dedup_shard(&self.layout, mode) {
            Some(shard) if self.layout.shard_of(&id) != shard => {
                // About `queue_shards` checksums; a salt always exists (the
                // bound only keeps a broken checksum from looping).
                (0u32..1 << 20)
                    .map(|salt| JobId::new(format!("{id}~{salt}")))
                    .find(|salted| self.layout.shard_of(salted) == shard)
                    .unwrap_or(id)
            }
            _ => id,
        }
    }

    /// `WAIT` on the connection that ran the enqueues (every command and
    /// script goes through the one multiplexed client), so it covers them.
    /// The server holds that connection's later commands until `WAIT`
    /// answers, so the store's other calls wait too: one replica round trip
    /// when the replicas keep up, up to `timeout` when they do not. On a
    /// cluster every master gets its `WAIT` on its own connection.
    async fn confirm_replicated(&self, replicas: u32, timeout: Duration) -> Result<(), StoreError> {
        if replicas == 0 {
            return Ok(());
        }
        // `WAIT n 0` would block forever.
        let ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX).max(1);
        let options = Options { timeout: Some(timeout + WAIT_MARGIN), max_attempts: Some(1), ..Default::default() };
        let acked = if self.layout.is_sharded() {
            // The writes went to several masters, each over its own
            // connection: every master's `WAIT` covers what it took, and
            // the least of the answers is what all of them hold.
            // A `WAIT` on a master cut off the network would hang until
            // its timeout and the margin: past its own timeout it counts as
            // a waiting call, and the store looks for a new layout.
            let _busy = self.inner.follow.busy_after(timeout);
            let masters = self.inner.client.active_connections();
            if masters.is_empty() {
                return Err(self.unavailable("no connection to any master"));
            }
            let waits = masters.into_iter().map(|server| {
                let options = Options { cluster_node: Some(server), ..options.clone() };
                async move { self.inner.client.with_options(&options).wait::<i64>(i64::from(replicas), ms).await }
            });
            let mut least = i64::MAX;
            for acked in futures::future::join_all(waits).await {
                least = least.min(acked.map_err(|e| self.wait_error(e))?);
            }
            least
        } else {
            self.inner
                .client
                .with_options(&options)
                .wait(i64::from(replicas), ms)
                .await
                .map_err(|e| self.error("confirm_replicated", e))?
        };
        let acked = u32::try_from(acked).unwrap_or(0);
        if acked >= replicas { Ok(()) } else { Err(StoreError::NotReplicated { wanted: replicas, acked, timeout }) }
    }
}

impl RedisStore {
    /// A failed `WAIT` on a cluster. Two failures say the client's view of
    /// the masters is out of date, and are `Unavailable` (what the enqueue
    /// wrote there is as unconfirmed as after a lost reply) and make the
    /// store look at the layout again (see `follow.rs`): a master whose
    /// connection fred dropped between listing the connections and sending
    /// (it died, or the client has just followed a new layout), and a node
    /// that answers as a replica (a failover the client has not followed
    /// yet, the old master back on its old connection).
    fn wait_error(&self, e: Error) -> StoreError {
        if e.details() == "Failed to route command." {
            self.inner.follow.suspect();
            return StoreError::Unavailable { dsn: self.inner.dsn.clone(), source: Box::new(e) };
        }
        if e.details().contains("WAIT cannot be used with replica instances") {
            self.inner.follow.suspect();
            return StoreError::Unavailable {
                dsn: self.inner.dsn.clone(),
                source: format!(
                    "a node the client still took for a master is a replica now ({}); the client follows the new \
                     layout, ask again",
                    e.details()
                )
                .into(),
            };
        }
        self.error("confirm_replicated", e)
    }
}

/// The shard a job enqueued in `mode` must be on, in the sharded layout:
/// its deduplication key's (`None` for a standard enqueue, and always in
/// the single layout).
fn dedup_shard(layout: &Layout, mode: &EnqueueMode) -> Option<Shard> {
    if !layout.is_sharded() {
        return None;
    }
    match mode {
        EnqueueMode::Standard => None,
        EnqueueMode::Idempotent { key, .. } => Some(layout.idempotency_shard(key)),
        EnqueueMode::RateLimited { key, .. } => Some(layout.rate_limit_shard(key)),
        EnqueueMode::Debounced { key, .. } => Some(layout.debounce_shard(key)),
        EnqueueMode::UniqueLock { key, .. } => Some(layout.unique_lock_shard(key)),
    }
}

async fn enqueue_chunk(
    store: &RedisStore,
    jobs: Vec<&NewJob>,
) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
    let shard = jobs.first().map_or(Shard::FIRST, |job| store.layout.shard_of(&job.id));
    let call = EnqueueBatch {
        channel: store.layout.ready_channel(shard),
        jobs: jobs.iter().map(|job| BatchJob::new(&store.layout, job)).collect(),
    };
    let created = store.run(call).await?;
    store.touched(shard);
    if created.len() != jobs.len() {
        return Err(protocol(EnqueueBatch::OP, format!("{} statuses for {} jobs", created.len(), jobs.len())));
    }
    Ok(jobs
        .iter()
        .zip(created)
        .map(
            |(job, created)| {
                if created {
                    Ok(Enqueued::Created(job.id.clone()))
                } else {
                    Err(StoreError::JobIdTaken(job.id.clone()))
                }
            },
        )
        .collect())
}
