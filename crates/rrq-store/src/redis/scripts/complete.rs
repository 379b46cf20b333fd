//! `complete.lua`: records the success of one or more attempts, each fenced
//! on its own lease (the batching task in `batch.rs` sends them together).
//! The unique lock a job holds is named by its `job_unique_key` field, read
//! only in the script: its prefix is a KEYS entry.

use fred::prelude::*;
use rrq_protocol::JobId;

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::{self, Layout};
use crate::redis::reply;
use crate::store::Fence;

/// KEYS[1] the lease index and KEYS[2] the unique-lock prefix, then the
/// attempts (all of the first attempt's shard).
pub(crate) struct Complete {
    pub attempts: Vec<Attempt>,
}

/// One attempt: four KEYS (job, lock, the worker's active set, events
/// stream) and seven ARGV.
pub(crate) struct Attempt {
    pub layout: Layout,
    pub id: JobId,
    pub worker: String,
    pub token: String,
    /// Compact JSON.
    pub result: String,
    /// RFC 3339.
    pub completion_time: String,
    /// Seconds, for a job without `result_ttl_seconds`.
    pub default_result_ttl: i64,
    /// How long the events stream outlives the success, in ms.
    pub events_ttl_ms: u64,
}

impl LuaScript for Complete {
    const OP: &'static str = "complete";
    /// One answer per attempt, in order.
    type Reply = Vec<Result<Fence, StoreError>>;

    lua_source!("complete.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(2 + 4 * self.attempts.len());
        let mut args = Vec::with_capacity(7 * self.attempts.len());
        if let Some(first) = self.attempts.first() {
            let shard = first.layout.shard_of(&first.id);
            keys.extend([first.layout.leases(shard), first.layout.on_shard(shard, keys::UNIQUE_LOCK_PREFIX)]);
        }
        for a in self.attempts {
            let (layout, shard) = (&a.layout, a.layout.shard_of(&a.id));
            keys.extend([layout.job(&a.id), layout.lock(&a.id), layout.active(&a.worker, shard), layout.events(&a.id)]);
            args.extend([
                a.id.into_string().into(),
                a.worker.into(),
                a.token.into(),
                a.result.into(),
                a.completion_time.into(),
                a.default_result_ttl.into(),
                a.events_ttl_ms.to_string().into(),
            ]);
        }
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        Ok(reply::array(Self::OP, reply)?.iter().map(|code| super::fence(Self::OP, code)).collect())
    }
}
