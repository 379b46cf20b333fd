//! The completion-batching task: [`WorkerStore::complete`](crate::WorkerStore::complete)
//! hands its attempt here, and the task sends everything waiting as one
//! `complete.lua` call (each attempt still fenced on its own lease, with its
//! own answer). A busy worker makes one call per batch of successes rather
//! than one per job, and a lone success goes at once.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use serde_json::Value as Json;
use tokio::sync::{mpsc, oneshot};

use super::RedisStore;
use super::connect::classify_cause;
use super::follow::Follow;
use super::reply::protocol;
use super::scripts::{Attempt, Complete, LuaScript};
use crate::clock::format_timestamp;
use crate::error::StoreError;
use crate::shared;
use crate::store::{Fence, Lease};

/// Most attempts recorded by one completion script call: bounds the time
/// one call keeps Redis busy (about 10 commands per attempt).
const COMPLETE_BATCH: usize = 256;
/// How long the next batch waits for a call of this one (see
/// `complete_batches`): far above a call's usual milliseconds.
const STRAGGLER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One success for the batching task, and where its fence goes.
pub(super) struct Completion {
    attempt: Attempt,
    reply: oneshot::Sender<Result<Fence, StoreError>>,
}

/// Hands one success to the batching task and waits for its answer.
pub(super) async fn complete(
    store: &RedisStore,
    lease: &Lease,
    result: &Json,
    now: DateTime<Utc>,
) -> Result<Fence, StoreError> {
    let (reply, fenced) = oneshot::channel();
    let attempt = Attempt {
        layout: store.layout.clone(),
        id: lease.job_id.clone(),
        worker: lease.worker_id.clone(),
        token: lease.token.clone(),
        result: shared::result_json(result),
        completion_time: format_timestamp(now),
        default_result_ttl: store.defaults.result_ttl_seconds,
        events_ttl_ms: u64::try_from(store.events_ttl.as_millis()).unwrap_or(u64::MAX).max(1),
    };
    let closed = || store.unavailable("the completion task has stopped");
    store.inner.completions.send(Completion { attempt, reply }).map_err(|_| closed())?;
    fenced.await.map_err(|_| closed())?
}

/// Records successes in batches: waits for one, takes every other one
/// already waiting (up to [`COMPLETE_BATCH`]), runs one script call for all
/// of them and answers each. While a call is in flight new successes queue
/// up, so the batch grows with the load and a lone success goes at once.
/// On a cluster a batch makes one call per shard, side by side; a call to a
/// master that does not answer holds up the next batch for
/// [`STRAGGLER_WAIT`] at most.
pub(super) async fn complete_batches(
    client: Client,
    dsn: String,
    mut pending: mpsc::UnboundedReceiver<Completion>,
    follow: Arc<Follow>,
) {
    let mut waiting: Vec<Reply> = Vec::with_capacity(COMPLETE_BATCH);
    let mut attempts = Vec::with_capacity(COMPLETE_BATCH);
    while let Some(first) = pending.recv().await {
        let mut next = Some(first);
        while let Some(c) = next.take() {
            attempts.push(c.attempt);
            waiting.push(c.reply);
            if waiting.len() < COMPLETE_BATCH {
                next = pending.try_recv().ok();
            }
        }
        // One script call per shard present in the batch (the single
        // layout has one), run side by side; each answers its own attempts.
        let batch = std::mem::take(&mut attempts);
        let groups = super::by_shard(&batch[0].layout, &batch, |a| a.layout.shard_of(&a.id));
        let mut slots: Vec<Option<(Attempt, Reply)>> = batch.into_iter().zip(waiting.drain(..)).map(Some).collect();
        let calls: Vec<_> = groups
            .into_iter()
            .map(|(_, indices)| {
                let (attempts, replies): (Vec<Attempt>, Vec<Reply>) =
                    indices.iter().filter_map(|&i| slots[i].take()).unzip();
                let (client, follow, dsn) = (client.clone(), follow.clone(), dsn.clone());
                tokio::spawn(async move {
                    let fences = run_batch(&client, &follow, attempts).await;
                    answer(replies, fences, &dsn);
                })
            })
            .collect();
        // The next batch waits for this one (so batches grow with the load)
        // but not for a master that does not answer: after STRAGGLER_WAIT
        // its call goes on by itself and answers its attempts when it ends,
        // while the successes of the other masters are recorded meanwhile.
        let _ = tokio::time::timeout(STRAGGLER_WAIT, futures::future::join_all(calls)).await;
    }
}

/// Where one attempt's fence goes.
type Reply = oneshot::Sender<Result<Fence, StoreError>>;

/// Answers each attempt of one call.
fn answer(replies: Vec<Reply>, fences: Result<Vec<Result<Fence, StoreError>>, Failure>, dsn: &str) {
    match fences {
        Ok(fences) => {
            let n = replies.len();
            let mut fences = fences.into_iter();
            for reply in replies {
                let fence =
                    fences.next().unwrap_or_else(|| Err(protocol(Complete::OP, format!("no answer among {n}"))));
                let _ = reply.send(fence);
            }
        }
        // Every attempt of the call gets the error (the call may or may not
        // have run; a retry of each is safe either way), each with the
        // client's error itself as its source.
        Err(failure) => {
            for reply in replies {
                let _ = reply.send(Err(failure.to_error(dsn)));
            }
        }
    }
}

/// One `complete.lua` call for attempts of one shard: a fence per attempt.
async fn run_batch(
    client: &Client,
    follow: &Follow,
    attempts: Vec<Attempt>,
) -> Result<Vec<Result<Fence, StoreError>>, Failure> {
    let n = attempts.len();
    match follow.eval(client, Complete { attempts }).await {
        Ok(reply) => match Complete::decode(reply) {
            Ok(fences) if fences.len() == n => Ok(fences),
            Ok(fences) => Err(Failure::Reply(format!("{} codes for {n} attempts", fences.len()))),
            Err(StoreError::Protocol { detail, .. }) => Err(Failure::Reply(detail)),
            Err(other) => Err(Failure::Reply(other.to_string())),
        },
        Err(e) => {
            follow.saw(&e);
            Err(Failure::Client(e.kind().clone(), Arc::new(e)))
        }
    }
}

/// Why one batch failed, given to every attempt of the batch.
enum Failure {
    /// The client's error (shared: each attempt's error has it as source).
    Client(ErrorKind, Arc<Error>),
    /// A reply the script never gives.
    Reply(String),
}

impl Failure {
    fn to_error(&self, dsn: &str) -> StoreError {
        match self {
            Failure::Client(kind, cause) => classify_cause(dsn, Complete::OP, kind, Box::new(cause.clone())),
            Failure::Reply(detail) => protocol(Complete::OP, detail.clone()),
        }
    }
}
