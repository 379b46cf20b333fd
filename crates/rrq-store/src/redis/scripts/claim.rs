//! `claim.lua`: takes up to `max` ready jobs of one queue.
//!
//! The ids come out of the queue only while the script runs, so the keys
//! named by them (job hash, lock, events stream, quarantine copy, the DLQ
//! or queue a job field names, the unique lock) cannot be listed in KEYS
//! beforehand: their prefixes are KEYS entries instead. With one hash tag
//! in every prefix, all of them fall in one Redis Cluster slot.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};

use super::{LuaScript, flag};
use crate::error::StoreError;
use crate::keys::{self, Layout, Shard};
use crate::redis::reply::{self, protocol};

#[derive(Clone)]
pub(crate) struct Claim {
    /// Every key is on the claimed shard.
    pub layout: Layout,
    pub shard: Shard,
    /// KEYS[1]
    pub queue: QueueName,
    /// KEYS[5]: where broken jobs are quarantined.
    pub default_dlq: DlqName,
    /// ARGV[1], and KEYS[2] (the worker's active set).
    pub worker: String,
    /// ARGV[2]: epoch ms.
    pub now_ms: i64,
    /// ARGV[3]
    pub max: usize,
    /// ARGV[4]
    pub lease_ttl_ms: i64,
    /// ARGV[5]: the attempt's token (its `start_time`); ARGV[8] is the same
    /// text, as "now" in messages.
    pub token: String,
    /// ARGV[6]: epoch seconds.
    pub start_score: i64,
    /// ARGV[7]: epoch ms.
    pub lock_expiry: i64,
    /// ARGV[9]: this call repeats one whose reply was lost, with the same
    /// token: hand out again what that run took.
    pub replay: bool,
    /// ARGV[10]
    pub max_payload_bytes: usize,
}

/// What a claim took.
pub(crate) struct ClaimReply {
    /// The queue is paused (nothing was taken).
    pub paused: bool,
    /// The claimed jobs, with their hash as it is now.
    pub claimed: Vec<(JobId, HashMap<String, String>)>,
    /// Ids taken off the queue without running.
    pub dropped: Vec<JobId>,
    /// When the queue's next job becomes ready.
    pub head: Option<DateTime<Utc>>,
}

impl LuaScript for Claim {
    const OP: &'static str = "claim";
    type Reply = ClaimReply;

    lua_source!("claim.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (layout, shard) = (&self.layout, self.shard);
        let at = |name: &str| layout.on_shard(shard, name);
        let keys = vec![
            layout.queue(&self.queue, shard),
            layout.active(&self.worker, shard),
            layout.leases(shard),
            layout.paused(shard),
            layout.dlq(&self.default_dlq, shard),
            at(keys::JOB_PREFIX),
            at(keys::LOCK_PREFIX),
            at(keys::QUARANTINE_PREFIX),
            at(keys::EVENTS_PREFIX),
            at(QueueName::PREFIX),
            at(keys::UNIQUE_LOCK_PREFIX),
            at(DlqName::PREFIX),
        ];
        let args = vec![
            self.worker.into(),
            self.now_ms.into(),
            self.max.to_string().into(),
            self.lease_ttl_ms.into(),
            self.token.as_str().into(),
            self.start_score.into(),
            self.lock_expiry.into(),
            self.token.into(),
            flag(self.replay),
            self.max_payload_bytes.to_string().into(),
        ];
        (keys, args)
    }

    fn decode(reply: Value) -> Result<ClaimReply, StoreError> {
        const OP: &str = Claim::OP;
        let mut it = reply::array(OP, reply)?.into_iter();
        let (Some(paused), Some(claimed), Some(dropped), Some(head)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(protocol(OP, "expected {paused, claimed, dropped, head}"));
        };
        let mut jobs = Vec::new();
        let mut claimed = reply::array(OP, claimed)?.into_iter();
        while let (Some(id), Some(hash)) = (claimed.next(), claimed.next()) {
            jobs.push((reply::job_id(OP, &id)?, reply::fields(OP, hash)?));
        }
        Ok(ClaimReply {
            paused: reply::int(OP, &paused)? == 1,
            claimed: jobs,
            dropped: reply::ids(OP, dropped)?,
            head: reply::score_time(&head),
        })
    }
}
