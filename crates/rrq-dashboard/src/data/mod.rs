//! Every read and write the dashboard makes, and the JSON shapes it answers
//! with. This module alone talks to the [`Store`](rrq_store::Store) and
//! alone knows the names of job hash fields; the HTTP layer only moves these
//! values around.
//!
//! By concern: `discovery` holds the sampler's reads (queue and worker
//! discovery, counts), `reads` the pages' reads (a queue page, a job, the
//! cron entries), `dlq` the filtered walk of a dead letter queue, and
//! `actions` every write (retry, cancel, replay, pause, requeue, purge).
//! Shared here: the errors, what the configuration tells the dashboard, and
//! the row a job takes in a list.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use rrq_config::Settings;
use rrq_core::{CronEntry, CronJob};
use rrq_producer::ProducerConfig;
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{Clock as _, Job, StoreError, SystemClock};
use serde::Serialize;

mod actions;
mod discovery;
mod dlq;
mod reads;

pub use actions::{cancel_job, dlq_purge, dlq_requeue, queues_of, replay_job, retry_job, set_paused};
pub use discovery::{Discovery, QueueCounts, active_by_queue, discover, dlq_len, paused, queue_counts};
pub use dlq::{DLQ_SCAN_LIMIT, DlqFilter, DlqPage, dlq_matching, dlq_page};
pub use reads::{
    CRON_NEXT_RUNS, CronPage, InvalidCron, JobActions, JobDetail, QueuePage, TimelineEvent, cron, job_detail,
    queue_page,
};

/// Why a dashboard read or action failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DataError {
    /// The store failed (Redis unreachable, a script error...).
    #[error("store error")]
    Store(#[from] StoreError),
    /// No such job.
    #[error("job '{0}' not found")]
    NotFound(String),
    /// The action does not apply to the job in its current state.
    #[error("{0}")]
    Conflict(String),
    /// The request itself is wrong (the message names what).
    #[error("{0}")]
    BadRequest(String),
}

/// What the dashboard knows from the configuration: never the DSN.
#[derive(Clone, Debug)]
pub struct Known {
    /// Queues always shown, even when empty (the default queue, routed
    /// queues and cron queues).
    pub queues: Vec<QueueName>,
    /// The default queue.
    pub default_queue: QueueName,
    /// The default DLQ.
    pub default_dlq: DlqName,
    /// The configured cron entries, validated.
    pub cron: Vec<CronJob>,
    /// Cron entries that failed validation: (key, reason).
    pub cron_errors: Vec<(String, String)>,
    /// How replays enqueue (defaults from the settings).
    pub producer: ProducerConfig,
}

impl Known {
    /// What the settings tell the dashboard. The Redis DSN is not kept.
    pub fn from_settings(settings: &Settings) -> Self {
        let mut queues = vec![settings.default_queue.clone()];
        queues.extend(settings.runner_routes.keys().cloned());
        let mut cron = Vec::new();
        let mut cron_errors = Vec::new();
        for entry in &settings.cron {
            if let Some(q) = &entry.queue {
                queues.push(q.clone());
            }
            let config = CronEntry {
                key: entry.key.clone(),
                name: entry.name.clone(),
                function_name: entry.function_name.clone(),
                schedule: entry.schedule.clone(),
                params: entry.params.clone(),
                queue: entry.queue.clone(),
                unique: entry.unique,
                timezone: entry.timezone.clone(),
                catch_up: entry.catch_up,
            };
            match CronJob::new(config, SystemClock.now()) {
                Ok(job) => cron.push(job),
                Err(e) => cron_errors.push((entry.key.clone(), e.to_string())),
            }
        }
        queues.sort();
        queues.dedup();
        Self {
            queues,
            default_queue: settings.default_queue.clone(),
            default_dlq: settings.default_dlq.clone(),
            cron,
            cron_errors,
            producer: ProducerConfig::from_settings(settings),
        }
    }
}

/// One job in a list (queue page, DLQ page).
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct JobRow {
    /// The job id.
    pub id: String,
    /// `function_name`, when readable.
    pub function: Option<String>,
    /// The status, when readable.
    pub status: Option<String>,
    /// The queue the job belongs to.
    pub queue: Option<String>,
    /// When it becomes (or became) ready: the queue score on a queue page.
    pub ready_at: Option<DateTime<Utc>>,
    /// When it was enqueued.
    pub enqueue_time: Option<DateTime<Utc>>,
    /// Attempts used and allowed.
    pub attempts: Option<String>,
    /// The last error (truncated for lists).
    pub last_error: Option<String>,
    /// When it finished.
    pub completion_time: Option<DateTime<Utc>>,
    /// Why the hash could not be read: missing, or unparsable.
    pub problem: Option<String>,
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max).collect::<String>()) }
}

fn parse(id: &JobId, fields: Option<BTreeMap<String, String>>) -> Option<Result<Job, String>> {
    let fields: HashMap<String, String> = fields?.into_iter().collect();
    Some(Job::from_fields(id.as_str(), &fields).map_err(|e| e.to_string()))
}

fn row(id: &JobId, job: Option<Result<Job, String>>, ready_at: Option<DateTime<Utc>>) -> JobRow {
    let mut r = JobRow {
        id: id.as_str().to_owned(),
        function: None,
        status: None,
        queue: None,
        ready_at,
        enqueue_time: None,
        attempts: None,
        last_error: None,
        completion_time: None,
        problem: None,
    };
    match job {
        None => r.problem = Some("no job hash (expired or deleted)".to_owned()),
        Some(Err(e)) => r.problem = Some(e),
        Some(Ok(job)) => {
            r.function = Some(job.function_name);
            r.status = job.status.map(|s| s.as_str().to_owned());
            r.queue = job.queue_name.map(|q| q.as_str().to_owned());
            r.enqueue_time = Some(job.enqueue_time);
            r.attempts = Some(match job.max_retries {
                Some(max) => format!("{}/{max}", job.current_retries),
                None => job.current_retries.to_string(),
            });
            r.last_error = job.last_error.map(|e| truncate(&e, 200));
            r.completion_time = job.completion_time;
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
