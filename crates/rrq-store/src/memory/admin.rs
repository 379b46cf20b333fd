//! Operators' verbs: pause and resume, cancel, DLQ requeue and purge
//! (twins of `cancel.lua`, `dlq_requeue.lua`, `dlq_purge.lua`), and the
//! debug verbs.

use std::collections::{BTreeMap, VecDeque};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};

use super::MemoryStore;
use super::state::{Expiring, queue_of};
use crate::clock::{epoch_ms, format_timestamp};
use crate::error::StoreError;
use crate::job::JobStatus;
use crate::keys;
use crate::store::{AdminStore, CancelResult, Signal};

#[async_trait]
impl AdminStore for MemoryStore {
    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        Ok(self.lock().paused.insert(keys::queue(queue).to_owned()))
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        let mut st = self.lock();
        st.publish(queue);
        Ok(st.paused.remove(keys::queue(queue)))
    }

    async fn cancel(&self, id: &JobId) -> Result<CancelResult, StoreError> {
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
