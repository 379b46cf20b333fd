//! `inspect_queues.lua`: sizes and score ranges of queues (read only).

use chrono::{DateTime, Utc};
use fred::prelude::*;

use super::LuaScript;
use crate::error::StoreError;
use crate::redis::reply::{self, protocol};

/// KEYS: the queues.
pub(crate) struct InspectQueues(pub Vec<String>);

/// One queue: its length and lowest and highest ready times.
pub(crate) struct QueueSpan {
    pub len: u64,
    pub oldest: Option<DateTime<Utc>>,
    pub newest: Option<DateTime<Utc>>,
}

impl LuaScript for InspectQueues {
    const OP: &'static str = "queues";
    type Reply = Vec<QueueSpan>;

    lua_source!("inspect_queues.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        (self.0, Vec::new())
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        const OP: &str = InspectQueues::OP;
        reply::array(OP, reply)?
            .into_iter()
            .map(|info| {
                let info = reply::array(OP, info)?;
                let len = reply::int(OP, info.first().ok_or_else(|| protocol(OP, "empty queue info"))?)?;
                Ok(QueueSpan {
                    len: u64::try_from(len).unwrap_or_default(),
                    oldest: info.get(1).and_then(reply::score_time),
                    newest: info.get(2).and_then(reply::score_time),
                })
            })
            .collect()
    }
}
