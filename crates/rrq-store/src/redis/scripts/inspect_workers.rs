//! `inspect_workers.lua`: health records and their expiry (read only).

use fred::prelude::*;

use super::LuaScript;
use crate::error::StoreError;
use crate::redis::reply::{self, protocol};

/// KEYS: the health keys.
pub(crate) struct InspectWorkers(pub Vec<String>);

/// One health key: its value when it is a string, and its `PTTL`.
pub(crate) struct HealthKey {
    pub value: Option<String>,
    pub pttl: i64,
}

impl LuaScript for InspectWorkers {
    const OP: &'static str = "workers";
    type Reply = Vec<HealthKey>;

    lua_source!("inspect_workers.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        (self.0, Vec::new())
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        const OP: &str = InspectWorkers::OP;
        reply::array(OP, reply)?
            .into_iter()
            .map(|record| {
                let record = reply::array(OP, record)?;
                let pttl = reply::int(OP, record.get(1).ok_or_else(|| protocol(OP, "missing PTTL"))?)?;
                Ok(HealthKey { value: record.first().and_then(reply::text), pttl })
            })
            .collect()
    }
}
