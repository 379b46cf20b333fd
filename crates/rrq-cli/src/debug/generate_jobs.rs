//! `rrq debug generate-jobs`: synthetic jobs in the asked states. Pending
//! ones are real enqueues (so workers run them); the others are job hashes
//! written as a worker would have left them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use rrq_producer::EnqueueOptions;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Clock as _, SystemClock, format_timestamp};
use serde_json::{Map, Value, json};

use super::{Rng, queues_arg};
use crate::ConfigArgs;
use crate::enqueue::{producer, producer_error};
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected, Progress};
use crate::output::OutputArgs;

/// Queues when none is given.
const DEFAULT_QUEUES: &[&str] = &["test", "urgent", "low_priority", "default"];
/// Statuses when none is given.
const DEFAULT_STATUSES: &[&str] = &["pending", "completed", "failed", "retrying"];
/// Statuses understood.
const KNOWN_STATUSES: &[&str] = &["pending", "active", "retrying", "completed", "failed"];
/// Function names of synthetic jobs.
const FUNCTIONS: &[&str] = &["send_welcome_email", "resize_upload", "sync_inventory", "build_invoice", "notify_slack"];

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

pub(super) async fn run(args: GenerateJobsArgs) -> Result<Exit, CliError> {
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
    let progress = Progress::counted(args.count, "Generating jobs", args.out.json);
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
        progress.inc(end - next);
        next = end;
    }
    progress.finish();
    let used: BTreeSet<&str> = queues.iter().map(QueueName::as_str).collect();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_case_insensitive_and_checked() {
        assert_eq!(status_arg("Completed").unwrap(), "completed");
        assert_eq!(status_arg("active").unwrap(), "active");
        assert_eq!(status_arg("nope").unwrap_err().exit, Exit::Usage);
    }
}
