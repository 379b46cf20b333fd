//! `rrq dlq …`: list, count, inspect, requeue and purge dead-lettered jobs.

use std::collections::{BTreeMap, HashMap};

use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{JobStatus, JobView, Store};
use serde_json::{Value, json};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::job::{function, id_arg, job_not_found, jobs_json, print_fields, queue_label};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use crate::queue::queue_arg;
use rrq_store::{Clock as _, SystemClock};

/// Ids read, and purged, per step of `rrq dlq purge`.
const PURGE_STEP: usize = 500;

/// DLQ commands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead-lettered jobs, most recently failed first
    List(ListArgs),
    /// Summarise a DLQ: size, age, retries, top queues, functions and errors
    Stats(StatsArgs),
    /// Show every field of a dead-lettered job
    Inspect(InspectArgs),
    /// Move jobs from a DLQ back to a queue (needs filters or --all)
    Requeue(RequeueArgs),
    /// Move every job of a DLQ back to its queue (requeue --all)
    RetryAll(RetryAllArgs),
    /// Delete every job of a DLQ (those it held when asked; later arrivals stay)
    Purge(PurgeArgs),
}

/// The `--dlq-name` option.
#[derive(Debug, Clone, clap::Args)]
pub struct DlqArg {
    /// The DLQ (bare name or full key; default: default_dlq_name)
    #[arg(long = "dlq-name")]
    dlq_name: Option<String>,
}

impl DlqArg {
    fn resolve(&self, default: &DlqName) -> Result<DlqName, CliError> {
        match &self.dlq_name {
            None => Ok(default.clone()),
            Some(d) => DlqName::parse(d).ok_or_else(|| ops::usage("--dlq-name needs a non-empty name".to_owned())),
        }
    }
}

/// `rrq dlq list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    dlq: DlqArg,
    /// Only jobs of this queue (bare name or full key)
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs of this function (exact name)
    #[arg(long)]
    function: Option<String>,
    /// Show at most this many jobs
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Skip this many jobs first
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Print each job's stored hash as JSON strings
    #[arg(long)]
    raw: bool,
    /// Job records read per round trip
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
}

/// `rrq dlq stats` options.
#[derive(Debug, clap::Args)]
pub struct StatsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    dlq: DlqArg,
}

/// `rrq dlq inspect` options.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The job id
    job_id: String,
    /// Print only the stored hash as JSON strings
    #[arg(long)]
    raw: bool,
}

/// `rrq dlq requeue` options.
#[derive(Debug, clap::Args)]
pub struct RequeueArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    dlq: DlqArg,
    /// Send every job to this queue (default: each job's own queue)
    #[arg(long)]
    target_queue: Option<String>,
    /// Only jobs of this queue (bare name or full key)
    #[arg(long)]
    queue: Option<String>,
    /// Only jobs of this function (exact name)
    #[arg(long)]
    function: Option<String>,
    /// Only this job
    #[arg(long)]
    job_id: Option<String>,
    /// Requeue at most this many jobs (the most recently failed first)
    #[arg(long)]
    limit: Option<usize>,
    /// Requeue every job of the DLQ when no filter is given
    #[arg(long)]
    all: bool,
    /// Only show what would be requeued
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation (needed with --all when stdin is not a terminal)
    #[arg(long)]
    yes: bool,
}

/// `rrq dlq retry-all` options.
#[derive(Debug, clap::Args)]
pub struct RetryAllArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    dlq: DlqArg,
    /// Send every job to this queue (default: each job's own queue)
    #[arg(long)]
    target_queue: Option<String>,
    /// Only show what would be requeued
    #[arg(long)]
    dry_run: bool,
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(long)]
    yes: bool,
}

/// `rrq dlq purge` options.
#[derive(Debug, clap::Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    #[command(flatten)]
    dlq: DlqArg,
    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(long)]
    yes: bool,
}

/// Runs a DLQ command.
pub async fn run(cmd: DlqCommand) -> Result<Exit, CliError> {
    match cmd {
        DlqCommand::List(args) => list(args).await,
        DlqCommand::Stats(args) => stats(args).await,
        DlqCommand::Inspect(args) => inspect(args).await,
        DlqCommand::Requeue(args) => requeue(args).await,
        DlqCommand::RetryAll(args) => {
            let RetryAllArgs { config, out, dlq, target_queue, dry_run, yes } = args;
            let all = RequeueArgs {
                config,
                out,
                dlq,
                target_queue,
                queue: None,
                function: None,
                job_id: None,
                limit: None,
                all: true,
                dry_run,
                yes,
            };
            requeue(all).await
        }
        DlqCommand::Purge(args) => purge(args).await,
    }
}

