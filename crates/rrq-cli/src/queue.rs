//! `rrq queue …`: list, inspect, count, pause and resume queues.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{JobStatus, JobView, QueueInfo, Store};
use serde_json::{Value, json};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use rrq_store::{Clock as _, SystemClock};

/// Queue commands.
#[derive(Debug, clap::Subcommand)]
pub enum QueueCommand {
    /// List the queues that hold jobs, with their size and pause state
    List(ListArgs),
    /// Show the jobs of a queue in the order they become ready
    Inspect(InspectArgs),
    /// Count each queue's jobs by status
    Stats(StatsArgs),
    /// Stop workers from taking jobs from a queue (jobs can still be enqueued)
    Pause(PauseArgs),
    /// Let workers take jobs from a paused queue again
    Resume(PauseArgs),
}

/// `rrq queue list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Also list known queues without jobs (the default queue and paused queues)
    #[arg(long)]
    show_empty: bool,
}

/// `rrq queue inspect` options.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The queue (bare name or full key)
    queue: String,
    /// Show at most this many jobs
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Skip this many jobs first
    #[arg(long, default_value_t = 0)]
    offset: usize,
}

/// `rrq queue stats` options.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Only these queues (repeatable; default: every queue that holds jobs)
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Read at most this many job records to count active, completed and failed jobs (0 = all)
    #[arg(long, default_value_t = 1000)]
    max_scan: usize,
}

/// `rrq queue pause` / `resume` options.
#[derive(Debug, clap::Args)]
pub struct PauseArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The queue (bare name or full key)
    queue: String,
}

/// Runs a queue command.
pub async fn run(cmd: QueueCommand) -> Result<Exit, CliError> {
    match cmd {
        QueueCommand::List(args) => list(args).await,
        QueueCommand::Inspect(args) => inspect(args).await,
        QueueCommand::Stats(args) => stats(args).await,
        QueueCommand::Pause(args) => pause(args, true).await,
        QueueCommand::Resume(args) => pause(args, false).await,
    }
}

/// A queue name from the command line; empty names are a usage error.
pub(crate) fn queue_arg(name: &str, option: &str) -> Result<QueueName, CliError> {
    QueueName::parse(name).ok_or_else(|| ops::usage(format!("{option} needs a non-empty queue name")))
}

