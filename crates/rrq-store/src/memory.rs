//! [`MemoryStore`]: the [`Store`] semantics in process memory.
//!
//! It models the same keys as Redis (job hashes, queue and lease sorted sets,
//! locks and dedup keys with expiry, DLQ lists, event streams) so that the
//! conformance suite can hold both stores to one behaviour. Every verb takes
//! the one state mutex for its whole duration, which makes it as atomic as a
//! Lua script. Key expiry (locks, dedup keys, finished jobs) follows the
//! store's [`Clock`], just as Redis expiry follows the server's clock; data
//! timestamps come from the `now` arguments.
//!
//! Expired keys are dropped when next touched, and finished jobs are swept by
//! [`Store::recover`], so an embedded store does not grow without bound.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;
use tokio::sync::{Notify, mpsc};

use crate::clock::{Clock, SystemClock, epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::job::{Job, JobDefaults, JobParseError, JobStatus, NewJob};
use crate::keys;
use crate::shared::{self, ClaimAs, Plan, messages};
use crate::store::{
    CancelResult, ClaimBatch, ClaimRequest, Claimed, EnqueueMode, Enqueued, Fence, Lease, LeaseState, QueueInfo,
    Recovery, Signal, Store, WorkerHealth, WorkerRecord,
};

/// Ready signals buffered per subscriber before new ones are dropped.
const READY_BUFFER: usize = 256;

/// The [`Store`] in memory, for tests and for embedding RRQ without Redis.
/// Cheap to clone: clones share the same data.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    /// The queue of jobs without one (see [`MemoryStore::with_defaults`]).
    defaults: Arc<JobDefaults>,
}

struct Inner {
    state: Mutex<State>,
    clock: Arc<dyn Clock>,
    /// Woken whenever an event is appended to any job's stream (the same
    /// one as [`State::appended`]).
    events: Arc<Notify>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").field("clock", &self.inner.clock).finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty store whose keys expire by `clock` (use a
    /// [`ManualClock`](crate::ManualClock) to expire locks in tests).
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        MemoryStore {
            inner: {
                let events = Arc::new(Notify::new());
                let state = State { appended: events.clone(), ..State::default() };
                Arc::new(Inner { state: Mutex::new(state), clock, events })
            },
            defaults: Arc::new(JobDefaults::default()),
        }
    }

    /// Sets the defaults used where a call has none of its own: the queue
    /// [`Store::cancel`] assumes for a job without `queue_name` (the DLQ is
    /// there for parity with [`RedisStore`](crate::RedisStore)).
    #[must_use]
    pub fn with_defaults(self, defaults: JobDefaults) -> Self {
        MemoryStore { defaults: Arc::new(defaults), ..self }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave a half-applied verb
        // visible to Redis semantics we care about; keep serving.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The state, with the store clock's current time.
    fn state(&self) -> (MutexGuard<'_, State>, DateTime<Utc>) {
        let now = self.inner.clock.now();
        (self.lock(), now)
    }
}

// ---------------------------------------------------------------------------
// The data model: the handful of Redis types RRQ uses.

#[derive(Debug, Default)]
struct State {
    /// Job hashes by job id.
    hashes: HashMap<String, Expiring<BTreeMap<String, String>>>,
    /// String keys (locks, dedup keys, unique locks, health) by full key.
    strings: HashMap<String, Expiring<String>>,
    /// Sorted sets (queues, active sets, the lease index) by full key.
    zsets: HashMap<String, ZSet>,
    /// Lists (DLQs) by full key.
    lists: HashMap<String, VecDeque<String>>,
    /// Event streams by job id.
    streams: HashMap<String, Expiring<Vec<StreamId>>>,
    /// The id of the last event appended anywhere (ids only grow).
    last_event: StreamId,
    /// Paused full queue keys.
    paused: BTreeSet<String>,
    /// Ready-signal subscribers.
    ready: Vec<mpsc::Sender<Signal>>,
    /// Woken by every appended event ([`Store::wait_job_event`] waits on it).
    appended: Arc<Notify>,
}

#[derive(Debug)]
struct Expiring<T> {
    value: T,
    expires_at: Option<DateTime<Utc>>,
}

impl<T> Expiring<T> {
    fn forever(value: T) -> Self {
        Expiring { value, expires_at: None }
    }

    fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// A stream entry id: milliseconds and a sequence number.
type StreamId = (i64, u64);

fn parse_stream_id(s: &str) -> Option<StreamId> {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A sorted set ordered like Redis: by score, then by member.
#[derive(Debug, Default)]
struct ZSet {
    scores: HashMap<String, i64>,
    order: BTreeSet<(i64, String)>,
}

impl ZSet {
    fn add(&mut self, member: &str, score: i64) {
        if let Some(old) = self.scores.insert(member.to_owned(), score) {
            self.order.remove(&(old, member.to_owned()));
        }
        self.order.insert((score, member.to_owned()));
    }

    fn remove(&mut self, member: &str) -> bool {
        match self.scores.remove(member) {
            Some(old) => self.order.remove(&(old, member.to_owned())),
            None => false,
        }
    }

    /// Members with a score at or below `max`, lowest first.
    fn up_to(&self, max: i64, limit: usize) -> Vec<String> {
        self.order.iter().take_while(|(s, _)| *s <= max).take(limit).map(|(_, m)| m.clone()).collect()
    }

    fn first(&self) -> Option<i64> {
        self.order.first().map(|(s, _)| *s)
    }
}

fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A stored count, as the scripts read it (`count` in redis/scripts/common.lua).
fn count(value: Option<&String>, fallback: i64) -> i64 {
    shared::count(value.map(String::as_str), fallback)
}

/// A stored queue name, normalised; `fallback` when missing or blank.
fn queue_of(value: Option<&String>, fallback: &QueueName) -> QueueName {
    value.and_then(|v| QueueName::parse(v)).unwrap_or_else(|| fallback.clone())
}

/// Whether `s` matches the Redis glob `p`: `*`, `?`, `[abc]`, `[^a-z]` and
/// `\x` escapes, byte-wise like Redis' `stringmatchlen`.
fn glob_match(p: &[u8], s: &[u8]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(b'*') => {
            let rest = p.iter().position(|&b| b != b'*').map_or(&p[p.len()..], |i| &p[i..]);
            (0..=s.len()).any(|i| glob_match(rest, &s[i..]))
        }
        Some(b'?') => !s.is_empty() && glob_match(&p[1..], &s[1..]),
        Some(b'[') => {
            let Some((&c, s_rest)) = s.split_first() else { return false };
            let mut i = 1;
            let negate = p.get(i) == Some(&b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            while i < p.len() && p[i] != b']' {
                if p[i] == b'\\' && i + 1 < p.len() {
                    matched |= p[i + 1] == c;
                    i += 2;
                } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                    let (lo, hi) = if p[i] <= p[i + 2] { (p[i], p[i + 2]) } else { (p[i + 2], p[i]) };
                    matched |= (lo..=hi).contains(&c);
                    i += 3;
                } else {
                    matched |= p[i] == c;
                    i += 1;
                }
            }
            // An unclosed class ends with the pattern, as in Redis.
            let p_rest = if i < p.len() { &p[i + 1..] } else { &p[i..] };
            matched != negate && glob_match(p_rest, s_rest)
        }
        Some(b'\\') if p.len() > 1 => s.first() == Some(&p[1]) && glob_match(&p[2..], &s[1..]),
        Some(&c) => s.first() == Some(&c) && glob_match(&p[1..], &s[1..]),
    }
}

#[cfg(test)]
mod glob_tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_redis() {
        let m = |p: &str, s: &str| glob_match(p.as_bytes(), s.as_bytes());
        assert!(m("test_*", "test_job") && m("test_*", "test_") && !m("test_*", "rrq:test_job"));
        assert!(m("*", "") && m("*", "anything") && m("a*b*c", "axxbyyc") && !m("a*b*c", "axxbyy"));
        assert!(m("rrq:job:?", "rrq:job:1") && !m("rrq:job:?", "rrq:job:12"));
        assert!(m("[ab]x", "bx") && !m("[ab]x", "cx") && m("[^ab]x", "cx") && m("[a-c]x", "bx"));
        assert!(m("[c-a]x", "bx"), "a reversed range still matches");
        assert!(m(r"a\*b", "a*b") && !m(r"a\*b", "axb") && m(r"[\]]", "]"));
        assert!(!m("", "x") && m("", ""));
    }
}

impl State {
    fn hash(&mut self, id: &str, now: DateTime<Utc>) -> Option<&mut BTreeMap<String, String>> {
        if self.hashes.get(id).is_some_and(|h| !h.is_live(now)) {
            self.hashes.remove(id);
            self.streams.remove(id);
        }
        self.hashes.get_mut(id).map(|h| &mut h.value)
    }

    fn has_hash(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        self.hash(id, now).is_some()
    }

    fn string(&mut self, key: &str, now: DateTime<Utc>) -> Option<&Expiring<String>> {
        if self.strings.get(key).is_some_and(|s| !s.is_live(now)) {
            self.strings.remove(key);
        }
        self.strings.get(key)
    }

    fn string_value(&mut self, key: &str, now: DateTime<Utc>) -> Option<String> {
        self.string(key, now).map(|s| s.value.clone())
    }

    fn set_string(&mut self, key: String, value: String, expires_at: Option<DateTime<Utc>>) {
        self.strings.insert(key, Expiring { value, expires_at });
    }

    fn zset(&mut self, key: &str) -> &mut ZSet {
        self.zsets.entry(key.to_owned()).or_default()
    }

    fn zrem(&mut self, key: &str, member: &str) -> bool {
        let Some(z) = self.zsets.get_mut(key) else { return false };
        let removed = z.remove(member);
        if z.scores.is_empty() {
            self.zsets.remove(key);
        }
        removed
    }

    fn field(&mut self, id: &str, name: &str, now: DateTime<Utc>) -> Option<String> {
        self.hash(id, now).and_then(|h| h.get(name).cloned())
    }

    fn set_fields(&mut self, id: &str, now: DateTime<Utc>, pairs: &[(&str, String)]) {
        if let Some(h) = self.hash(id, now) {
            for (k, v) in pairs {
                h.insert((*k).to_owned(), v.clone());
            }
        }
    }

    fn del_fields(&mut self, id: &str, now: DateTime<Utc>, names: &[&str]) {
        if let Some(h) = self.hash(id, now) {
            for n in names {
                h.remove(*n);
            }
        }
    }

    /// Sets (or clears, with `None`) the expiry of a job hash and its stream.
    fn expire_job(&mut self, id: &str, expires_at: Option<DateTime<Utc>>) {
        if let Some(h) = self.hashes.get_mut(id) {
            h.expires_at = expires_at;
        }
        if let Some(s) = self.streams.get_mut(id) {
            s.expires_at = expires_at;
        }
    }

