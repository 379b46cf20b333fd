//! `enqueue_debounced.lua`: an enqueue folded into the pending job that holds
//! the debounce key (trailing edge). The holder's id and its old queue are
//! learnt only in the script: the job and queue prefixes are KEYS entries.

use fred::prelude::*;
use rrq_protocol::QueueName;

use super::{LuaScript, NewJobCall, flag};
use crate::error::StoreError;
use crate::keys;
use crate::redis::reply;
use crate::store::Enqueued;

pub(crate) struct EnqueueDebounced {
    /// KEYS[1-2], ARGV[1-5] (ARGV[3]: the window, whole seconds > 0) and the
    /// fields from ARGV[8].
    pub job: NewJobCall,
    /// KEYS[3] (KEYS[4-5]: the job and queue prefixes).
    pub debounce_key: String,
    /// ARGV[6]
    pub has_trace_context: bool,
    /// ARGV[7]
    pub has_correlation_context: bool,
}

impl LuaScript for EnqueueDebounced {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    lua_source!("enqueue_debounced.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let prefixes = [self.job.at(keys::JOB_PREFIX), self.job.at(QueueName::PREFIX)];
        let (mut keys, mut args, fields) = self.job.head();
        keys.push(self.debounce_key);
        keys.extend(prefixes);
        args.extend([flag(self.has_trace_context), flag(self.has_correlation_context)]);
        super::push_fields(&mut args, fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
