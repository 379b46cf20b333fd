//! The job record as stored in the `rrq:job:{id}` hash, and its parsing.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::{Map, Value};

use crate::clock::{format_timestamp, parse_timestamp};

/// The longest duration, in seconds, a job may carry (`job_timeout_seconds`,
/// `result_ttl_seconds`): 100 years. Larger stored values are clamped to it
/// wherever they are used (the scripts clamp with the same figure), and an
/// enqueue from Rust refuses them. Redis `EXPIRE` rejects a TTL whose
/// milliseconds overflow; this bound stays far below that.
pub const MAX_DURATION_SECONDS: i64 = 100 * 365 * 86_400;

/// A job's status, stored verbatim (upper case) in the `status` field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum JobStatus {
    /// Waiting in its queue.
    Pending,
    /// Claimed by a worker and running.
    Active,
    /// Failed an attempt; waiting in its queue for the next one.
    Retrying,
    /// Finished with a result (terminal).
    Completed,
    /// Moved to the dead letter queue (terminal until requeued).
    Failed,
    /// Cancelled before it ran (terminal).
    Cancelled,
}

impl JobStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Active => "ACTIVE",
            JobStatus::Retrying => "RETRYING",
            JobStatus::Completed => "COMPLETED",
            JobStatus::Failed => "FAILED",
            JobStatus::Cancelled => "CANCELLED",
        }
    }

    /// Parses the stored spelling (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_uppercase().as_str() {
            "PENDING" => JobStatus::Pending,
            "ACTIVE" => JobStatus::Active,
            "RETRYING" => JobStatus::Retrying,
            "COMPLETED" => JobStatus::Completed,
            "FAILED" => JobStatus::Failed,
            "CANCELLED" => JobStatus::Cancelled,
            _ => return None,
        })
    }

    /// Whether the orchestrator never runs a job in this status again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled)
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a stored job hash could not be turned into a [`Job`].
///
/// A claimed job that fails to parse is quarantined to the DLQ with this
/// message as its `last_error`; it never stops the worker.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JobParseError {
    /// A required field is absent.
    #[error("job hash has no `{0}` field")]
    Missing(&'static str),
    /// A field holds a value of the wrong shape.
    #[error("job field `{field}` is invalid ({value:?}): {reason}")]
    Invalid {
        /// The field name.
        field: &'static str,
        /// The stored value (truncated to 200 characters).
        value: String,
        /// What was expected.
        reason: &'static str,
    },
    /// The job key exists but is not a hash (something else wrote it).
    #[error("job key holds a {found}, not a hash")]
    WrongType {
        /// The key's Redis type (`string`, `list`, ...).
        found: String,
    },
}

fn invalid(field: &'static str, value: &str, reason: &'static str) -> JobParseError {
    let value = value.chars().take(200).collect();
    JobParseError::Invalid { field, value, reason }
}

/// A job, parsed from its hash. Optional fields are `None` when absent; the
/// caller applies configured defaults (see [`JobDefaults`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    /// `id` (falls back to the key suffix).
    pub id: JobId,
    /// `function_name`, possibly `runner#handler`.
    pub function_name: String,
    /// `job_params` (or upgraded 0.9.9 `job_args`/`job_kwargs`).
    pub params: Map<String, Value>,
    /// `enqueue_time`.
    pub enqueue_time: DateTime<Utc>,
    /// `status`; `None` when missing or unknown (a claim quarantines a queued
    /// job whose status is unknown, and overwrites any other).
    pub status: Option<JobStatus>,
    /// `current_retries` (missing = 0).
    pub current_retries: u32,
    /// `max_retries`: the total number of attempts.
    pub max_retries: Option<u32>,
    /// `next_scheduled_run_time`.
    pub next_scheduled_run_time: Option<DateTime<Utc>>,
    /// `job_timeout_seconds`, as stored (may be zero or negative: the worker
    /// dead-letters such a job with a clear reason).
    pub job_timeout_seconds: Option<i64>,
    /// `result_ttl_seconds` (0 = keep forever, negative = leave unchanged).
    pub result_ttl_seconds: Option<i64>,
    /// `queue_name`, normalised.
    pub queue_name: Option<QueueName>,
    /// `result` (the stored `null` is `None`).
    pub result: Option<Value>,
    /// `trace_context`.
    pub trace_context: Option<BTreeMap<String, String>>,
    /// `correlation_context`.
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// `start_time` of the current or last attempt.
    pub start_time: Option<DateTime<Utc>>,
    /// `worker_id` of the current or last attempt.
    pub worker_id: Option<String>,
    /// `completion_time`.
    pub completion_time: Option<DateTime<Utc>>,
    /// `last_error`.
    pub last_error: Option<String>,
    /// `job_unique_key` (orchestrator unique lock).
    pub unique_key: Option<String>,
    /// `dlq_name` override.
    pub dlq_name: Option<DlqName>,
}

