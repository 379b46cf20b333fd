//! The Lua scripts, one per multi-key step, each beside its typed wrapper:
//! `claim.lua` and `claim.rs`, and so on. A wrapper is a struct whose fields
//! name the script's KEYS and ARGV, and whose [`LuaScript`] impl writes them
//! in the order the script's header lists them: the one place that order is
//! spelled. Its reply decodes to a type, never to a bare [`Value`].
//!
//! Every script is `common.lua` (shared helpers) followed by its own file,
//! loaded once per process and run by SHA (`EVALSHA`, reloaded on
//! `NOSCRIPT`). Every key a script touches arrives in KEYS (see the note at
//! the top of `common.lua`, and `lint.rs`, which checks it).
//!
//! A wrapper builds its KEYS from a [`Layout`] and the job's (or the
//! call's) [`Shard`]: in the single layout they are rrq 0.11.1's names; in
//! the sharded one every key of one call carries one shard's hash tag, so
//! the call runs in one Redis Cluster slot (`slots.rs` checks every wrapper).
//! A call over many jobs (a batch, a purge, a renewal) takes jobs of one
//! shard.

use std::time::Duration;

use fred::prelude::*;
use fred::types::scripts::Script;

use crate::error::StoreError;
use rrq_protocol::JobId;

use crate::keys::{Layout, Shard};
use crate::store::{Fence, Lease};

/// A wrapper's `fn script()`: `common.lua` followed by the given file,
/// hashed and loaded on first use.
macro_rules! lua_source {
    ($file:literal) => {
        fn script() -> &'static fred::types::scripts::Script {
            static SCRIPT: std::sync::LazyLock<fred::types::scripts::Script> = std::sync::LazyLock::new(|| {
                fred::types::scripts::Script::from_lua(concat!(include_str!("common.lua"), include_str!($file)))
            });
            &SCRIPT
        }
    };
}

mod cancel;
mod claim;
mod complete;
mod cron_tick;
mod dead_letter;
mod dlq_purge;
mod dlq_requeue;
mod enqueue;
mod enqueue_batch;
mod enqueue_debounced;
mod enqueue_rate_limited;
mod enqueue_unique;
mod finish_cancelled;
mod inspect_jobs;
mod inspect_queues;
mod inspect_workers;
#[cfg(test)]
mod lint;
mod recover;
mod release;
mod renew;
#[cfg(test)]
mod resend;
mod retry;
#[cfg(test)]
mod slots;

pub(super) use cancel::Cancel;
pub(super) use claim::{Claim, ClaimReply};
pub(super) use complete::{Attempt, Complete};
pub(super) use cron_tick::CronTick;
pub(super) use dead_letter::DeadLetter;
pub(super) use dlq_purge::DlqPurge;
pub(super) use dlq_requeue::DlqRequeue;
pub(super) use enqueue::Enqueue;
pub(super) use enqueue_batch::{BatchJob, EnqueueBatch};
pub(super) use enqueue_debounced::EnqueueDebounced;
pub(super) use enqueue_rate_limited::EnqueueRateLimited;
pub(super) use enqueue_unique::EnqueueUnique;
pub(super) use finish_cancelled::FinishCancelled;
pub(super) use inspect_jobs::InspectJobs;
pub(super) use inspect_queues::InspectQueues;
pub(super) use inspect_workers::InspectWorkers;
pub(super) use recover::Recover;
pub(super) use release::Release;
pub(super) use renew::Renew;
pub(super) use retry::Retry;

/// A Lua script with named KEYS and ARGV and a typed reply.
pub(super) trait LuaScript {
    /// The store verb, named in errors.
    const OP: &'static str;
    /// What the script's reply decodes to.
    type Reply;
    /// The loaded script.
    fn script() -> &'static Script;
    /// KEYS and ARGV, in the order the script's header lists them.
    fn keys_and_args(self) -> (Vec<String>, Vec<Value>);
    /// Decodes the script's reply.
    fn decode(reply: Value) -> Result<Self::Reply, StoreError>;
}

