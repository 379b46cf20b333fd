//! `recover.lua`: re-queues, dead-letters or ends CANCELLED the running jobs
//! whose lock expired, found through the lease index.
//!
//! The ids come out of the lease index only while the script runs, so the
//! keys named by them (job, lock, the worker's active set, events stream,
//! the queue or DLQ a job field names, the unique lock) cannot be listed
//! in KEYS beforehand: their prefixes are KEYS entries instead. With one
//! hash tag in every prefix, all of them fall in one Redis Cluster slot.

use fred::prelude::*;
use rrq_protocol::{DlqName, QueueName};

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::{self, Layout, Shard};
use crate::redis::reply::{self, protocol};
use crate::store::Recovery;

pub(crate) struct Recover {
    /// Every key is on the recovered shard (KEYS[1]: its lease index).
    pub layout: Layout,
    pub shard: Shard,
    /// KEYS[2]: for a job without `queue_name`.
    pub default_queue: QueueName,
    /// KEYS[3]: for a job without `dlq_name`.
    pub default_dlq: DlqName,
    /// ARGV[1]: epoch ms.
    pub now_ms: i64,
    /// ARGV[2]
    pub limit: usize,
    /// ARGV[3]: RFC 3339.
    pub now_text: String,
    /// ARGV[4]: for a job without `max_retries`.
    pub default_max_retries: u32,
}

impl LuaScript for Recover {
    const OP: &'static str = "recover";
    type Reply = Recovery;

    lua_source!("recover.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (layout, shard) = (&self.layout, self.shard);
        let at = |name: &str| layout.on_shard(shard, name);
        let keys = vec![
            layout.leases(shard),
            layout.queue(&self.default_queue, shard),
            layout.dlq(&self.default_dlq, shard),
            at(keys::JOB_PREFIX),
            at(keys::LOCK_PREFIX),
            at(keys::ACTIVE_PREFIX),
            at(keys::EVENTS_PREFIX),
            at(QueueName::PREFIX),
            at(DlqName::PREFIX),
            at(keys::UNIQUE_LOCK_PREFIX),
        ];
        let args = vec![
            self.now_ms.into(),
            self.limit.to_string().into(),
            self.now_text.into(),
            i64::from(self.default_max_retries).into(),
            layout.ready_channel(shard).into(),
        ];
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Recovery, StoreError> {
        const OP: &str = Recover::OP;
        let mut it = reply::array(OP, reply)?.into_iter();
        let (Some(requeued), Some(dead), Some(cancelled)) = (it.next(), it.next(), it.next()) else {
            return Err(protocol(OP, "expected {requeued, dead_lettered, cancelled}"));
        };
        Ok(Recovery {
            requeued: reply::ids(OP, requeued)?,
            dead_lettered: reply::ids(OP, dead)?,
            cancelled: reply::ids(OP, cancelled)?,
        })
    }
}