/// Configured values used where a job hash lacks a field.
#[derive(Clone, Debug, PartialEq)]
pub struct JobDefaults {
    /// `default_max_retries`.
    pub max_retries: u32,
    /// `default_job_timeout_seconds`.
    pub job_timeout_seconds: i64,
    /// `default_result_ttl_seconds`.
    pub result_ttl_seconds: i64,
    /// `default_queue_name`.
    pub queue: QueueName,
    /// `default_dlq_name`.
    pub dlq: DlqName,
}

impl Default for JobDefaults {
    /// The reference's documented defaults.
    fn default() -> Self {
        Self {
            max_retries: 5,
            job_timeout_seconds: 300,
            result_ttl_seconds: 86_400,
            queue: QueueName::new("default"),
            dlq: DlqName::new("default"),
        }
    }
}

fn opt<'a>(fields: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
    fields.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn opt_time(fields: &HashMap<String, String>, name: &'static str) -> Result<Option<DateTime<Utc>>, JobParseError> {
    match opt(fields, name) {
        None => Ok(None),
        Some(v) => parse_timestamp(v).map(Some).ok_or_else(|| invalid(name, v, "expected an RFC 3339 timestamp")),
    }
}

fn opt_int(fields: &HashMap<String, String>, name: &'static str) -> Result<Option<i64>, JobParseError> {
    match opt(fields, name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<i64>().map(Some).map_err(|_| invalid(name, v, "expected an integer")),
    }
}

fn opt_string_map(
    fields: &HashMap<String, String>,
    name: &'static str,
) -> Result<Option<BTreeMap<String, String>>, JobParseError> {
    match opt(fields, name) {
        None | Some("null") => Ok(None),
        Some(v) => serde_json::from_str::<BTreeMap<String, String>>(v)
            .map(Some)
            .map_err(|_| invalid(name, v, "expected a JSON object of strings")),
    }
}

impl Job {
    /// Parses a job hash. `key_id` is the id from the key, used when the hash
    /// has no `id` field.
    ///
    /// Jobs written by rrq 0.9.9 producers carry `job_args` / `job_kwargs`
    /// instead of `job_params`: kwargs become the params and positional args go
    /// to `params.args`, so such a job never runs with empty params.
    pub fn from_fields(key_id: &str, fields: &HashMap<String, String>) -> Result<Job, JobParseError> {
        let id = JobId::new(opt(fields, "id").unwrap_or(key_id));
        let function_name = opt(fields, "function_name").ok_or(JobParseError::Missing("function_name"))?.to_owned();
        let params = match opt(fields, "job_params") {
            Some(v) => match serde_json::from_str::<Value>(v) {
                Ok(Value::Object(m)) => m,
                Ok(Value::Null) => Map::new(),
                _ => return Err(invalid("job_params", v, "expected a JSON object")),
            },
            None => legacy_params(fields)?,
        };
        let enqueue_time = match opt(fields, "enqueue_time") {
            None => return Err(JobParseError::Missing("enqueue_time")),
            Some(v) => {
                parse_timestamp(v).ok_or_else(|| invalid("enqueue_time", v, "expected an RFC 3339 timestamp"))?
            }
        };
        let status = opt(fields, "status").and_then(JobStatus::parse);
        let current_retries = match opt_int(fields, "current_retries")? {
            None => 0,
            Some(n) => {
                u32::try_from(n).map_err(|_| invalid("current_retries", &n.to_string(), "expected a count >= 0"))?
            }
        };
        let max_retries = opt_int(fields, "max_retries")?.map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX));
        let result = match opt(fields, "result") {
            None | Some("null") => None,
            Some(v) => Some(serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))),
        };
        Ok(Job {
            id,
            function_name,
            params,
            enqueue_time,
            status,
            current_retries,
            max_retries,
            next_scheduled_run_time: opt_time(fields, "next_scheduled_run_time")?,
            job_timeout_seconds: opt_int(fields, "job_timeout_seconds")?,
            result_ttl_seconds: opt_int(fields, "result_ttl_seconds")?,
            queue_name: opt(fields, "queue_name").map(QueueName::new),
            result,
            trace_context: opt_string_map(fields, "trace_context")?,
            correlation_context: opt_string_map(fields, "correlation_context")?,
            start_time: opt_time(fields, "start_time").unwrap_or(None),
            worker_id: opt(fields, "worker_id").map(str::to_owned),
            completion_time: opt_time(fields, "completion_time").unwrap_or(None),
            last_error: opt(fields, "last_error").map(str::to_owned),
            unique_key: opt(fields, "job_unique_key").map(str::to_owned),
            dlq_name: opt(fields, "dlq_name").map(DlqName::new),
        })
    }

    /// The attempt number of the next (or current) run: `current_retries + 1`.
    pub fn attempt(&self) -> u32 {
        self.current_retries.saturating_add(1)
    }

    /// `max_retries` or the default.
    pub fn max_attempts(&self, defaults: &JobDefaults) -> u32 {
        self.max_retries.unwrap_or(defaults.max_retries)
    }

    /// `job_timeout_seconds` or the default, at most [`MAX_DURATION_SECONDS`]
    /// (so arithmetic on it cannot overflow). It may be non-positive: the
    /// worker refuses such a job.
    pub fn timeout_seconds(&self, defaults: &JobDefaults) -> i64 {
        self.job_timeout_seconds
            .unwrap_or(defaults.job_timeout_seconds)
            .clamp(-MAX_DURATION_SECONDS, MAX_DURATION_SECONDS)
    }

    /// `result_ttl_seconds` or the default, within +-[`MAX_DURATION_SECONDS`]
    /// (0 = keep forever, negative = leave the expiry unchanged), as the
    /// completion applies it.
    pub fn result_ttl_seconds(&self, defaults: &JobDefaults) -> i64 {
        self.result_ttl_seconds
            .unwrap_or(defaults.result_ttl_seconds)
            .clamp(-MAX_DURATION_SECONDS, MAX_DURATION_SECONDS)
    }

    /// The job's own queue, or the default queue.
    pub fn queue(&self, defaults: &JobDefaults) -> QueueName {
        self.queue_name.clone().unwrap_or_else(|| defaults.queue.clone())
    }
}

