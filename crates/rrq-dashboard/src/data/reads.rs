//! The pages' reads: one page of a queue, one job with its timeline, the
//! cron entries.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rrq_core::inspect::CronRow;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Job, JobStatus, Store, StoreError};
use serde::Serialize;
use serde_json::Value;

use super::{DataError, JobRow, Known, QueueCounts, parse, queue_counts, row};

/// A page of a queue, in ready order.
#[derive(Clone, Debug, Serialize)]
pub struct QueuePage {
    /// Counts of the queue.
    pub counts: QueueCounts,
    /// Offset of the first row.
    pub offset: usize,
    /// Rows asked for.
    pub limit: usize,
    /// The jobs.
    pub jobs: Vec<JobRow>,
}

/// One page of a queue: `offset..offset+limit` of the sorted set, then the
/// hashes of those jobs in one batched read. `active` is the queue's
/// running jobs as the last discovery counted them.
pub async fn queue_page(
    store: &dyn Store,
    queue: &QueueName,
    offset: usize,
    limit: usize,
    now: DateTime<Utc>,
    active: u64,
) -> Result<QueuePage, StoreError> {
    let paused = store.paused().await?.contains(queue);
    let counts = queue_counts(store, queue, now, paused, active).await?;
    let entries = store.queue_entries(queue, offset, limit).await?;
    let ids: Vec<JobId> = entries.iter().map(|(id, _)| id.clone()).collect();
    let hashes = store.job_fields_batch(&ids).await?;
    let jobs = entries.iter().zip(hashes).map(|((id, at), fields)| row(id, parse(id, fields), Some(*at))).collect();
    Ok(QueuePage { counts, offset, limit, jobs })
}

/// A job, every field.
#[derive(Clone, Debug, Serialize)]
pub struct JobDetail {
    /// The job id.
    pub id: String,
    /// The status.
    pub status: Option<String>,
    /// The function.
    pub function: Option<String>,
    /// The queue.
    pub queue: Option<String>,
    /// The DLQ it goes to (its own, else the default).
    pub dlq: String,
    /// Params, parsed.
    pub params: Option<Value>,
    /// Result, parsed (`None` until there is one).
    pub result: Option<Value>,
    /// The last error.
    pub last_error: Option<String>,
    /// The W3C trace id, when the trace context carries one.
    pub trace_id: Option<String>,
    /// The trace context.
    pub trace_context: Option<BTreeMap<String, String>>,
    /// The correlation context.
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// Attempts used.
    pub current_retries: Option<u32>,
    /// Attempts allowed.
    pub max_retries: Option<u32>,
    /// The worker of the current or last attempt.
    pub worker_id: Option<String>,
    /// What happened when.
    pub timeline: Vec<TimelineEvent>,
    /// Every stored field as stored.
    pub fields: BTreeMap<String, String>,
    /// Why the hash could not be parsed, if it could not.
    pub problem: Option<String>,
    /// Which actions apply now.
    pub actions: JobActions,
}

/// Actions a job allows in its current state.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct JobActions {
    /// FAILED: can be requeued from its DLQ.
    pub retry: bool,
    /// PENDING, RETRYING or ACTIVE: can be cancelled.
    pub cancel: bool,
    /// Parsable: a copy can be enqueued.
    pub replay: bool,
}

/// One step of a job's life.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct TimelineEvent {
    /// What happened.
    pub event: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Details in words.
    pub details: String,
}

