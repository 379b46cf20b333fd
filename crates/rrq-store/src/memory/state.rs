//! The data model: the handful of Redis types RRQ uses (hashes, strings
//! with expiry, sorted sets, lists, streams), with the same expiry rules,
//! and the basic reads and writes on them.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rrq_protocol::QueueName;
use tokio::sync::{Notify, mpsc};

use crate::clock::epoch_ms;
use crate::job::NewJob;
use crate::keys;
use crate::shared;
use crate::store::Signal;

#[derive(Debug, Default)]
pub(super) struct State {
    /// Job hashes by job id.
    pub(super) hashes: HashMap<String, Expiring<BTreeMap<String, String>>>,
    /// String keys (locks, dedup keys, unique locks, health) by full key.
    pub(super) strings: HashMap<String, Expiring<String>>,
    /// Sorted sets (queues, active sets, the lease index) by full key.
    pub(super) zsets: HashMap<String, ZSet>,
    /// Lists (DLQs) by full key.
    pub(super) lists: HashMap<String, VecDeque<String>>,
    /// Event streams by job id.
    pub(super) streams: HashMap<String, Expiring<Vec<StreamId>>>,
    /// The id of the last event appended anywhere (ids only grow).
    pub(super) last_event: StreamId,
    /// Paused full queue keys.
    pub(super) paused: BTreeSet<String>,
    /// Ready-signal subscribers.
    pub(super) ready: Vec<mpsc::Sender<Signal>>,
    /// Woken by every appended event ([`InspectStore::wait_job_event`](crate::InspectStore::wait_job_event) waits on it).
    pub(super) appended: Arc<Notify>,
}

#[derive(Debug)]
pub(super) struct Expiring<T> {
    pub(super) value: T,
    pub(super) expires_at: Option<DateTime<Utc>>,
}

impl<T> Expiring<T> {
    pub(super) fn forever(value: T) -> Self {
        Expiring { value, expires_at: None }
    }

    pub(super) fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_none_or(|t| t > now)
    }
}

/// A stream entry id: milliseconds and a sequence number.
pub(super) type StreamId = (i64, u64);

