//! The three messages of protocol version 2 and their envelope.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: &str = "2";

fn default_protocol_version() -> String {
    PROTOCOL_VERSION.to_owned()
}

/// Reserved values of [`OutcomeError::kind`] (`error.type` on the wire).
pub mod error_types {
    /// The runner has no handler of that name; the job is not retried.
    pub const HANDLER_NOT_FOUND: &str = "handler_not_found";
    /// The request was cancelled by a cancel frame.
    pub const CANCELLED: &str = "cancelled";
    /// The handler ran past its deadline.
    pub const TIMEOUT: &str = "timeout";
}

/// One frame's payload: the message and its kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "payload", rename_all = "lowercase")]
pub enum Envelope {
    /// Orchestrator → runner: run a handler.
    Request(ExecutionRequest),
    /// Runner → orchestrator: the outcome of a request.
    Response(ExecutionOutcome),
    /// Orchestrator → runner: stop a running request (best effort, no reply).
    Cancel(CancelRequest),
}

/// A request to run one attempt of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionRequest {
    /// Always [`PROTOCOL_VERSION`] when we send; defaults to it when absent.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// Fresh per attempt; the correlation key of the response.
    pub request_id: String,
    /// The job id.
    pub job_id: String,
    /// The handler name, without any `runner#` prefix.
    pub function_name: String,
    /// The job's parameters (a JSON object).
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Facts about the job and this attempt.
    pub context: ExecutionContext,
}

/// The `context` member of an [`ExecutionRequest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionContext {
    /// Same as the request's `job_id`.
    pub job_id: String,
    /// 1-based attempt number (`current_retries + 1`).
    pub attempt: u32,
    /// RFC 3339 enqueue time, as stored on the job.
    pub enqueue_time: String,
    /// Full key of the queue the job was claimed from.
    pub queue_name: String,
    /// RFC 3339 time after which the runner should give up, if any.
    #[serde(default)]
    pub deadline: Option<String>,
    /// Trace propagation carrier, forwarded unchanged from the job.
    #[serde(default)]
    pub trace_context: Option<BTreeMap<String, String>>,
    /// Correlation attributes, forwarded unchanged from the job.
    #[serde(default)]
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// The orchestrator's worker id.
    #[serde(default)]
    pub worker_id: Option<String>,
}

/// How an attempt ended, as the runner reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeStatus {
    /// The handler returned a result.
    Success,
    /// The handler asked to be retried, optionally after `retry_after_seconds`.
    Retry,
    /// The handler ran out of time on the runner side.
    Timeout,
    /// The handler failed.
    Error,
}

/// The error member of an outcome.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutcomeError {
    /// Human-readable message; becomes the job's `last_error`.
    pub message: String,
    /// Machine-readable kind, see [`error_types`].
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Optional application code.
    #[serde(default)]
    pub code: Option<String>,
    /// Optional structured details.
    #[serde(default)]
    pub details: Option<Value>,
}

impl OutcomeError {
    /// An error with only a message.
    pub fn message(message: impl Into<String>) -> Self {
        Self { message: message.into(), kind: None, code: None, details: None }
    }

    /// An error with a message and a reserved kind.
    pub fn with_kind(message: impl Into<String>, kind: &str) -> Self {
        Self { kind: Some(kind.to_owned()), ..Self::message(message) }
    }
}

/// The outcome of one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExecutionOutcome {
    /// Must equal the request's `job_id`.
    pub job_id: String,
    /// Must equal the request's `request_id`; absent only from broken runners.
    #[serde(default)]
    pub request_id: Option<String>,
    /// How the attempt ended.
    pub status: OutcomeStatus,
    /// The handler result for `success`.
    #[serde(default)]
    pub result: Option<Value>,
    /// Why it failed, for the other statuses.
    #[serde(default)]
    pub error: Option<OutcomeError>,
    /// Delay requested with `retry`.
    #[serde(default)]
    pub retry_after_seconds: Option<f64>,
}

impl ExecutionOutcome {
    fn base(request: &ExecutionRequest, status: OutcomeStatus) -> Self {
        Self {
            job_id: request.job_id.clone(),
            request_id: Some(request.request_id.clone()),
            status,
            result: None,
            error: None,
            retry_after_seconds: None,
        }
    }

    /// A success carrying `result`.
    pub fn success(request: &ExecutionRequest, result: Value) -> Self {
        Self { result: Some(result), ..Self::base(request, OutcomeStatus::Success) }
    }

    /// A failure with `error`.
    pub fn error(request: &ExecutionRequest, error: OutcomeError) -> Self {
        Self { error: Some(error), ..Self::base(request, OutcomeStatus::Error) }
    }

    /// A retry request, optionally after a delay in seconds.
    pub fn retry(request: &ExecutionRequest, message: impl Into<String>, after: Option<f64>) -> Self {
        Self {
            error: Some(OutcomeError::message(message)),
            retry_after_seconds: after,
            ..Self::base(request, OutcomeStatus::Retry)
        }
    }

    /// A runner-side timeout.
    pub fn timeout(request: &ExecutionRequest, message: impl Into<String>) -> Self {
        Self {
            error: Some(OutcomeError::with_kind(message, error_types::TIMEOUT)),
            ..Self::base(request, OutcomeStatus::Timeout)
        }
    }

    /// The `error.type`, if any.
    pub fn error_kind(&self) -> Option<&str> {
        self.error.as_ref().and_then(|e| e.kind.as_deref())
    }

    /// The `error.message`, if any.
    pub fn error_message(&self) -> Option<&str> {
        self.error.as_ref().map(|e| e.message.as_str())
    }
}

/// Asks a runner to stop a request (or every request of a job).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CancelRequest {
    /// [`PROTOCOL_VERSION`]; runners ignore cancels of another version.
    #[serde(default = "default_protocol_version")]
    pub protocol_version: String,
    /// The job to cancel.
    pub job_id: String,
    /// The request to cancel; absent means every request of the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Reserved; always `false`.
    #[serde(default)]
    pub hard_kill: bool,
}

impl CancelRequest {
    /// A cancel of one request of a job.
    pub fn new(job_id: impl Into<String>, request_id: Option<String>) -> Self {
        Self { protocol_version: PROTOCOL_VERSION.to_owned(), job_id: job_id.into(), request_id, hard_kill: false }
    }
}
