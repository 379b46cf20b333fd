//! `dlq_requeue.lua`: a failed job from a DLQ back to a queue, with a fresh
//! attempt budget.

use fred::prelude::*;

use super::LuaScript;
use crate::error::StoreError;
use crate::keys;
use crate::redis::reply;

pub(crate) struct DlqRequeue {
    /// KEYS[1]
    pub dlq_key: String,
    /// KEYS[2]
    pub queue_key: String,
    /// KEYS[3]
    pub job_key: String,
    /// ARGV[1]
    pub id: String,
    /// ARGV[2]: epoch ms.
    pub now_ms: i64,
    /// ARGV[3]: RFC 3339.
    pub now_text: String,
}

impl LuaScript for DlqRequeue {
    const OP: &'static str = "dlq_requeue";
    /// Whether the job was re-queued.
    type Reply = bool;

    lua_source!("dlq_requeue.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let keys = vec![self.dlq_key, self.queue_key, self.job_key];
        let args =
            vec![self.id.into(), self.now_ms.into(), self.now_text.into(), Value::from_static_str(keys::READY_CHANNEL)];
        (keys, args)
    }

    fn decode(reply: Value) -> Result<bool, StoreError> {
        Ok(reply::int(Self::OP, &reply)? == 1)
    }
}
