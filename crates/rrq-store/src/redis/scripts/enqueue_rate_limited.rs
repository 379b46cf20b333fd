//! `enqueue_rate_limited.lua`: an enqueue behind a leading-edge rate limit.

use fred::prelude::*;

use super::{LuaScript, NewJobCall};
use crate::error::StoreError;
use crate::redis::reply;
use crate::store::Enqueued;

pub(crate) struct EnqueueRateLimited {
    /// KEYS[1-2], ARGV[1-5] (ARGV[3]: the window, whole seconds > 0) and the
    /// fields from ARGV[6].
    pub job: NewJobCall,
    /// KEYS[3]
    pub limit_key: String,
}

impl LuaScript for EnqueueRateLimited {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    lua_source!("enqueue_rate_limited.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, mut args, fields) = self.job.head();
        keys.push(self.limit_key);
        super::push_fields(&mut args, fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
