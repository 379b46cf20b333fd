//! `enqueue_batch.lua`: many standard enqueues in one step.

use fred::prelude::*;

use super::{LuaScript, flag};
use crate::error::StoreError;
use crate::job::NewJob;
use crate::keys::Layout;
use crate::redis::reply::{self, protocol};

pub(crate) struct EnqueueBatch {
    /// ARGV[1]: the ready channel of the jobs' shard.
    pub channel: String,
    /// Then per job: KEYS job and queue; ARGV id, score, ready now, the
    /// number of field values and the values.
    pub jobs: Vec<BatchJob>,
}

/// One job; a call takes jobs of one shard.
#[derive(Clone)]
pub(crate) struct BatchJob {
    pub job_key: String,
    pub queue_key: String,
    pub id: String,
    /// Epoch ms.
    pub score: i64,
    pub ready_now: bool,
    pub fields: Vec<(&'static str, String)>,
}

impl BatchJob {
    pub(crate) fn new(layout: &Layout, job: &NewJob) -> BatchJob {
        BatchJob {
            job_key: layout.job(&job.id),
            queue_key: layout.queue(&job.queue, layout.shard_of(&job.id)),
            id: job.id.as_str().to_owned(),
            score: crate::clock::epoch_ms(job.scheduled_time),
            ready_now: crate::shared::ready_at_enqueue(job),
            fields: super::call_fields(layout, job),
        }
    }
}

impl LuaScript for EnqueueBatch {
    const OP: &'static str = "enqueue_batch";
    /// Per job: created (`true`) or its id was taken.
    type Reply = Vec<bool>;

    lua_source!("enqueue_batch.lua");

    fn keys_and_args(self) -> (Vec<String>, Vec<Value>) {
        let mut keys = Vec::with_capacity(self.jobs.len() * 2);
        let mut args = Vec::with_capacity(1 + self.jobs.len() * 30);
        args.push(self.channel.into());
        for job in self.jobs {
            keys.extend([job.job_key, job.queue_key]);
            args.extend([job.id.into(), job.score.into(), flag(job.ready_now), (job.fields.len() as i64 * 2).into()]);
            super::push_fields(&mut args, job.fields);
        }
        (keys, args)
    }

    fn decode(reply: Value) -> Result<Self::Reply, StoreError> {
        reply::array(Self::OP, reply)?
            .iter()
            .map(|s| match reply::int(Self::OP, s)? {
                1 => Ok(true),
                -1 => Ok(false),
                n => Err(protocol(Self::OP, format!("unknown enqueue status {n}"))),
            })
            .collect()
    }
}
