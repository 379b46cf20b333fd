//! `enqueue_unique.lua`: an enqueue under the orchestrator unique lock.

use fred::prelude::*;

use super::{LuaScript, NewJobCall};
use crate::error::StoreError;
use crate::redis::reply;
use crate::store::Enqueued;

pub(crate) struct EnqueueUnique {
    /// KEYS[1-2], ARGV[1-5] (ARGV[3]: the lock's TTL, whole seconds) and the
    /// fields from ARGV[7].
    pub job: NewJobCall,
    /// KEYS[3]
    pub lock_key: String,
    /// ARGV[6]: epoch ms.
    pub enqueue_time: i64,
}

impl LuaScript for EnqueueUnique {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    lua_source!("enqueue_unique.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, mut args, fields) = self.job.head();
        keys.push(self.lock_key);
        args.push(self.enqueue_time.into());
        super::push_fields(&mut args, fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