pub(crate) fn legacy_params(fields: &HashMap<String, String>) -> Result<Map<String, Value>, JobParseError> {
    let mut params = match opt(fields, "job_kwargs") {
        None | Some("null") => Map::new(),
        Some(v) => match serde_json::from_str::<Value>(v) {
            Ok(Value::Object(m)) => m,
            _ => return Err(invalid("job_kwargs", v, "expected a JSON object")),
        },
    };
    match opt(fields, "job_args") {
        None | Some("null") => {}
        Some(v) => match serde_json::from_str::<Value>(v) {
            Ok(Value::Array(a)) if a.is_empty() => {}
            Ok(Value::Array(a)) => {
                if params.contains_key("args") {
                    return Err(invalid("job_args", v, "positional args collide with a keyword argument named `args`"));
                }
                params.insert("args".to_owned(), Value::Array(a));
            }
            _ => return Err(invalid("job_args", v, "expected a JSON array")),
        },
    }
    Ok(params)
}

/// Everything an enqueue writes for a new job.
#[derive(Clone, Debug, PartialEq)]
pub struct NewJob {
    /// The id (caller's or generated).
    pub id: JobId,
    /// Handler name, possibly `runner#handler`.
    pub function_name: String,
    /// The payload.
    pub params: Map<String, Value>,
    /// The target queue.
    pub queue: QueueName,
    /// When it was enqueued, by the enqueuing caller's clock: "now" for
    /// every decision the enqueue makes (whether the job is ready at once
    /// and wakes workers, how far a held unique lock defers it). The store
    /// reads no clock of its own for them.
    pub enqueue_time: DateTime<Utc>,
    /// When it becomes ready (queue score).
    pub scheduled_time: DateTime<Utc>,
    /// Total attempts allowed.
    pub max_retries: u32,
    /// Per-attempt timeout (an enqueue refuses a negative value or one over
    /// [`MAX_DURATION_SECONDS`]).
    pub job_timeout_seconds: i64,
    /// TTL after success (0 = keep forever; an enqueue refuses a negative
    /// value or one over [`MAX_DURATION_SECONDS`]).
    pub result_ttl_seconds: i64,
    /// Trace propagation carrier (stored only when non-empty).
    pub trace_context: BTreeMap<String, String>,
    /// Correlation attributes (stored only when non-empty).
    pub correlation_context: BTreeMap<String, String>,
    /// Orchestrator unique-lock key (cron `unique = true`), if any.
    pub unique_key: Option<String>,
}

