//! Every read and write the dashboard makes, and the JSON shapes it answers
//! with. This module alone talks to the [`Store`] and alone knows the names
//! of job hash fields; the HTTP layer only moves these values around.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use rrq_config::Settings;
use rrq_core::{CronEntry, CronJob};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{CancelResult, Clock as _, Job, JobStatus, Store, StoreError, SystemClock, WorkerRecord};
use serde::Serialize;
use serde_json::Value;

/// Most DLQ entries one filtered DLQ read looks at (newest first). A DLQ
/// longer than this is filtered over its newest entries only, and the answer
/// says so (`scanned` < `total`).
pub const DLQ_SCAN_LIMIT: usize = 10_000;

/// How many job hashes are read per round trip when filtering a DLQ.
const DLQ_CHUNK: usize = 500;

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

/// Queue names found by a keyspace scan, and worker records: the slow,
/// scanning reads, refreshed in the background only.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Discovery {
    /// Queues that held jobs at the last scan.
    pub queues: Vec<QueueName>,
    /// Workers with a live health record at the last scan.
    pub workers: Vec<WorkerView>,
    /// When the scan finished.
    pub at: Option<DateTime<Utc>>,
}

/// Runs the scanning reads (`queues`, `workers`).
pub async fn discover(store: &dyn Store, now: DateTime<Utc>) -> Result<Discovery, StoreError> {
    let queues = store.queues().await?.into_iter().map(|q| q.queue).collect();
    let workers = store.workers().await?.iter().map(worker_view).collect();
    Ok(Discovery { queues, workers, at: Some(now) })
}

/// A worker as the dashboard shows it.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct WorkerView {
    /// The worker id.
    pub worker_id: String,
    /// Poll-loop state, when the record has one.
    pub status: Option<String>,
    /// Jobs running in it.
    pub active_jobs: Option<u64>,
    /// Jobs it may run at once.
    pub concurrency_limit: Option<u64>,
    /// Queues it polls (full keys).
    pub queues: Vec<String>,
    /// When the record was written, as stored.
    pub timestamp: Option<Value>,
    /// Seconds before the record expires.
    pub ttl_seconds: Option<f64>,
}

fn worker_view(r: &WorkerRecord) -> WorkerView {
    let h = r.health.as_ref();
    let get = |name: &str| h.and_then(|h| h.get(name));
    WorkerView {
        worker_id: r.worker_id.clone(),
        status: get("status").and_then(Value::as_str).map(str::to_owned),
        active_jobs: get("active_jobs").and_then(Value::as_u64),
        concurrency_limit: get("concurrency_limit").and_then(Value::as_u64),
        queues: get("queues")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default(),
        timestamp: get("timestamp").cloned(),
        ttl_seconds: r.ttl.map(|t| t.as_secs_f64()),
    }
}

/// Counts of one queue.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    /// The queue (full key).
    pub queue: String,
    /// The name without its prefix.
    pub name: String,
    /// Jobs whose ready time has come.
    pub ready: u64,
    /// Jobs waiting for a later time (deferred or retrying).
    pub scheduled: u64,
    /// Whether workers skip it.
    pub paused: bool,
}

/// Ready and scheduled counts of a queue: the length, then a binary search
/// over the sorted set's scores for the first entry after `now` (about
/// log2(len) reads of one entry each; never a scan).
pub async fn queue_counts(
    store: &dyn Store,
    queue: &QueueName,
    now: DateTime<Utc>,
    paused: bool,
) -> Result<QueueCounts, StoreError> {
    let len = store.queue_len(queue).await?;
    let (mut lo, mut hi) = (0u64, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let entry = store.queue_entries(queue, mid as usize, 1).await?;
        match entry.first() {
            Some((_, at)) if *at <= now => lo = mid + 1,
            Some(_) => hi = mid,
            // The queue shrank meanwhile: what is left is all before `mid`.
            None => hi = mid,
        }
    }
    let ready = lo.min(len);
    Ok(QueueCounts {
        queue: queue.as_str().to_owned(),
        name: queue.bare().to_owned(),
        ready,
        scheduled: len - ready,
        paused,
    })
}

