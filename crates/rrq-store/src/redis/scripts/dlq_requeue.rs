//! `dlq_requeue.lua`: a failed job from a DLQ back to a queue, with a fresh
//! attempt budget.

use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::Layout;
use crate::redis::reply;

/// Every key is on the job's shard.
pub(crate) struct DlqRequeue<'a> {
    pub layout: &'a Layout,
    /// KEYS[1]
    pub dlq: &'a DlqName,
    /// KEYS[2]
    pub queue: &'a QueueName,
    /// KEYS[3] (the job) and ARGV[1]
    pub id: &'a JobId,
    /// ARGV[2]: epoch ms.
    pub now_ms: i64,
    /// ARGV[3]: RFC 3339.
    pub now_text: String,
}

impl LuaScript for DlqRequeue<'_> {
    const OP: &'static str = "dlq_requeue";
    /// Whether the job was re-queued.
    type Reply = bool;

    lua_source!("dlq_requeue.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (layout, shard) = (self.layout, self.layout.shard_of(self.id));
        let keys = vec![layout.dlq(self.dlq, shard), layout.queue(self.queue, shard), layout.job(self.id)];
        let args =
            vec![self.id.as_str().into(), self.now_ms.into(), self.now_text.into(), layout.ready_channel(shard).into()];
        (keys, args)
    }

    fn decode(reply: Value) -> Result<bool, StoreError> {
        Ok(reply::int(Self::OP, &reply)? == 1)
    }
}