    fn add_event(&mut self, id: &str, clock_now: DateTime<Utc>) {
        let ms = epoch_ms(clock_now);
        let (last_ms, last_seq) = self.last_event;
        self.last_event = if ms > last_ms { (ms, 0) } else { (last_ms, last_seq + 1) };
        let event = self.last_event;
        self.streams.entry(id.to_owned()).or_insert_with(|| Expiring::forever(Vec::new())).value.push(event);
        self.appended.notify_waiters();
    }

    fn publish(&mut self, queue: &QueueName) {
        self.signal(&Signal::Ready(queue.clone()));
    }

    fn signal(&mut self, signal: &Signal) {
        self.ready.retain(|tx| !matches!(tx.try_send(signal.clone()), Err(mpsc::error::TrySendError::Closed(_))));
    }

    fn write_job(&mut self, job: &NewJob, now: DateTime<Utc>) {
        let fields = job.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.hashes.insert(job.id.as_str().to_owned(), Expiring::forever(fields));
        self.zset(keys::queue(&job.queue)).add(job.id.as_str(), epoch_ms(job.scheduled_time));
        if shared::is_due(job.scheduled_time, now) {
            self.publish(&job.queue);
        }
    }

    // --- the fence, as in redis/scripts/common.lua -----------------------------------

    fn lock_owner(&mut self, id: &JobId, now: DateTime<Utc>) -> Option<String> {
        self.string_value(&keys::lock(id), now)
    }

    fn holds(&mut self, lease: &Lease, now: DateTime<Utc>) -> bool {
        if self.lock_owner(&lease.job_id, now).as_deref() != Some(lease.worker_id.as_str()) {
            return false;
        }
        match self.hash(lease.job_id.as_str(), now) {
            Some(h) => h.get("start_time") == Some(&lease.token) && h.get("worker_id") == Some(&lease.worker_id),
            None => false,
        }
    }

    fn already_recorded(&mut self, lease: &Lease, status: JobStatus, now: DateTime<Utc>) -> bool {
        match self.hash(lease.job_id.as_str(), now) {
            Some(h) => {
                h.get("start_time") == Some(&lease.token)
                    && h.get("worker_id") == Some(&lease.worker_id)
                    && h.get("status").map(String::as_str) == Some(status.as_str())
            }
            None => false,
        }
    }

    /// The common head of every fenced write: `Some(fence)` when the write
    /// must not happen (stale, or already applied by an earlier call).
    fn check_fence(&mut self, lease: &Lease, recorded: Option<JobStatus>, now: DateTime<Utc>) -> Option<Fence> {
        if self.holds(lease, now) {
            return None;
        }
        if recorded.is_some_and(|s| self.already_recorded(lease, s, now)) {
            return Some(Fence::Applied);
        }
        if self.lock_owner(&lease.job_id, now).as_deref() != Some(lease.worker_id.as_str()) {
            self.zrem(&keys::active(&lease.worker_id), lease.job_id.as_str());
        }
        Some(Fence::Stale)
    }

    fn end_attempt(&mut self, lease: &Lease, now: DateTime<Utc>) {
        if self.lock_owner(&lease.job_id, now).as_deref() == Some(lease.worker_id.as_str()) {
            self.strings.remove(&keys::lock(&lease.job_id));
        }
        self.zrem(&keys::active(&lease.worker_id), lease.job_id.as_str());
        self.zrem(keys::LEASES, lease.job_id.as_str());
    }

    fn release_unique(&mut self, id: &str, now: DateTime<Utc>) {
        if let Some(unique) = self.field(id, "job_unique_key", now).filter(|u| !u.is_empty()) {
            let key = keys::unique_lock(&unique);
            if self.string_value(&key, now).as_deref() == Some(id) {
                self.strings.remove(&key);
            }
        }
    }

    /// Ends a job CANCELLED, as `end_cancelled` in redis/scripts/common.lua: flag
    /// cleared, unique lock released if held by the job, `cancelled` event.
    fn end_cancelled(&mut self, id: &str, now: DateTime<Utc>) {
        self.set_fields(id, now, &[("status", JobStatus::Cancelled.as_str().into())]);
        self.del_fields(id, now, &["cancel_requested"]);
        self.release_unique(id, now);
        self.add_event(id, now);
    }

    /// The stored payload's length: `job_params`, or a 0.9.9 job's
    /// `job_args` + `job_kwargs` (`HSTRLEN` in redis/scripts/claim.lua).
    fn payload_len(&mut self, id: &str, now: DateTime<Utc>) -> usize {
        let Some(h) = self.hash(id, now) else { return 0 };
        let len = |name: &str| h.get(name).map_or(0, String::len);
        match len("job_params") {
            0 => len("job_args") + len("job_kwargs"),
            n => n,
        }
    }

    fn cancel_requested(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        self.field(id, "cancel_requested", now).as_deref() == Some("1")
    }

    fn move_to_dlq(&mut self, id: &str, dlq: &DlqName, reason: &str, completion: &str, now: DateTime<Utc>) {
        self.set_fields(
            id,
            now,
            &[("status", "FAILED".into()), ("last_error", reason.into()), ("completion_time", completion.into())],
        );
        self.add_event(id, now);
        self.lists.entry(keys::dlq(dlq).to_owned()).or_default().push_front(id.to_owned());
        self.expire_job(id, Some(now + TimeDelta::seconds(shared::DLQ_TTL_SECONDS)));
    }

