//! `release.lua`: puts a claimed job back on its queue without counting an
//! attempt (fenced). The unique lock is named by a job field, read only in
//! the script: its prefix is a KEYS entry.

use fred::prelude::*;
use rrq_protocol::QueueName;

use super::{Fenced, LuaScript, flag};
use crate::error::StoreError;
use crate::keys;
use crate::store::Fence;

pub(crate) struct Release {
    /// KEYS[1-4] and KEYS[6] (events stream), ARGV[1-3].
    pub fenced: Fenced,
    /// KEYS[5] (on the job's shard): the queue it was claimed from.
    pub queue: QueueName,
    /// ARGV[4-5]: written as `last_error` when given.
    pub reason: Option<String>,
    /// ARGV[6]: epoch ms.
    pub now_ms: i64,
}

impl LuaScript for Release {
    const OP: &'static str = "release";
    type Reply = Fence;

    lua_source!("release.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, mut args) = self.fenced.head();
        keys.extend([
            self.fenced.at(self.queue.as_str()),
            self.fenced.events_key(),
            self.fenced.at(keys::UNIQUE_LOCK_PREFIX),
        ]);
        args.extend([
            flag(self.reason.is_some()),
            self.reason.unwrap_or_default().into(),
            self.now_ms.into(),
            self.fenced.ready_channel().into(),
        ]);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Fence, StoreError> {
        super::fence(Self::OP, &reply)
    }
}
