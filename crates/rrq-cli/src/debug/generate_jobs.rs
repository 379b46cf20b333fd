//! `rrq debug generate-jobs`: synthetic jobs in the asked states. Pending
//! ones are real enqueues (so workers run them, and they have not run yet);
//! the others are written as a worker would have left them
//! ([`AdminStore::insert_synthetic_job`](rrq_store::AdminStore::insert_synthetic_job)).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::join_all;
use rrq_producer::EnqueueOptions;
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Clock as _, JobStatus, SyntheticJob, SystemClock};
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
/// Total attempts of every synthetic job.
const MAX_RETRIES: u32 = 3;
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
    current_retries: u32,
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
            current_retries: u32::try_from(rng.below(4)).unwrap_or(0),
            enqueued,
        }
    }

    /// A job that is not pending, as a worker would have left it.
    fn synthetic(&self, rng: &mut Rng) -> SyntheticJob {
        let started = self.enqueued + TimeDelta::milliseconds(rng.below(5_000) as i64);
        let finished = started + TimeDelta::milliseconds(1 + rng.below(30_000) as i64);
        let mut job = SyntheticJob {
            id: self.id.clone(),
            function_name: self.function.to_owned(),
            params: self.params.clone(),
            queue: self.queue.clone(),
            status: JobStatus::parse(self.status).unwrap_or(JobStatus::Pending),
            enqueue_time: self.enqueued,
            current_retries: self.current_retries,
            max_retries: MAX_RETRIES,
            job_timeout_seconds: 300,
            result_ttl_seconds: 86_400,
            start_time: None,
            worker_id: None,
            completion_time: None,
            next_scheduled_run_time: None,
            result: None,
            last_error: None,
        };
        match job.status {
            JobStatus::Active => {
                job.start_time = Some(started);
                job.worker_id = Some(format!("test_worker_{}", rng.below(5)));
            }
            JobStatus::Completed => {
                (job.start_time, job.completion_time) = (Some(started), Some(finished));
                job.result = Some(json!({"ok": true, "processed": rng.below(1_000)}));
            }
            JobStatus::Failed => {
                (job.start_time, job.completion_time) = (Some(started), Some(finished));
                job.last_error = Some("synthetic failure (rrq debug generate-jobs)".to_owned());
            }
            JobStatus::Retrying => {
                job.last_error = Some("synthetic transient error (rrq debug generate-jobs)".to_owned());
                job.next_scheduled_run_time = Some(finished);
            }
            JobStatus::Pending | JobStatus::Cancelled => {}
        }
        job
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
            let synthetic = (job.status != "pending").then(|| job.synthetic(&mut rng));
            let (store, producer) = (&store, &producer);
            async move {
                match synthetic {
                    Some(synthetic) => store.insert_synthetic_job(&synthetic).await.map_err(CliError::from),
                    None => {
                        let options = EnqueueOptions {
                            job_id: Some(job.id.as_str().to_owned()),
                            enqueue_time: Some(job.enqueued),
                            max_retries: Some(MAX_RETRIES),
                            ..EnqueueOptions::queue(job.queue.as_str())
                        };
                        let params = Value::Object(job.params.clone());
                        producer.enqueue(job.function, params, options).await.map_err(producer_error)?;
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
