//! `renew.lua`: extends the locks of running jobs, one answer per lease.

use fred::prelude::*;

use super::LuaScript;
use crate::error::StoreError;
use crate::keys::{Layout, Shard};
use crate::redis::reply::{self, protocol};
use crate::store::{Lease, LeaseState};

/// KEYS[1] the lease index, ARGV[1] the TTL; then per lease KEYS job and
/// lock, ARGV job id, worker id and token. The leases are of one shard.
pub(crate) struct Renew<'a> {
    pub layout: &'a Layout,
    pub leases: &'a [Lease],
    pub ttl_ms: i64,
}

impl LuaScript for Renew<'_> {
    const OP: &'static str = "renew";
    type Reply = Vec<LeaseState>;

    lua_source!("renew.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(1 + 2 * self.leases.len());
        let mut args = Vec::with_capacity(1 + 3 * self.leases.len());
        let layout = self.layout;
        let shard = self.leases.first().map_or(Shard::FIRST, |l| layout.shard_of(&l.job_id));
        keys.push(layout.leases(shard));
        args.push(self.ttl_ms.into());
        for lease in self.leases {
            keys.extend([layout.job(&lease.job_id), layout.lock(&lease.job_id)]);
            args.extend([lease.job_id.as_str().into(), lease.worker_id.as_str().into(), lease.token.as_str().into()]);
        }
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::array(Self::OP, reply)?
            .iter()
            .map(|c| match reply::int(Self::OP, c)? {
                1 => Ok(LeaseState::Held),
                2 => Ok(LeaseState::CancelRequested),
                0 => Ok(LeaseState::Lost),
                n => Err(protocol(Self::OP, format!("unknown lease state {n}"))),
            })
            .collect()
    }
}
