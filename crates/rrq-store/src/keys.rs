//! Every Redis key RRQ reads or writes. No other module (and no other crate)
//! spells a key.
//!
//! The free functions and constants are the rrq 0.11.1 names, which the
//! single-server layout uses unchanged (the reference's Python client reads
//! and writes them). [`Layout`] is how the Redis store builds every key: in
//! its single form it yields exactly those names; in its sharded form (for
//! Redis Cluster) every key of one shard carries the shard's hash tag, so
//! each script's keys fall in one cluster slot (see `docs/cluster.md`).

use std::sync::Arc;

use rrq_protocol::{DlqName, JobId, QueueName};

use crate::error::StoreError;

mod slot;
#[cfg(test)]
mod tests;

pub use slot::{SLOTS, crc16, key_slot};

/// Prefix of job hashes.
pub const JOB_PREFIX: &str = "rrq:job:";
/// Prefix of job locks.
pub const LOCK_PREFIX: &str = "rrq:lock:job:";
/// Prefix of orchestrator unique locks.
pub const UNIQUE_LOCK_PREFIX: &str = "rrq:lock:unique:";
/// Prefix of per-worker active-job sets.
pub const ACTIVE_PREFIX: &str = "rrq:active:jobs:";
/// Prefix of worker health records.
pub const HEALTH_PREFIX: &str = "rrq:health:worker:";
/// Prefix of job event streams.
pub const EVENTS_PREFIX: &str = "rrq:events:job:";
/// Prefix of idempotency keys.
pub const IDEMPOTENCY_PREFIX: &str = "rrq:idempotency:";
/// Prefix of rate-limit keys.
pub const RATE_LIMIT_PREFIX: &str = "rrq:rate_limit:";
/// Prefix of debounce keys.
pub const DEBOUNCE_PREFIX: &str = "rrq:debounce:";

/// RRQ extension (ignored by the reference): lease index, a ZSET of running
/// job ids scored by lock expiry in epoch ms; orphan recovery reads it instead
/// of scanning the keyspace.
pub const LEASES: &str = "rrq:leases";
/// RRQ extension: SET of paused full queue keys.
pub const PAUSED: &str = "rrq:paused_queues";
/// RRQ extension: pub/sub channel carrying a queue key when jobs become ready.
pub const READY_CHANNEL: &str = "rrq:ready";
/// RRQ extension: pub/sub channel carrying a job id when a cancel of the
/// running job is requested.
pub const CANCEL_CHANNEL: &str = "rrq:cancel";
/// RRQ extension: ZSET of cron entry ids scored by the last tick handled
/// (epoch seconds), read by workers that start after missed ticks.
pub const CRON_TICKS: &str = "rrq:cron:ticks";
/// RRQ extension, sharded layout only (cluster-wide, as
/// `rrq:{global}:layout`): the shard count the cluster's keys are named
/// with, recorded by the first store that connects.
const LAYOUT_RECORD: &str = "rrq:layout";
/// RRQ extension: prefix under which a job key of the wrong type is preserved
/// when it is quarantined.
pub const QUARANTINE_PREFIX: &str = "rrq:quarantine:";

/// `rrq:job:{id}`.
pub fn job(id: &JobId) -> String {
    format!("{JOB_PREFIX}{id}")
}

/// `rrq:lock:job:{id}`.
pub fn lock(id: &JobId) -> String {
    format!("{LOCK_PREFIX}{id}")
}

/// `rrq:events:job:{id}`.
pub fn events(id: &JobId) -> String {
    format!("{EVENTS_PREFIX}{id}")
}

/// `rrq:active:jobs:{worker}`.
pub fn active(worker_id: &str) -> String {
    format!("{ACTIVE_PREFIX}{worker_id}")
}

/// `rrq:health:worker:{worker}`.
pub fn health(worker_id: &str) -> String {
    format!("{HEALTH_PREFIX}{worker_id}")
}