async fn list(args: ListArgs) -> Result<Exit, CliError> {
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let mut infos = store.queues().await?;
    let paused: BTreeSet<QueueName> = store.paused().await?.into_iter().collect();
    if args.show_empty {
        let known: BTreeSet<QueueName> = infos.iter().map(|i| i.queue.clone()).collect();
        for q in paused.iter().chain([&settings.default_queue]) {
            if !known.contains(q) {
                infos.push(QueueInfo { queue: q.clone(), len: 0, oldest: None, newest: None });
            }
        }
        infos.sort_by(|a, b| a.queue.cmp(&b.queue));
        infos.dedup_by(|a, b| a.queue == b.queue);
    }
    if args.out.json {
        let rows: Vec<Value> = infos
            .iter()
            .map(|i| {
                json!({
                    "queue": i.queue.as_str(),
                    "pending": i.len,
                    "paused": paused.contains(&i.queue),
                    "oldest": output::time_json(i.oldest),
                    "newest": output::time_json(i.newest),
                })
            })
            .collect();
        output::print_json(&Value::Array(rows));
        return Ok(Exit::Ok);
    }
    if infos.is_empty() {
        outln!("No active queues found");
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    let mut t = output::table(&["Queue", "Pending", "Paused", "Oldest", "Newest"]);
    output::align_right(&mut t, &[1]);
    for i in &infos {
        t.add_row(vec![
            i.queue.to_string(),
            i.len.to_string(),
            if paused.contains(&i.queue) { "yes" } else { "no" }.to_owned(),
            output::relative_opt(i.oldest, now),
            output::relative_opt(i.newest, now),
        ]);
    }
    outln!("{}", output::render(&t));
    outln!();
    outln!("Total: {} pending jobs", infos.iter().map(|i| i.len).sum::<u64>());
    Ok(Exit::Ok)
}

async fn inspect(args: InspectArgs) -> Result<Exit, CliError> {
    let queue = queue_arg(&args.queue, "QUEUE")?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let len = store.queue_len(&queue).await?;
    if len == 0 {
        return Err(ops::not_found(format!(
            "Queue '{queue}' not found: no jobs wait in it (`rrq queue list` shows the queues that hold jobs)"
        )));
    }
    let entries = store.queue_entries(&queue, args.offset, args.limit).await?;
    let ids: Vec<JobId> = entries.iter().map(|(id, _)| id.clone()).collect();
    let jobs = store.job_views(&ids).await?;
    let paused = store.paused().await?.contains(&queue);
    if args.out.json {
        let rows: Vec<Value> = entries
            .iter()
            .zip(&jobs)
            .enumerate()
            .map(|(i, ((id, at), job))| {
                json!({
                    "position": args.offset + i + 1,
                    "job_id": id.as_str(),
                    "scheduled": output::time_json(Some(*at)),
                    "job": job.as_ref().map_or(Value::Null, JobView::to_json),
                })
            })
            .collect();
        output::print_json(&Value::Array(rows));
        return Ok(Exit::Ok);
    }
    if entries.is_empty() {
        outln!("No jobs found in queue {queue} at offset {} (it holds {len})", args.offset);
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    let mut t = output::table(&["#", "Job ID", "Function", "Status", "Scheduled", "Retries"]);
    output::align_right(&mut t, &[5]);
    for (i, ((id, at), job)) in entries.iter().zip(&jobs).enumerate() {
        let (function, status, retries) = match job {
            Some(j) => (
                output::truncate(crate::job::function(j), 30),
                j.status_label(),
                j.current_retries.unwrap_or(0).to_string(),
            ),
            None => ("<missing>".to_owned(), "MISSING".to_owned(), "N/A".to_owned()),
        };
        t.add_row(vec![
            (args.offset + i + 1).to_string(),
            id.to_string(),
            function,
            status,
            output::relative(*at, now),
            retries,
        ]);
    }
    outln!("{}", output::render(&t));
    outln!();
    let end = args.offset + entries.len();
    outln!("Showing {}-{end} of {len} jobs in {queue}", args.offset + 1);
    if (end as u64) < len {
        outln!("Use --offset {end} to see more");
    }
    if paused {
        outln!("This queue is paused: workers take nothing from it until `rrq queue resume {}`", queue.bare());
    }
    Ok(Exit::Ok)
}

/// Job counts of one queue.
#[derive(Debug, Default)]
struct Counts {
    pending: u64,
    active: u64,
    completed: u64,
    failed: u64,
    dlq: u64,
    avg_wait: Option<f64>,
}

impl Counts {
    fn total(&self) -> u64 {
        self.pending + self.active + self.completed + self.failed
    }
}

async fn stats(args: StatsArgs) -> Result<Exit, CliError> {
    let mut requested = BTreeSet::new();
    for q in &args.queues {
        requested.insert(queue_arg(q, "--queue")?);
    }
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let explicit = !requested.is_empty();
    let queues: BTreeSet<QueueName> =
        if explicit { requested } else { store.queues().await?.into_iter().map(|i| i.queue).collect() };

    let now = SystemClock.now();
    let mut counts: BTreeMap<QueueName, Counts> = BTreeMap::new();
    for q in &queues {
        let c = counts.entry(q.clone()).or_default();
        c.pending = store.queue_len(q).await?;
        c.avg_wait = average_wait(store.as_ref(), q, now).await?;
    }

    let ids = store.job_ids(args.max_scan).await?;
    let scan_complete = args.max_scan == 0 || ids.len() < args.max_scan;
    for job in store.job_views(&ids).await?.into_iter().flatten() {
        let Some(c) = counts.get_mut(&job.queue_or(&settings.default_queue)) else { continue };
        match job.status {
            Some(JobStatus::Active) => c.active += 1,
            Some(JobStatus::Completed) => c.completed += 1,
            Some(JobStatus::Failed) => c.failed += 1,
            _ => {}
        }
    }
    for job in dlq_jobs(store.as_ref(), &settings.default_dlq).await? {
        if let Some(c) = counts.get_mut(&job.queue_or(&settings.default_queue)) {
            c.dlq += 1;
        }
    }
    if !explicit {
        counts.retain(|_, c| c.total() > 0);
    }

    if args.out.json {
        let rows: Vec<Value> = counts
            .iter()
            .map(|(q, c)| {
                json!({
                    "queue": q.as_str(),
                    "total": c.total(),
                    "pending": c.pending,
                    "active": c.active,
                    "completed": c.completed,
                    "failed": c.failed,
                    "dlq": c.dlq,
                    "avg_wait_seconds": c.avg_wait,
                })
            })
            .collect();
        output::print_json(&json!({"queues": rows, "scanned_jobs": ids.len(), "scan_complete": scan_complete}));
        return Ok(Exit::Ok);
    }
    if counts.is_empty() {
        outln!("No queues found");
        return Ok(Exit::Ok);
    }
    let mut t = output::table(&["Queue", "Total", "Pending", "Active", "Completed", "Failed", "DLQ", "Avg Wait"]);
    output::align_right(&mut t, &[1, 2, 3, 4, 5, 6, 7]);
    for (q, c) in &counts {
        t.add_row(vec![
            q.to_string(),
            c.total().to_string(),
            c.pending.to_string(),
            c.active.to_string(),
            c.completed.to_string(),
            c.failed.to_string(),
            c.dlq.to_string(),
            c.avg_wait.map_or_else(|| "N/A".to_owned(), output::duration),
        ]);
    }
    outln!("{}", output::render(&t));
    if !scan_complete {
        outln!();
        outln!("Note: Active/Completed/Failed counts based on scanning up to {} jobs.", args.max_scan);
        outln!("Use --max-scan 0 for complete scan (may be slow for large datasets).");
    }
    Ok(Exit::Ok)
}

/// The mean time the ready jobs among the first 100 of a queue have waited.
async fn average_wait(store: &dyn Store, queue: &QueueName, now: DateTime<Utc>) -> Result<Option<f64>, CliError> {
    let waits: Vec<f64> = store
        .queue_entries(queue, 0, 100)
        .await?
        .into_iter()
        .filter(|(_, at)| *at <= now)
        .map(|(_, at)| output::seconds_between(at, now))
        .collect();
    Ok((!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64))
}

/// The jobs of a DLQ, newest first, skipping ids whose job is gone.
pub(crate) async fn dlq_jobs(store: &dyn Store, dlq: &DlqName) -> Result<Vec<JobView>, CliError> {
    let ids = store.dlq_ids(dlq, 0, usize::MAX).await?;
    Ok(store.job_views(&ids).await?.into_iter().flatten().collect())
}

async fn pause(args: PauseArgs, pause: bool) -> Result<Exit, CliError> {
    let queue = queue_arg(&args.queue, "QUEUE")?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let changed = if pause { store.pause(&queue).await? } else { store.resume(&queue).await? };
    if args.out.json {
        output::print_json(&json!({"queue": queue.as_str(), "paused": pause, "changed": changed}));
        return Ok(Exit::Ok);
    }
    let message = match (pause, changed) {
        (true, true) => format!("Queue '{queue}' paused: workers take no jobs from it until it is resumed"),
        (true, false) => format!("Queue '{queue}' was already paused"),
        (false, true) => format!("Queue '{queue}' resumed"),
        (false, false) => format!("Queue '{queue}' was not paused"),
    };
    outln!("{message}");
    Ok(Exit::Ok)
}
