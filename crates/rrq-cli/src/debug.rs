//! `rrq debug …`: synthetic data and load for trying out the other commands
//! and dashboards: fake jobs and workers, one-off submits, a steady stream of
//! jobs, and a pattern delete to clean up afterwards.
//!
//! Everything goes through the `Store` trait (and the producer for real
//! enqueues); the synthetic job hashes use the admin verb
//! [`Store::put_job_fields`], the clean-up [`Store::delete_matching`].

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use rrq_producer::EnqueueOptions;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{WorkerHealth, format_timestamp};
use serde_json::{Map, Value, json};

use crate::ConfigArgs;
use crate::enqueue::{self, Submission, producer, producer_error};
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::OutputArgs;
use crate::queue::queue_arg;
use rrq_store::{Clock as _, SystemClock};

/// How often `generate-workers` rewrites the health records.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// TTL of a synthetic health record.
const HEALTH_TTL: Duration = Duration::from_secs(60);
/// Queues of `generate-jobs` when none is given.
const DEFAULT_QUEUES: &[&str] = &["test", "urgent", "low_priority", "default"];
/// Statuses of `generate-jobs` when none is given.
const DEFAULT_STATUSES: &[&str] = &["pending", "completed", "failed", "retrying"];
/// Statuses `generate-jobs` understands.
const KNOWN_STATUSES: &[&str] = &["pending", "active", "retrying", "completed", "failed"];
/// Function names of synthetic jobs.
const FUNCTIONS: &[&str] = &["send_welcome_email", "resize_upload", "sync_inventory", "build_invoice", "notify_slack"];

/// Debug commands.
#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Write synthetic jobs (ids `test_job_…`) in various states
    GenerateJobs(GenerateJobsArgs),
    /// Write synthetic worker health records for a while
    GenerateWorkers(GenerateWorkersArgs),
    /// Enqueue one job
    Submit(SubmitArgs),
    /// Delete the keys matching a pattern (default `test_*`)
    Clear(ClearArgs),
    /// Enqueue `stress_test_job` at a steady rate
    StressTest(StressTestArgs),
}

/// `rrq debug generate-jobs` options.
#[derive(Debug, clap::Args)]
pub struct GenerateJobsArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Number of jobs
    #[arg(long, default_value_t = 100)]
    count: u64,
    /// Queue to spread jobs over (repeatable; default: test, urgent, low_priority, default)
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Status to spread jobs over (repeatable: pending, active, retrying, completed, failed;
    /// default: pending, completed, failed, retrying)
    #[arg(long = "status")]
    statuses: Vec<String>,
    /// Enqueue times are spread over this many past hours
    #[arg(long, default_value_t = 24)]
    age_hours: u64,
    /// Jobs written at once
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
}

/// `rrq debug generate-workers` options.
#[derive(Debug, clap::Args)]
pub struct GenerateWorkersArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Number of workers
    #[arg(long, default_value_t = 5)]
    count: u64,
    /// Seconds to keep their health records fresh
    #[arg(long, default_value_t = 60)]
    duration: u64,
}

/// `rrq debug submit` options.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The handler to run
    function: String,
    /// Positional arguments, a JSON array (stored as params.args)
    #[arg(long)]
    args: Option<String>,
    /// The params, a JSON object
    #[arg(long)]
    kwargs: Option<String>,
    /// Target queue (default: default_queue_name)
    #[arg(long)]
    queue: Option<String>,
    /// Seconds to defer the job by
    #[arg(long)]
    delay: Option<u64>,
}

/// `rrq debug clear` options.
#[derive(Debug, clap::Args)]
pub struct ClearArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Delete without asking (required for `*` or an empty pattern)
    #[arg(long)]
    confirm: bool,
    /// Redis glob over full key names, applied as given (not limited to rrq:)
    #[arg(long, default_value = "test_*")]
    pattern: String,
}