/// The paused queues.
pub async fn paused(store: &dyn Store) -> Result<Vec<QueueName>, StoreError> {
    store.paused().await
}

/// Entries in a DLQ.
pub async fn dlq_len(store: &dyn Store, dlq: &DlqName) -> Result<u64, StoreError> {
    store.dlq_len(dlq).await
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
/// hashes of those jobs in one batched read.
pub async fn queue_page(
    store: &dyn Store,
    queue: &QueueName,
    offset: usize,
    limit: usize,
    now: DateTime<Utc>,
) -> Result<QueuePage, StoreError> {
    let paused = store.paused().await?.contains(queue);
    let counts = queue_counts(store, queue, now, paused).await?;
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

/// What a DLQ filter keeps (every part optional; text matches are
/// case-insensitive substrings, the queue an exact queue).
#[derive(Clone, Debug, Default, serde::Deserialize)]
pub struct DlqFilter {
    /// The job's queue (bare or full name).
    pub queue: Option<String>,
    /// Part of the function name.
    pub function: Option<String>,
    /// Part of the last error.
    pub error: Option<String>,
}

impl DlqFilter {
    fn normalised(&self) -> (Option<QueueName>, Option<String>, Option<String>) {
        let text = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_lowercase);
        (self.queue.as_deref().and_then(QueueName::parse), text(&self.function), text(&self.error))
    }

    fn is_empty(&self) -> bool {
        let (q, f, e) = self.normalised();
        q.is_none() && f.is_none() && e.is_none()
    }

    fn keeps(&self, job: &Option<Result<Job, String>>, default_queue: &QueueName) -> bool {
        let (queue, function, error) = self.normalised();
        if queue.is_none() && function.is_none() && error.is_none() {
            return true;
        }
        let Some(Ok(job)) = job else { return false };
        queue.is_none_or(|q| job.queue_name.as_ref().unwrap_or(default_queue) == &q)
            && function.is_none_or(|f| job.function_name.to_lowercase().contains(&f))
            && error.is_none_or(|e| job.last_error.as_deref().is_some_and(|l| l.to_lowercase().contains(&e)))
    }
}

/// A filtered page of a DLQ.
#[derive(Clone, Debug, Serialize)]
pub struct DlqPage {
    /// The DLQ (full key).
    pub dlq: String,
    /// Entries in the DLQ.
    pub total: u64,
    /// Entries looked at (newest first); less than `total` when the DLQ is
    /// longer than the scan limit of a filtered read.
    pub scanned: u64,
    /// Entries that match the filter among those scanned.
    pub matched: u64,
    /// Offset of the first row among the matches.
    pub offset: usize,
    /// Rows asked for.
    pub limit: usize,
    /// The matching jobs of this page.
    pub jobs: Vec<JobRow>,
}

/// Walks a DLQ newest first and calls `keep` on every entry the filter
/// keeps, reading job hashes in batches. Without a filter, only the
/// requested window is read (plain list pagination).
async fn dlq_walk(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
    mut visit: impl FnMut(usize, &JobId, Option<Result<Job, String>>) -> bool,
) -> Result<(u64, u64, u64), StoreError> {
    let total = store.dlq_len(dlq).await?;
    let (mut scanned, mut matched) = (0u64, 0u64);
    let mut offset = 0usize;
    while offset < DLQ_SCAN_LIMIT {
        let ids = store.dlq_ids(dlq, offset, DLQ_CHUNK).await?;
        if ids.is_empty() {
            break;
        }
        offset += ids.len();
        let hashes = store.job_fields_batch(&ids).await?;
        for (id, fields) in ids.iter().zip(hashes) {
            scanned += 1;
            let job = parse(id, fields);
            if filter.keeps(&job, &known.default_queue) {
                let index = matched as usize;
                matched += 1;
                if !visit(index, id, job) {
                    return Ok((total, scanned, matched));
                }
            }
        }
    }
    Ok((total, scanned, matched))
}

/// One page of a DLQ, filtered.
pub async fn dlq_page(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
    offset: usize,
    limit: usize,
) -> Result<DlqPage, StoreError> {
    if filter.is_empty() {
        // Plain pagination of the list: only the page is read.
        let total = store.dlq_len(dlq).await?;
        let ids = store.dlq_ids(dlq, offset, limit).await?;
        let hashes = store.job_fields_batch(&ids).await?;
        let jobs = ids.iter().zip(hashes).map(|(id, f)| row(id, parse(id, f), None)).collect();
        return Ok(DlqPage {
            dlq: dlq.as_str().to_owned(),
            total,
            scanned: total,
            matched: total,
            offset,
            limit,
            jobs,
        });
    }
    let mut jobs = Vec::new();
    let (total, scanned, matched) = dlq_walk(store, known, dlq, filter, |i, id, job| {
        if i >= offset && jobs.len() < limit {
            jobs.push(row(id, job, None));
        }
        true
    })
    .await?;
    Ok(DlqPage { dlq: dlq.as_str().to_owned(), total, scanned, matched, offset, limit, jobs })
}

/// The ids of a DLQ that match a filter (newest first, within the scan limit).
pub async fn dlq_matching(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    filter: &DlqFilter,
) -> Result<Vec<(JobId, Option<QueueName>)>, StoreError> {
    let mut out = Vec::new();
    dlq_walk(store, known, dlq, filter, |_, id, job| {
        let queue = match job {
            Some(Ok(job)) => job.queue_name,
            _ => None,
        };
        out.push((id.clone(), queue));
        true
    })
    .await?;
    Ok(out)
}

/// Requeues DLQ entries to their own queue (or the default queue) with a
/// fresh attempt budget. Returns how many were requeued.
pub async fn dlq_requeue(
    store: &dyn Store,
    known: &Known,
    dlq: &DlqName,
    ids: &[(JobId, Option<QueueName>)],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut n = 0;
    for (id, queue) in ids {
        let target = queue.clone().unwrap_or_else(|| known.default_queue.clone());
        if store.dlq_requeue(dlq, id, &target, now).await? {
            n += 1;
        }
    }
    Ok(n)
}

/// The queue of each of `ids` (read from their hashes), for a requeue of
/// a selection.
pub async fn queues_of(store: &dyn Store, ids: &[JobId]) -> Result<Vec<(JobId, Option<QueueName>)>, StoreError> {
    let hashes = store.job_fields_batch(ids).await?;
    Ok(ids
        .iter()
        .zip(hashes)
        .map(|(id, f)| {
            let queue = match parse(id, f) {
                Some(Ok(job)) => job.queue_name,
                _ => None,
            };
            (id.clone(), queue)
        })
        .collect())
}

/// Purges DLQ entries (and their FAILED jobs).
pub async fn dlq_purge(store: &dyn Store, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
    store.dlq_purge(dlq, ids).await
}

/// What `rrq job retry` does: a FAILED job goes from its DLQ back to its
/// queue with a fresh attempt budget. Returns the target queue.
pub async fn retry_job(
    store: &dyn Store,
    known: &Known,
    id: &JobId,
    now: DateTime<Utc>,
) -> Result<QueueName, DataError> {
    let job = match store.job(id).await? {
        None => return Err(DataError::NotFound(id.as_str().to_owned())),
        Some(Err(e)) => return Err(DataError::Conflict(format!("job '{id}' cannot be read: {e}"))),
        Some(Ok(job)) => job,
    };
    if job.status != Some(JobStatus::Failed) {
        let status = job.status.map_or("UNKNOWN", JobStatus::as_str);
        return Err(DataError::Conflict(format!("job '{id}' is {status}; only FAILED jobs can be retried")));
    }
    let dlq = job.dlq_name.unwrap_or_else(|| known.default_dlq.clone());
    let target = job.queue_name.unwrap_or_else(|| known.default_queue.clone());
    if !store.dlq_requeue(&dlq, id, &target, now).await? {
        return Err(DataError::Conflict(format!("job '{id}' is FAILED but not in DLQ '{dlq}'")));
    }
    Ok(target)
}

/// What `rrq job cancel` does. Returns `cancelled` or `cancel_requested`.
pub async fn cancel_job(store: &dyn Store, id: &JobId) -> Result<&'static str, DataError> {
    match store.cancel(id).await? {
        CancelResult::Cancelled => Ok("cancelled"),
        CancelResult::CancelRequested => Ok("cancel_requested"),
        CancelResult::NotFound => Err(DataError::NotFound(id.as_str().to_owned())),
        CancelResult::NotCancellable(status) => {
            let status = status.map_or("UNKNOWN", JobStatus::as_str);
            Err(DataError::Conflict(format!(
                "job '{id}' is {status}; only PENDING, RETRYING and ACTIVE jobs can be cancelled"
            )))
        }
    }
}