/// How long a call refused with `TRYAGAIN` (a multi-key call on a slot
/// being migrated; nothing ran) is sent again before the error is returned.
const TRYAGAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Runs a script on `client`, leaving the client's error as it is (the
/// caller classifies it, or, for a claim, decides to ask again). On a
/// cluster, a call the server ran nothing of (refused with `TRYAGAIN` while
/// its slot migrates, or redirected more often than fred follows) is sent
/// again, with backoff, until the migration of the slot ends.
pub(super) async fn eval<S: LuaScript>(client: &Client, script: S) -> Result<Value, Error> {
    let (keys, args) = script.keys_and_args();
    let script = S::script();
    let mut refused = Refused::new();
    loop {
        match evalsha_or_eval(client, script, &keys, &args).await {
            Err(e) if refused.again(&e).await => {}
            result => return result,
        }
    }
}

/// `EVALSHA`, and on `NOSCRIPT` the script's source with `EVAL`, which runs
/// it and caches it on the node that serves the call. (fred's own reload
/// sends `SCRIPT LOAD` to every node of a cluster, so one node that does
/// not answer would hold up every call that needs a reload.)
async fn evalsha_or_eval(client: &Client, script: &Script, keys: &[String], args: &[Value]) -> Result<Value, Error> {
    match client.evalsha::<Value, _, _, _>(script.sha1().clone(), keys.to_vec(), args.to_vec()).await {
        Err(e) if e.details().starts_with("NOSCRIPT") => match script.lua() {
            Some(source) => client.eval(source.clone(), keys.to_vec(), args.to_vec()).await,
            None => Err(e),
        },
        result => result,
    }
}

/// Backoff for calls refused with `TRYAGAIN` (a multi-key call on a slot
/// being migrated, refused before anything ran): sending them again is
/// safe, for at most [`TRYAGAIN_DEADLINE`].
pub(super) struct Refused {
    deadline: tokio::time::Instant,
    delay: Duration,
}

impl Refused {
    pub(super) fn new() -> Refused {
        Refused { deadline: tokio::time::Instant::now() + TRYAGAIN_DEADLINE, delay: Duration::from_millis(2) }
    }

    /// Whether the call that failed with `e` should be sent again (after
    /// waiting here): only a call the server ran nothing of ([`not_run`]).
    pub(super) async fn again(&mut self, e: &Error) -> bool {
        not_run(e) && self.wait().await
    }

    /// Waits before the next send; `false` (at once) past the deadline.
    async fn wait(&mut self) -> bool {
        if tokio::time::Instant::now() + self.delay >= self.deadline {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        self.delay = (self.delay * 2).min(Duration::from_millis(100));
        true
    }
}

/// Whether the server ran nothing of a failed call: refused with
/// `TRYAGAIN` (a slot being migrated), or redirected more often than fred
/// follows (every send of it was answered with a redirection).
fn not_run(e: &Error) -> bool {
    e.details().starts_with("TRYAGAIN") || (*e.kind() == ErrorKind::Routing && e.details() == "Too many redirections.")
}

/// Whether fred gave up on a call because it would have had to write it
/// once more than allowed (after redirections, or a broken connection).
fn redirected_out(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::Unknown | ErrorKind::Routing)
        && matches!(e.details(), "Too many failed write attempts." | "Max attempts reached.")
}

/// Whether an error leaves the outcome of a call unknown although the
/// server may have run it: the connection broke with the call sent, or
/// fred would have had to write it again (after a redirection or a broken
/// connection) and had no attempt left.
pub(super) fn outcome_unknown(e: &Error) -> bool {
    matches!(e.kind(), ErrorKind::IO | ErrorKind::Canceled | ErrorKind::Cluster) || redirected_out(e)
}

/// KEYS 1-4 and ARGV 1-3 of every fenced outcome script (retry, dead
/// letter, release, finish cancelled): the job, its lock, the worker's
/// active set and the lease index; the job id, the worker id and the token.
/// The other keys of the call are on the job's shard too ([`Fenced::at`]).
pub(super) struct Fenced {
    layout: Layout,
    shard: Shard,
    id: JobId,
    worker: String,
    token: String,
}

impl Fenced {
    pub(super) fn new(layout: &Layout, lease: &Lease) -> Fenced {
        Fenced {
            layout: layout.clone(),
            shard: layout.shard_of(&lease.job_id),
            id: lease.job_id.clone(),
            worker: lease.worker_id.clone(),
            token: lease.token.clone(),
        }
    }

    /// The ready channel of the job's shard.
    fn ready_channel(&self) -> String {
        self.layout.ready_channel(self.shard)
    }

