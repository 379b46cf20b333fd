//! `inspect_jobs.lua`: fields of many job hashes (read only).

use std::collections::HashMap;

use fred::prelude::*;
use rrq_protocol::JobId;

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::Layout;
use crate::redis::reply;

/// KEYS: the job hashes (of one shard).
pub(crate) struct InspectJobs(pub Vec<String>);

impl InspectJobs {
    pub(crate) fn of(layout: &Layout, ids: &[JobId]) -> InspectJobs {
        InspectJobs(ids.iter().map(|id| layout.job(id)).collect())
    }
}

impl LuaScript for InspectJobs {
    const OP: &'static str = "job_fields_batch";
    /// One map per key, empty where there is no hash.
    type Reply = Vec<HashMap<String, String>>;

    lua_source!("inspect_jobs.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        (self.0, Vec::new())
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::array(Self::OP, reply)?.into_iter().map(|hash| reply::fields(Self::OP, hash)).collect()
    }
}
