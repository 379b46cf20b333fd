//! `inspect_workers.lua`: health records and their expiry (read only).

use std::sync::LazyLock;

use fred::prelude::*;
use fred::types::scripts::Script;

use super::LuaScript;
use crate::error::StoreError;
use crate::redis::reply::{self, protocol};

static SCRIPT: LazyLock<Script> = lua!("inspect_workers.lua");

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

    fn script() -> &'static Script {
        &SCRIPT
    }

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
