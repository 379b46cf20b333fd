//! `enqueue.lua`: a standard enqueue, optionally under an idempotency key.

use fred::prelude::*;

use super::{LuaScript, NewJobCall};
use crate::error::StoreError;
use crate::keys;
use crate::redis::reply;
use crate::store::Enqueued;

pub(crate) struct Enqueue {
    /// KEYS[1-2], ARGV[1-5] (ARGV[3]: the idempotency key's TTL, 0 = no
    /// expiry) and the fields from ARGV[6].
    pub job: NewJobCall,
    /// KEYS[4], only when an idempotency key is used (KEYS[3] is the job
    /// prefix: the job the key names is learnt only in the script).
    pub idempotency_key: Option<String>,
}

impl LuaScript for Enqueue {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    lua_source!("enqueue.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let job_prefix = self.job.at(keys::JOB_PREFIX);
        let (mut keys, mut args, fields) = self.job.head();
        keys.push(job_prefix);
        keys.extend(self.idempotency_key);
        super::push_fields(&mut args, fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
