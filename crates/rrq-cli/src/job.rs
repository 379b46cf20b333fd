//! `rrq job …`: show, list, cancel, retry, replay and trace jobs.

use chrono::{DateTime, Utc};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig, ProducerError};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{CancelResult, JobStatus, JobView};
use serde_json::{Value, json};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use crate::queue::queue_arg;
use rrq_store::{Clock as _, SystemClock};

/// Job commands.
#[derive(Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Show every field of a job
    #[command(alias = "get")]
    Show(ShowArgs),
    /// List stored jobs, newest first
    List(ListArgs),
    /// Cancel a waiting job, or ask the worker running it to stop it
    Cancel(IdArgs),
    /// Move a FAILED job from its DLQ back to its own queue, with a fresh attempt budget
    Retry(IdArgs),
    /// Enqueue a new job with the same function and params
    Replay(ReplayArgs),
    /// Show a job's timeline: enqueued, started, finished
    Trace(IdArgs),
    /// Enqueue a job (optionally wait for its result)
    Enqueue(crate::enqueue::EnqueueArgs),
}

/// `rrq job show` options.
#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The job id
    job_id: String,
    /// Print the stored hash as JSON strings, exactly as Redis holds it
    #[arg(long)]
    raw: bool,
}

/// `rrq job list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Only jobs with this status (pending, active, retrying, completed, failed, cancelled)
    #[arg(long, value_parser = parse_status)]
    status: Option<JobStatus>,
    /// Only jobs of this queue (bare name or full key)
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs of this function (exact name)
    #[arg(long)]
    function: Option<String>,
    /// Show at most this many jobs
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

/// Options of the commands that take one job id.
#[derive(Debug, clap::Args)]
pub struct IdArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The job id
    job_id: String,
}

/// `rrq job replay` options.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The job id
    job_id: String,
    /// Queue of the new job (default: the original job's queue)
    #[arg(long)]
    queue: Option<String>,
}

/// Runs a job command.
pub async fn run(cmd: JobCommand) -> Result<Exit, CliError> {
    match cmd {
        JobCommand::Show(args) => show(args).await,
        JobCommand::List(args) => list(args).await,
        JobCommand::Cancel(args) => cancel(args).await,
        JobCommand::Retry(args) => retry(args).await,
        JobCommand::Replay(args) => replay(args).await,
        JobCommand::Trace(args) => trace(args).await,
        JobCommand::Enqueue(args) => crate::enqueue::run(args).await,
    }
}

fn parse_status(s: &str) -> Result<JobStatus, String> {
    JobStatus::parse(s).ok_or_else(|| {
        format!("unknown status '{s}'; use one of pending, active, retrying, completed, failed, cancelled")
    })
}

/// A job id from the command line; an empty one is a usage error.
pub(crate) fn id_arg(id: &str) -> Result<JobId, CliError> {
    if id.trim().is_empty() {
        return Err(ops::usage("JOB_ID must not be empty".to_owned()));
    }
    Ok(JobId::new(id))
}

/// The error for a job id with no hash.
pub(crate) fn job_not_found(id: &JobId) -> CliError {
    ops::not_found(format!(
        "Job '{id}' not found (finished jobs are removed once their result TTL ends; `rrq job list` shows the stored ones)"
    ))
}

/// Prints a job's stored fields as people read them: one line per field,
/// sorted by name, timestamps followed by how long ago they were.
pub(crate) fn print_fields(job: &JobView) {
    let now = SystemClock.now();
    for f in job.stored_fields() {
        let (name, value) = (f.name, f.value);
        match f.time {
            Some(t) => outln!("{name:<24} {value} ({})", output::relative(t, now)),
            None => outln!("{name:<24} {value}"),
        }
    }
}

/// The JSON of many jobs, as `--json` lists print it.
pub(crate) fn jobs_json<'a>(jobs: impl IntoIterator<Item = &'a JobView>) -> Value {
    Value::Array(jobs.into_iter().map(JobView::to_json).collect())
}

