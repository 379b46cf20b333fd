//! RRQ worker policy: claim, dispatch, retry, dead-letter, renew, heartbeat,
//! recover, schedule cron jobs and shut down.
//!
//! Place in the graph: above `rrq-store` and `rrq-pool`. It never builds a
//! Redis key and never spawns a process: it talks to the [`rrq_store::Store`]
//! and [`rrq_pool::Runner`] traits and takes wall time from a
//! [`rrq_store::Clock`].
//!
//! Main types: [`Worker`] (one event loop), [`WorkerConfig`], the pure
//! policy in [`policy`] (routing, backoff, outcome classification), and
//! [`CronJob`] / [`CronScheduler`] in [`cron`] (schedule syntax, which ticks
//! fire, catch-up), and the operator rows of [`inspect`] (workers and cron
//! entries as the CLI's `--json` and the dashboard's API both serialise
//! them).
//!
//! Invariants: a job is only ever written through its lease (fenced writes);
//! a worker that cannot renew a lease abandons the attempt before the lease
//! expires; every claimed job ends recorded, released back to its queue, or
//! abandoned to orphan recovery — never dropped; a cron tick is enqueued at
//! most once however many workers schedule it (its job id is deterministic).
//!
//! Tests: policy unit tests beside the code; worker tests against
//! `MemoryStore` and a scripted runner; end-to-end tests in the workspace's
//! `tests/` package.

mod config;
pub mod cron;
mod cron_task;
mod error;
mod in_process;
pub mod inspect;
mod job_task;
mod lease_watch;
pub mod policy;
mod telemetry;
mod worker;

pub use config::{WorkerConfig, new_worker_id};
pub use cron::{CronEntry, CronError, CronJob, CronScheduler};
pub use error::{ConfigProblem, CoreError};
pub use in_process::InProcessRunner;
pub use policy::{Backoff, Routing};
pub use worker::{Worker, WorkerStats};
