//! Typed views for inspection tools: a job as `rrq job show` or a DLQ
//! listing sees it, a worker as its health record describes it, and the
//! typed record `rrq debug generate-jobs` writes. The schemas of the job hash
//! and of the health record (names and encodings) stay in this crate, so no
//! caller spells a field.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::{Map, Value};

use crate::clock::{format_timestamp, parse_timestamp};
use crate::job::{Job, JobParseError, JobStatus, legacy_params};
use crate::store::WorkerRecord;

/// Fields that hold JSON documents.
const JSON_FIELDS: &[&str] =
    &["job_params", "result", "trace_context", "correlation_context", "job_args", "job_kwargs"];
/// Fields that hold integers.
const INT_FIELDS: &[&str] = &["current_retries", "max_retries", "job_timeout_seconds", "result_ttl_seconds"];
/// Fields that hold timestamps.
const TIME_FIELDS: &[&str] = &["enqueue_time", "start_time", "completion_time", "next_scheduled_run_time"];

/// A job as inspection tools see it: every field RRQ knows, typed (`None`
/// when absent or unreadable), the stored hash as it is (for `--raw` output
/// and for fields RRQ does not know), and what makes the hash unrunnable,
/// if anything.
#[derive(Clone, Debug, PartialEq)]
pub struct JobView {
    /// The id the job was read by (its key suffix).
    pub id: JobId,
    /// `function_name`.
    pub function_name: Option<String>,
    /// `status`; `None` when missing or not one RRQ writes (see
    /// [`JobView::status_label`] for what to show).
    pub status: Option<JobStatus>,
    /// `queue_name`, normalised; `None` when the hash names none (the
    /// default queue applies, see [`JobView::queue_or`]).
    pub queue: Option<QueueName>,
    /// `dlq_name` override.
    pub dlq: Option<DlqName>,
    /// The payload: `job_params`, or a 0.9.9 job's `job_args`/`job_kwargs`
    /// upgraded as the worker upgrades them; `None` when absent or unreadable.
    pub params: Option<Map<String, Value>>,
    /// `result` (the stored `null` is `None`; text that is not JSON is kept
    /// as a JSON string).
    pub result: Option<Value>,
    /// `last_error`.
    pub last_error: Option<String>,
    /// `enqueue_time`.
    pub enqueue_time: Option<DateTime<Utc>>,
    /// `start_time` of the current or last attempt.
    pub start_time: Option<DateTime<Utc>>,
    /// `completion_time`.
    pub completion_time: Option<DateTime<Utc>>,
    /// `next_scheduled_run_time`.
    pub next_scheduled_run_time: Option<DateTime<Utc>>,
    /// When each earlier attempt was retried, by attempt index from 0 (the
    /// reference's `retry_{i}_at` fields, written by older versions).
    pub retry_times: BTreeMap<u32, DateTime<Utc>>,
    /// `current_retries`.
    pub current_retries: Option<u32>,
    /// `max_retries` (the total number of attempts).
    pub max_retries: Option<u32>,
    /// `job_timeout_seconds`.
    pub job_timeout_seconds: Option<i64>,
    /// `result_ttl_seconds`.
    pub result_ttl_seconds: Option<i64>,
    /// `worker_id` of the current or last attempt.
    pub worker_id: Option<String>,
    /// `job_unique_key` (orchestrator unique lock).
    pub unique_key: Option<String>,
    /// `trace_context`.
    pub trace_context: Option<BTreeMap<String, String>>,
    /// `correlation_context`.
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// Whether a cancel of the running job was requested.
    pub cancel_requested: bool,
    /// The hash as stored: every field, every value a string.
    pub raw: BTreeMap<String, String>,
    /// Why a worker could not run this hash, when it could not.
    pub problem: Option<JobParseError>,
}