pub(super) fn parse_stream_id(s: &str) -> Option<StreamId> {
    let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// A sorted set ordered like Redis: by score, then by member.
#[derive(Debug, Default)]
pub(super) struct ZSet {
    pub(super) scores: HashMap<String, i64>,
    pub(super) order: BTreeSet<(i64, String)>,
}

impl ZSet {
    pub(super) fn add(&mut self, member: &str, score: i64) {
        if let Some(old) = self.scores.insert(member.to_owned(), score) {
            self.order.remove(&(old, member.to_owned()));
        }
        self.order.insert((score, member.to_owned()));
    }

    pub(super) fn remove(&mut self, member: &str) -> bool {
        match self.scores.remove(member) {
            Some(old) => self.order.remove(&(old, member.to_owned())),
            None => false,
        }
    }

    /// Members with a score at or below `max`, lowest first.
    pub(super) fn up_to(&self, max: i64, limit: usize) -> Vec<String> {
        self.order.iter().take_while(|(s, _)| *s <= max).take(limit).map(|(_, m)| m.clone()).collect()
    }

    pub(super) fn first(&self) -> Option<i64> {
        self.order.first().map(|(s, _)| *s)
    }
}

pub(super) fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(d).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A stored count, as the scripts read it (`count` in redis/scripts/common.lua).
pub(super) fn count(value: Option<&String>, fallback: i64) -> i64 {
    shared::count(value.map(String::as_str), fallback)
}

/// A stored queue name, normalised; `fallback` when missing or blank.
pub(super) fn queue_of(value: Option<&String>, fallback: &QueueName) -> QueueName {
    value.and_then(|v| QueueName::parse(v)).unwrap_or_else(|| fallback.clone())
}

/// Whether `s` matches the Redis glob `p`: `*`, `?`, `[abc]`, `[^a-z]` and
/// `\x` escapes, byte-wise like Redis' `stringmatchlen`.
impl State {
    pub(super) fn hash(&mut self, id: &str, now: DateTime<Utc>) -> Option<&mut BTreeMap<String, String>> {
        if self.hashes.get(id).is_some_and(|h| !h.is_live(now)) {
            self.hashes.remove(id);
            self.streams.remove(id);
        }
        self.hashes.get_mut(id).map(|h| &mut h.value)
    }

    pub(super) fn has_hash(&mut self, id: &str, now: DateTime<Utc>) -> bool {
        self.hash(id, now).is_some()
    }

    pub(super) fn string(&mut self, key: &str, now: DateTime<Utc>) -> Option<&Expiring<String>> {
        if self.strings.get(key).is_some_and(|s| !s.is_live(now)) {
            self.strings.remove(key);
        }
        self.strings.get(key)
    }

    pub(super) fn string_value(&mut self, key: &str, now: DateTime<Utc>) -> Option<String> {
        self.string(key, now).map(|s| s.value.clone())
    }

    pub(super) fn set_string(&mut self, key: String, value: String, expires_at: Option<DateTime<Utc>>) {
        self.strings.insert(key, Expiring { value, expires_at });
    }

    pub(super) fn zset(&mut self, key: &str) -> &mut ZSet {
        self.zsets.entry(key.to_owned()).or_default()
    }

    pub(super) fn zrem(&mut self, key: &str, member: &str) -> bool {
        let Some(z) = self.zsets.get_mut(key) else { return false };
        let removed = z.remove(member);
        if z.scores.is_empty() {
            self.zsets.remove(key);
        }
        removed
    }

    pub(super) fn field(&mut self, id: &str, name: &str, now: DateTime<Utc>) -> Option<String> {
        self.hash(id, now).and_then(|h| h.get(name).cloned())
    }

    pub(super) fn set_fields(&mut self, id: &str, now: DateTime<Utc>, pairs: &[(&str, String)]) {
        if let Some(h) = self.hash(id, now) {
            for (k, v) in pairs {
                h.insert((*k).to_owned(), v.clone());
            }
        }
    }

    pub(super) fn del_fields(&mut self, id: &str, now: DateTime<Utc>, names: &[&str]) {
        if let Some(h) = self.hash(id, now) {
            for n in names {
                h.remove(*n);
            }
        }
    }

    /// Sets (or clears, with `None`) the expiry of a job hash and its stream.
    pub(super) fn expire_job(&mut self, id: &str, expires_at: Option<DateTime<Utc>>) {
        if let Some(h) = self.hashes.get_mut(id) {
            h.expires_at = expires_at;
        }
        if let Some(s) = self.streams.get_mut(id) {
            s.expires_at = expires_at;
        }
    }

    pub(super) fn add_event(&mut self, id: &str, clock_now: DateTime<Utc>) {
        let ms = epoch_ms(clock_now);
        let (last_ms, last_seq) = self.last_event;
        self.last_event = if ms > last_ms { (ms, 0) } else { (last_ms, last_seq + 1) };
        let event = self.last_event;
        self.streams.entry(id.to_owned()).or_insert_with(|| Expiring::forever(Vec::new())).value.push(event);
        self.appended.notify_waiters();
    }

    pub(super) fn publish(&mut self, queue: &QueueName) {
        self.signal(&Signal::Ready(queue.clone()));
    }

    pub(super) fn signal(&mut self, signal: &Signal) {
        self.ready.retain(|tx| !matches!(tx.try_send(signal.clone()), Err(mpsc::error::TrySendError::Closed(_))));
    }

    /// Writes a new job's hash and queue entry; whether it is ready at once.
    pub(super) fn insert_job(&mut self, job: &NewJob) -> bool {
        let fields = job.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        self.hashes.insert(job.id.as_str().to_owned(), Expiring::forever(fields));
        self.zset(keys::queue(&job.queue)).add(job.id.as_str(), epoch_ms(job.scheduled_time));
        shared::ready_at_enqueue(job)
    }

    /// [`State::insert_job`], and a ready signal when the job is ready now.
    pub(super) fn write_job(&mut self, job: &NewJob) {
        if self.insert_job(job) {
            self.publish(&job.queue);
        }
    }

    /// Drops every expired job hash and stream (the keys Redis would expire).
    pub(super) fn sweep(&mut self, now: DateTime<Utc>) {
        self.hashes.retain(|_, h| h.is_live(now));
        self.streams.retain(|_, s| s.is_live(now));
        self.strings.retain(|_, s| s.is_live(now));
    }
}
