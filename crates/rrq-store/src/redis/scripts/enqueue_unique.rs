//! `enqueue_unique.lua`: an enqueue under the orchestrator unique lock.

use fred::prelude::*;
use fred::types::scripts::Script;
use std::sync::LazyLock;

use super::{LuaScript, flag};
use crate::error::StoreError;
use crate::redis::reply;
use crate::store::Enqueued;

static SCRIPT: LazyLock<Script> = lua!("enqueue_unique.lua");

pub(crate) struct EnqueueUnique {
    /// KEYS[1]
    pub job_key: String,
    /// KEYS[2]
    pub queue_key: String,
    /// KEYS[3]
    pub lock_key: String,
    /// ARGV[1]
    pub id: String,
    /// ARGV[2]: epoch ms.
    pub score: i64,
    /// ARGV[3]: the lock's TTL, whole seconds.
    pub lock_ttl: u64,
    /// ARGV[4]
    pub ready_now: bool,
    /// ARGV[5]
    pub channel: &'static str,
    /// ARGV[6]: epoch ms.
    pub enqueue_time: i64,
    /// ARGV[7..]: the hash fields, name/value.
    pub fields: Vec<(&'static str, String)>,
}

impl LuaScript for EnqueueUnique {
    const OP: &'static str = "enqueue";
    type Reply = Result<Enqueued, StoreError>;

    fn script() -> &'static Script {
        &SCRIPT
    }

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let keys = vec![self.job_key, self.queue_key, self.lock_key];
        let mut args = vec![
            self.id.into(),
            self.score.into(),
            self.lock_ttl.to_string().into(),
            flag(self.ready_now),
            Value::from_static_str(self.channel),
            self.enqueue_time.into(),
        ];
        super::push_fields(&mut args, self.fields);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::enqueued(Self::OP, reply)
    }
}