/// One stored field of a [`JobView`], as `rrq job show` lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredField<'a> {
    /// The field name.
    pub name: &'a str,
    /// The stored value.
    pub value: &'a str,
    /// The value as a time, when the field holds a timestamp and it parses.
    pub time: Option<DateTime<Utc>>,
}

fn present<'a>(raw: &'a BTreeMap<String, String>, name: &str) -> Option<&'a str> {
    raw.get(name).map(String::as_str).filter(|v| !v.is_empty())
}

fn time(raw: &BTreeMap<String, String>, name: &str) -> Option<DateTime<Utc>> {
    present(raw, name).and_then(parse_timestamp)
}

fn int(raw: &BTreeMap<String, String>, name: &str) -> Option<i64> {
    present(raw, name).and_then(|v| v.trim().parse::<i64>().ok())
}

fn string_map(raw: &BTreeMap<String, String>, name: &str) -> Option<BTreeMap<String, String>> {
    present(raw, name).filter(|v| *v != "null").and_then(|v| serde_json::from_str(v).ok())
}

fn params(raw: &BTreeMap<String, String>) -> Option<Map<String, Value>> {
    match present(raw, "job_params") {
        Some(v) => match serde_json::from_str::<Value>(v) {
            Ok(Value::Object(m)) => Some(m),
            Ok(Value::Null) => Some(Map::new()),
            _ => None,
        },
        None if present(raw, "job_args").is_some() || present(raw, "job_kwargs").is_some() => {
            let fields: HashMap<String, String> = raw.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            legacy_params(&fields).ok()
        }
        None => None,
    }
}

/// `retry_{i}_at` fields: the attempt index and the time.
fn retry_times(raw: &BTreeMap<String, String>) -> BTreeMap<u32, DateTime<Utc>> {
    raw.iter()
        .filter_map(|(name, value)| {
            let index = name.strip_prefix("retry_")?.strip_suffix("_at")?.parse::<u32>().ok()?;
            Some((index, parse_timestamp(value)?))
        })
        .collect()
}

