//! `finish_cancelled.lua`: ends a running job whose cancel was requested
//! (fenced). The unique lock is named by a job field, read only in the
//! script: its prefix is a KEYS entry.

use fred::prelude::*;

use super::{Fenced, LuaScript};
use crate::error::StoreError;
use crate::keys;
use crate::store::Fence;

pub(crate) struct FinishCancelled {
    /// KEYS[1-4] and KEYS[5] (events stream), ARGV[1-3].
    pub fenced: Fenced,
}

impl LuaScript for FinishCancelled {
    const OP: &'static str = "finish_cancelled";
    type Reply = Fence;

    lua_source!("finish_cancelled.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let (mut keys, args) = self.fenced.head();
        keys.extend([self.fenced.events_key(), self.fenced.at(keys::UNIQUE_LOCK_PREFIX)]);
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Fence, StoreError> {
        super::fence(Self::OP, &reply)
    }
}
