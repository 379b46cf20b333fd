//! Enqueueing from the command line: `rrq job enqueue` and the shared path
//! `rrq debug submit` also takes (both go through `rrq-producer` with the
//! settings' defaults).

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use rrq_config::Settings;
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig, ProducerError};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{Enqueued, JobStatus, Store};
use serde::Serialize;
use serde_json::{Map, Value};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use crate::queue::queue_arg;

/// The longest `--defer` or `--timeout`: 100 years, as for durations in `rrq.toml`.
const MAX_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// One job to enqueue.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    /// The handler (may be `runner#handler`).
    pub function: String,
    /// The params object.
    pub params: Map<String, Value>,
    /// Target queue; the settings' default queue when `None`.
    pub queue: Option<QueueName>,
    /// Deferral from now.
    pub defer: Option<Duration>,
    /// Idempotency key.
    pub unique_key: Option<String>,
}

/// What the store made of a [`Submission`].
#[derive(Debug, Clone)]
pub(crate) struct Submitted {
    /// The id that represents the request.
    pub id: JobId,
    /// The queue it went to.
    pub queue: QueueName,
    /// False when an idempotency key returned an existing job.
    pub created: bool,
}

/// A non-blank FUNCTION argument.
pub(crate) fn function_arg(function: &str) -> Result<(), CliError> {
    if function.trim().is_empty() {
        return Err(ops::usage("FUNCTION cannot be empty".to_owned()));
    }
    Ok(())
}

/// A JSON object given as `option`; none given is an empty object.
pub(crate) fn params_arg(raw: Option<&str>, option: &str) -> Result<Map<String, Value>, CliError> {
    match raw {
        None => Ok(Map::new()),
        Some(raw) => match serde_json::from_str::<Value>(raw) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(ops::usage(format!("{option} must be a JSON object"))),
            Err(e) => Err(ops::usage(format!("{option} must be a valid JSON object: {e}"))),
        },
    }
}

/// A number of seconds for `option`: finite, >= 0, at most 100 years.
fn seconds_arg(raw: &str) -> Result<f64, String> {
    let v: f64 = raw.trim().parse().map_err(|_| format!("'{raw}' is not a number of seconds"))?;
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(format!("'{raw}' must be a finite number of seconds >= 0 (at most 100 years)"));
    }
    Ok(v)
}

/// The exit code and message of a producer error.
pub(crate) fn producer_error(e: ProducerError) -> CliError {
    match e {
        ProducerError::Store(e) => CliError::from(e),
        ProducerError::InvalidOption(m) => ops::usage(m),
        e => CliError::from(e),
    }
}

/// The producer the CLI enqueues with (the settings' defaults).
pub(crate) fn producer(store: Arc<dyn Store>, settings: &Settings) -> Producer {
    Producer::with_store(store, ProducerConfig::from_settings(settings))
}

/// Enqueues one job through the producer.
pub(crate) async fn submit(producer: &Producer, settings: &Settings, s: &Submission) -> Result<Submitted, CliError> {
    let queue = s.queue.clone().unwrap_or_else(|| settings.default_queue.clone());
    let options = EnqueueOptions {
        defer_by: s.defer.filter(|d| !d.is_zero()),
        idempotency_key: s.unique_key.clone(),
        ..EnqueueOptions::queue(queue.as_str())
    };
    let outcome =
        producer.try_enqueue(&s.function, Value::Object(s.params.clone()), options).await.map_err(producer_error)?;
    let (id, created) = match outcome {
        Enqueued::Created(id) => (id, true),
        Enqueued::Existing(id) => (id, false),
        // No rate limit is set here; the producer never drops the job.
        Enqueued::RateLimited => return Err(ops::failure("the job was dropped by a rate limit".to_owned())),
    };
    Ok(Submitted { id, queue, created })
}

/// `rrq job enqueue` options.
#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// The handler to run (may be `runner#handler`)
    function: String,
    /// The params, a JSON object (default: {})
    #[arg(long)]
    params: Option<String>,
    /// Target queue (default: default_queue_name)
    #[arg(long)]
    queue: Option<String>,
    /// Run no earlier than this many seconds from now
    #[arg(long, value_name = "SECONDS", value_parser = seconds_arg, allow_negative_numbers = true)]
    defer: Option<f64>,
    /// Idempotency key: while it names a live job, that job's id is printed and nothing is enqueued
    #[arg(long, value_name = "KEY")]
    unique_key: Option<String>,
    /// Wait for the job to finish and print its result; exit 1 unless it completed
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (exit 1)
    #[arg(long, value_name = "SECONDS", requires = "wait", default_value = "300", value_parser = seconds_arg)]
    timeout: f64,
}