async fn show(args: ShowArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let job = store.job_view(&id).await?.ok_or_else(|| job_not_found(&id))?;
    if args.raw {
        output::print_json(&job.raw_json());
    } else if args.out.json {
        output::print_json(&job.to_json());
    } else {
        outln!("Job {id}");
        print_fields(&job);
    }
    Ok(Exit::Ok)
}

async fn list(args: ListArgs) -> Result<Exit, CliError> {
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let ids = store.job_ids(0).await?;
    let mut jobs: Vec<JobView> = store
        .job_views(&ids)
        .await?
        .into_iter()
        .flatten()
        .filter(|j| args.status.is_none_or(|s| j.status == Some(s)))
        .filter(|j| queue.as_ref().is_none_or(|q| j.queue_or(&settings.default_queue) == *q))
        .filter(|j| args.function.as_deref().is_none_or(|name| function(j) == name))
        .collect();
    // Newest first; jobs without a readable enqueue time last.
    jobs.sort_by_key(|j| std::cmp::Reverse(j.enqueue_time));
    let matched = jobs.len();
    jobs.truncate(args.limit);

    if args.out.json {
        output::print_json(&jobs_json(&jobs));
        return Ok(Exit::Ok);
    }
    if jobs.is_empty() {
        outln!("No jobs found");
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    let mut t = output::table(&["Job ID", "Function", "Queue", "Status", "Enqueued", "Duration"]);
    output::align_right(&mut t, &[5]);
    for j in &jobs {
        let end = j.completion_time.or_else(|| (j.status == Some(JobStatus::Active)).then_some(now));
        let duration = match (j.start_time, end) {
            (Some(s), Some(e)) => output::duration(output::seconds_between(s, e)),
            _ => "N/A".to_owned(),
        };
        t.add_row(vec![
            j.id.to_string(),
            output::truncate(function(j), 30),
            queue_label(j).to_owned(),
            j.status_label(),
            output::relative_opt(j.enqueue_time, now),
            duration,
        ]);
    }
    outln!("{}", output::render(&t));
    if matched > jobs.len() {
        outln!();
        outln!("Showing the {} newest of {matched} matching jobs; use --limit {matched} to see all", jobs.len());
    }
    Ok(Exit::Ok)
}

async fn cancel(args: IdArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let (result, message) = match store.cancel(&id).await? {
        CancelResult::Cancelled => ("cancelled", format!("Job '{id}' cancelled successfully")),
        CancelResult::CancelRequested => (
            "cancel_requested",
            format!("Cancel requested for running job '{id}': its worker stops it and marks it CANCELLED"),
        ),
        CancelResult::NotFound => return Err(job_not_found(&id)),
        CancelResult::NotCancellable(status) => {
            let status = status.map_or("UNKNOWN", |s| s.as_str());
            return Err(ops::failure(format!(
                "Job '{id}' cannot be cancelled: its status is {status}; only PENDING, RETRYING and ACTIVE jobs can be"
            )));
        }
    };
    if args.out.json {
        output::print_json(&json!({"job_id": id.as_str(), "result": result}));
    } else {
        outln!("{message}");
    }
    Ok(Exit::Ok)
}

async fn retry(args: IdArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let job = store.job_view(&id).await?.ok_or_else(|| job_not_found(&id))?;
    if job.status != Some(JobStatus::Failed) {
        let status = job.status_label();
        return Err(ops::failure(format!(
            "Job '{id}' is {status}; only FAILED jobs can be retried (`rrq job replay {id}` enqueues a copy of any job)"
        )));
    }
    let dlq = job.dlq_or(&settings.default_dlq);
    let target = job.queue_or(&settings.default_queue);
    if !store.dlq_requeue(&dlq, &id, &target, SystemClock.now()).await? {
        return Err(ops::failure(format!(
            "Job '{id}' is FAILED but not in DLQ '{dlq}'; nothing was requeued (`rrq job replay {id}` enqueues a copy)"
        )));
    }
    if args.out.json {
        output::print_json(&json!({"job_id": id.as_str(), "dlq": dlq.as_str(), "queue": target.as_str()}));
    } else {
        outln!("Job '{id}' requeued from {dlq} to {target}");
    }
    Ok(Exit::Ok)
}

async fn replay(args: ReplayArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let job = match store.job(&id).await? {
        None => return Err(job_not_found(&id)),
        Some(Err(e)) => return Err(ops::failure(format!("Job '{id}' cannot be replayed: {e}"))),
        Some(Ok(job)) => job,
    };
    let queue: QueueName = queue.or(job.queue_name).unwrap_or_else(|| settings.default_queue.clone());
    let producer = Producer::with_store(store, ProducerConfig::from_settings(&settings));
    let options = EnqueueOptions::queue(queue.as_str());
    let new_id =
        producer.enqueue(&job.function_name, Value::Object(job.params), options).await.map_err(|e| match e {
            ProducerError::Store(e) => CliError::from(e),
            e => CliError::from(e),
        })?;
    if args.out.json {
        output::print_json(&json!({"job_id": id.as_str(), "new_job_id": new_id.as_str(), "queue": queue.as_str()}));
    } else {
        outln!("Job replayed with new ID: {new_id}");
    }
    Ok(Exit::Ok)
}

/// One step of a job's timeline.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    /// What happened.
    pub name: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who or what, in words.
    pub details: String,
}