/// The queue's own key (already full).
pub fn queue(q: &QueueName) -> &str {
    q.as_str()
}

/// The DLQ's own key (already full).
pub fn dlq(d: &DlqName) -> &str {
    d.as_str()
}

/// `rrq:idempotency:{key}` (always prefixed, as the reference does).
pub fn idempotency(key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{key}")
}

/// `rrq:rate_limit:{key}` (prefixed unless already).
pub fn rate_limit(key: &str) -> String {
    prefixed(RATE_LIMIT_PREFIX, key)
}

/// `rrq:debounce:{key}` (prefixed unless already).
pub fn debounce(key: &str) -> String {
    prefixed(DEBOUNCE_PREFIX, key)
}

/// `rrq:lock:unique:{key}`.
pub fn unique_lock(key: &str) -> String {
    format!("{UNIQUE_LOCK_PREFIX}{key}")
}

fn prefixed(prefix: &str, key: &str) -> String {
    if key.starts_with(prefix) { key.to_owned() } else { format!("{prefix}{key}") }
}

/// Shards per queue of the sharded layout unless configured (`queue_shards`):
/// enough that three masters of a default cluster carry a third each (within
/// a shard), and that up to about twenty masters stay balanced.
pub const DEFAULT_QUEUE_SHARDS: u16 = 64;
/// The most shards the sharded layout accepts.
pub const MAX_QUEUE_SHARDS: u16 = 256;
/// The hash tag of the sharded layout's cluster-wide keys (worker health,
/// cron ticks): one slot, so a script may read many of them at once.
pub const GLOBAL_TAG: &str = "{global}";
/// The namespace every key starts with; the sharded layout puts its hash
/// tag right after it.
const NAMESPACE: &str = "rrq:";

/// One shard of the key space: an index below [`Layout::shard_count`]. The
/// single layout has one shard, [`Shard::FIRST`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Shard(u16);

impl Shard {
    /// The first shard (the only one of the single layout).
    pub const FIRST: Shard = Shard(0);

    /// The shard's index.
    pub fn index(self) -> u16 {
        self.0
    }
}

/// How keys are named: the rrq 0.11.1 names on one server, or sharded for
/// Redis Cluster. Cheap to clone.
///
/// Sharded, a key is its single-layout name with the shard's hash tag after
/// the `rrq:` namespace: `rrq:job:ID` becomes `rrq:{TAG}:job:ID`, the queue
/// `rrq:queue:NAME` has one ready set per shard, `rrq:{TAG}:queue:NAME`. A
/// job id's shard is `crc16(id) % shard_count` ([`Layout::shard_of`]), so
/// anyone holding an id finds its keys without a lookup. A dedup key
/// (idempotency, rate limit, debounce, unique lock) lives on the shard of
/// its own text (hashed the same way), so duplicates meet there; a job
/// enqueued under one must have an id of that shard. Worker health and cron
/// ticks share the cluster-wide tag [`GLOBAL_TAG`]. The ready channel is
/// per shard ([`Layout::ready_channel`]); the cancel channel keeps its name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Layout {
    /// The hash tag of each shard (braces included); `None`: single.
    tags: Option<Arc<[String]>>,
}

impl Layout {
    /// The rrq 0.11.1 layout: every key exactly the reference's name.
    pub fn single() -> Layout {
        Layout { tags: None }
    }

    /// The sharded layout with `shards` shards per queue (1 to
    /// [`MAX_QUEUE_SHARDS`]).
    pub fn sharded(shards: u16) -> Result<Layout, StoreError> {
        if !(1..=MAX_QUEUE_SHARDS).contains(&shards) {
            return Err(StoreError::InvalidInput {
                what: "queue_shards",
                reason: format!("{shards} is outside 1..={MAX_QUEUE_SHARDS}"),
            });
        }
        Ok(Layout { tags: Some((0..shards).map(|i| shard_tag(i, shards)).collect()) })
    }