/// What `rrq job replay` does: a new job with the same function and params
/// on the original queue. Returns the new id.
pub async fn replay_job(store: Arc<dyn Store>, known: &Known, id: &JobId) -> Result<(JobId, QueueName), DataError> {
    let job = match store.job(id).await? {
        None => return Err(DataError::NotFound(id.as_str().to_owned())),
        Some(Err(e)) => return Err(DataError::Conflict(format!("job '{id}' cannot be replayed: {e}"))),
        Some(Ok(job)) => job,
    };
    let queue = job.queue_name.unwrap_or_else(|| known.default_queue.clone());
    let producer = Producer::with_store(store, known.producer.clone());
    let new_id = producer
        .enqueue(&job.function_name, Value::Object(job.params), EnqueueOptions::queue(queue.as_str()))
        .await
        .map_err(|e| DataError::Conflict(format!("replay failed: {e}")))?;
    Ok((new_id, queue))
}

/// Pauses or resumes a queue; returns whether anything changed.
pub async fn set_paused(store: &dyn Store, queue: &QueueName, pause: bool) -> Result<bool, StoreError> {
    if pause { store.pause(queue).await } else { store.resume(queue).await }
}

/// A cron entry as the dashboard shows it.
#[derive(Clone, Debug, Serialize)]
pub struct CronView {
    /// The configuration key (`rrq.cron_jobs[0]`).
    pub key: String,
    /// The entry id ticks are recorded under.
    pub id: String,
    /// The function.
    pub function: String,
    /// The schedule as written.
    pub schedule: String,
    /// The time zone.
    pub timezone: String,
    /// The queue (the default queue when unset).
    pub queue: String,
    /// Whether it holds the unique lock.
    pub unique: bool,
    /// The last tick any worker handled.
    pub last_tick: Option<DateTime<Utc>>,
    /// The next tick after now.
    pub next_run: Option<DateTime<Utc>>,
    /// Why the entry is invalid (then nothing else is filled in).
    pub error: Option<String>,
}

/// The configured cron entries with their last and next ticks.
pub async fn cron(store: &dyn Store, known: &Known, now: DateTime<Utc>) -> Result<Vec<CronView>, StoreError> {
    let mut out = Vec::new();
    for job in &known.cron {
        out.push(CronView {
            key: job.key().to_owned(),
            id: job.id().to_owned(),
            function: job.function_name().to_owned(),
            schedule: job.schedule().to_owned(),
            timezone: job.timezone().to_string(),
            queue: job.queue().unwrap_or(&known.default_queue).as_str().to_owned(),
            unique: job.is_unique(),
            last_tick: store.cron_tick(job.id()).await?,
            next_run: job.next_after(now),
            error: None,
        });
    }
    for (key, error) in &known.cron_errors {
        out.push(CronView {
            key: key.clone(),
            id: String::new(),
            function: String::new(),
            schedule: String::new(),
            timezone: String::new(),
            queue: String::new(),
            unique: false,
            last_tick: None,
            next_run: None,
            error: Some(error.clone()),
        });
    }
    Ok(out)
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

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 2), "éé…");
        assert_eq!(truncate("ab", 2), "ab");
    }
}