    /// A single-layout key or prefix on the job's shard.
    fn at(&self, name: &str) -> String {
        self.layout.on_shard(self.shard, name)
    }

    /// The job's events stream.
    fn events_key(&self) -> String {
        self.layout.events(&self.id)
    }

    /// The four keys and three arguments every fenced script starts with.
    fn head(&self) -> (Vec<String>, Vec<Value>) {
        let keys = vec![
            self.layout.job(&self.id),
            self.layout.lock(&self.id),
            self.layout.active(&self.worker, self.shard),
            self.layout.leases(self.shard),
        ];
        (keys, vec![self.id.as_str().into(), self.worker.as_str().into(), self.token.as_str().into()])
    }
}

/// KEYS 1-2 and ARGV 1-5 of every single-job enqueue script (standard,
/// rate-limited, debounced, unique): the job and its queue (on the job's
/// shard); the job id, its score, the dedup key's TTL, whether it is ready
/// now and the ready channel. The job's hash fields are the script's last
/// arguments. A dedup key must be on the job's shard (the cluster store
/// draws such ids).
#[derive(Clone)]
pub(super) struct NewJobCall {
    layout: Layout,
    shard: Shard,
    job_key: String,
    queue_key: String,
    id: String,
    /// Epoch ms.
    score: i64,
    /// The dedup key's TTL in whole seconds (0: none, or no expiry).
    ttl: u64,
    ready_now: bool,
    fields: Vec<(&'static str, String)>,
}

impl NewJobCall {
    pub(super) fn new(layout: &Layout, job: &crate::job::NewJob, ttl: u64, ready_now: bool) -> NewJobCall {
        let shard = layout.shard_of(&job.id);
        NewJobCall {
            layout: layout.clone(),
            shard,
            job_key: layout.job(&job.id),
            queue_key: layout.queue(&job.queue, shard),
            id: job.id.as_str().to_owned(),
            score: crate::clock::epoch_ms(job.scheduled_time),
            ttl,
            ready_now,
            fields: call_fields(layout, job),
        }
    }

    /// A single-layout key or prefix on the job's shard.
    fn at(&self, name: &str) -> String {
        self.layout.on_shard(self.shard, name)
    }

    /// The two keys and five arguments every single-job enqueue starts
    /// with, and the fields to push last (see [`push_fields`]).
    fn head(self) -> (Vec<String>, Vec<Value>, Vec<(&'static str, String)>) {
        let args = vec![
            self.id.into(),
            self.score.into(),
            self.ttl.to_string().into(),
            flag(self.ready_now),
            self.layout.ready_channel(self.shard).into(),
        ];
        (vec![self.job_key, self.queue_key], args, self.fields)
    }
}

/// The job hash field that marks which enqueue call wrote a job, in the
/// sharded layout only (the single layout keeps rrq 0.11.1's fields): a
/// re-sent call finds its own mark and answers as its first run did.
pub(crate) const ENQUEUE_CALL_FIELD: &str = "enqueue_call";

/// A job's hash fields for an enqueue call: in the sharded layout with a
/// fresh [`ENQUEUE_CALL_FIELD`] mark.
pub(super) fn call_fields(layout: &Layout, job: &crate::job::NewJob) -> Vec<(&'static str, String)> {
    let mut fields = job.to_fields();
    if layout.is_sharded() {
        fields.push((ENQUEUE_CALL_FIELD, uuid::Uuid::new_v4().simple().to_string()));
    }
    fields
}

/// `1`/`0` for a flag argument.
pub(super) fn flag(b: bool) -> Value {
    Value::from_static_str(if b { "1" } else { "0" })
}

/// A fenced script's reply: 1 applied, 0 stale.
pub(super) fn fence(op: &'static str, v: &Value) -> Result<Fence, StoreError> {
    match super::reply::int(op, v)? {
        1 => Ok(Fence::Applied),
        0 => Ok(Fence::Stale),
        n => Err(super::reply::protocol(op, format!("unknown fence code {n}"))),
    }
}

/// A new job's hash fields as name/value arguments (the names go out
/// without an allocation each).
pub(super) fn push_fields(args: &mut Vec<Value>, fields: Vec<(&'static str, String)>) {
    for (name, value) in fields {
        args.push(Value::from_static_str(name));
        args.push(value.into());
    }
}
