//! `cancel.lua`: cancels a waiting job, or flags a running one and signals
//! its worker. The job's queue and unique lock are named by its fields,
//! read only in the script: their prefixes are KEYS entries.

use fred::prelude::*;
use rrq_protocol::{JobId, QueueName};

use super::LuaScript;
use crate::error::StoreError;
use crate::job::JobStatus;
use crate::keys::{self, Layout};
use crate::redis::reply::{self, protocol};
use crate::store::CancelResult;

pub(crate) struct Cancel<'a> {
    /// Every key is on the job's shard.
    pub layout: &'a Layout,
    /// KEYS[1] and KEYS[3] (job and events stream), ARGV[1].
    pub id: &'a JobId,
    /// KEYS[2]: for a job without `queue_name`.
    pub default_queue: &'a QueueName,
}

impl LuaScript for Cancel<'_> {
    const OP: &'static str = "cancel";
    type Reply = CancelResult;

    lua_source!("cancel.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (layout, shard) = (self.layout, self.layout.shard_of(self.id));
        let keys = vec![
            layout.job(self.id),
            layout.queue(self.default_queue, shard),
            layout.events(self.id),
            layout.on_shard(shard, QueueName::PREFIX),
            layout.on_shard(shard, keys::UNIQUE_LOCK_PREFIX),
        ];
        let args = vec![self.id.as_str().into(), Value::from_static_str(keys::CANCEL_CHANNEL)];
        (keys, args)
    }

    fn decode(reply: Value) -> Result<CancelResult, StoreError> {
        const OP: &str = Cancel::OP;
        let reply = reply::array(OP, reply)?;
        let code = reply::int(OP, reply.first().ok_or_else(|| protocol(OP, "empty reply"))?)?;
        let status = reply.get(1).and_then(reply::text).and_then(|s| JobStatus::parse(&s));
        match code {
            1 => Ok(CancelResult::Cancelled),
            2 => Ok(CancelResult::CancelRequested),
            0 => Ok(CancelResult::NotFound),
            3 => Ok(CancelResult::NotCancellable(status)),
            n => Err(protocol(OP, format!("unknown cancel code {n}"))),
        }
    }
}