/// What `rrq job enqueue --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct EnqueueReport {
    /// The job id.
    pub job_id: String,
    /// The handler.
    pub function: String,
    /// The queue (full key).
    pub queue: String,
    /// The params enqueued.
    pub params: Map<String, Value>,
    /// The deferral asked for, in seconds.
    pub defer_seconds: f64,
    /// The idempotency key, if any.
    pub unique_key: Option<String>,
    /// False when the idempotency key returned an existing job.
    pub created: bool,
    /// With `--wait`: what became of the job.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// The end (or the state at the timeout) of a waited-for job.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Whether the job reached COMPLETED, FAILED or CANCELLED in time.
    pub finished: bool,
    /// Its status (`null` when unknown or gone).
    pub status: Option<String>,
    /// The handler's result (completed jobs).
    pub result: Option<Value>,
    /// The last error (failed jobs, or an earlier failed attempt).
    pub error: Option<String>,
}

/// Runs `rrq job enqueue`.
pub async fn run(args: EnqueueArgs) -> Result<Exit, CliError> {
    function_arg(&args.function)?;
    let params = params_arg(args.params.as_deref(), "--params")?;
    let queue = args.queue.as_deref().map(|q| queue_arg(q, "--queue")).transpose()?;
    let unique_key = match args.unique_key {
        Some(k) if k.trim().is_empty() => return Err(ops::usage("--unique-key must not be blank".to_owned())),
        k => k,
    };
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let producer = producer(store, &settings);
    let submission = Submission {
        function: args.function.clone(),
        params,
        queue,
        defer: args.defer.map(Duration::from_secs_f64),
        unique_key,
    };
    let done = submit(&producer, &settings, &submission).await?;
    let mut report = EnqueueReport {
        job_id: done.id.as_str().to_owned(),
        function: submission.function,
        queue: done.queue.as_str().to_owned(),
        params: submission.params,
        defer_seconds: args.defer.unwrap_or(0.0),
        unique_key: submission.unique_key,
        created: done.created,
        outcome: None,
    };
    if !args.wait {
        if args.out.json {
            output::print_json(&serde_json::to_value(&report)?);
        } else {
            outln!("{}", done.id);
        }
        return Ok(Exit::Ok);
    }
    if !args.out.json {
        outln!("{}", done.id);
    }
    let spinner = spinner(&done.id);
    let waited = producer.wait_for_completion(&done.id, Duration::from_secs_f64(args.timeout)).await;
    spinner.finish_and_clear();
    let (finished, result) = match waited.map_err(producer_error)? {
        Some(r) => (true, Some(r)),
        None => (false, producer.status(&done.id).await.map_err(producer_error)?),
    };
    let status = result.as_ref().and_then(|r| r.status);
    let outcome = Outcome {
        finished,
        status: status.map(|s| s.as_str().to_owned()),
        result: result.as_ref().and_then(|r| r.result.clone()),
        error: result.as_ref().and_then(|r| r.last_error.clone()),
    };
    if args.out.json {
        report.outcome = Some(outcome.clone());
        output::print_json(&serde_json::to_value(&report)?);
    } else {
        print_outcome(&outcome, status);
    }
    let status_text = outcome.status.as_deref().unwrap_or("UNKNOWN");
    if !finished {
        return Err(ops::failure(format!(
            "job '{}' did not finish within {}s; it is {status_text} (`rrq job show {}` follows it)",
            done.id, args.timeout, done.id
        )));
    }
    if status == Some(JobStatus::Completed) {
        return Ok(Exit::Ok);
    }
    eprintln!("Error: job '{}' ended {status_text}", done.id);
    Ok(Exit::Failure)
}

/// The outcome as lines for people.
fn print_outcome(outcome: &Outcome, status: Option<JobStatus>) {
    outln!("Status: {}", outcome.status.as_deref().unwrap_or("UNKNOWN"));
    match status {
        Some(JobStatus::Completed) => {
            let result = outcome.result.as_ref().unwrap_or(&Value::Null);
            outln!("Result: {}", serde_json::to_string(result).unwrap_or_else(|_| "null".to_owned()));
        }
        _ => {
            if let Some(e) = &outcome.error {
                outln!("Error: {e}");
            }
        }
    }
}

/// A spinner on stderr while waiting, drawn only on a terminal.
fn spinner(id: &JobId) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(format!("Waiting for job {id}"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_must_be_a_json_object_and_errors_name_the_option() {
        assert_eq!(params_arg(Some(r#"{"a":1}"#), "--params").unwrap()["a"], 1);
        assert!(params_arg(None, "--params").unwrap().is_empty());
        let err = |raw| params_arg(Some(raw), "--params").unwrap_err();
        assert_eq!(err("[1]").error.to_string(), "--params must be a JSON object");
        assert!(err("{x").error.to_string().starts_with("--params must be a valid JSON object: "));
        assert_eq!(err("null").exit, Exit::Usage);
    }

    #[test]
    fn seconds_are_finite_non_negative_and_bounded() {
        assert_eq!(seconds_arg("1.5"), Ok(1.5));
        assert_eq!(seconds_arg("0"), Ok(0.0));
        for bad in ["-1", "nan", "inf", "1e30", "soon"] {
            assert!(seconds_arg(bad).is_err(), "{bad}");
        }
    }
}
