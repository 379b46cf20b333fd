//! [`RedisStore`]: the [`Store`](crate::Store) on Redis (or Valkey), in rrq 0.11.1's schema
//! on one server or behind Sentinel, in the sharded layout on a Redis Cluster
//! (see `docs/cluster.md`: the job life cycle, inspection and administration
//! work there; listings fan out over every shard and master).
//!
//! One file per family:
//! * `connect.rs`: DSN handling, connecting, the connections opened on first
//!   use, and how a client error becomes a [`StoreError`];
//! * `scripts/`: every Lua script beside its typed wrapper (named KEYS and
//!   ARGV, a typed reply), and the check that every key arrives in KEYS;
//! * `enqueue.rs`, `worker.rs`, `inspect.rs`, `admin.rs`: one audience's
//!   trait each ([`EnqueueStore`](crate::EnqueueStore),
//!   [`WorkerStore`](crate::WorkerStore), [`InspectStore`](crate::InspectStore),
//!   [`AdminStore`](crate::AdminStore)), implemented over the wrappers;
//! * `fanout.rs`: on a cluster, the key scans over every master, the
//!   listings merged over the shards, and the check of the recorded shard
//!   count when connecting;
//! * `batch.rs`: the task that records successes in batches;
//! * `follow.rs`: on a cluster, the watch that notices a call waiting on a
//!   master that stopped answering and has the client follow the cluster's
//!   new layout once a replica took over;
//! * `reply.rs`: reply decoding; `notify.rs`: keyspace notifications and
//!   what a message on RRQ's channels stands for; `heads.rs`: on a cluster,
//!   what a store knows of its queues' shard heads, so claims ask only the
//!   shards that may hold a due job.
//!
//! Connections: one multiplexed client runs every command and script; a
//! small pool of dedicated connections serves blocking reads (`XREAD BLOCK`)
//! so they never delay other commands; a subscriber connection (opened on
//! first use) listens on the ready and cancel channels and, unless turned
//! off, on keyspace notifications of the queues (see `notify.rs`), so jobs
//! from any producer wake a worker at once. All of them reconnect with an
//! exponential backoff, and every command has a timeout. On a cluster the
//! command client's calls are also watched for a master that stops
//! answering without closing its connections (see `follow.rs`).
//!
//! Writes that touch several keys are single Lua scripts. Successes are
//! recorded in batches: [`WorkerStore::complete`](crate::WorkerStore::complete) hands its attempt to a task that
//! sends everything waiting as one script call (each attempt still fenced on
//! its own lease, with its own reply), so a busy worker makes one call per
//! batch of completions rather than one per job, and an idle one waits for
//! no one.
//! On one server (and behind Sentinel) a client never re-sends a command
//! after a lost reply (`max_command_attempts = 1`); on a cluster fred must
//! be allowed to write a command again to follow redirections (see
//! `connect::CLUSTER_ATTEMPTS` and `docs/cluster.md`). Either way the
//! scripts are written so that running one twice cannot apply it twice. A claim that fails on
//! the connection is asked once more with the same token; the repeat returns
//! the jobs a lost run took, so a dropped reply does not orphan them.

mod admin;
mod batch;
mod connect;
mod enqueue;
mod fanout;
mod follow;
mod heads;
mod inspect;
mod notify;
mod options;
mod reply;
mod scripts;
#[cfg(feature = "tls")]
mod tls;
mod worker;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{ExclusivePool, SubscriberClient};
use fred::prelude::*;
use tokio::sync::{OnceCell, mpsc};

pub use self::options::{CA_FILE_ENV, ConnectOptions};
use self::scripts::LuaScript;
use crate::error::StoreError;
use crate::job::JobDefaults;
use crate::keys::{Layout, Shard};
use crate::store::ReadySignals;

/// How long a job's events stream outlives its terminal event by default
/// (see [`RedisStore::with_events_ttl`]).
pub const DEFAULT_EVENTS_TTL: Duration = Duration::from_secs(60);

/// The [`Store`](crate::Store) on Redis. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Where claims quarantine broken jobs, and the queue of jobs without one.
    defaults: Arc<JobDefaults>,
    /// How keys are named: the single (rrq 0.11.1) layout on one server and
    /// behind Sentinel, the sharded one on a Redis Cluster.
    layout: Layout,
    /// Whether the subscription uses keyspace notifications.
    keyspace: bool,
    /// Expiry of a job's events stream after its terminal event.
    events_ttl: Duration,
}