impl JobView {
    /// The view of a stored hash, read by `id`.
    pub fn from_fields(id: &JobId, raw: BTreeMap<String, String>) -> JobView {
        let fields: HashMap<String, String> = raw.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let problem = Job::from_fields(id.as_str(), &fields).err();
        JobView {
            id: id.clone(),
            function_name: present(&raw, "function_name").map(str::to_owned),
            status: present(&raw, "status").and_then(JobStatus::parse),
            queue: present(&raw, "queue_name").and_then(QueueName::parse),
            dlq: present(&raw, "dlq_name").and_then(DlqName::parse),
            params: params(&raw),
            result: match present(&raw, "result") {
                None | Some("null") => None,
                Some(v) => Some(serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()))),
            },
            last_error: present(&raw, "last_error").map(str::to_owned),
            enqueue_time: time(&raw, "enqueue_time"),
            start_time: time(&raw, "start_time"),
            completion_time: time(&raw, "completion_time"),
            next_scheduled_run_time: time(&raw, "next_scheduled_run_time"),
            retry_times: retry_times(&raw),
            current_retries: int(&raw, "current_retries").and_then(|n| u32::try_from(n).ok()),
            max_retries: int(&raw, "max_retries").map(|n| u32::try_from(n.max(0)).unwrap_or(u32::MAX)),
            job_timeout_seconds: int(&raw, "job_timeout_seconds"),
            result_ttl_seconds: int(&raw, "result_ttl_seconds"),
            worker_id: present(&raw, "worker_id").map(str::to_owned),
            unique_key: present(&raw, "job_unique_key").map(str::to_owned),
            trace_context: string_map(&raw, "trace_context"),
            correlation_context: string_map(&raw, "correlation_context"),
            cancel_requested: present(&raw, "cancel_requested") == Some("1"),
            raw,
            problem,
        }
    }

    /// The status as shown to people: the stored spelling in upper case (an
    /// unknown value as it is, upper-cased), `UNKNOWN` when there is none.
    pub fn status_label(&self) -> String {
        if let Some(s) = self.status {
            return s.as_str().to_owned();
        }
        match self.raw.get("status").map(|s| s.trim()) {
            Some(s) if !s.is_empty() => s.to_ascii_uppercase(),
            _ => "UNKNOWN".to_owned(),
        }
    }

    /// The job's queue, or `default` when the hash names none.
    pub fn queue_or(&self, default: &QueueName) -> QueueName {
        self.queue.clone().unwrap_or_else(|| default.clone())
    }

    /// The job's DLQ, or `default` when the hash names none.
    pub fn dlq_or(&self, default: &DlqName) -> DlqName {
        self.dlq.clone().unwrap_or_else(|| default.clone())
    }

    /// The stored fields in name order, each with its time when it holds one.
    pub fn stored_fields(&self) -> impl Iterator<Item = StoredField<'_>> {
        self.raw.iter().map(|(name, value)| StoredField {
            name,
            value,
            time: if TIME_FIELDS.contains(&name.as_str()) { parse_timestamp(value) } else { None },
        })
    }

    /// The hash as typed JSON, keyed by field name: JSON documents parsed,
    /// counts as numbers, timestamps in RFC 3339 (UTC); a value that does not
    /// parse, and any field RRQ does not know, stays the stored string.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (name, raw) in &self.raw {
            let value = if JSON_FIELDS.contains(&name.as_str()) {
                serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.clone()))
            } else if INT_FIELDS.contains(&name.as_str()) {
                raw.trim().parse::<i64>().map_or_else(|_| Value::String(raw.clone()), Value::from)
            } else if TIME_FIELDS.contains(&name.as_str()) {
                parse_timestamp(raw).map_or_else(|| Value::String(raw.clone()), |t| Value::String(format_timestamp(t)))
            } else {
                Value::String(raw.clone())
            };
            out.insert(name.clone(), value);
        }
        Value::Object(out)
    }

    /// The hash as stored, as JSON: every value a string.
    pub fn raw_json(&self) -> Value {
        Value::Object(self.raw.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
    }
}

/// A job written as a worker would have left it, for synthetic data
/// (`rrq debug generate-jobs`): see [`AdminStore::insert_synthetic_job`](crate::AdminStore::insert_synthetic_job).
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticJob {
    /// The id.
    pub id: JobId,
    /// Handler name.
    pub function_name: String,
    /// The payload.
    pub params: Map<String, Value>,
    /// The job's queue (it is not added to it).
    pub queue: QueueName,
    /// The status it is left in.
    pub status: JobStatus,
    /// When it was enqueued.
    pub enqueue_time: DateTime<Utc>,
    /// Attempts already counted.
    pub current_retries: u32,
    /// Total attempts allowed.
    pub max_retries: u32,
    /// Per-attempt timeout.
    pub job_timeout_seconds: i64,
    /// TTL after success.
    pub result_ttl_seconds: i64,
    /// When its last attempt started.
    pub start_time: Option<DateTime<Utc>>,
    /// Which worker ran its last attempt.
    pub worker_id: Option<String>,
    /// When it finished.
    pub completion_time: Option<DateTime<Utc>>,
    /// When it is next due.
    pub next_scheduled_run_time: Option<DateTime<Utc>>,
    /// Its result (`None` is the stored `null`).
    pub result: Option<Value>,
    /// Its last error.
    pub last_error: Option<String>,
}

