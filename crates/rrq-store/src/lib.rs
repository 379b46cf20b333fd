//! RRQ's Redis schema: every job state change as one atomic step.
//!
//! Place in the graph: above `rrq-protocol`, below `rrq-core`, `rrq-producer`
//! and `rrq-cli`. This is the **only** crate that names a Redis key or the
//! Redis client; it knows nothing of runners, processes or retry policy (the
//! caller decides *when* to retry; the store only applies the decision).
//!
//! Main types:
//! * [`Store`]: domain verbs (enqueue, claim, renew, complete, retry,
//!   dead-letter, release, recover, heartbeat, pause, cancel, DLQ requeue…),
//!   the union of one trait per audience: [`EnqueueStore`] (producers),
//!   [`WorkerStore`] (the worker's life cycle), [`InspectStore`] (status and
//!   inspection) and [`AdminStore`] (operators). Calling a verb on a concrete
//!   store needs its audience's trait in scope; through `dyn Store` or a
//!   `T: Store` bound, `Store` alone is enough;
//! * [`RedisStore`]: the implementation on Redis, each multi-key change one
//!   Lua script run by SHA (reloaded on `NOSCRIPT`), every key it touches
//!   passed in KEYS (whole, or as a prefix for ids the script learns as it
//!   runs), so the scripts can run on Redis Cluster once keys share a hash
//!   tag;
//! * [`keys::Layout`]: how every key is named: the rrq 0.11.1 names
//!   (`Layout::single`, what every store uses today) or the sharded layout
//!   for Redis Cluster (`Layout::sharded`: one hash tag per shard, a job's
//!   shard computed from its id; `docs/cluster.md`);
//! * [`MemoryStore`]: the same semantics in memory, for tests and embedding;
//! * [`Job`] / [`NewJob`]: the job hash, parsed and to be written;
//! * [`JobView`]: a job as inspection tools see it (every field typed, the
//!   stored hash kept, the parse problem named), [`WorkerInfo`] (a health
//!   record, typed) and [`SyntheticJob`], the typed record the
//!   synthetic-data verb writes;
//! * [`Clock`], [`SystemClock`], [`ManualClock`]: wall time as a seam.
//!
//! Invariants: keys and field encodings are those of rrq 0.11.1 (see
//! `docs/redis-schema.md`); every outcome write is fenced on the lock owner and
//! the attempt token, so a stale worker can never overwrite a newer outcome;
//! no step applies twice when re-run after a lost reply (the client never
//! re-sends by itself; a re-sent outcome write answers `Applied` again, a
//! re-sent enqueue answers that the id is taken, a re-sent release `Stale`;
//! `RedisStore` re-sends a failed claim once with the same token, and the
//! repeat hands out the jobs a lost run took instead of orphaning them).
//!
//! Connections ([`RedisStore::connect`]): `redis://[user:password@]host[:port][/db]`,
//! or Sentinel: `redis-sentinel://[user:password@]sentinel[:port][/db]?sentinelServiceName=NAME[&node=…]`
//! (every connection follows the master through a failover);
//! `rediss://` and `rediss-sentinel://` need the crate feature `tls` (rustls with the ring backend,
//! on by default), which trusts the system's roots plus the CA file named by
//! `RRQ_REDIS_CA_FILE` or [`ConnectOptions`]. Passwords never appear in
//! errors ([`mask_dsn`]). Redis Cluster: `redis-cluster://host[:port][?node=…]`,
//! in the sharded layout, its shard count recorded in the cluster and a
//! store with another refused ([`StoreError::ShardCountMismatch`]; see
//! `docs/cluster.md`).
//! [`EnqueueStore::confirm_replicated`] (`WAIT`) lets a producer wait until
//! replicas hold its enqueues.
//!
//! Tests: unit tests beside the code for parsing and pure decisions;
//! `tests/conformance` runs one suite against both `MemoryStore` and
//! `RedisStore` (a private `redis-server` per test, or the server named by
//! `RRQ_TEST_REDIS_URL`), plus Redis-only checks of the exact key layout; a
//! check over the Lua sources (`redis/scripts/lint.rs`) fails when a script
//! builds a key from ARGV; golden tables pin both key layouts
//! (`keys/tests.rs`), `redis/scripts/slots.rs` checks that every script
//! call's keys share one cluster slot in the sharded layout, and
//! `tests/conformance/layout.rs` holds the layout against a real cluster:
//! `cargo test -p rrq-store`.

mod clock;
mod error;
mod job;
pub mod keys;
mod memory;
mod redis;
mod shared;
mod store;
mod view;

pub use clock::{Clock, ManualClock, SystemClock, epoch_ms, format_timestamp, parse_timestamp};
pub use error::{BoxError, StoreError, mask_dsn};
pub use job::{Job, JobDefaults, JobParseError, JobStatus, MAX_DURATION_SECONDS, NewJob};
pub use memory::MemoryStore;
pub use redis::{CA_FILE_ENV, ConnectOptions, RedisStore};
pub use store::{
    AdminStore, AttemptCount, CancelResult, ClaimBatch, ClaimRequest, Claimed, EnqueueMode, EnqueueStore, Enqueued,
    Fence, InspectStore, Lease, LeaseState, QueueInfo, ReadySignals, Recovery, Signal, Store, WorkerHealth,
    WorkerRecord, WorkerStore,
};
pub use view::{JobView, StoredField, SyntheticJob, WorkerInfo};

/// The store traits, for calling verbs on a concrete [`RedisStore`] or
/// [`MemoryStore`] (`use rrq_store::prelude::*;`): Rust brings a supertrait's
/// methods into scope only with the trait that declares them.
pub mod prelude {
    pub use crate::store::{AdminStore, EnqueueStore, InspectStore, Store, WorkerStore};
}