struct Inner {
    /// Commands and scripts.
    client: Client,
    /// Settings for the connections opened later.
    builder: Builder,
    /// Connections for blocking reads, opened on first use.
    blocking: OnceCell<ExclusivePool>,
    /// The ready-channel subscription, opened on first use.
    subscriber: OnceCell<SubscriberClient>,
    /// Which changes the subscription reports (shared with the task that
    /// re-enables keyspace notifications after a reconnect).
    signals: Arc<Mutex<ReadySignals>>,
    /// The database whose keyspace events are subscribed.
    db: u8,
    /// The DSN with its password masked, for errors.
    dsn: String,
    /// Successes waiting for the batching task (see `batch.rs`).
    completions: mpsc::UnboundedSender<batch::Completion>,
    /// Where the next claim starts among a queue's shards (sharded layout).
    rotation: std::sync::atomic::AtomicUsize,
    /// Shards (by index) whose head did not come in time, left out of
    /// claims until the instant given (sharded layout).
    suspects: Mutex<std::collections::HashMap<u16, std::time::Instant>>,
    /// What this store knows of each queue's shard heads (sharded layout,
    /// with the shard channels subscribed; see `heads.rs`).
    heads: Arc<heads::Heads>,
    /// Dropped with the store: tasks that watch it end.
    alive: tokio::sync::watch::Sender<()>,
    /// Calls in flight, watched for a master that stopped answering
    /// (cluster only, see `follow.rs`).
    follow: Arc<follow::Follow>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("dsn", &self.inner.dsn).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Sets the job defaults (the `default_*` settings) every verb applies
    /// where a job hash lacks a field, and that a worker on this store reads
    /// through [`WorkerStore::job_defaults`](crate::WorkerStore::job_defaults): the one place they live.
    /// Without this call they are the reference's (`rrq:queue:default`,
    /// `rrq:dlq:default`, 5 attempts, 300 s, a day).
    #[must_use]
    pub fn with_defaults(self, defaults: JobDefaults) -> Self {
        RedisStore { defaults: Arc::new(defaults), ..self }
    }

    /// Whether [`WorkerStore::subscribe_ready`](crate::WorkerStore::subscribe_ready) also listens to keyspace
    /// notifications of the queues (on by default; `[rrq]
    /// keyspace_notifications`). On, the first subscription adds `K` and `z`
    /// to the server's `notify-keyspace-events` (keeping the flags already
    /// set) so that jobs added by any producer are signalled; where the
    /// server refuses `CONFIG`, a warning says so and
    /// [`WorkerStore::ready_signals`](crate::WorkerStore::ready_signals) reports it. Set before the first subscription.
    #[must_use]
    pub fn with_keyspace_notifications(self, on: bool) -> Self {
        RedisStore { keyspace: on, ..self }
    }

    /// How long a job's events stream (`rrq:events:job:{id}`, only a wake-up
    /// for waiters, who start at `$`) is kept after its terminal event, at
    /// most as long as the job's result (`[rrq] job_events_ttl_seconds`,
    /// default 60 s, `DEFAULT_EVENTS_TTL`; at least 1 ms).
    #[must_use]
    pub fn with_events_ttl(self, ttl: Duration) -> Self {
        RedisStore { events_ttl: ttl.max(Duration::from_millis(1)), ..self }
    }

    /// Runs a script through its typed wrapper.
    async fn run<S: LuaScript>(&self, script: S) -> Result<S::Reply, StoreError> {
        let reply = self.inner.follow.eval(&self.inner.client, script).await.map_err(|e| self.error(S::OP, e))?;
        S::decode(reply)
    }

    /// The indices of `items` grouped by the shard `shard_of` names, each
    /// group in the items' order, the groups in the order of their first
    /// item. The single layout has one group of every item (no checksum).
    fn by_shard<T>(&self, items: &[T], shard_of: impl Fn(&T) -> Shard) -> Vec<(Shard, Vec<usize>)> {
        by_shard(&self.layout, items, shard_of)
    }

    /// Marks `shard` to be asked at the next claim: this process just added
    /// a job to its ready set (sharded layout only; see `heads.rs`).
    fn touched(&self, shard: Shard) {
        if self.layout.is_sharded() {
            self.inner.heads.touched(shard);
        }
    }

    /// Runs one plain command.
    async fn command(&self, op: &'static str, name: &'static str, args: Vec<String>) -> Result<Value, StoreError> {
        let cmd = fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false);
        let mut refused = scripts::Refused::new();
        let _busy = self.inner.follow.busy();
        loop {
            match self.inner.client.custom(cmd.clone(), args.clone()).await {
                Err(e) if refused.again(&e).await => {}
                result => return result.map_err(|e| self.error(op, e)),
            }
        }
    }
}

/// [`RedisStore::by_shard`] for callers without a store at hand.
fn by_shard<T>(layout: &Layout, items: &[T], shard_of: impl Fn(&T) -> Shard) -> Vec<(Shard, Vec<usize>)> {
    if !layout.is_sharded() {
        return vec![(Shard::FIRST, (0..items.len()).collect())];
    }
    let mut groups: Vec<(Shard, Vec<usize>)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let shard = shard_of(item);
        match groups.iter_mut().find(|(s, _)| *s == shard) {
            Some((_, group)) => group.push(i),
            None => groups.push((shard, vec![i])),
        }
    }
    groups
}