fn trace_id(ctx: &BTreeMap<String, String>) -> Option<String> {
    // traceparent: version-traceid-parentid-flags.
    let tp = ctx.get("traceparent")?;
    let id = tp.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

fn timeline(job: &Job, fields: &BTreeMap<String, String>) -> Vec<TimelineEvent> {
    let mut events = Vec::new();
    let max = job.max_retries.map_or("?".to_owned(), |m| m.to_string());
    events.push(TimelineEvent {
        event: "Enqueued".into(),
        at: job.enqueue_time,
        details: format!("function {}", job.function_name),
    });
    for i in 0..job.current_retries {
        if let Some(at) = fields.get(&format!("retry_{i}_at")).and_then(|v| rrq_store::parse_timestamp(v)) {
            events.push(TimelineEvent {
                event: format!("Retry {}", i + 1),
                at,
                details: format!("attempt {} of {max} failed", i + 1),
            });
        }
    }
    if let Some(at) = job.start_time {
        let worker = job.worker_id.as_deref().unwrap_or("unknown");
        events.push(TimelineEvent { event: "Started".into(), at, details: format!("worker {worker}") });
    }
    if let (Some(at), Some(status)) = (job.next_scheduled_run_time, job.status)
        && matches!(status, JobStatus::Pending | JobStatus::Retrying)
        && at > job.enqueue_time
    {
        let event = if status == JobStatus::Retrying { "Next run" } else { "Scheduled" };
        events.push(TimelineEvent {
            event: event.into(),
            at,
            details: format!("attempt {} of {max}", job.current_retries + 1),
        });
    }
    if let Some(at) = job.completion_time {
        let status = job.status.map_or("UNKNOWN", JobStatus::as_str);
        events.push(TimelineEvent { event: "Finished".into(), at, details: format!("status {status}") });
    }
    events.sort_by_key(|e| e.at);
    events
}

/// Every field of a job, parsed where it can be.
pub async fn job_detail(store: &dyn Store, known: &Known, id: &JobId) -> Result<JobDetail, DataError> {
    let fields = store.job_fields(id).await?.ok_or_else(|| DataError::NotFound(id.as_str().to_owned()))?;
    let parsed = parse(id, Some(fields.clone())).unwrap_or_else(|| Err("no job hash".to_owned()));
    let mut d = JobDetail {
        id: id.as_str().to_owned(),
        status: None,
        function: None,
        queue: None,
        dlq: known.default_dlq.as_str().to_owned(),
        params: None,
        result: None,
        last_error: None,
        trace_id: None,
        trace_context: None,
        correlation_context: None,
        current_retries: None,
        max_retries: None,
        worker_id: None,
        timeline: Vec::new(),
        fields: BTreeMap::new(),
        problem: None,
        actions: JobActions { retry: false, cancel: false, replay: false },
    };
    match parsed {
        Err(e) => d.problem = Some(e),
        Ok(job) => {
            d.timeline = timeline(&job, &fields);
            d.status = job.status.map(|s| s.as_str().to_owned());
            d.actions = JobActions {
                retry: job.status == Some(JobStatus::Failed),
                cancel: matches!(job.status, Some(JobStatus::Pending | JobStatus::Retrying | JobStatus::Active)),
                replay: true,
            };
            d.function = Some(job.function_name);
            d.queue = job.queue_name.map(|q| q.as_str().to_owned());
            if let Some(dlq) = job.dlq_name {
                d.dlq = dlq.as_str().to_owned();
            }
            d.params = Some(Value::Object(job.params));
            d.result = job.result;
            d.last_error = job.last_error;
            d.trace_id = job.trace_context.as_ref().and_then(trace_id);
            d.trace_context = job.trace_context;
            d.correlation_context = job.correlation_context;
            d.current_retries = Some(job.current_retries);
            d.max_retries = job.max_retries;
            d.worker_id = job.worker_id;
        }
    }
    d.fields = fields;
    Ok(d)
}

/// How many next runs a cron row lists (the CLI's default).
pub const CRON_NEXT_RUNS: usize = 3;

/// The cron entries: the valid ones as the rows `rrq cron list --json`
/// prints (the same struct), and the invalid ones with their reason.
#[derive(Clone, Debug, Serialize)]
pub struct CronPage {
    /// The valid entries, in configuration order.
    pub entries: Vec<CronRow>,
    /// The entries that failed validation (a worker refuses to start with
    /// them, and `rrq cron list` names the first).
    pub invalid: Vec<InvalidCron>,
}

/// A cron entry that failed validation.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct InvalidCron {
    /// The configuration key (`rrq.cron_jobs[0]`).
    pub key: String,
    /// Why it is refused.
    pub error: String,
}

/// The configured cron entries with their last and next ticks (one read
/// per entry).
pub async fn cron(store: &dyn Store, known: &Known, now: DateTime<Utc>) -> Result<CronPage, StoreError> {
    let entries = rrq_core::inspect::cron_rows(store, &known.cron, &known.default_queue, now, CRON_NEXT_RUNS).await?;
    let invalid =
        known.cron_errors.iter().map(|(key, error)| InvalidCron { key: key.clone(), error: error.clone() }).collect();
    Ok(CronPage { entries, invalid })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_id_comes_from_a_well_formed_traceparent_only() {
        let mut ctx = BTreeMap::new();
        ctx.insert("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        assert_eq!(trace_id(&ctx).as_deref(), Some("4bf92f3577b34da6a3ce929d0e0e4736"));
        ctx.insert("traceparent".to_owned(), "00-nothex-00f067aa0ba902b7-01".to_owned());
        assert_eq!(trace_id(&ctx), None);
    }
}