/// The timeline a job records, in time order: enqueue, the reference's
/// `retry_{i}_at` times, the (last) start, the next run of a waiting retry
/// or deferred job, and completion.
pub(crate) fn timeline(job: &JobView) -> Vec<Event> {
    let mut events = Vec::new();
    let max = job.max_retries.map_or_else(|| "?".to_owned(), |m| m.to_string());
    let retries = job.current_retries.unwrap_or(0);
    let mut push = |name: String, at: Option<DateTime<Utc>>, details: String| {
        if let Some(at) = at {
            events.push(Event { name, at, details });
        }
    };
    push("Enqueued".into(), job.enqueue_time, format!("Function: {}", function(job)));
    for i in 0..retries {
        push(format!("Retry {}", i + 1), job.retry_times.get(&i).copied(), format!("Attempt {} of {max}", i + 1));
    }
    let worker = job.worker_id.as_deref().unwrap_or("unknown");
    push("Started".into(), job.start_time, format!("Worker: {worker}"));
    let next = format!("Attempt {} of {max}", retries + 1);
    if job.status == Some(JobStatus::Retrying) {
        push("Next run".into(), job.next_scheduled_run_time, next);
    } else if job.status == Some(JobStatus::Pending) && job.next_scheduled_run_time > job.enqueue_time {
        push("Scheduled".into(), job.next_scheduled_run_time, next);
    }
    let mut finished = format!("Status: {}", job.status_label());
    if let Some(e) = job.last_error.as_deref().filter(|_| job.status == Some(JobStatus::Failed)) {
        finished.push_str(&format!(" ({})", output::truncate(e, 60)));
    }
    push("Finished".into(), job.completion_time, finished);
    events.sort_by_key(|e| e.at);
    events
}

/// A job's function name as listed (empty when it has none).
pub(crate) fn function(job: &JobView) -> &str {
    job.function_name.as_deref().unwrap_or("")
}

/// A job's queue as listed (empty when it names none).
pub(crate) fn queue_label(job: &JobView) -> &str {
    job.queue.as_ref().map_or("", QueueName::as_str)
}

