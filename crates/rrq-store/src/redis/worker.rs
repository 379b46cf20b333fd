//! The worker's verbs: claim (asked again after a lost reply), lease
//! renewal, the fenced outcomes other than success (see `batch.rs`),
//! heartbeat, orphan recovery, cron ticks and the ready subscription.

use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::QueueName;
use serde_json::Value as Json;
use tokio::sync::mpsc;

use super::heads::{EMPTY_TRUSTED_FOR, Head, Picture};
use super::reply::{array, int, protocol, score_time, text};
use super::scripts::{
    self, Claim, CronTick, DeadLetter, Fenced, FinishCancelled, LuaScript, Recover, Release, Renew, Retry,
};
use super::{RedisStore, batch, notify};
use crate::clock::{epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::job::{Job, JobDefaults};
use crate::keys::Shard;
use crate::shared;
use crate::store::{
    AttemptCount, ClaimBatch, ClaimRequest, Claimed, Fence, Lease, LeaseState, ReadySignals, Recovery, Signal,
    WorkerHealth, WorkerStore,
};

/// How many times a claim whose reply was lost is asked for again (with
/// backoff from 50 ms, about 2.5 s in all: far inside the lease).
const CLAIM_REPLAYS: usize = 6;
/// How long a claim waits for one shard's head on a cluster.
const HEAD_TIMEOUT: Duration = Duration::from_secs(1);
/// How long a shard whose head did not come is left out of claims.
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Ready signals buffered per subscriber before new ones are dropped.
const READY_BUFFER: usize = 256;

#[async_trait]
impl WorkerStore for RedisStore {
    fn job_defaults(&self) -> &JobDefaults {
        &self.defaults
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let token = format_timestamp(req.now);
        let mut batch = ClaimBatch { jobs: Vec::new(), dropped: Vec::new(), next_ready: None, paused: false };
        if !self.layout.is_sharded() {
            // The single layout's one shard is always claimed from.
            claim_shards(self, &req, &token, None, &mut batch).await?;
            return Ok(batch);
        }
        // On a cluster, only the shards that may hold a due job are claimed
        // from: those the picture kept from the shard channels says so of
        // (see `heads.rs`), or else those whose head, read of every shard at
        // once, is due. An empty answer rests on the picture alone only
        // while every head was read a moment ago (EMPTY_TRUSTED_FOR): a job
        // another process added just before, its message still on its way,
        // waits at most that long for the message; otherwise every head is
        // read first. (This process's own writes mark their shard at once,
        // so a worker in burst mode sees its own retries.)
        let now = std::time::Instant::now();
        if let Some(picture) = self.inner.heads.picture(&req.queue, now) {
            let recent = picture.read_at.is_some_and(|at| now.saturating_duration_since(at) < EMPTY_TRUSTED_FOR);
            claim_shards(self, &req, &token, Some(picture), &mut batch).await?;
            if !batch.jobs.is_empty() || recent {
                return Ok(batch);
            }
            batch.next_ready = None;
        }
        let picture = shard_heads(self, &req.queue).await?;
        claim_shards(self, &req, &token, Some(picture), &mut batch).await?;
        Ok(batch)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = shared::lease_ms(ttl);
        let groups = self.by_shard(leases, |l| self.layout.shard_of(&l.job_id));
        if let [(_, _)] = groups.as_slice() {
            // One shard (always, in the single layout): one call, no copy.
            let states = self.run(Renew { layout: &self.layout, leases, ttl_ms }).await?;
            if states.len() != leases.len() {
                return Err(protocol(Renew::OP, format!("{} states for {} leases", states.len(), leases.len())));
            }
            return Ok(states);
        }
        let mut out = vec![LeaseState::Lost; leases.len()];
        for (_, indices) in groups {
            let group: Vec<Lease> = indices.iter().map(|&i| leases[i].clone()).collect();
            let states = self.run(Renew { layout: &self.layout, leases: &group, ttl_ms }).await?;
            if states.len() != group.len() {
                return Err(protocol(Renew::OP, format!("{} states for {} leases", states.len(), group.len())));
            }
            for (i, state) in indices.into_iter().zip(states) {
                out[i] = state;
            }
        }
        Ok(out)
    }

    async fn complete(&self, lease: &Lease, result: &Json, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        batch::complete(self, lease, result, now).await
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        let call = Retry {
            fenced: Fenced::new(&self.layout, lease),
            default_queue: self.defaults.queue.clone(),
            error: error.to_owned(),
            ready_ms: epoch_ms(ready_at),
            ready_text: shared::retry_time_text(ready_at),
            now_ms: epoch_ms(now),
        };
        let fence = self.run(call).await?;
        self.touched(self.layout.shard_of(&lease.job_id));
        Ok(fence)
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        attempt: AttemptCount,
        now: DateTime<Utc>,
    ) -> Result<Fence, StoreError> {
        let call = DeadLetter {
            fenced: Fenced::new(&self.layout, lease),
            default_dlq: self.defaults.dlq.clone(),
            reason: reason.to_owned(),
            count_attempt: attempt == AttemptCount::Counted,
            completion_time: format_timestamp(now),
        };
        self.run(call).await
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let call = Release {
            fenced: Fenced::new(&self.layout, lease),
            queue: lease.queue.clone(),
            reason: reason.map(str::to_owned),
            now_ms: epoch_ms(now),
        };
        let fence = self.run(call).await?;
        self.touched(self.layout.shard_of(&lease.job_id));
        Ok(fence)
    }

    async fn finish_cancelled(&self, lease: &Lease) -> Result<Fence, StoreError> {
        self.run(FinishCancelled { fenced: Fenced::new(&self.layout, lease) }).await
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        let json = shared::health_json(health)?;
        let ttl = i64::try_from(shared::health_ttl(ttl)).unwrap_or(i64::MAX);
        let _busy = self.inner.follow.busy();
        self.inner
            .client
            .set::<(), _, _>(self.layout.health(&health.worker_id), json, Some(Expiration::EX(ttl)), None, false)
            .await
            .map_err(|e| self.error("heartbeat", e))
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize) -> Result<Recovery, StoreError> {
        let defaults = &self.defaults;
        // Every shard's lease index in turn (the single layout has one),
        // until `limit` jobs are handled.
        let mut recovery = Recovery::default();
        for shard in self.layout.shards() {
            let handled = recovery.requeued.len() + recovery.dead_lettered.len() + recovery.cancelled.len();
            let room = limit.saturating_sub(handled);
            if room == 0 && handled > 0 {
                break;
            }
            let call = Recover {
                layout: self.layout.clone(),
                shard,
                default_queue: defaults.queue.clone(),
                default_dlq: defaults.dlq.clone(),
                now_ms: epoch_ms(now),
                limit: room,
                now_text: format_timestamp(now),
                default_max_retries: defaults.max_retries,
            };
            let found = self.run(call).await?;
            if !self.layout.is_sharded() {
                return Ok(found);
            }
            if !found.requeued.is_empty() {
                self.touched(shard);
            }
            recovery.requeued.extend(found.requeued);
            recovery.dead_lettered.extend(found.dead_lettered);
            recovery.cancelled.extend(found.cancelled);
        }
        Ok(recovery)
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        let sub = self.subscriber().await?;
        let (mut messages, mut keyspace) = (sub.message_rx(), sub.keyspace_event_rx());
        let db = self.inner.db;
        let layout = self.layout.clone();
        let heads = self.inner.heads.clone();
        // While this task runs, claims may trust what the shard channels
        // told (sharded layout): it records every message before passing it on.
        let listening = layout.is_sharded().then(|| heads.listening());
        let (tx, rx) = mpsc::channel(READY_BUFFER);
        tokio::spawn(async move {
            let _listening = listening;
            loop {
                let signal = tokio::select! {
                    _ = tx.closed() => break,
                    msg = messages.recv() => match msg {
                        Ok(msg) => notify::signal(&msg.channel, &msg.value, &layout).map(|(signal, shard)| {
                            if let Signal::Ready(queue) = &signal {
                                heads.signalled(queue, shard);
                            }
                            signal
                        }),
                        // Messages were dropped: nothing known can be trusted.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                            heads.forget();
                            None
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    event = keyspace.recv() => match event {
                        Ok(event) => notify::keyspace_signal(&event, db),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                };
                // Best effort: a full buffer drops the signal.
                if let Some(signal) = signal
                    && let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(signal)
                {
                    break;
                }
            }
        });
        Ok(rx)
    }

    fn ready_signals(&self) -> ReadySignals {
        self.inner.signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        const OP: &str = "cron_tick";
        shared::cron_entry(entry)?;
        let score = self.command(OP, "ZSCORE", vec![self.layout.cron_ticks(), entry.to_owned()]).await?;
        let secs = match score {
            Value::Null => None,
            Value::Double(f) => Some(f),
            other => Some(
                text(&other)
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| protocol(OP, format!("expected a score, got {other:?}")))?,
            ),
        };
        Ok(secs.and_then(|s| DateTime::from_timestamp(s as i64, 0)))
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        shared::cron_entry(entry)?;
        self.run(CronTick { layout: &self.layout, entry, tick: tick.timestamp() }).await
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        const OP: &str = "unique_lock_ttl";
        let ms = int(OP, &self.command(OP, "PTTL", vec![self.layout.unique_lock(key)]).await?)?;
        Ok(u64::try_from(ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis))
    }
}

/// Claims from every shard of the request's queue that `picture` (`None`:
/// the single layout's one shard) says may hold a due job, into `batch`,
/// starting at the shard after the previous claim's start, so that a worker
/// that fills its batch early does not always drain the same shards first.
/// Each claim's reply updates the picture.
async fn claim_shards(
    store: &RedisStore,
    req: &ClaimRequest,
    token: &str,
    picture: Option<Picture>,
    batch: &mut ClaimBatch,
) -> Result<(), StoreError> {
    let n = usize::from(store.layout.shard_count());
    let first = if n == 1 { 0 } else { store.inner.rotation.fetch_add(1, Ordering::Relaxed) % n };
    let mut due = vec![true; n];
    if let Some(picture) = &picture {
        let now_ms = epoch_ms(req.now);
        let suspect = suspects(store);
        for (i, head) in picture.heads.iter().enumerate() {
            due[i] = head.due(now_ms) && !suspect[i];
            batch.paused |= *head == Head::Paused;
            if let Head::At(at) = head
                && !due[i]
            {
                batch.next_ready = earliest(batch.next_ready, DateTime::from_timestamp_millis(*at));
            }
        }
    }
    let shards: Vec<Shard> = store.layout.shards().collect();
    for &shard in shards.iter().cycle().skip(first).take(n) {
        if !due[usize::from(shard.index())] {
            continue;
        }
        let room = req.max.saturating_sub(batch.jobs.len());
        if room == 0 && !batch.jobs.is_empty() {
            break;
        }
        let reply = match claim_on(store, req, shard, room, token).await {
            Ok(reply) => reply,
            // Jobs already taken from other shards are the caller's now:
            // an error would leave them locked until their lease expired.
            Err(e) if !batch.jobs.is_empty() => {
                tracing::warn!(error = %e, shard = shard.index(), "a claim on one shard failed; returning the jobs taken from the others");
                break;
            }
            Err(e) => return Err(e),
        };
        if let Some(picture) = &picture {
            // A paused shard is not claimed from until the resume's message.
            let head = match reply.head {
                _ if reply.paused => Head::Paused,
                Some(at) => Head::At(epoch_ms(at)),
                None => Head::Empty,
            };
            store.inner.heads.claimed(&req.queue, picture, shard, head);
        }
        batch.paused |= reply.paused;
        batch.dropped.extend(reply.dropped);
        batch.next_ready = earliest(batch.next_ready, reply.head);
        batch.jobs.extend(reply.claimed.into_iter().map(|(id, fields)| {
            let job = Job::from_fields(id.as_str(), &fields);
            let lease = Lease {
                job_id: id,
                worker_id: req.worker_id.clone(),
                token: token.to_owned(),
                queue: req.queue.clone(),
            };
            Claimed { lease, job }
        }));
    }
    Ok(())
}

/// The earlier of two optional times.
fn earliest(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The shards (by index) left out of claims now: their head did not come
/// in time a moment ago.
fn suspects(store: &RedisStore) -> Vec<bool> {
    let now = std::time::Instant::now();
    // A mark made before the client last followed a new layout is void:
    // the shard may have a new master that answers.
    let synced = store.inner.follow.last_sync();
    let until = store.inner.suspects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    store
        .layout
        .shards()
        .map(|shard| {
            until.get(&shard.index()).is_some_and(|t| {
                *t > now && synced.is_none_or(|s| t.checked_sub(SUSPECT_FOR).is_some_and(|marked| marked > s))
            })
        })
        .collect()
}

/// Reads the head of each shard's ready set of `queue` (when its first job
/// is due; [`Head::Empty`]: no job), in shard order: one `ZRANGE` per shard,
/// sent together (the client pipelines them, one round trip per node), and
/// records them in the store's picture of the queue.
///
/// A master that does not answer (cut off the network, or frozen) must not
/// stop the claims from the others: each head is asked with a short
/// timeout ([`HEAD_TIMEOUT`]); a shard whose head did not come is left out
/// of this claim and of the next ones for [`SUSPECT_FOR`], then asked
/// again. The claim fails only when no shard answered.
async fn shard_heads(store: &RedisStore, queue: &QueueName) -> Result<Picture, StoreError> {
    const OP: &str = Claim::OP;
    let now = std::time::Instant::now();
    let mut picture = store.inner.heads.reading(queue, usize::from(store.layout.shard_count()));
    let suspect = suspects(store);
    let options = Options { timeout: Some(HEAD_TIMEOUT), ..Options::default() };
    let asks = store.layout.shards().map(|shard| {
        let key = store.layout.queue(queue, shard);
        let skip = suspect[usize::from(shard.index())];
        let options = &options;
        async move {
            if skip {
                return None;
            }
            let cmd = fred::types::CustomCommand::new_static("ZRANGE", fred::types::ClusterHash::FirstKey, false);
            let args = vec![key, "0".to_owned(), "0".to_owned(), "WITHSCORES".to_owned()];
            Some(store.inner.client.with_options(options).custom::<Value, _>(cmd, args).await)
        }
    });
    let replies = futures::future::join_all(asks).await;
    let (mut answered, mut first_error) = (0usize, None);
    let mut silent = Vec::new();
    for (shard, reply) in store.layout.shards().zip(replies) {
        let i = usize::from(shard.index());
        match reply {
            // Left out: asked again once no longer suspect.
            None => picture.heads[i] = Head::Ask,
            Some(Ok(v)) => {
                answered += 1;
                picture.heads[i] = head_of(OP, v)?.map_or(Head::Empty, |at| Head::At(epoch_ms(at)));
            }
            Some(Err(e)) => {
                // Only silence makes a shard suspect; another failure (say,
                // a redirection during a resharding) skips it this once.
                if *e.kind() == ErrorKind::Timeout {
                    silent.push(shard.index());
                }
                first_error.get_or_insert(e);
                picture.heads[i] = Head::Ask;
            }
        }
    }
    if !silent.is_empty() {
        store.inner.follow.suspect();
        let until = now + SUSPECT_FOR;
        let mut suspects = store.inner.suspects.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for shard in &silent {
            suspects.insert(*shard, until);
        }
    }
    match first_error {
        Some(e) if answered == 0 => Err(store.error(OP, e)),
        Some(e) => {
            tracing::warn!(error = %e, silent = ?silent, "some shards' heads did not come; claiming from the others (silent shards are asked again in {}s)", SUSPECT_FOR.as_secs());
            // Not recorded: the picture is read again at the next claim.
            Ok(picture)
        }
        None => {
            store.inner.heads.read(queue, &picture, now);
            Ok(picture)
        }
    }
}

/// The score of a `ZRANGE … 0 0 WITHSCORES` reply's one member, if any.
fn head_of(op: &'static str, reply: Value) -> Result<Option<DateTime<Utc>>, StoreError> {
    let mut items = array(op, reply)?.into_iter();
    // RESP3 answers [[member, score]], RESP2 [member, score].
    let score = match items.next() {
        None => return Ok(None),
        Some(Value::Array(mut pair)) if pair.len() == 2 => pair.pop().unwrap_or(Value::Null),
        Some(_) => items.next().unwrap_or(Value::Null),
    };
    score_time(&score).map(Some).ok_or_else(|| protocol(op, format!("bad score {score:?}")))
}

/// One claim call on one shard of the request's queue, asked again after
/// a lost reply.
async fn claim_on(
    store: &RedisStore,
    req: &ClaimRequest,
    shard: Shard,
    max: usize,
    token: &str,
) -> Result<scripts::ClaimReply, StoreError> {
    let now_ms = epoch_ms(req.now);
    let ttl_ms = shared::lease_ms(req.lease_ttl);
    let call = Claim {
        layout: store.layout.clone(),
        shard,
        queue: req.queue.clone(),
        default_dlq: store.defaults.dlq.clone(),
        worker: req.worker_id.clone(),
        now_ms,
        max,
        lease_ttl_ms: ttl_ms,
        token: token.to_owned(),
        start_score: req.now.timestamp(),
        lock_expiry: now_ms.saturating_add(ttl_ms),
        // On a cluster fred may write a call twice (see
        // `connect::CLUSTER_ATTEMPTS`): every claim then first hands out
        // what its token already took, so a second run takes nothing twice.
        replay: store.layout.is_sharded(),
        max_payload_bytes: req.max_payload_bytes,
    };
    let reply = match store.inner.follow.eval(&store.inner.client, call.clone()).await {
        Ok(reply) => reply,
        // The connection broke with the script sent: it may have run and
        // only its reply been lost. Asking again with the same token
        // returns what that run took; otherwise its jobs would sit locked
        // until their lease expired and recovery re-queued them with an
        // attempt counted. (A timeout is not repeated: during an outage
        // that would only double the wait.)
        // The repeat is tried a few times, with backoff, while the
        // connection is still coming back.
        Err(e) if lost_reply(&e) => replay(store, Claim { replay: true, ..call }, e).await?,
        Err(e) => return Err(store.error(Claim::OP, e)),
    };
    Claim::decode(reply)
}

fn lost_reply(e: &Error) -> bool {
    scripts::outcome_unknown(e)
}

/// Asks for a claim again (`call.replay` set) until it is answered, the
/// error is not a lost reply, or [`CLAIM_REPLAYS`] tries have failed.
async fn replay(store: &RedisStore, call: Claim, first: Error) -> Result<Value, StoreError> {
    let (mut last, mut delay) = (first, Duration::from_millis(50));
    for _ in 0..CLAIM_REPLAYS {
        tracing::debug!(error = %last, "claim reply lost with the connection; asking again with the same token");
        tokio::time::sleep(delay).await;
        match store.inner.follow.eval(&store.inner.client, call.clone()).await {
            Ok(reply) => return Ok(reply),
            Err(e) if lost_reply(&e) => {
                last = e;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            Err(e) => return Err(store.error(Claim::OP, e)),
        }
    }
    Err(store.error(Claim::OP, last))
}