    /// Whether keys carry shard hash tags.
    pub fn is_sharded(&self) -> bool {
        self.tags.is_some()
    }

    /// Shards per queue (1 for the single layout).
    pub fn shard_count(&self) -> u16 {
        self.tags.as_ref().map_or(1, |t| t.len() as u16)
    }

    /// Every shard, in order.
    pub fn shards(&self) -> impl Iterator<Item = Shard> + use<> {
        (0..self.shard_count()).map(Shard)
    }

    /// The hash tag of a shard (braces included); `None` in the single layout.
    pub fn tag(&self, shard: Shard) -> Option<&str> {
        self.tags.as_ref().map(|t| t[usize::from(shard.0) % t.len()].as_str())
    }

    /// The shard holding every key of job `id`: CRC16/XMODEM of the id's
    /// bytes modulo the shard count.
    pub fn shard_of(&self, id: &JobId) -> Shard {
        self.shard_of_text(id.as_str())
    }

    /// The shard a key names by its hash tag (`None`: untagged, the
    /// cluster-wide tag, or another shard count's tag).
    pub fn shard_of_key(&self, key: &str) -> Option<Shard> {
        let tags = self.tags.as_ref()?;
        let tag = tagged(key)?;
        let index: u16 = tag[1..].split('.').next()?.parse().ok()?;
        (tags.get(usize::from(index))? == tag).then_some(Shard(index))
    }

    fn shard_of_text(&self, text: &str) -> Shard {
        if self.tags.is_none() {
            // One shard: no checksum on the single layout's hot path.
            return Shard::FIRST;
        }
        Shard(crc16(text.as_bytes()) % self.shard_count())
    }

    /// A single-layout key or key prefix placed on `shard`: unchanged in the
    /// single layout, the shard's tag after `rrq:` in the sharded one.
    pub fn on_shard(&self, shard: Shard, name: &str) -> String {
        match self.tag(shard) {
            None => name.to_owned(),
            Some(tag) => with_tag(tag, name),
        }
    }

    /// [`Layout::on_shard`] for a name built for the call: the single
    /// layout hands it back without a copy.
    fn place(&self, shard: Shard, name: String) -> String {
        match self.tag(shard) {
            None => name,
            Some(tag) => with_tag(tag, &name),
        }
    }

    /// A single-layout key placed among the cluster-wide keys.
    fn global(&self, name: &str) -> String {
        if self.is_sharded() { with_tag(GLOBAL_TAG, name) } else { name.to_owned() }
    }

    /// The job hash (`rrq:job:ID`).
    pub fn job(&self, id: &JobId) -> String {
        self.place(self.shard_of(id), job(id))
    }

    /// The job lock (`rrq:lock:job:ID`).
    pub fn lock(&self, id: &JobId) -> String {
        self.place(self.shard_of(id), lock(id))
    }

    /// The job's events stream (`rrq:events:job:ID`).
    pub fn events(&self, id: &JobId) -> String {
        self.place(self.shard_of(id), events(id))
    }

    /// A queue's ready set on `shard` (`rrq:queue:NAME`).
    pub fn queue(&self, queue: &QueueName, shard: Shard) -> String {
        self.on_shard(shard, queue.as_str())
    }

    /// A DLQ's list on `shard` (`rrq:dlq:NAME`).
    pub fn dlq(&self, dlq_name: &DlqName, shard: Shard) -> String {
        self.on_shard(shard, dlq_name.as_str())
    }

    /// A worker's active set on `shard` (`rrq:active:jobs:WORKER`).
    pub fn active(&self, worker_id: &str, shard: Shard) -> String {
        self.place(shard, active(worker_id))
    }

    /// The lease index of `shard` (`rrq:leases`).
    pub fn leases(&self, shard: Shard) -> String {
        self.on_shard(shard, LEASES)
    }