async fn trace(args: IdArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let job = store.job_view(&id).await?.ok_or_else(|| job_not_found(&id))?;
    let events = timeline(&job);
    let total = match (events.first(), job.completion_time) {
        (Some(first), Some(done)) => Some(output::seconds_between(first.at, done)),
        _ => None,
    };
    if args.out.json {
        let mut previous: Option<DateTime<Utc>> = None;
        let rows: Vec<Value> = events
            .iter()
            .map(|e| {
                let since = previous.map(|p| output::seconds_between(p, e.at));
                previous = Some(e.at);
                json!({
                    "event": e.name,
                    "time": output::time_json(Some(e.at)),
                    "since_previous_seconds": since,
                    "details": e.details,
                })
            })
            .collect();
        output::print_json(&json!({
            "job_id": id.as_str(),
            "status": job.status_label(),
            "events": rows,
            "total_duration_seconds": total,
        }));
        return Ok(Exit::Ok);
    }
    if events.is_empty() {
        outln!("No trace data found for job {id}");
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    outln!("Job trace for {id}");
    let mut t = output::table(&["Event", "Time", "Since previous", "Details"]);
    output::align_right(&mut t, &[2]);
    let mut previous: Option<DateTime<Utc>> = None;
    for e in &events {
        let since =
            previous.map_or_else(String::new, |p| format!("+{}", output::duration(output::seconds_between(p, e.at))));
        previous = Some(e.at);
        t.add_row(vec![e.name.clone(), output::relative(e.at, now), since, e.details.clone()]);
    }
    outln!("{}", output::render(&t));
    outln!();
    match total {
        Some(total) => outln!("Total Duration: {}", output::duration(total)),
        None => outln!("Status: {} (not finished)", job.status_label()),
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Option<DateTime<Utc>> {
        Some(rrq_store::parse_timestamp(s).unwrap())
    }

    /// A job with nothing stored, to fill in.
    fn job(function: &str, status: JobStatus) -> JobView {
        let mut job = JobView::from_fields(&JobId::new("j1"), Default::default());
        job.function_name = Some(function.to_owned());
        job.status = Some(status);
        job.enqueue_time = at("2030-01-01T00:00:00+00:00");
        job
    }

    #[test]
    fn a_finished_job_has_a_timeline_in_time_order() {
        let mut j = job("retry_once", JobStatus::Failed);
        j.start_time = at("2030-01-01T00:00:04.5+00:00");
        j.completion_time = at("2030-01-01T00:00:04.506+00:00");
        j.worker_id = Some("w1".into());
        j.last_error = Some("boom".into());
        (j.current_retries, j.max_retries) = (Some(1), Some(3));
        j.retry_times.insert(0, at("2030-01-01T00:00:02+00:00").unwrap());
        let names: Vec<_> = timeline(&j).into_iter().map(|e| (e.name, e.details)).collect();
        assert_eq!(
            names,
            vec![
                ("Enqueued".to_owned(), "Function: retry_once".to_owned()),
                ("Retry 1".to_owned(), "Attempt 1 of 3".to_owned()),
                ("Started".to_owned(), "Worker: w1".to_owned()),
                ("Finished".to_owned(), "Status: FAILED (boom)".to_owned()),
            ]
        );
    }

    #[test]
    fn a_waiting_retry_shows_its_next_run() {
        let mut j = job("f", JobStatus::Retrying);
        j.start_time = at("2030-01-01T00:00:01+00:00");
        j.next_scheduled_run_time = at("2030-01-01T00:00:05+00:00");
        (j.current_retries, j.max_retries) = (Some(1), Some(5));
        let last = timeline(&j).pop().unwrap();
        assert_eq!((last.name.as_str(), last.details.as_str()), ("Next run", "Attempt 2 of 5"));
    }

    #[test]
    fn a_pending_job_shows_a_schedule_only_when_deferred() {
        let mut j = job("f", JobStatus::Pending);
        j.next_scheduled_run_time = j.enqueue_time;
        assert_eq!(timeline(&j).len(), 1, "ready at once: only the enqueue");
        j.next_scheduled_run_time = at("2030-01-01T00:05:00+00:00");
        let last = timeline(&j).pop().unwrap();
        assert_eq!((last.name.as_str(), last.details.as_str()), ("Scheduled", "Attempt 1 of ?"));
    }

    #[test]
    fn statuses_are_checked_when_parsed() {
        assert_eq!(parse_status("Failed"), Ok(JobStatus::Failed));
        assert!(parse_status("done").unwrap_err().contains("completed"));
    }
}