impl NewJob {
    /// The hash fields in the order the reference writes them.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![
            ("id", self.id.as_str().to_owned()),
            ("function_name", self.function_name.clone()),
            ("job_params", Value::Object(self.params.clone()).to_string()),
            ("enqueue_time", format_timestamp(self.enqueue_time)),
            ("status", JobStatus::Pending.as_str().to_owned()),
            ("current_retries", "0".to_owned()),
            ("next_scheduled_run_time", format_timestamp(self.scheduled_time)),
            ("max_retries", self.max_retries.to_string()),
            ("job_timeout_seconds", self.job_timeout_seconds.to_string()),
            ("result_ttl_seconds", self.result_ttl_seconds.to_string()),
            ("queue_name", self.queue.as_str().to_owned()),
            ("result", "null".to_owned()),
        ];
        if !self.trace_context.is_empty() {
            f.push(("trace_context", serde_json::to_string(&self.trace_context).expect("string map serialises")));
        }
        if !self.correlation_context.is_empty() {
            f.push((
                "correlation_context",
                serde_json::to_string(&self.correlation_context).expect("string map serialises"),
            ));
        }
        if let Some(k) = &self.unique_key {
            f.push(("job_unique_key", k.clone()));
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn parses_the_reference_worked_example() {
        let f = fields(&[
            ("id", "7c67"),
            ("function_name", "echo"),
            ("job_params", r#"{"msg":"hello","n":42}"#),
            ("enqueue_time", "2026-11-28T00:03:18.635333299+00:00"),
            ("status", "PENDING"),
            ("current_retries", "0"),
            ("max_retries", "5"),
            ("job_timeout_seconds", "30"),
            ("result_ttl_seconds", "86400"),
            ("queue_name", "rrq:queue:default"),
            ("result", "null"),
            ("trace_context", r#"{"traceparent":"00-4bf9-01"}"#),
        ]);
        let job = Job::from_fields("7c67", &f).unwrap();
        assert_eq!(job.status, Some(JobStatus::Pending));
        assert_eq!(job.params["n"], 42);
        assert_eq!(job.attempt(), 1);
        assert_eq!(job.result, None);
        assert_eq!(job.trace_context.unwrap()["traceparent"], "00-4bf9-01");
    }

    #[test]
    fn legacy_payload_is_upgraded() {
        let f = fields(&[
            ("function_name", "f"),
            ("job_args", "[1,2]"),
            ("job_kwargs", r#"{"k":1}"#),
            ("enqueue_time", "2026-11-28T00:00:00+00:00"),
            ("queue_name", "default"),
        ]);
        let job = Job::from_fields("old", &f).unwrap();
        assert_eq!(Value::Object(job.params), serde_json::json!({"k":1,"args":[1,2]}));
        assert_eq!(job.id.as_str(), "old");
        assert_eq!(job.queue_name.unwrap().as_str(), "rrq:queue:default");
    }

    #[test]
    fn bad_hashes_name_the_field() {
        let base = [("function_name", "f"), ("enqueue_time", "2026-11-28T00:00:00Z")];
        let mut f = fields(&base);
        f.insert("job_params".into(), "[1]".into());
        assert!(Job::from_fields("x", &f).unwrap_err().to_string().contains("`job_params`"));
        let mut f = fields(&base);
        f.insert("enqueue_time".into(), "yesterday".into());
        assert!(Job::from_fields("x", &f).unwrap_err().to_string().contains("`enqueue_time`"));
        let mut f = fields(&base);
        f.insert("job_timeout_seconds".into(), "soon".into());
        assert!(Job::from_fields("x", &f).unwrap_err().to_string().contains("`job_timeout_seconds`"));
        assert_eq!(Job::from_fields("x", &HashMap::new()).unwrap_err(), JobParseError::Missing("function_name"));
    }

    #[test]
    fn stored_durations_are_clamped_to_the_documented_maximum() {
        let mut f = fields(&[("function_name", "f"), ("enqueue_time", "2026-11-28T00:00:00Z")]);
        // Python's sys.maxsize, and i64::MAX / MIN.
        for (v, want) in [
            ("4611686018427387904", MAX_DURATION_SECONDS),
            ("9223372036854775807", MAX_DURATION_SECONDS),
            ("-9223372036854775808", -MAX_DURATION_SECONDS),
        ] {
            f.insert("job_timeout_seconds".into(), v.into());
            f.insert("result_ttl_seconds".into(), v.into());
            let job = Job::from_fields("x", &f).unwrap();
            let d = JobDefaults::default();
            assert_eq!(job.timeout_seconds(&d), want);
            assert_eq!(job.result_ttl_seconds(&d), want);
            // What a worker does with it: a deadline that does not overflow.
            let secs = u64::try_from(job.timeout_seconds(&d)).unwrap_or(0);
            assert!(std::time::Instant::now().checked_add(std::time::Duration::from_secs(secs)).is_some());
            assert!(
                chrono::Utc::now().checked_add_signed(chrono::TimeDelta::seconds(job.timeout_seconds(&d))).is_some()
            );
        }
        let huge =
            JobDefaults { job_timeout_seconds: i64::MAX, result_ttl_seconds: i64::MIN, ..JobDefaults::default() };
        let job = Job::from_fields("x", &fields(&[("function_name", "f"), ("enqueue_time", "2026-11-28T00:00:00Z")]));
        let job = job.unwrap();
        assert_eq!(
            (job.timeout_seconds(&huge), job.result_ttl_seconds(&huge)),
            (MAX_DURATION_SECONDS, -MAX_DURATION_SECONDS)
        );
    }
}