/// `rrq debug stress-test` options.
#[derive(Debug, clap::Args)]
pub struct StressTestArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Jobs enqueued per second
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    jobs_per_second: u64,
    /// Seconds to run
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Queue to spread jobs over (repeatable; default: stress_test)
    #[arg(long = "queues")]
    queues: Vec<String>,
}

/// Runs a debug command.
pub(crate) async fn run(cmd: DebugCommand) -> Result<Exit, CliError> {
    match cmd {
        DebugCommand::GenerateJobs(args) => generate_jobs(args).await,
        DebugCommand::GenerateWorkers(args) => generate_workers(args).await,
        DebugCommand::Submit(args) => submit(args).await,
        DebugCommand::Clear(args) => clear(args).await,
        DebugCommand::StressTest(args) => stress_test(args).await,
    }
}

/// A small non-cryptographic generator (xorshift64*): synthetic data only.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemClock.now().timestamp_nanos_opt().unwrap_or(0).unsigned_abs();
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Queue options, parsed, or `defaults` when none was given.
fn queues_arg(given: &[String], defaults: &[&str], option: &str) -> Result<Vec<QueueName>, CliError> {
    if given.is_empty() {
        return Ok(defaults.iter().map(|q| QueueName::new(q)).collect());
    }
    given.iter().map(|q| queue_arg(q, option)).collect()
}

/// A progress line redrawn in place, shown only when stdout is a terminal
/// (and never with `--json`).
struct ProgressLine(bool);

impl ProgressLine {
    fn new(json: bool) -> ProgressLine {
        ProgressLine(!json && std::io::stdout().is_terminal())
    }

    fn show(&self, text: &str) {
        if self.0 {
            let mut out = std::io::stdout().lock();
            let _ = write!(out, "\r\x1b[2K{text}");
            let _ = out.flush();
        }
    }

    fn finish(&self) {
        if self.0 {
            outln!();
        }
    }
}

