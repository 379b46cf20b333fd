//! The worker's typed, validated configuration.

use std::time::Duration;

use rrq_protocol::QueueName;

use crate::cron::CronJob;
use crate::policy::{Backoff, Routing};

/// Everything a [`crate::Worker`] needs to know, already validated.
#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// This worker's id (`rrq_worker_{pid}_{6 hex}` by default).
    pub worker_id: String,
    /// Queues to take jobs from (full keys, sorted, without duplicates).
    pub queues: Vec<QueueName>,
    /// Delay between attempts when the runner did not ask for one.
    pub backoff: Backoff,
    /// Which runner serves which job.
    pub routing: Routing,
    /// How often an idle worker looks for work it was not told about (jobs
    /// enqueued by producers that do not publish a ready signal).
    pub poll_interval: Duration,
    /// The same poll while the store signals every queue change, whoever
    /// made it (Redis keyspace notifications): only a safety net, so that N
    /// idle workers cost Redis little.
    pub notified_poll_interval: Duration,
    /// TTL of a job lock; renewed every `renew_interval` while the job runs.
    pub lease_ttl: Duration,
    /// How often running jobs' locks are renewed.
    pub renew_interval: Duration,
    /// How often the health record is written.
    pub heartbeat_interval: Duration,
    /// TTL of the health record.
    pub health_ttl: Duration,
    /// How often expired leases of other (dead) workers are recovered.
    pub recovery_interval: Duration,
    /// How long shutdown waits for running jobs before putting them back.
    pub shutdown_grace: Duration,
    /// How long an attempt being stopped (shutdown, lost lock) waits for the
    /// runner to answer its cancel before the runner is terminated.
    pub cancel_grace: Duration,
    /// Longest wait for a runner to confirm a terminated request's process
    /// has exited (the pool's `term_grace` plus a little).
    pub terminate_budget: Duration,
    /// Stop once no job is ready and none is running.
    pub burst: bool,
    /// Cron entries to schedule. Every worker may carry the same entries:
    /// each tick is still enqueued once.
    pub cron: Vec<CronJob>,
    /// Floor of the unique-lock TTL of `unique` cron jobs
    /// (`default_unique_job_lock_ttl_seconds`).
    pub unique_lock_ttl: Duration,
    /// Added to the job timeout (plus one second) for the unique-lock TTL
    /// (`default_lock_timeout_extension_seconds`).
    pub lock_extension: Duration,
    /// Largest job payload (`job_params` as JSON) the worker sends to a
    /// runner (`max_payload_bytes`); a larger job is dead-lettered unrun.
    pub max_payload_bytes: usize,
}

impl WorkerConfig {
    /// A configuration with the reference's settings and a fresh worker id.
    /// With no `queues`, the worker takes from its store's default queue
    /// ([`rrq_store::JobDefaults`], read from the store when it starts).
    pub fn new(queues: impl IntoIterator<Item = QueueName>) -> Self {
        let mut queues: Vec<QueueName> = queues.into_iter().collect();
        queues.sort();
        queues.dedup();
        Self {
            worker_id: new_worker_id(),
            queues,
            backoff: Backoff::default(),
            routing: Routing { default_runner: "python".to_owned(), ..Routing::default() },
            poll_interval: Duration::from_millis(100),
            notified_poll_interval: Duration::from_secs(1),
            lease_ttl: Duration::from_secs(15),
            renew_interval: Duration::from_secs(3),
            heartbeat_interval: Duration::from_secs(60),
            health_ttl: Duration::from_secs(70),
            recovery_interval: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(1),
            terminate_budget: Duration::from_secs(6),
            burst: false,
            cron: Vec::new(),
            unique_lock_ttl: Duration::from_secs(21_600),
            lock_extension: Duration::from_secs(60),
            max_payload_bytes: 10 * 1024 * 1024,
        }
    }
}

/// A worker id in the reference's shape: `rrq_worker_{pid}_{6 hex chars}`.
pub fn new_worker_id() -> String {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("rrq_worker_{}_{}", std::process::id(), &suffix[..6])
}
