//! `retry.lua`: counts a failed attempt and schedules the next one (fenced).
//! The job's queue and unique lock are named by its fields, read only in
//! the script: their prefixes are KEYS entries.

use fred::prelude::*;
use rrq_protocol::QueueName;

use super::{Fenced, LuaScript};
use crate::error::StoreError;
use crate::keys;
use crate::store::Fence;

pub(crate) struct Retry {
    /// KEYS[1-4] and KEYS[5] (events stream), ARGV[1-3].
    pub fenced: Fenced,
    /// KEYS[6] (on the job's shard): for a job without `queue_name`.
    pub default_queue: QueueName,
    /// ARGV[4]
    pub error: String,
    /// ARGV[5]: epoch ms.
    pub ready_ms: i64,
    /// ARGV[6]: RFC 3339, ms precision.
    pub ready_text: String,
    /// ARGV[7]: epoch ms.
    pub now_ms: i64,
}

impl LuaScript for Retry {
    const OP: &'static str = "retry";
    type Reply = Fence;

    lua_source!("retry.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, mut args) = self.fenced.head();
        keys.extend([
            self.fenced.events_key(),
            self.fenced.at(self.default_queue.as_str()),
            self.fenced.at(QueueName::PREFIX),
            self.fenced.at(keys::UNIQUE_LOCK_PREFIX),
        ]);
        args.extend([
            self.error.into(),
            self.ready_ms.into(),
            self.ready_text.into(),
            self.now_ms.into(),
            self.fenced.ready_channel().into(),
        ]);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Fence, StoreError> {
        super::fence(Self::OP, &reply)
    }
}