    /// Drops every expired job hash and stream (the keys Redis would expire).
    fn sweep(&mut self, now: DateTime<Utc>) {
        self.hashes.retain(|_, h| h.is_live(now));
        self.streams.retain(|_, s| s.is_live(now));
        self.strings.retain(|_, s| s.is_live(now));
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        let plan = shared::plan(&job, &mode)?;
        let (mut st, now) = self.state();
        let id = job.id.as_str().to_owned();
        match plan {
            Plan::Standard | Plan::Idempotent { .. } => {
                if let Plan::Idempotent { key, .. } = &plan
                    && let Some(existing) = st.string_value(key, now)
                {
                    if st.has_hash(&existing, now) {
                        return Ok(Enqueued::Existing(JobId::new(existing)));
                    }
                    st.strings.remove(key);
                }
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                if let Plan::Idempotent { key, ttl } = plan {
                    let expires = (ttl > 0).then(|| after(now, Duration::from_secs(ttl)));
                    st.set_string(key, id, expires);
                }
                st.write_job(&job, now);
                Ok(Enqueued::Created(job.id))
            }
            Plan::RateLimited { key, ttl } => {
                if st.string(&key, now).is_some() {
                    return Ok(Enqueued::RateLimited);
                }
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                st.set_string(key, id, Some(after(now, Duration::from_secs(ttl))));
                st.write_job(&job, now);
                Ok(Enqueued::Created(job.id))
            }
            Plan::Debounced { key, ttl } => {
                let expires = Some(after(now, Duration::from_secs(ttl)));
                if let Some(holder) = st.string_value(&key, now)
                    && st.field(&holder, "status", now).as_deref() == Some("PENDING")
                {
                    let old_queue = queue_of(st.field(&holder, "queue_name", now).as_ref(), &job.queue);
                    let new: HashMap<&str, String> = job.to_fields().into_iter().collect();
                    let mut pairs: Vec<(&str, String)> = [
                        "function_name",
                        "job_params",
                        "next_scheduled_run_time",
                        "max_retries",
                        "job_timeout_seconds",
                        "result_ttl_seconds",
                        "queue_name",
                    ]
                    .into_iter()
                    .map(|n| (n, new[n].clone()))
                    .collect();
                    if let Some(tc) = new.get("trace_context") {
                        pairs.push(("trace_context", tc.clone()));
                    }
                    match new.get("correlation_context") {
                        Some(cc) => pairs.push(("correlation_context", cc.clone())),
                        None => st.del_fields(&holder, now, &["correlation_context"]),
                    }
                    st.set_fields(&holder, now, &pairs);
                    if old_queue != job.queue {
                        st.zrem(keys::queue(&old_queue), &holder);
                    }
                    st.zset(keys::queue(&job.queue)).add(&holder, epoch_ms(job.scheduled_time));
                    if let Some(s) = st.strings.get_mut(&key) {
                        s.expires_at = expires;
                    }
                    if shared::is_due(job.scheduled_time, now) {
                        st.publish(&job.queue);
                    }
                    return Ok(Enqueued::Existing(JobId::new(holder)));
                }
                st.strings.remove(&key);
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                st.set_string(key, id, expires);
                st.write_job(&job, now);
                Ok(Enqueued::Created(job.id))
            }
            Plan::UniqueLock { key, unique, ttl } => {
                if st.has_hash(&id, now) {
                    return Err(StoreError::JobIdTaken(job.id));
                }
                let mut job = job;
                job.unique_key = Some(unique);
                // What Redis' PTTL would say: absent, no expiry, or ms left.
                match st.string(&key, now).map(|lock| lock.expires_at) {
                    None => st.set_string(key, id, Some(after(now, Duration::from_secs(ttl)))),
                    Some(None) => {}
                    Some(Some(expires_at)) => {
                        let remaining = epoch_ms(expires_at) - epoch_ms(now);
                        if let Some(at) = shared::unique_deferral(&job, remaining) {
                            job.scheduled_time = DateTime::from_timestamp_millis(at).unwrap_or(job.scheduled_time);
                        }
                    }
                }
                st.write_job(&job, now);
                Ok(Enqueued::Created(job.id))
            }
        }
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        for job in &jobs {
            shared::plan(job, &EnqueueMode::Standard)?;
        }
        let (mut st, now) = self.state();
        let mut ready = BTreeSet::new();
        let mut out = Vec::with_capacity(jobs.len());
        for job in jobs {
            if st.has_hash(job.id.as_str(), now) {
                out.push(Err(StoreError::JobIdTaken(job.id)));
                continue;
            }
            let fields = job.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            st.hashes.insert(job.id.as_str().to_owned(), Expiring::forever(fields));
            st.zset(keys::queue(&job.queue)).add(job.id.as_str(), epoch_ms(job.scheduled_time));
            if shared::is_due(job.scheduled_time, now) {
                ready.insert(job.queue.clone());
            }
            out.push(Ok(Enqueued::Created(job.id)));
        }
        for queue in &ready {
            st.publish(queue);
        }
        Ok(out)
    }

    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(st.hash(id.as_str(), now).map(|h| {
            let fields: HashMap<String, String> = h.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            Job::from_fields(id.as_str(), &fields)
        }))
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(st.hash(id.as_str(), now).cloned())
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        let (mut st, now) = self.state();
        Ok(ids.iter().map(|id| st.hash(id.as_str(), now).cloned()).collect())
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let after = match after {
            Some(s) => parse_stream_id(&s)
                .ok_or_else(|| StoreError::InvalidInput { what: "stream entry id", reason: format!("{s:?}") })?,
            // `$`: only entries added from now on.
            None => {
                let (mut st, now) = self.state();
                st.hash(id.as_str(), now);
                st.streams.get(id.as_str()).and_then(|s| s.value.last().copied()).unwrap_or((0, 0))
            }
        };
        loop {
            let notified = self.inner.events.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let (mut st, now) = self.state();
                st.hash(id.as_str(), now);
                if let Some(e) = st.streams.get(id.as_str()).and_then(|s| s.value.iter().find(|e| **e > after).copied())
                {
                    return Ok(Some(format!("{}-{}", e.0, e.1)));
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Ok(None);
            }
        }
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        let (mut st, clock_now) = self.state();
        let queue_key = keys::queue(&req.queue).to_owned();
        if st.paused.contains(&queue_key) {
            return Ok(ClaimBatch { paused: true, ..ClaimBatch::default() });
        }
        let now_ms = epoch_ms(req.now);
        let token = format_timestamp(req.now);
        let ttl_ms = shared::lease_ms(req.lease_ttl);
        let lease_ttl = Duration::from_millis(ttl_ms.unsigned_abs());
        let mut batch = ClaimBatch::default();
        let candidates = st.zsets.get(&queue_key).map(|z| z.up_to(now_ms, req.max * 4)).unwrap_or_default();
        for id in candidates {
            if batch.jobs.len() >= req.max {
                break;
            }
            let job_id = JobId::new(id.as_str());
            // None: the hash is gone.
            let status = st.hash(&id, clock_now).map(|h| h.get("status").cloned());
            match status {
                None => {
                    st.zrem(&queue_key, &id);
                    batch.dropped.push(job_id);
                }
                Some(raw) => match shared::claim_as(raw.as_deref()) {
                    ClaimAs::Finished => {
                        st.zrem(&queue_key, &id);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Unknown => {
                        st.zrem(&queue_key, &id);
                        let reason = messages::unknown_status(raw.as_deref().unwrap_or_default());
                        st.move_to_dlq(&id, &self.defaults.dlq, &reason, &token, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable if st.cancel_requested(&id, clock_now) => {
                        st.zrem(&queue_key, &id);
                        st.end_cancelled(&id, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable if st.payload_len(&id, clock_now) > req.max_payload_bytes => {
                        st.zrem(&queue_key, &id);
                        let size = st.payload_len(&id, clock_now);
                        let reason = messages::payload_too_large(size, req.max_payload_bytes);
                        let dlq = st
                            .field(&id, "dlq_name", clock_now)
                            .and_then(|d| DlqName::parse(&d))
                            .unwrap_or_else(|| self.defaults.dlq.clone());
                        st.move_to_dlq(&id, &dlq, &reason, &token, clock_now);
                        batch.dropped.push(job_id);
                    }
                    ClaimAs::Runnable => {
                        if st.string(&keys::lock(&job_id), clock_now).is_some() {
                            continue;
                        }
                        st.set_string(keys::lock(&job_id), req.worker_id.clone(), Some(after(clock_now, lease_ttl)));
                        st.zrem(&queue_key, &id);
                        st.set_fields(
                            &id,
                            clock_now,
                            &[
                                ("status", JobStatus::Active.as_str().into()),
                                ("start_time", token.clone()),
                                ("worker_id", req.worker_id.clone()),
                            ],
                        );
                        st.zset(&keys::active(&req.worker_id)).add(&id, req.now.timestamp());
                        st.zset(keys::LEASES).add(&id, now_ms.saturating_add(ttl_ms));
                        let fields: HashMap<String, String> =
                            st.hash(&id, clock_now).map(|h| h.clone().into_iter().collect()).unwrap_or_default();
                        let job = Job::from_fields(&id, &fields);
                        let lease = Lease {
                            job_id,
                            worker_id: req.worker_id.clone(),
                            token: token.clone(),
                            queue: req.queue.clone(),
                        };
                        batch.jobs.push(Claimed { lease, job });
                    }
                },
            }
        }
        batch.next_ready =
            st.zsets.get(&queue_key).and_then(ZSet::first).and_then(DateTime::<Utc>::from_timestamp_millis);
        Ok(batch)
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        let (mut st, now) = self.state();
        let expiry = after(now, Duration::from_millis(shared::lease_ms(ttl).unsigned_abs()));
        Ok(leases
            .iter()
            .map(|lease| {
                if !st.holds(lease, now) {
                    return LeaseState::Lost;
                }
                if let Some(lock) = st.strings.get_mut(&keys::lock(&lease.job_id)) {
                    lock.expires_at = Some(expiry);
                }
                st.zset(keys::LEASES).add(lease.job_id.as_str(), epoch_ms(expiry));
                if st.field(lease.job_id.as_str(), "cancel_requested", now).as_deref() == Some("1") {
                    LeaseState::CancelRequested
                } else {
                    LeaseState::Held
                }
            })
            .collect())
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &Json,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, Some(JobStatus::Completed), clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        st.set_fields(
            id,
            clock_now,
            &[
                ("result", shared::result_json(result)),
                ("completion_time", format_timestamp(now)),
                ("status", JobStatus::Completed.as_str().into()),
            ],
        );
        st.add_event(id, clock_now);
        let ttl =
            shared::seconds(st.field(id, "result_ttl_seconds", clock_now).as_deref(), defaults.result_ttl_seconds);
        if ttl > 0 {
            st.expire_job(id, Some(clock_now + TimeDelta::seconds(ttl)));
        } else if ttl == 0 {
            st.expire_job(id, None);
        }
        st.release_unique(id, clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, Some(JobStatus::Retrying), clock_now) {
            if f == Fence::Stale && st.already_recorded(lease, JobStatus::Cancelled, clock_now) {
                return Ok(Fence::Applied);
            }
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        let retries = shared::next_count(st.field(id, "current_retries", clock_now).as_deref());
        if st.cancel_requested(id, clock_now) {
            st.set_fields(id, clock_now, &[("current_retries", retries.to_string()), ("last_error", error.into())]);
            st.end_cancelled(id, clock_now);
            st.end_attempt(lease, clock_now);
            return Ok(Fence::Applied);
        }
        let queue = queue_of(st.field(id, "queue_name", clock_now).as_ref(), &defaults.queue);
        st.set_fields(
            id,
            clock_now,
            &[
                ("current_retries", retries.to_string()),
                ("status", JobStatus::Retrying.as_str().into()),
                ("last_error", error.into()),
                ("next_scheduled_run_time", shared::retry_time_text(ready_at)),
            ],
        );
        st.zset(keys::queue(&queue)).add(id, epoch_ms(ready_at));
        st.end_attempt(lease, clock_now);
        if shared::is_due(ready_at, now) {
            st.publish(&queue);
        }
        Ok(Fence::Applied)
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        count_attempt: bool,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, Some(JobStatus::Failed), clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        if count_attempt {
            let retries = shared::next_count(st.field(id, "current_retries", clock_now).as_deref());
            st.set_fields(id, clock_now, &[("current_retries", retries.to_string())]);
        }
        let dlq = st
            .field(id, "dlq_name", clock_now)
            .and_then(|d| DlqName::parse(&d))
            .unwrap_or_else(|| defaults.dlq.clone());
        st.move_to_dlq(id, &dlq, reason, &format_timestamp(now), clock_now);
        st.release_unique(id, clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, None, clock_now) {
            return Ok(f);
        }
        let id = lease.job_id.as_str();
        if st.cancel_requested(id, clock_now) {
            st.end_cancelled(id, clock_now);
            st.end_attempt(lease, clock_now);
            return Ok(Fence::Applied);
        }
        st.set_fields(id, clock_now, &[("status", JobStatus::Pending.as_str().into())]);
        if let Some(reason) = reason {
            st.set_fields(id, clock_now, &[("last_error", reason.into())]);
        }
        st.del_fields(id, clock_now, &["start_time", "worker_id"]);
        st.zset(keys::queue(&lease.queue)).add(id, epoch_ms(now));
        st.end_attempt(lease, clock_now);
        st.publish(&lease.queue);
        Ok(Fence::Applied)
    }

    async fn finish_cancelled(&self, lease: &Lease, _now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut st, clock_now) = self.state();
        if let Some(f) = st.check_fence(lease, Some(JobStatus::Cancelled), clock_now) {
            return Ok(f);
        }
        st.end_cancelled(lease.job_id.as_str(), clock_now);
        st.end_attempt(lease, clock_now);
        Ok(Fence::Applied)
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        let json = shared::health_json(health)?;
        let (mut st, now) = self.state();
        let expires = after(now, Duration::from_secs(shared::health_ttl(ttl)));
        st.set_string(keys::health(&health.worker_id), json, Some(expires));
        Ok(())
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize, defaults: &JobDefaults) -> Result<Recovery, StoreError> {
        let (mut st, clock_now) = self.state();
        st.sweep(clock_now);
        let now_ms = epoch_ms(now);
        let mut out = Recovery::default();
        let candidates = st.zsets.get(keys::LEASES).map(|z| z.up_to(now_ms, limit)).unwrap_or_default();
        for id in candidates {
            let job_id = JobId::new(id.as_str());
            if let Some(lock) = st.string(&keys::lock(&job_id), clock_now) {
                // Still held: fix the index score to the lock's real expiry.
                let left = lock.expires_at.map_or(60_000, |t| (t - clock_now).num_milliseconds().max(1));
                st.zset(keys::LEASES).add(&id, now_ms.saturating_add(left));
                continue;
            }
            let Some(h) = st.hash(&id, clock_now) else {
                st.zrem(keys::LEASES, &id);
                continue;
            };
            let status = h.get("status").and_then(|s| JobStatus::parse(s));
            let worker = h.get("worker_id").cloned();
            let cancel = h.get("cancel_requested").map(String::as_str) == Some("1");
            if status == Some(JobStatus::Active) && cancel {
                st.end_cancelled(&id, clock_now);
                out.cancelled.push(job_id);
            } else if status == Some(JobStatus::Active) {
                let attempt = shared::next_count(h.get("current_retries").map(String::as_str));
                let max = count(h.get("max_retries"), i64::from(defaults.max_retries));
                let queue = queue_of(h.get("queue_name"), &defaults.queue);
                let dlq = h.get("dlq_name").and_then(|d| DlqName::parse(d)).unwrap_or_else(|| defaults.dlq.clone());
                h.insert("current_retries".into(), attempt.to_string());
                if attempt >= max {
                    let reason = messages::worker_lost(
                        u32::try_from(attempt).unwrap_or(u32::MAX),
                        u32::try_from(max.max(0)).unwrap_or(u32::MAX),
                    );
                    st.move_to_dlq(&id, &dlq, &reason, &format_timestamp(now), clock_now);
                    st.release_unique(&id, clock_now);
                    out.dead_lettered.push(job_id);
                } else {
                    st.set_fields(
                        &id,
                        clock_now,
                        &[
                            ("status", JobStatus::Pending.as_str().into()),
                            ("last_error", messages::RECOVERED.into()),
                            ("next_scheduled_run_time", format_timestamp(now)),
                        ],
                    );
                    st.del_fields(&id, clock_now, &["start_time", "worker_id"]);
                    st.zset(keys::queue(&queue)).add(&id, now_ms);
                    st.publish(&queue);
                    out.requeued.push(job_id);
                }
            }
            if let Some(w) = worker.filter(|w| !w.is_empty()) {
                st.zrem(&keys::active(&w), &id);
            }
            st.zrem(keys::LEASES, &id);
        }
        Ok(out)
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        let (tx, rx) = mpsc::channel(READY_BUFFER);
        self.lock().ready.push(tx);
        Ok(rx)
    }

    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        Ok(self.lock().paused.insert(keys::queue(queue).to_owned()))
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        let mut st = self.lock();
        st.publish(queue);
        Ok(st.paused.remove(keys::queue(queue)))
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        Ok(self.lock().paused.iter().map(|q| QueueName::new(q)).collect())
    }

    async fn cancel(&self, id: &JobId, _now: DateTime<Utc>) -> Result<CancelResult, StoreError> {
        let (mut st, clock_now) = self.state();
        let default_queue = self.defaults.queue.clone();
        let Some(h) = st.hash(id.as_str(), clock_now) else { return Ok(CancelResult::NotFound) };
        let status = h.get("status").and_then(|s| JobStatus::parse(s));
        match status {
            Some(JobStatus::Pending | JobStatus::Retrying) => {
                let queue = queue_of(h.get("queue_name"), &default_queue);
                st.zrem(keys::queue(&queue), id.as_str());
                st.end_cancelled(id.as_str(), clock_now);
                Ok(CancelResult::Cancelled)
            }
            Some(JobStatus::Active) => {
                h.insert("cancel_requested".into(), "1".into());
                st.signal(&Signal::Cancel(id.clone()));
                Ok(CancelResult::CancelRequested)
            }
            other => Ok(CancelResult::NotCancellable(other)),
        }
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        Ok(self.lock().zsets.get(keys::queue(queue)).map_or(0, |z| z.scores.len() as u64))
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        Ok(self
            .lock()
            .lists
            .get(keys::dlq(dlq))
            .map(|l| l.iter().skip(offset).take(limit).map(|i| JobId::new(i.as_str())).collect())
            .unwrap_or_default())
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (mut st, clock_now) = self.state();
        let exists = st.has_hash(id.as_str(), clock_now);
        let removed = match st.lists.get_mut(keys::dlq(dlq)) {
            Some(list) => match list.iter().position(|i| i == id.as_str()) {
                Some(at) => {
                    list.remove(at);
                    if list.is_empty() {
                        st.lists.remove(keys::dlq(dlq));
                    }
                    true
                }
                None => false,
            },
            None => false,
        };
        if !removed || !exists {
            return Ok(false);
        }
        st.set_fields(
            id.as_str(),
            clock_now,
            &[
                ("status", JobStatus::Pending.as_str().into()),
                ("queue_name", target.as_str().into()),
                ("current_retries", "0".into()),
                ("next_scheduled_run_time", format_timestamp(now)),
            ],
        );
        st.del_fields(id.as_str(), clock_now, &["completion_time", "cancel_requested"]);
        if let Some(h) = st.hashes.get_mut(id.as_str()) {
            h.expires_at = None;
        }
        st.zset(keys::queue(target)).add(id.as_str(), epoch_ms(now));
        st.publish(target);
        Ok(true)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        let st = self.lock();
        let mut out: Vec<QueueInfo> = st
            .zsets
            .iter()
            .filter(|(key, z)| key.starts_with(QueueName::PREFIX) && !z.scores.is_empty())
            .map(|(key, z)| QueueInfo {
                queue: QueueName::new(key),
                len: z.scores.len() as u64,
                oldest: z.first().and_then(DateTime::<Utc>::from_timestamp_millis),
                newest: z.order.last().and_then(|(s, _)| DateTime::<Utc>::from_timestamp_millis(*s)),
            })
            .collect();
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        let st = self.lock();
        Ok(st
            .zsets
            .get(keys::queue(queue))
            .map(|z| {
                z.order
                    .iter()
                    .skip(offset)
                    .take(limit)
                    .filter_map(|(s, m)| Some((JobId::new(m.as_str()), DateTime::<Utc>::from_timestamp_millis(*s)?)))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        let (mut st, now) = self.state();
        st.sweep(now);
        let mut out: Vec<WorkerRecord> = st
            .strings
            .iter()
            .filter_map(|(key, value)| {
                let worker_id = key.strip_prefix(keys::HEALTH_PREFIX)?;
                Some(WorkerRecord {
                    worker_id: worker_id.to_owned(),
                    health: serde_json::from_str(&value.value).ok(),
                    ttl: value.expires_at.map(|t| (t - now).to_std().unwrap_or_default()),
                })
            })
            .collect();
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let (mut st, now) = self.state();
        st.sweep(now);
        let ids = st.hashes.keys().map(|k| JobId::new(k.as_str()));
        Ok(if limit == 0 { ids.collect() } else { ids.take(limit).collect() })
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        let (mut st, now) = self.state();
        let mut taken = 0u64;
        for id in ids {
            let id = id.as_str();
            // LREM 1: the first entry from the newest end.
            let Some(list) = st.lists.get_mut(keys::dlq(dlq)) else { break };
            let Some(at) = list.iter().position(|i| i == id) else { continue };
            list.remove(at);
            let id = id.to_owned();
            taken += 1;
            let failed = st.field(&id, "status", now).is_some_and(|s| JobStatus::parse(&s) == Some(JobStatus::Failed));
            if failed {
                st.hashes.remove(&id);
                st.streams.remove(&id);
            }
        }
        if st.lists.get(keys::dlq(dlq)).is_some_and(VecDeque::is_empty) {
            st.lists.remove(keys::dlq(dlq));
        }
        Ok(taken)
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        let (mut st, now) = self.state();
        let expires_at = st.string(&keys::unique_lock(key), now).and_then(|lock| lock.expires_at);
        Ok(expires_at.and_then(|t| (t - now).to_std().ok()).filter(|left| !left.is_zero()))
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        shared::cron_entry(entry)?;
        let st = self.lock();
        let secs = st.zsets.get(keys::CRON_TICKS).and_then(|z| z.scores.get(entry).copied());
        Ok(secs.and_then(|s| DateTime::from_timestamp(s, 0)))
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        shared::cron_entry(entry)?;
        let mut st = self.lock();
        let ticks = st.zset(keys::CRON_TICKS);
        if ticks.scores.get(entry).is_none_or(|recorded| *recorded < tick.timestamp()) {
            ticks.add(entry, tick.timestamp());
        }
        Ok(())
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        Ok(self.lock().lists.get(keys::dlq(dlq)).map_or(0, |l| l.len() as u64))
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        let (mut st, now) = self.state();
        if !st.has_hash(id.as_str(), now) {
            st.hashes.insert(id.as_str().to_owned(), Expiring::forever(BTreeMap::new()));
        }
        if let Some(h) = st.hash(id.as_str(), now) {
            h.extend(fields.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        Ok(())
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        let (mut st, now) = self.state();
        st.sweep(now);
        let pattern = pattern.as_bytes();
        let hit = |key: &str| glob_match(pattern, key.as_bytes());
        let hashes: Vec<String> =
            st.hashes.keys().filter(|id| hit(&keys::job(&JobId::new(id.as_str())))).cloned().collect();
        let streams: Vec<String> =
            st.streams.keys().filter(|id| hit(&keys::events(&JobId::new(id.as_str())))).cloned().collect();
        let strings: Vec<String> = st.strings.keys().filter(|k| hit(k)).cloned().collect();
        let zsets: Vec<String> =
            st.zsets.iter().filter(|(k, z)| !z.scores.is_empty() && hit(k)).map(|(k, _)| k.clone()).collect();
        let lists: Vec<String> =
            st.lists.iter().filter(|(k, l)| !l.is_empty() && hit(k)).map(|(k, _)| k.clone()).collect();
        let paused = !st.paused.is_empty() && hit(keys::PAUSED);
        let total = hashes.len() + streams.len() + strings.len() + zsets.len() + lists.len() + usize::from(paused);
        if !dry_run {
            for id in &hashes {
                st.hashes.remove(id);
            }
            for id in &streams {
                st.streams.remove(id);
            }
            for k in &strings {
                st.strings.remove(k);
            }
            for k in &zsets {
                st.zsets.remove(k);
            }
            for k in &lists {
                st.lists.remove(k);
            }
            if paused {
                st.paused.clear();
            }
        }
        Ok(total as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ClaimRequest;

    #[tokio::test]
    async fn a_status_nobody_writes_is_quarantined_at_claim_unrun() {
        let store = MemoryStore::new();
        let now = SystemClock.now();
        let queue = QueueName::new("q");
        for id in ["odd", "fine"] {
            let job = NewJob {
                id: JobId::new(id),
                function_name: "f".into(),
                params: Default::default(),
                queue: queue.clone(),
                enqueue_time: now,
                scheduled_time: now,
                max_retries: 3,
                job_timeout_seconds: 30,
                result_ttl_seconds: 60,
                trace_context: Default::default(),
                correlation_context: Default::default(),
                unique_key: None,
            };
            store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        }
        {
            let (mut st, clock_now) = store.state();
            st.set_fields("odd", clock_now, &[("status", "BANANA".into())]);
        }
        let req = ClaimRequest {
            queue,
            worker_id: "w".into(),
            max: 5,
            now,
            lease_ttl: Duration::from_secs(30),
            max_payload_bytes: usize::MAX,
        };
        let batch = store.claim(req).await.unwrap();
        assert_eq!(batch.jobs.iter().map(|c| c.lease.job_id.as_str()).collect::<Vec<_>>(), ["fine"]);
        assert_eq!(batch.dropped, [JobId::new("odd")]);
        let odd = store.job(&JobId::new("odd")).await.unwrap().unwrap().unwrap();
        assert_eq!(odd.status, Some(JobStatus::Failed));
        assert_eq!(
            odd.last_error.as_deref(),
            Some("job field `status` is invalid (\"BANANA\"): not a known job status")
        );
        assert_eq!((odd.current_retries, odd.start_time), (0, None), "no attempt was made");
        assert_eq!(store.dlq_ids(&DlqName::new("default"), 0, 10).await.unwrap(), [JobId::new("odd")]);
    }
}