    /// The channel a job added to `shard`'s ready sets is announced on: the
    /// broadcast `rrq:ready` in the single layout; in the sharded one the
    /// shard's own channel `rrq:{TAG}:ready` (Redis 7 sharded pub/sub,
    /// `SPUBLISH`), which only the shard's master and replicas carry. A
    /// message on the broadcast channel of a sharded store stands for every
    /// shard of the queue it names (a resumed queue).
    pub fn ready_channel(&self, shard: Shard) -> String {
        self.on_shard(shard, READY_CHANNEL)
    }

    /// Whether `channel` is a shard's ready channel of this (sharded)
    /// layout, and which.
    pub fn ready_channel_shard(&self, channel: &str) -> Option<Shard> {
        let shard = self.shard_of_key(channel)?;
        (self.ready_channel(shard) == channel).then_some(shard)
    }

    /// The paused-queue set `shard`'s claims read (`rrq:paused_queues`).
    pub fn paused(&self, shard: Shard) -> String {
        self.on_shard(shard, PAUSED)
    }

    /// The idempotency key (`rrq:idempotency:KEY`), on the shard of `key`.
    pub fn idempotency(&self, key: &str) -> String {
        self.place(self.idempotency_shard(key), idempotency(key))
    }

    /// The shard of an idempotency key (and of the job enqueued under it).
    pub fn idempotency_shard(&self, key: &str) -> Shard {
        self.shard_of_text(key)
    }

    /// The rate-limit key (`rrq:rate_limit:KEY`, prefixed unless already),
    /// on the shard of the key without its prefix.
    pub fn rate_limit(&self, key: &str) -> String {
        self.place(self.rate_limit_shard(key), rate_limit(key))
    }

    /// The shard of a rate-limit key (and of the job enqueued under it).
    pub fn rate_limit_shard(&self, key: &str) -> Shard {
        self.shard_of_text(key.strip_prefix(RATE_LIMIT_PREFIX).unwrap_or(key))
    }

    /// The debounce key (`rrq:debounce:KEY`, prefixed unless already), on
    /// the shard of the key without its prefix.
    pub fn debounce(&self, key: &str) -> String {
        self.place(self.debounce_shard(key), debounce(key))
    }

    /// The shard of a debounce key (and of the job enqueued under it).
    pub fn debounce_shard(&self, key: &str) -> Shard {
        self.shard_of_text(key.strip_prefix(DEBOUNCE_PREFIX).unwrap_or(key))
    }

    /// The orchestrator unique lock (`rrq:lock:unique:KEY`), on the shard of
    /// `key`.
    pub fn unique_lock(&self, key: &str) -> String {
        self.place(self.unique_lock_shard(key), unique_lock(key))
    }

    /// The shard of a unique key (and of the job that holds its lock).
    pub fn unique_lock_shard(&self, key: &str) -> Shard {
        self.shard_of_text(key)
    }

    /// The queue and shard of a ready key this layout built (what the ready
    /// channel carries): `None` for a key of another layout or no queue.
    pub fn queue_of(&self, key: &str) -> Option<(QueueName, Shard)> {
        let (name, shard) = match self.tags {
            None => (key.to_owned(), Shard::FIRST),
            Some(_) => {
                let shard = self.shard_of_key(key)?;
                let tag = self.tag(shard)?;
                (format!("{NAMESPACE}{}", key.strip_prefix(NAMESPACE)?.strip_prefix(tag)?.strip_prefix(':')?), shard)
            }
        };
        name.starts_with(QueueName::PREFIX).then(|| (QueueName::new(&name), shard))
    }

    /// A Redis glob (for `SCAN MATCH`) of every key whose single-layout
    /// name starts with `prefix`, on any shard: the prefix as is in the
    /// single layout, `rrq:{*}:` and the rest in the sharded one (braces are
    /// not glob characters; [`Layout::untag`] then keeps the keys of this
    /// layout's own shards).
    pub fn shards_glob(&self, prefix: &str) -> String {
        if self.is_sharded() {
            let rest = prefix.strip_prefix(NAMESPACE).unwrap_or(prefix);
            format!("{NAMESPACE}{{*}}:{}*", glob_escape(rest))
        } else {
            format!("{}*", glob_escape(prefix))
        }
    }