impl SyntheticJob {
    /// The hash fields to write.
    pub(crate) fn to_fields(&self) -> BTreeMap<String, String> {
        let mut f: BTreeMap<String, String> = [
            ("id", self.id.as_str().to_owned()),
            ("function_name", self.function_name.clone()),
            ("job_params", Value::Object(self.params.clone()).to_string()),
            ("enqueue_time", format_timestamp(self.enqueue_time)),
            ("status", self.status.as_str().to_owned()),
            ("current_retries", self.current_retries.to_string()),
            ("max_retries", self.max_retries.to_string()),
            ("job_timeout_seconds", self.job_timeout_seconds.to_string()),
            ("result_ttl_seconds", self.result_ttl_seconds.to_string()),
            ("queue_name", self.queue.as_str().to_owned()),
            ("result", self.result.as_ref().map_or_else(|| "null".to_owned(), Value::to_string)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let times = [
            ("start_time", self.start_time),
            ("completion_time", self.completion_time),
            ("next_scheduled_run_time", self.next_scheduled_run_time),
        ];
        for (name, t) in times {
            if let Some(t) = t {
                f.insert(name.to_owned(), format_timestamp(t));
            }
        }
        if let Some(w) = &self.worker_id {
            f.insert("worker_id".to_owned(), w.clone());
        }
        if let Some(e) = &self.last_error {
            f.insert("last_error".to_owned(), e.clone());
        }
        f
    }
}

/// A worker as inspection tools see it: the members of its health record,
/// typed. Records written by other tools may lack members or hold other
/// types; what does not read is `None`.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerInfo {
    /// The worker id (the key suffix).
    pub worker_id: String,
    /// The poll-loop state it reported (`running`, `polling`, `idle (no
    /// jobs)`, ...).
    pub status: Option<String>,
    /// Jobs running in it when it wrote the record.
    pub active_jobs: Option<u64>,
    /// Jobs it may run at once.
    pub concurrency_limit: Option<u64>,
    /// Full queue keys it polls (members that are not text are skipped).
    pub queues: Option<Vec<String>>,
    /// When it wrote the record (RFC 3339 text, or epoch seconds as some
    /// writers put it).
    pub last_heartbeat: Option<DateTime<Utc>>,
    /// Jobs it completed since it started (`completed_jobs`, an RRQ
    /// addition; `None` in records of other writers).
    pub completed_jobs: Option<u64>,
    /// Jobs it moved to a DLQ since it started (`failed_jobs`, an RRQ
    /// addition).
    pub failed_jobs: Option<u64>,
    /// Jobs running in it per full queue key (`active_by_queue`, an RRQ
    /// addition; members that are not counts are skipped).
    pub active_by_queue: Option<BTreeMap<String, u64>>,
    /// Time left before the record expires; `None` when it has no expiry.
    pub ttl: Option<Duration>,
    /// The record's JSON as stored; `None` when it is not JSON.
    pub health: Option<Value>,
}

/// The time a health record was written: RFC 3339 text or epoch seconds.
fn heartbeat_time(health: &Value) -> Option<DateTime<Utc>> {
    match health.get("timestamp")? {
        Value::String(s) => parse_timestamp(s),
        Value::Number(n) => {
            let secs = n.as_f64().filter(|s| s.is_finite())?;
            DateTime::from_timestamp_micros((secs * 1e6) as i64)
        }
        _ => None,
    }
}

impl From<WorkerRecord> for WorkerInfo {
    fn from(record: WorkerRecord) -> WorkerInfo {
        let h = record.health.as_ref();
        let member = |name: &str| h.and_then(|h| h.get(name));
        WorkerInfo {
            status: member("status").and_then(Value::as_str).map(str::to_owned),
            active_jobs: member("active_jobs").and_then(Value::as_u64),
            concurrency_limit: member("concurrency_limit").and_then(Value::as_u64),
            queues: member("queues")
                .and_then(Value::as_array)
                .map(|qs| qs.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
            last_heartbeat: h.and_then(heartbeat_time),
            completed_jobs: member("completed_jobs").and_then(Value::as_u64),
            failed_jobs: member("failed_jobs").and_then(Value::as_u64),
            active_by_queue: member("active_by_queue")
                .and_then(Value::as_object)
                .map(|m| m.iter().filter_map(|(q, n)| Some((q.clone(), n.as_u64()?))).collect()),
            worker_id: record.worker_id,
            ttl: record.ttl,
            health: record.health,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(pairs: &[(&str, &str)]) -> JobView {
        let raw = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        JobView::from_fields(&JobId::new("j1"), raw)
    }

    fn at(s: &str) -> DateTime<Utc> {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn known_fields_are_typed_and_the_hash_is_kept() {
        let v = view(&[
            ("id", "j1"),
            ("function_name", "send"),
            ("job_params", r#"{"n":1}"#),
            ("status", "failed"),
            ("queue_name", "mail"),
            ("dlq_name", "slow"),
            ("current_retries", "2"),
            ("max_retries", "3"),
            ("enqueue_time", "2030-01-01T01:00:00+01:00"),
            ("completion_time", "2030-01-01T00:00:05Z"),
            ("retry_0_at", "2030-01-01T00:00:02Z"),
            ("retry_x_at", "2030-01-01T00:00:03Z"),
            ("last_error", "boom"),
            ("trace_context", r#"{"traceparent":"00-ab-01"}"#),
            ("cancel_requested", "1"),
            ("colour", "blue"),
        ]);
        assert_eq!((v.function_name.as_deref(), v.status), (Some("send"), Some(JobStatus::Failed)));
        assert_eq!(v.queue, Some(QueueName::new("mail")), "queue names are normalised");
        assert_eq!(v.dlq_or(&DlqName::new("default")), DlqName::new("slow"));
        assert_eq!(v.params.as_ref().unwrap()["n"], 1);
        assert_eq!((v.current_retries, v.max_retries), (Some(2), Some(3)));
        assert_eq!(v.enqueue_time, Some(at("2030-01-01T00:00:00Z")));
        assert_eq!(v.retry_times, BTreeMap::from([(0, at("2030-01-01T00:00:02Z"))]));
        assert_eq!(v.trace_context.as_ref().unwrap()["traceparent"], "00-ab-01");
        assert!(v.cancel_requested);
        assert_eq!(v.raw["colour"], "blue", "unknown fields are kept");
        assert_eq!(v.status_label(), "FAILED");
        assert_eq!(v.problem, None);
    }

    #[test]
    fn a_malformed_hash_keeps_what_reads_and_names_its_problem() {
        let v = view(&[("status", "weird "), ("enqueue_time", "yesterday"), ("current_retries", "-1")]);
        assert_eq!(v.problem, Some(JobParseError::Missing("function_name")));
        assert_eq!((v.status, v.status_label()), (None, "WEIRD".to_owned()));
        assert_eq!((v.enqueue_time, v.current_retries), (None, None));
        assert_eq!(view(&[]).status_label(), "UNKNOWN");
        let default = QueueName::new("default");
        assert_eq!(view(&[]).queue_or(&default), default, "no queue_name: the default queue");
        let legacy = view(&[("job_args", "[1]"), ("job_kwargs", r#"{"k":2}"#)]);
        assert_eq!(Value::Object(legacy.params.unwrap()), serde_json::json!({"k": 2, "args": [1]}));
    }

    #[test]
    fn json_types_known_fields_and_keeps_the_rest() {
        let v = view(&[
            ("id", "j1"),
            ("job_params", r#"{"n":1}"#),
            ("result", "null"),
            ("current_retries", "2"),
            ("max_retries", "five"),
            ("enqueue_time", "2030-01-01T01:00:00+01:00"),
            ("completion_time", "yesterday"),
            ("status", "FAILED"),
        ]);
        let j = v.to_json();
        assert_eq!(j["job_params"]["n"], 1);
        assert_eq!(j["result"], Value::Null);
        assert_eq!(j["current_retries"], 2);
        assert_eq!(j["max_retries"], "five", "an unparsable count stays a string");
        assert_eq!(j["enqueue_time"], "2030-01-01T00:00:00+00:00", "times are normalised to UTC");
        assert_eq!(j["completion_time"], "yesterday");
        assert_eq!(v.raw_json()["current_retries"], "2");
        let listed: Vec<_> = v.stored_fields().filter(|f| f.time.is_some()).map(|f| f.name).collect();
        assert_eq!(listed, ["enqueue_time"], "only timestamp fields that parse carry a time");
    }

    #[test]
    fn a_synthetic_job_reads_back_as_it_was_described() {
        let job = SyntheticJob {
            id: JobId::new("s1"),
            function_name: "f".into(),
            params: Map::new(),
            queue: QueueName::new("q"),
            status: JobStatus::Completed,
            enqueue_time: at("2030-01-01T00:00:00Z"),
            current_retries: 1,
            max_retries: 3,
            job_timeout_seconds: 300,
            result_ttl_seconds: 86_400,
            start_time: Some(at("2030-01-01T00:00:01Z")),
            worker_id: Some("w".into()),
            completion_time: Some(at("2030-01-01T00:00:02Z")),
            next_scheduled_run_time: None,
            result: Some(serde_json::json!({"ok": true})),
            last_error: None,
        };
        let v = JobView::from_fields(&job.id, job.to_fields());
        assert_eq!(v.problem, None, "a synthetic job is runnable");
        assert_eq!(
            (v.status, v.queue.clone(), v.current_retries),
            (Some(JobStatus::Completed), Some(job.queue), Some(1))
        );
        assert_eq!(
            (v.start_time, v.completion_time, v.worker_id.as_deref()),
            (job.start_time, job.completion_time, Some("w"))
        );
        assert_eq!(v.result, job.result);
        assert!(!v.raw.contains_key("last_error"));
    }

    #[test]
    fn a_health_record_reads_typed_and_missing_members_are_none() {
        let record = WorkerRecord {
            worker_id: "w1".into(),
            health: Some(serde_json::json!({
                "status": "running", "active_jobs": 2, "concurrency_limit": 4,
                "queues": ["q-a", 7], "timestamp": "2030-01-01T00:00:00Z",
            })),
            ttl: Some(Duration::from_secs(55)),
        };
        let w = WorkerInfo::from(record);
        assert_eq!((w.status.as_deref(), w.active_jobs, w.concurrency_limit), (Some("running"), Some(2), Some(4)));
        assert_eq!(w.queues, Some(vec!["q-a".to_owned()]), "members that are not text are skipped");
        assert_eq!((w.last_heartbeat, w.ttl), (Some(at("2030-01-01T00:00:00Z")), Some(Duration::from_secs(55))));
        let epoch = WorkerInfo::from(WorkerRecord {
            worker_id: "w2".into(),
            health: Some(serde_json::json!({"timestamp": 1_893_456_000.5})),
            ttl: None,
        });
        assert_eq!(epoch.last_heartbeat, Some(at("2030-01-01T00:00:00.5Z")), "epoch seconds read too");
        assert_eq!((epoch.status, epoch.queues), (None, None));
        assert_eq!((epoch.completed_jobs, epoch.failed_jobs, epoch.active_by_queue), (None, None, None));
        let counted = WorkerInfo::from(WorkerRecord {
            worker_id: "w4".into(),
            health: Some(serde_json::json!({
                "completed_jobs": 12, "failed_jobs": 3,
                "active_by_queue": {"rrq:queue:a": 2, "rrq:queue:b": "x"},
            })),
            ttl: None,
        });
        assert_eq!((counted.completed_jobs, counted.failed_jobs), (Some(12), Some(3)));
        assert_eq!(
            counted.active_by_queue,
            Some(BTreeMap::from([("rrq:queue:a".to_owned(), 2)])),
            "members that are not counts are skipped"
        );
        let broken = WorkerInfo::from(WorkerRecord { worker_id: "w3".into(), health: None, ttl: None });
        assert_eq!((broken.last_heartbeat, broken.health), (None, None));
    }
}
