//! `enqueue.lua`: a standard enqueue, optionally under an idempotency key.

use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::LazyLock;

use super::{LuaScript, flag};
use crate::error::StoreError;
use crate::redis::reply;
use crate::store::Enqueued;

static SCRIPT: LazyLock<Script> = lua!("enqueue.lua");

pub(crate) struct Enqueue {
    /// KEYS[1]
    pub job_key: String,
    /// KEYS[2]
    pub queue_key: String,
    /// KEYS[3]: the job an existing idempotency key names is learnt only in the script.
    pub job_prefix: String,
    /// KEYS[4], only when an idempotency key is used.
    pub idempotency_key: Option<String>,
    /// ARGV[1]
    pub id: String,
    /// ARGV[2]: epoch ms.
    pub score: i64,
    /// ARGV[3]: whole seconds, 0 = no expiry.
    pub idempotency_ttl: u64,
    /// ARGV[4]
    pub ready_now: bool,
    /// ARGV[5]
    pub channel: &'static str,
    /// ARGV[6..]: the hash fields, name/value.
    pub fields: Vec<(&'static str, String)>,
}

impl LuaScript for Enqueue {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    fn script() -> &'static Script {
        &SCRIPT
    }

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let mut keys = vec![self.job_key, self.queue_key, self.job_prefix];
        keys.extend(self.idempotency_key);
        let mut args = vec![
            self.id.into(),
            self.score.into(),
            self.idempotency_ttl.to_string().into(),
            flag(self.ready_now),
            Value::from_static_str(self.channel),
        ];
        super::push_fields(&mut args, self.fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