    /// The shard a key of this layout is on and its single-layout name:
    /// `rrq:{TAG}:job:ID` gives the shard of `{TAG}` and `rrq:job:ID`.
    /// `None` for an untagged key, the cluster-wide tag, or a tag of
    /// another shard count. The single layout hands every key back as is.
    pub fn untag(&self, key: &str) -> Option<(Shard, String)> {
        if self.tags.is_none() {
            return Some((Shard::FIRST, key.to_owned()));
        }
        let shard = self.shard_of_key(key)?;
        let tag = self.tag(shard)?;
        let rest = key.strip_prefix(NAMESPACE)?.strip_prefix(tag)?.strip_prefix(':')?;
        Some((shard, format!("{NAMESPACE}{rest}")))
    }

    /// The id of a job hash key this layout built (`rrq:job:ID` on the id's
    /// own shard); `None` for any other key.
    pub fn job_of_key(&self, key: &str) -> Option<JobId> {
        let (shard, name) = self.untag(key)?;
        let id = JobId::new(name.strip_prefix(JOB_PREFIX)?);
        (self.shard_of(&id) == shard).then_some(id)
    }

    /// The record of the shard count a cluster's keys are named with
    /// (`rrq:{global}:layout`, sharded layout only): every store connecting
    /// to the cluster compares its own count with it.
    pub fn shard_count_record(&self) -> Option<String> {
        self.is_sharded().then(|| self.global(LAYOUT_RECORD))
    }

    /// A worker's health record (`rrq:health:worker:WORKER`), cluster-wide.
    pub fn health(&self, worker_id: &str) -> String {
        self.global(&health(worker_id))
    }

    /// The prefix of every health record.
    pub fn health_prefix(&self) -> String {
        self.global(HEALTH_PREFIX)
    }

    /// The cron tick record (`rrq:cron:ticks`), cluster-wide.
    pub fn cron_ticks(&self) -> String {
        self.global(CRON_TICKS)
    }
}

/// Escapes glob characters so `s` matches literally in `SCAN MATCH`.
pub(crate) fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `name` with `tag` after the `rrq:` namespace.
fn with_tag(tag: &str, name: &str) -> String {
    let rest = name.strip_prefix(NAMESPACE).unwrap_or(name);
    format!("{NAMESPACE}{tag}:{rest}")
}

/// The hash tag a sharded key carries right after `rrq:`, braces included.
fn tagged(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(NAMESPACE)?;
    if !rest.starts_with('{') {
        return None;
    }
    rest.find('}').map(|end| &rest[..=end])
}

/// The hash tag of shard `index` of `shards`: `{index.salt}` with the
/// smallest salt (0, 1, ...) whose slot lies within an eighth of a band of
/// the centre of the shard's band of slots (band `i` runs from
/// `i * 16384 / shards` up to band `i + 1`; integer division).
/// Spreading the tags over the slot range spreads the shards over the
/// masters whatever their slot ranges are, within a band.
fn shard_tag(index: u16, shards: u16) -> String {
    let band = |i: u32| i * u32::from(SLOTS) / u32::from(shards);
    let (lo, hi) = (band(u32::from(index)), band(u32::from(index) + 1));
    let (centre, reach) = ((lo + hi) / 2, (hi - lo) / 8);
    let inner = centre.saturating_sub(reach)..=(centre + reach).min(hi - 1);
    (0u32..)
        .map(|salt| format!("{{{index}.{salt}}}"))
        .find(|tag| inner.contains(&u32::from(key_slot(tag.as_bytes()))))
        .expect("some salt reaches every band")
}