/// Whole seconds left until `deadline`, rounded up.
fn seconds_left(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

// ---------------------------------------------------------------------------
// submit

/// The params of `debug submit`: `--kwargs` (a JSON object) with `--args`
/// (a JSON array) as `params.args`.
fn submit_params(args: Option<&str>, kwargs: Option<&str>) -> Result<Map<String, Value>, CliError> {
    let mut params = enqueue::params_arg(kwargs, "--kwargs")?;
    if let Some(raw) = args {
        let value: Value =
            serde_json::from_str(raw).map_err(|e| ops::usage(format!("--args must be valid JSON array: {e}")))?;
        if !value.is_array() {
            return Err(ops::usage("--args must be a JSON array".to_owned()));
        }
        if params.contains_key("args") {
            return Err(ops::usage("--args conflicts with kwargs key 'args'".to_owned()));
        }
        params.insert("args".to_owned(), value);
    }
    Ok(params)
}

async fn submit(args: SubmitArgs) -> Result<Exit, CliError> {
    enqueue::function_arg(&args.function)?;
    let params = submit_params(args.args.as_deref(), args.kwargs.as_deref())?;
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let submission = Submission {
        function: args.function.clone(),
        params,
        queue,
        defer: args.delay.map(Duration::from_secs),
        unique_key: None,
    };
    let done = enqueue::submit(&producer(store, &settings), &settings, &submission).await?;
    if args.out.json {
        crate::output::print_json(&json!({
            "job_id": done.id.as_str(),
            "function": args.function,
            "queue": done.queue.as_str(),
            "params": submission.params,
            "delay_seconds": args.delay.unwrap_or(0),
        }));
    } else {
        outln!("Job submitted: {}", done.id);
        outln!("Function: {}", args.function);
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------
// clear

async fn clear(args: ClearArgs) -> Result<Exit, CliError> {
    let pattern = args.pattern.as_str();
    if !args.confirm && (pattern.is_empty() || pattern.chars().all(|c| c == '*')) {
        return Err(ops::usage(format!(
            "--pattern {pattern:?} matches every key of the database; pass --confirm to delete them all"
        )));
    }
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let found = store.delete_matching(pattern, true).await?;
    let report = |matched: u64, deleted: u64| {
        crate::output::print_json(&json!({"pattern": pattern, "matched": matched, "deleted": deleted}));
    };
    if found == 0 {
        if args.out.json {
            report(0, 0);
        } else {
            outln!("No keys found matching pattern: {pattern}");
        }
        return Ok(Exit::Ok);
    }
    if !args.out.json {
        outln!("Found {found} keys matching pattern: {pattern}");
    }
    if !ops::confirm_with(&format!("Delete {found} keys?"), args.confirm, "--confirm")? {
        if args.out.json {
            report(found, 0);
        } else {
            outln!("Deletion cancelled");
        }
        return Ok(Exit::Ok);
    }
    let deleted = store.delete_matching(pattern, false).await?;
    if args.out.json {
        report(found, deleted);
    } else if deleted > 0 {
        outln!("Deleted {deleted} keys");
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------
// generate-jobs

/// A status `generate-jobs` understands, lower case.
fn status_arg(s: &str) -> Result<&'static str, CliError> {
    let lower = s.trim().to_ascii_lowercase();
    KNOWN_STATUSES
        .iter()
        .copied()
        .find(|k| *k == lower)
        .ok_or_else(|| ops::usage(format!("--status {s:?} is not one of: {}", KNOWN_STATUSES.join(", "))))
}

/// One synthetic job.
struct FakeJob {
    id: JobId,
    function: &'static str,
    params: Map<String, Value>,
    queue: QueueName,
    status: &'static str,
    current_retries: u64,
    enqueued: DateTime<Utc>,
}

impl FakeJob {
    fn new(rng: &mut Rng, prefix: &str, i: u64, queues: &[QueueName], statuses: &[&'static str], age: u64) -> Self {
        let enqueued = SystemClock.now() - TimeDelta::seconds(rng.below(age * 3_600) as i64);
        let params = json!({
            "arg": format!("value_{i}"),
            "count": rng.below(100),
            "user_id": 1_000 + rng.below(9_000),
            "priority": rng.pick(&["low", "normal", "high"]),
        });
        FakeJob {
            id: JobId::new(format!("{prefix}_{i}")),
            function: rng.pick::<&str>(FUNCTIONS),
            params: params.as_object().cloned().unwrap_or_default(),
            queue: rng.pick(queues).clone(),
            status: rng.pick::<&str>(statuses),
            current_retries: rng.below(4),
            enqueued,
        }
    }

    /// The hash of a job that is not pending: what a worker would have left.
    fn fields(&self, rng: &mut Rng) -> BTreeMap<String, String> {
        let started = self.enqueued + TimeDelta::milliseconds(rng.below(5_000) as i64);
        let finished = started + TimeDelta::milliseconds(1 + rng.below(30_000) as i64);
        let mut f: BTreeMap<String, String> = [
            ("id", self.id.as_str().to_owned()),
            ("function_name", self.function.to_owned()),
            ("job_params", Value::Object(self.params.clone()).to_string()),
            ("enqueue_time", format_timestamp(self.enqueued)),
            ("status", self.status.to_ascii_uppercase()),
            ("current_retries", self.current_retries.to_string()),
            ("max_retries", "3".to_owned()),
            ("job_timeout_seconds", "300".to_owned()),
            ("result_ttl_seconds", "86400".to_owned()),
            ("queue_name", self.queue.as_str().to_owned()),
            ("result", "null".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut set = |k: &str, v: String| f.insert(k.to_owned(), v);
        match self.status {
            "active" => {
                set("start_time", format_timestamp(started));
                set("worker_id", format!("test_worker_{}", rng.below(5)));
            }
            "completed" => {
                set("start_time", format_timestamp(started));
                set("completion_time", format_timestamp(finished));
                set("result", json!({"ok": true, "processed": rng.below(1_000)}).to_string());
            }
            "failed" => {
                set("start_time", format_timestamp(started));
                set("completion_time", format_timestamp(finished));
                set("last_error", "synthetic failure (rrq debug generate-jobs)".to_owned());
            }
            "retrying" => {
                set("last_error", "synthetic transient error (rrq debug generate-jobs)".to_owned());
                set("next_scheduled_run_time", format_timestamp(finished));
            }
            _ => {}
        }
        f
    }
}

async fn generate_jobs(args: GenerateJobsArgs) -> Result<Exit, CliError> {
    let queues = queues_arg(&args.queues, DEFAULT_QUEUES, "--queue")?;
    let statuses: Vec<&'static str> = if args.statuses.is_empty() {
        DEFAULT_STATUSES.to_vec()
    } else {
        args.statuses.iter().map(|s| status_arg(s)).collect::<Result<_, _>>()?
    };
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let producer = producer(store.clone(), &settings);
    let micros = SystemClock.now().timestamp_micros().unsigned_abs();
    let prefix = format!("test_job_{micros}");
    let mut rng = Rng::seeded();
    let bar = ops::progress(args.count, "Generating jobs");
    let mut by_status: BTreeMap<&str, u64> = BTreeMap::new();
    let mut next = 0u64;
    while next < args.count {
        let end = (next + args.batch_size).min(args.count);
        let jobs: Vec<FakeJob> =
            (next..end).map(|i| FakeJob::new(&mut rng, &prefix, i, &queues, &statuses, args.age_hours)).collect();
        let writes = jobs.iter().map(|job| {
            let fields = (job.status != "pending").then(|| job.fields(&mut rng));
            let (store, producer) = (&store, &producer);
            async move {
                match fields {
                    Some(fields) => store.put_job_fields(&job.id, &fields).await.map_err(CliError::from),
                    None => {
                        let options = EnqueueOptions {
                            job_id: Some(job.id.as_str().to_owned()),
                            enqueue_time: Some(job.enqueued),
                            max_retries: Some(3),
                            ..EnqueueOptions::queue(job.queue.as_str())
                        };
                        let params = Value::Object(job.params.clone());
                        producer.enqueue(job.function, params, options).await.map_err(producer_error)?;
                        if job.current_retries > 0 {
                            let retries = [("current_retries".to_owned(), job.current_retries.to_string())].into();
                            store.put_job_fields(&job.id, &retries).await?;
                        }
                        Ok(())
                    }
                }
            }
        });
        for result in join_all(writes).await {
            result?;
        }
        for job in &jobs {
            *by_status.entry(job.status).or_default() += 1;
        }
        bar.inc(end - next);
        next = end;
    }
    bar.finish_and_clear();
    let used: std::collections::BTreeSet<&str> = queues.iter().map(QueueName::as_str).collect();
    if args.out.json {
        crate::output::print_json(&json!({
            "generated": args.count,
            "id_prefix": prefix,
            "queues": used,
            "statuses": by_status,
        }));
    } else {
        outln!("Generated {} fake jobs across {} queues", args.count, used.len());
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------
// generate-workers

async fn generate_workers(args: GenerateWorkersArgs) -> Result<Exit, CliError> {
    let Connected { store, .. } = ops::connect(&args.config).await?;
    if !args.out.json {
        outln!("Simulating {} workers for {} seconds...", args.count, args.duration);
    }
    let progress = ProgressLine::new(args.out.json);
    let deadline = Instant::now() + Duration::from_secs(args.duration);
    let mut rng = Rng::seeded();
    let mut rounds = 0u64;
    loop {
        let epoch = SystemClock.now().timestamp().unsigned_abs();
        for i in 0..args.count {
            let limit = 1 + rng.below(10);
            let health = WorkerHealth {
                active_jobs: rng.below(limit + 1),
                concurrency_limit: limit,
                queues: vec![QueueName::new("default").as_str().to_owned()],
                status: rng.pick(&["running", "polling", "idle (no jobs)"]).to_string(),
                timestamp: json!(epoch),
                worker_id: format!("test_worker_{i}"),
            };
            store.heartbeat(&health, HEALTH_TTL).await?;
        }
        rounds += 1;
        let left = seconds_left(deadline);
        if left == 0 {
            break;
        }
        progress.show(&format!("Simulating workers... {left}s remaining"));
        tokio::time::sleep(HEARTBEAT_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
        if seconds_left(deadline) == 0 {
            break;
        }
    }
    progress.finish();
    if args.out.json {
        crate::output::print_json(&json!({
            "workers": args.count,
            "duration_seconds": args.duration,
            "heartbeat_rounds": rounds,
        }));
    } else {
        outln!("Worker simulation complete");
    }
    Ok(Exit::Ok)
}

// ---------------------------------------------------------------------------
// stress-test

async fn stress_test(args: StressTestArgs) -> Result<Exit, CliError> {
    let queues = queues_arg(&args.queues, &["stress_test"], "--queues")?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let producer = producer(store, &settings);
    if !args.out.json {
        outln!("Starting stress test: {} jobs/sec for {}s", args.jobs_per_second, args.duration);
    }
    let progress = ProgressLine::new(args.out.json);
    let start = Instant::now();
    let mut rng = Rng::seeded();
    let mut total = 0u64;
    let mut per_queue: BTreeMap<&str, u64> = BTreeMap::new();
    for batch in 0..args.duration {
        let jobs: Vec<(String, Value, EnqueueOptions)> = (0..args.jobs_per_second)
            .map(|k| {
                let queue = rng.pick(&queues);
                *per_queue.entry(queue.as_str()).or_default() += 1;
                let params = json!({"job_number": total + k, "batch": batch});
                ("stress_test_job".to_owned(), params, EnqueueOptions::queue(queue.as_str()))
            })
            .collect();
        for result in producer.enqueue_batch(jobs).await.map_err(producer_error)? {
            result.map_err(producer_error)?;
        }
        total += args.jobs_per_second;
        let next = start + Duration::from_secs(batch + 1);
        let left = args.duration - batch - 1;
        progress.show(&format!("Stress test: {total} jobs submitted, {left}s remaining"));
        tokio::time::sleep_until(next.into()).await;
    }
    progress.finish();
    if args.out.json {
        crate::output::print_json(&json!({
            "submitted": total,
            "jobs_per_second": args.jobs_per_second,
            "duration_seconds": args.duration,
            "queues": per_queue,
        }));
    } else {
        outln!("Stress test complete: {total} jobs submitted");
    }
    Ok(Exit::Ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_params_put_args_under_params_args() {
        let p = submit_params(Some("[1,2]"), Some(r#"{"k":1}"#)).unwrap();
        assert_eq!(Value::Object(p), json!({"k": 1, "args": [1, 2]}));
        assert_eq!(Value::Object(submit_params(None, None).unwrap()), json!({}));
        let err = |a: Option<&str>, k: Option<&str>| submit_params(a, k).unwrap_err().error.to_string();
        assert!(err(Some("[1,"), None).starts_with("--args must be valid JSON array: "));
        assert_eq!(err(Some(r#"{"a":1}"#), None), "--args must be a JSON array");
        assert_eq!(err(Some("[1]"), Some(r#"{"args":0}"#)), "--args conflicts with kwargs key 'args'");
        assert!(err(None, Some("{oops")).starts_with("--kwargs must be a valid JSON object: "));
        assert_eq!(err(None, Some("[1]")), "--kwargs must be a JSON object");
    }

    #[test]
    fn statuses_are_case_insensitive_and_checked() {
        assert_eq!(status_arg("Completed").unwrap(), "completed");
        assert_eq!(status_arg("active").unwrap(), "active");
        assert_eq!(status_arg("nope").unwrap_err().exit, Exit::Usage);
    }

    #[test]
    fn the_generator_stays_in_range() {
        let mut rng = Rng::seeded();
        assert!((0..1_000).all(|_| rng.below(4) < 4));
        assert_eq!(rng.below(0), 0);
    }
}
