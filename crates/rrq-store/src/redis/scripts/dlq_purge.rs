//! `dlq_purge.lua`: removes the given ids from a DLQ and deletes their
//! failed jobs.

use fred::prelude::*;
use rrq_protocol::{DlqName, JobId};

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::{Layout, Shard};
use crate::redis::reply;

/// KEYS[1] the DLQ, then per id KEYS job and events stream; ARGV the ids.
/// The ids are of one shard, whose DLQ list holds them.
pub(crate) struct DlqPurge<'a> {
    pub layout: &'a Layout,
    pub dlq: &'a DlqName,
    pub ids: &'a [JobId],
}

impl LuaScript for DlqPurge<'_> {
    const OP: &'static str = "dlq_purge";
    /// How many entries were taken off the list.
    type Reply = u64;

    lua_source!("dlq_purge.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(1 + 2 * self.ids.len());
        let layout = self.layout;
        let shard = self.ids.first().map_or(Shard::FIRST, |id| layout.shard_of(id));
        keys.push(layout.dlq(self.dlq, shard));
        keys.extend(self.ids.iter().flat_map(|id| [layout.job(id), layout.events(id)]));
        let args = self.ids.iter().map(|id| id.as_str().into()).collect();
        (keys, args)
    }

    fn decode(reply: Value) -> Result<u64, StoreError> {
        reply::count(Self::OP, &reply)
    }
}