/// The jobs of a DLQ, newest entry first, read `batch` records per round
/// trip; ids whose job is gone are skipped.
async fn load(store: &dyn Store, dlq: &DlqName, batch: usize) -> Result<Vec<JobView>, CliError> {
    let ids = store.dlq_ids(dlq, 0, usize::MAX).await?;
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(batch.max(1)) {
        out.extend(store.job_views(chunk).await?.into_iter().flatten());
    }
    Ok(out)
}

/// Keeps the entries whose queue and function match the filters.
fn filter(entries: &mut Vec<JobView>, queue: Option<&QueueName>, name: Option<&str>, default: &QueueName) {
    entries.retain(|j| queue.is_none_or(|q| j.queue_or(default) == *q) && name.is_none_or(|n| function(j) == n));
}

async fn list(args: ListArgs) -> Result<Exit, CliError> {
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let dlq = args.dlq.resolve(&settings.default_dlq)?;
    let batch = usize::try_from(args.batch_size).unwrap_or(usize::MAX);
    let mut entries = load(store.as_ref(), &dlq, batch).await?;
    filter(&mut entries, queue.as_ref(), args.function.as_deref(), &settings.default_queue);
    // Most recently failed first; entries without a completion time last.
    entries.sort_by_key(|j| std::cmp::Reverse(j.completion_time));
    let matched = entries.len();
    let page: Vec<&JobView> = entries.iter().skip(args.offset).take(args.limit).collect();

    if args.raw {
        for j in &page {
            output::print_json(&j.raw_json());
        }
        return Ok(Exit::Ok);
    }
    if args.out.json {
        output::print_json(&jobs_json(page.iter().copied()));
        return Ok(Exit::Ok);
    }
    if page.is_empty() {
        if matched == 0 {
            outln!("No jobs found in DLQ: {dlq}");
        } else {
            outln!("No jobs at offset {} in DLQ: {dlq} ({matched} match)", args.offset);
        }
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    let mut t = output::table(&["Job ID", "Function", "Queue", "Error", "Failed At", "Retries"]);
    output::align_right(&mut t, &[5]);
    for j in &page {
        t.add_row(vec![
            j.id.to_string(),
            output::truncate(function(j), 30),
            queue_label(j).to_owned(),
            output::truncate(last_error(j).lines().next().unwrap_or(""), 40),
            output::relative_opt(j.completion_time, now),
            j.current_retries.unwrap_or(0).to_string(),
        ]);
    }
    outln!("{}", output::render(&t));
    outln!();
    let end = args.offset + page.len();
    outln!("Showing {}-{end} of {matched} jobs", args.offset + 1);
    if end < matched {
        outln!("Use --offset {end} to see more");
    }
    Ok(Exit::Ok)
}

/// A job's last error as listed (empty when it has none).
fn last_error(job: &JobView) -> &str {
    job.last_error.as_deref().unwrap_or("")
}

/// The `n` most frequent values, most frequent first (ties by value).
fn top(counts: HashMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

async fn stats(args: StatsArgs) -> Result<Exit, CliError> {
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let dlq = args.dlq.resolve(&settings.default_dlq)?;
    let entries = load(store.as_ref(), &dlq, 500).await?;
    let times: Vec<_> = entries.iter().filter_map(|j| j.completion_time).collect();
    let (oldest, newest) = (times.iter().min().copied(), times.iter().max().copied());
    let retries: Vec<f64> = entries.iter().filter_map(|j| j.current_retries.map(f64::from)).collect();
    let avg_retries = (!retries.is_empty()).then(|| retries.iter().sum::<f64>() / retries.len() as f64);
    let (mut queues, mut functions, mut errors) = (HashMap::new(), HashMap::new(), HashMap::new());
    for j in &entries {
        *queues.entry(queue_label(j).to_owned()).or_insert(0) += 1;
        *functions.entry(function(j).to_owned()).or_insert(0) += 1;
        *errors.entry(output::truncate(last_error(j), 100)).or_insert(0) += 1;
    }
    let (queues, functions, errors) = (top(queues, 10), top(functions, 10), top(errors, 5));

    if args.out.json {
        let list = |v: &[(String, u64)], key: &str| -> Value {
            v.iter().map(|(name, n)| json!({key: name, "count": n})).collect()
        };
        output::print_json(&json!({
            "dlq": dlq.as_str(),
            "total": entries.len(),
            "oldest": output::time_json(oldest),
            "newest": output::time_json(newest),
            "avg_retries": avg_retries,
            "top_queues": list(&queues, "queue"),
            "top_functions": list(&functions, "function"),
            "top_errors": list(&errors, "error"),
        }));
        return Ok(Exit::Ok);
    }
    if entries.is_empty() {
        outln!("DLQ '{dlq}' is empty");
        return Ok(Exit::Ok);
    }
    let now = SystemClock.now();
    outln!("DLQ: {dlq}");
    outln!("Total jobs: {}", entries.len());
    outln!("Oldest: {}", output::relative_opt(oldest, now));
    outln!("Newest: {}", output::relative_opt(newest, now));
    outln!("Avg retries: {}", avg_retries.map_or_else(|| "N/A".to_owned(), |a| format!("{a:.2}")));
    for (title, items) in [("Top queues", &queues), ("Top functions", &functions)] {
        outln!();
        outln!("{title}:");
        for (name, n) in items {
            outln!("  - {name}: {n}");
        }
    }
    outln!();
    outln!("Top errors:");
    for (error, n) in &errors {
        outln!("  - ({n}x) {error}");
    }
    Ok(Exit::Ok)
}

async fn inspect(args: InspectArgs) -> Result<Exit, CliError> {
    let id = id_arg(&args.job_id)?;
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let job = store.job_view(&id).await?.ok_or_else(|| job_not_found(&id))?;
    if job.status != Some(JobStatus::Failed) {
        eprintln!("note: job '{id}' is {}, so it is not in a DLQ", job.status_label());
    }
    if args.raw {
        output::print_json(&job.raw_json());
    } else if args.out.json {
        output::print_json(&job.to_json());
    } else {
        outln!("DLQ Job {id}");
        print_fields(&job);
    }
    Ok(Exit::Ok)
}

async fn requeue(args: RequeueArgs) -> Result<Exit, CliError> {
    let filtered = args.queue.is_some() || args.function.is_some() || args.job_id.is_some();
    if !filtered && !args.all {
        return Err(ops::usage(
            "Refusing to requeue all jobs without --all or filters. Pass --all, or choose jobs with --queue, --function or --job-id."
                .to_owned(),
        ));
    }
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let target = args.target_queue.as_deref().map(|q| queue_arg(q, "--target-queue")).transpose()?;
    let job_id = args.job_id.as_deref().map(id_arg).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let dlq = args.dlq.resolve(&settings.default_dlq)?;

    let mut entries = load(store.as_ref(), &dlq, 500).await?;
    if let Some(id) = &job_id {
        entries.retain(|j| j.id == *id);
        if entries.is_empty() {
            return Err(ops::not_found(format!("Job '{id}' is not in DLQ '{dlq}' (`rrq dlq list` shows its jobs)")));
        }
    }
    filter(&mut entries, queue.as_ref(), args.function.as_deref(), &settings.default_queue);
    if let Some(limit) = args.limit {
        entries.truncate(limit);
    }
    let plan: Vec<(JobId, QueueName)> = entries
        .into_iter()
        .map(|j| {
            let to = target.clone().unwrap_or_else(|| j.queue_or(&settings.default_queue));
            (j.id, to)
        })
        .collect();

    if args.dry_run {
        if args.out.json {
            let rows: Vec<Value> =
                plan.iter().map(|(id, q)| json!({"job_id": id.as_str(), "queue": q.as_str()})).collect();
            output::print_json(&json!({"dlq": dlq.as_str(), "dry_run": true, "requeued": rows, "skipped": []}));
        } else {
            outln!("Dry run: would requeue {} job(s).", plan.len());
            for (id, q) in &plan {
                outln!("  - {id} -> {q}");
            }
        }
        return Ok(Exit::Ok);
    }
    if plan.is_empty() {
        if args.out.json {
            output::print_json(&json!({"dlq": dlq.as_str(), "dry_run": false, "requeued": [], "skipped": []}));
        } else {
            outln!("No jobs in DLQ '{dlq}' match; nothing was requeued");
        }
        return Ok(Exit::Ok);
    }
    if args.all && !ops::confirm(&format!("Requeue all {} job(s) of {dlq}?", plan.len()), args.yes)? {
        outln!("Cancelled; nothing was requeued");
        return Ok(Exit::Ok);
    }

    let bar = ops::Progress::counted(plan.len() as u64, "requeueing", args.out.json);
    let (mut done, mut skipped) = (Vec::new(), Vec::new());
    for (id, q) in plan {
        if store.dlq_requeue(&dlq, &id, &q, SystemClock.now()).await? {
            done.push((id, q));
        } else {
            skipped.push(id);
        }
        bar.inc(1);
    }
    bar.finish();

    if args.out.json {
        let rows: Vec<Value> = done.iter().map(|(id, q)| json!({"job_id": id.as_str(), "queue": q.as_str()})).collect();
        let skipped: Vec<&str> = skipped.iter().map(JobId::as_str).collect();
        output::print_json(&json!({"dlq": dlq.as_str(), "dry_run": false, "requeued": rows, "skipped": skipped}));
        return Ok(Exit::Ok);
    }
    let mut per_target: BTreeMap<&QueueName, usize> = BTreeMap::new();
    for (_, q) in &done {
        *per_target.entry(q).or_insert(0) += 1;
    }
    for (q, n) in per_target {
        outln!("Requeued {n} job(s) to {q}");
    }
    if !skipped.is_empty() {
        outln!("Skipped {} job(s) that left the DLQ meanwhile", skipped.len());
    }
    Ok(Exit::Ok)
}

async fn purge(args: PurgeArgs) -> Result<Exit, CliError> {
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let dlq = args.dlq.resolve(&settings.default_dlq)?;
    // The ids asked about are the ids purged: entries that arrive (or
    // leave) while the user reads the question are not touched.
    let len = store.dlq_len(&dlq).await?;
    let mut ids = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    while (ids.len() as u64) < len {
        let page = store.dlq_ids(&dlq, ids.len(), PURGE_STEP).await?;
        if page.is_empty() {
            break;
        }
        ids.extend(page);
    }
    if ids.is_empty() {
        if args.out.json {
            output::print_json(&json!({"dlq": dlq.as_str(), "purged": 0}));
        } else {
            outln!("DLQ '{dlq}' is empty");
        }
        return Ok(Exit::Ok);
    }
    if !ops::confirm(&format!("Delete all {} job(s) of {dlq}? This cannot be undone.", ids.len()), args.yes)? {
        outln!("Cancelled; nothing was deleted");
        return Ok(Exit::Ok);
    }
    let bar = ops::Progress::counted(ids.len() as u64, "purging", args.out.json);
    let mut purged = 0u64;
    for chunk in ids.chunks(PURGE_STEP) {
        purged += store.dlq_purge(&dlq, chunk).await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish();
    if args.out.json {
        output::print_json(&json!({"dlq": dlq.as_str(), "purged": purged}));
    } else {
        outln!("Purged {purged} job(s) from {dlq}");
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_lists_are_ordered_by_count_then_name() {
        let counts: HashMap<String, u64> =
            [("b", 2), ("a", 2), ("c", 5), ("d", 1)].into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
        assert_eq!(
            top(counts, 3),
            vec![("c".to_owned(), 5), ("a".to_owned(), 2), ("b".to_owned(), 2)],
            "ties are broken by name, and the list is cut at n"
        );
    }

    #[test]
    fn filters_compare_normalised_queue_names() {
        let default = QueueName::new("default");
        let entry = |id: &str, queue: Option<&str>, name: &str| {
            let mut j = JobView::from_fields(&JobId::new(id), BTreeMap::new());
            j.function_name = Some(name.to_owned());
            j.queue = queue.map(QueueName::new);
            j
        };
        let mail = QueueName::new("mail");
        let all =
            vec![entry("a", Some(mail.as_str()), "send"), entry("b", None, "send"), entry("c", Some("mail"), "x")];
        let mut v = all.clone();
        filter(&mut v, Some(&mail), None, &default);
        assert_eq!(v.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        let mut v = all.clone();
        filter(&mut v, Some(&default), Some("send"), &default);
        assert_eq!(
            v.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
            ["b"],
            "a job that names no queue is on the default queue"
        );
    }
}
