//! `dead_letter.lua`: moves a job to its dead letter queue (fenced). The
//! job's DLQ and unique lock are named by its fields, read only in the
//! script: their prefixes are KEYS entries.

use fred::prelude::*;
use rrq_protocol::DlqName;

use super::{Fenced, LuaScript, flag};
use crate::error::StoreError;
use crate::keys;
use crate::store::Fence;

pub(crate) struct DeadLetter {
    /// KEYS[1-4] and KEYS[5] (events stream), ARGV[1-3].
    pub fenced: Fenced,
    /// KEYS[6] (on the job's shard): for a job without `dlq_name`.
    pub default_dlq: DlqName,
    /// ARGV[4]
    pub reason: String,
    /// ARGV[5]: the failed attempt counts.
    pub count_attempt: bool,
    /// ARGV[6]: RFC 3339.
    pub completion_time: String,
}

impl LuaScript for DeadLetter {
    const OP: &'static str = "dead_letter";
    type Reply = Fence;

    lua_source!("dead_letter.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, mut args) = self.fenced.head();
        keys.extend([
            self.fenced.events_key(),
            self.fenced.at(self.default_dlq.as_str()),
            self.fenced.at(DlqName::PREFIX),
            self.fenced.at(keys::UNIQUE_LOCK_PREFIX),
        ]);
        args.extend([self.reason.into(), flag(self.count_attempt), self.completion_time.into()]);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Fence, StoreError> {
        super::fence(Self::OP, &reply)
    }
}
