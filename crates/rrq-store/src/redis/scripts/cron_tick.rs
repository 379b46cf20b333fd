//! `cron_tick.lua`: the last handled tick of a cron entry, moved only
//! forward.

use fred::prelude::*;

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::Layout;

/// KEYS[1] the tick record; ARGV[1] the entry, ARGV[2] the tick.
pub(crate) struct CronTick<'a> {
    pub layout: &'a Layout,
    pub entry: &'a str,
    /// Epoch seconds.
    pub tick: i64,
}

impl LuaScript for CronTick<'_> {
    const OP: &'static str = "record_cron_tick";
    /// Nothing to report: an older tick than the recorded one is ignored.
    type Reply = ();

    lua_source!("cron_tick.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        (vec![self.layout.cron_ticks()], vec![self.entry.into(), self.tick.into()])
    }

    fn decode(_: Value) -> Result<(), StoreError> {
        Ok(())
    }
}
