//! Handlers by name, the context they run in, and how they report failure.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use rrq_protocol::{ExecutionOutcome, ExecutionRequest, OutcomeError};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

/// Why a handler did not produce a result.
///
/// Each variant maps to one outcome status on the wire: [`HandlerError::Failed`]
/// to `error` (the orchestrator retries with backoff), [`HandlerError::Retry`]
/// to `retry`, [`HandlerError::Timeout`] to `timeout` (never retried).
///
/// Any `std::error::Error` converts into `Failed` with its display text, so
/// handlers can use `?` on I/O or parsing errors.
///
/// ```
/// use rrq_runner::{HandlerError, HandlerResult};
///
/// fn parse(text: &str) -> HandlerResult<u32> {
///     // `?` turns any std error into `HandlerError::Failed` with its message.
///     Ok(text.parse::<u32>()?)
/// }
/// assert_eq!(parse("7"), Ok(7));
/// assert!(matches!(parse("x"), Err(HandlerError::Failed { .. })));
/// ```
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HandlerError {
    /// The handler failed; the job is retried with backoff until its attempt
    /// budget runs out.
    Failed {
        /// Becomes the job's `last_error`.
        message: String,
        /// Machine-readable kind (`error.type`); `None` for ordinary failures.
        kind: Option<String>,
        /// Application code (`error.code`).
        code: Option<String>,
        /// Structured details (`error.details`).
        details: Option<Value>,
    },
    /// The handler asks to run again, after `after` if given (the orchestrator
    /// uses its own backoff otherwise).
    Retry {
        /// Recorded as the attempt's error message.
        message: String,
        /// Requested delay before the next attempt.
        after: Option<Duration>,
    },
    /// The handler gave up because it ran out of time.
    Timeout {
        /// Recorded as the attempt's error message.
        message: String,
    },
}

impl HandlerError {
    /// An ordinary failure with a message.
    ///
    /// ```
    /// let e = rrq_runner::HandlerError::failed("smtp refused");
    /// assert_eq!(e.message(), "smtp refused");
    /// ```
    pub fn failed(message: impl Into<String>) -> Self {
        HandlerError::Failed { message: message.into(), kind: None, code: None, details: None }
    }

    /// A request to be retried, with the orchestrator's backoff.
    ///
    /// ```
    /// let e = rrq_runner::HandlerError::retry("not yet");
    /// assert!(matches!(e, rrq_runner::HandlerError::Retry { after: None, .. }));
    /// ```
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError::Retry { message: message.into(), after: None }
    }

    /// A request to be retried after `delay`.
    ///
    /// ```
    /// use std::time::Duration;
    /// let e = rrq_runner::HandlerError::retry_after("rate limited", Duration::from_secs(30));
    /// assert!(matches!(e, rrq_runner::HandlerError::Retry { after: Some(d), .. } if d.as_secs() == 30));
    /// ```
    pub fn retry_after(message: impl Into<String>, delay: Duration) -> Self {
        HandlerError::Retry { message: message.into(), after: Some(delay) }
    }

    /// A handler-side timeout.
    ///
    /// ```
    /// let e = rrq_runner::HandlerError::timeout("upstream too slow");
    /// assert_eq!(e.to_string(), "upstream too slow");
    /// ```
    pub fn timeout(message: impl Into<String>) -> Self {
        HandlerError::Timeout { message: message.into() }
    }

    /// Sets `error.type` of a [`HandlerError::Failed`]; other variants are
    /// returned unchanged.
    ///
    /// ```
    /// use rrq_runner::HandlerError;
    /// let e = HandlerError::failed("bad address").with_kind("validation");
    /// assert!(matches!(e, HandlerError::Failed { kind: Some(k), .. } if k == "validation"));
    /// ```
    pub fn with_kind(mut self, new_kind: impl Into<String>) -> Self {
        if let HandlerError::Failed { kind, .. } = &mut self {
            *kind = Some(new_kind.into());
        }
        self
    }

    /// Sets `error.code` of a [`HandlerError::Failed`]; other variants are
    /// returned unchanged.
    ///
    /// ```
    /// use rrq_runner::HandlerError;
    /// let e = HandlerError::failed("bad address").with_code("E_ADDR");
    /// assert!(matches!(e, HandlerError::Failed { code: Some(c), .. } if c == "E_ADDR"));
    /// ```
    pub fn with_code(mut self, new_code: impl Into<String>) -> Self {
        if let HandlerError::Failed { code, .. } = &mut self {
            *code = Some(new_code.into());
        }
        self
    }

    /// Sets `error.details` of a [`HandlerError::Failed`]; other variants are
    /// returned unchanged.
    ///
    /// ```
    /// use rrq_runner::HandlerError;
    /// let e = HandlerError::failed("bad address").with_details(serde_json::json!({"field": "to"}));
    /// assert!(matches!(e, HandlerError::Failed { details: Some(_), .. }));
    /// ```
    pub fn with_details(mut self, new_details: Value) -> Self {
        if let HandlerError::Failed { details, .. } = &mut self {
            *details = Some(new_details);
        }
        self
    }

    /// The human-readable message.
    ///
    /// ```
    /// assert_eq!(rrq_runner::HandlerError::retry("later").message(), "later");
    /// ```
    pub fn message(&self) -> &str {
        match self {
            HandlerError::Failed { message, .. }
            | HandlerError::Retry { message, .. }
            | HandlerError::Timeout { message } => message,
        }
    }

    /// The wire outcome answering `request`.
    pub(crate) fn into_outcome(self, request: &ExecutionRequest) -> ExecutionOutcome {
        match self {
            HandlerError::Failed { message, kind, code, details } => {
                let message = if message.is_empty() { "Unhandled handler error".to_owned() } else { message };
                ExecutionOutcome::error(request, OutcomeError { message, kind, code, details })
            }
            HandlerError::Retry { message, after } => {
                ExecutionOutcome::retry(request, message, after.map(|d| d.as_secs_f64()))
            }
            HandlerError::Timeout { message } => ExecutionOutcome::timeout(request, message),
        }
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

// `HandlerError` deliberately does not implement `std::error::Error`, so that
// this blanket conversion does not overlap with `From<T> for T`.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for HandlerError {
    fn from(error: E) -> Self {
        HandlerError::failed(error.to_string())
    }
}

/// What a handler returns.
///
/// ```
/// use rrq_runner::HandlerResult;
/// async fn handler() -> HandlerResult<&'static str> {
///     Ok("done")
/// }
/// # let _ = handler();
/// ```
pub type HandlerResult<T> = Result<T, HandlerError>;

/// Everything a handler may want to know about the attempt it runs.
///
/// Cloning is cheap enough for a per-request value; the cancellation token is
/// shared between clones.
///
/// ```
/// use rrq_runner::{HandlerResult, JobContext, Registry};
/// use serde_json::Value;
/// # fn request(function: &str, params: serde_json::Value) -> rrq_protocol::ExecutionRequest {
/// #     serde_json::from_value(serde_json::json!({
/// #         "request_id": "r1", "job_id": "j1", "function_name": function, "params": params,
/// #         "context": {"job_id": "j1", "attempt": 1, "enqueue_time": "2026-01-01T00:00:00Z",
/// #                     "queue_name": "rrq:queue:default"}
/// #     })).unwrap()
/// # }
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mut registry = Registry::new();
/// registry.register("whoami", |_: Value, ctx: JobContext| async move {
///     HandlerResult::Ok(format!("{} attempt {} from {}", ctx.job_id, ctx.attempt, ctx.queue))
/// });
/// let cancel = tokio_util::sync::CancellationToken::new();
/// let outcome = registry.execute(&request("whoami", serde_json::json!({})), cancel).await;
/// assert_eq!(outcome.result, Some(serde_json::json!("j1 attempt 1 from rrq:queue:default")));
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct JobContext {
    /// The job id.
    pub job_id: String,
    /// This attempt's request id (fresh per attempt).
    pub request_id: String,
    /// The handler name the request asked for.
    pub function_name: String,
    /// 1-based attempt number.
    pub attempt: u32,
    /// When the job was enqueued, if the orchestrator sent a parseable time.
    pub enqueue_time: Option<DateTime<Utc>>,
    /// Full key of the queue the job came from (`rrq:queue:default`).
    pub queue: String,
    /// When the orchestrator gives up on this attempt; the SDK cancels the
    /// handler at that instant.
    pub deadline: Option<DateTime<Utc>>,
    /// Trace propagation carrier, as enqueued.
    pub trace_context: Option<BTreeMap<String, String>>,
    /// Correlation attributes, as enqueued.
    pub correlation_context: Option<BTreeMap<String, String>>,
    /// The orchestrator's worker id.
    pub worker_id: Option<String>,
    cancel: CancellationToken,
}

impl JobContext {
    pub(crate) fn new(request: &ExecutionRequest, deadline: Option<DateTime<Utc>>, cancel: CancellationToken) -> Self {
        let ctx = &request.context;
        Self {
            job_id: request.job_id.clone(),
            request_id: request.request_id.clone(),
            function_name: request.function_name.clone(),
            attempt: ctx.attempt,
            enqueue_time: parse_time(&ctx.enqueue_time),
            queue: ctx.queue_name.clone(),
            deadline,
            trace_context: ctx.trace_context.clone(),
            correlation_context: ctx.correlation_context.clone(),
            worker_id: ctx.worker_id.clone(),
            cancel,
        }
    }

    /// Whether the attempt was cancelled (cancel frame, deadline, shutdown or
    /// lost connection).
    ///
    /// The SDK stops polling a cancelled handler's future by itself; this is
    /// for handlers that hand work to threads or want to clean up.
    ///
    /// ```
    /// use rrq_runner::{HandlerResult, JobContext, Registry};
    /// let mut registry = Registry::new();
    /// registry.register("batch", |items: Vec<u32>, ctx: JobContext| async move {
    ///     let mut done = 0;
    ///     for _ in items {
    ///         if ctx.is_cancelled() {
    ///             break;
    ///         }
    ///         done += 1;
    ///     }
    ///     HandlerResult::Ok(done)
    /// });
    /// ```
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Resolves when the attempt is cancelled.
    ///
    /// ```
    /// use rrq_runner::{HandlerResult, JobContext, Registry};
    /// use serde_json::Value;
    /// let mut registry = Registry::new();
    /// registry.register("wait", |_: Value, ctx: JobContext| async move {
    ///     tokio::select! {
    ///         () = ctx.cancelled() => HandlerResult::Ok("stopped early"),
    ///         () = tokio::time::sleep(std::time::Duration::from_secs(60)) => Ok("waited"),
    ///     }
    /// });
    /// ```
    pub fn cancelled(&self) -> WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }

    /// The attempt's cancellation token, to pass to spawned work.
    ///
    /// ```
    /// use rrq_runner::{HandlerResult, JobContext, Registry};
    /// use serde_json::Value;
    /// let mut registry = Registry::new();
    /// registry.register("offload", |_: Value, ctx: JobContext| async move {
    ///     let token = ctx.cancellation_token().clone();
    ///     let work = std::thread::spawn(move || {
    ///         while !token.is_cancelled() { /* a chunk of blocking work */ break; }
    ///         42
    ///     });
    ///     HandlerResult::Ok(work.join().unwrap_or(0))
    /// });
    /// ```
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Time left until the deadline (zero once it has passed), if there is one.
    ///
    /// ```
    /// use rrq_runner::{HandlerResult, JobContext, Registry};
    /// use serde_json::Value;
    /// let mut registry = Registry::new();
    /// registry.register("budget", |_: Value, ctx: JobContext| async move {
    ///     // Give a downstream call the time this attempt has left.
    ///     let budget = ctx.remaining().unwrap_or(std::time::Duration::from_secs(30));
    ///     HandlerResult::Ok(budget.as_secs())
    /// });
    /// ```
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| (d - crate::clock::now()).to_std().unwrap_or(Duration::ZERO))
    }
}

/// Parses an RFC 3339 time; a time without offset is taken as UTC, as the
/// Python runner does.
pub(crate) fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").ok().map(|n| n.and_utc())
}

type BoxedOutcome = Pin<Box<dyn Future<Output = HandlerResult<Value>> + Send>>;
type ErasedHandler = dyn Fn(Map<String, Value>, JobContext) -> BoxedOutcome + Send + Sync;

/// Handlers by function name.
///
/// A handler is an async function taking its typed parameters (deserialised
/// from the request's `params` object) and a [`JobContext`], and returning a
/// [`HandlerResult`] of anything serialisable.
///
/// ```
/// use rrq_runner::{HandlerError, HandlerResult, JobContext, Registry};
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Email {
///     to: String,
/// }
///
/// let mut registry = Registry::new();
/// registry.register("send_email", |p: Email, _ctx: JobContext| async move {
///     if !p.to.contains('@') {
///         return Err(HandlerError::failed(format!("bad address {}", p.to)));
///     }
///     HandlerResult::Ok(serde_json::json!({"sent_to": p.to}))
/// });
/// assert!(registry.contains("send_email"));
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Arc<ErasedHandler>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.names().collect();
        names.sort_unstable();
        f.debug_struct("Registry").field("handlers", &names).finish()
    }
}

impl Registry {
    /// An empty registry.
    ///
    /// ```
    /// assert!(rrq_runner::Registry::new().is_empty());
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` under `name`, replacing any handler of that name.
    ///
    /// Parameters that do not deserialise into `P` produce an `error` outcome
    /// naming the handler; so does a result that does not serialise.
    ///
    /// ```
    /// use rrq_runner::{HandlerResult, JobContext, Registry};
    /// use serde_json::Value;
    /// let mut registry = Registry::new();
    /// registry
    ///     .register("ping", |_: Value, _ctx: JobContext| async move { HandlerResult::Ok("pong") })
    ///     .register("add", |(a, b): (i64, i64), _ctx: JobContext| async move { HandlerResult::Ok(a + b) });
    /// assert_eq!(registry.len(), 2);
    /// ```
    pub fn register<P, R, F, Fut>(&mut self, name: impl Into<String>, handler: F) -> &mut Self
    where
        P: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        F: Fn(P, JobContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = HandlerResult<R>> + Send + 'static,
    {
        let name = name.into();
        let label = name.clone();
        let erased = move |params: Map<String, Value>, ctx: JobContext| -> BoxedOutcome {
            let parsed = serde_json::from_value::<P>(Value::Object(params));
            match parsed {
                Err(e) => {
                    let message = format!("Invalid params for '{label}': {e}");
                    Box::pin(async move { Err(HandlerError::failed(message)) })
                }
                Ok(params) => {
                    let fut = handler(params, ctx);
                    let label = label.clone();
                    Box::pin(async move {
                        let value = fut.await?;
                        serde_json::to_value(value).map_err(|e| {
                            HandlerError::failed(format!("Result of '{label}' is not serialisable as JSON: {e}"))
                        })
                    })
                }
            }
        };
        self.handlers.insert(name, Arc::new(erased));
        self
    }

    /// Whether a handler of that name exists.
    ///
    /// ```
    /// let registry = rrq_runner::example::registry();
    /// assert!(registry.contains("echo") && !registry.contains("nope"));
    /// ```
    pub fn contains(&self, name: &str) -> bool {
        self.handlers.contains_key(name)
    }

    /// The registered names, in no particular order.
    ///
    /// ```
    /// let registry = rrq_runner::example::registry();
    /// assert!(registry.names().any(|n| n == "rrq_check.echo"));
    /// ```
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// How many handlers are registered.
    ///
    /// ```
    /// assert_eq!(rrq_runner::Registry::new().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.handlers.len()
    }

    /// Whether no handler is registered.
    ///
    /// ```
    /// assert!(!rrq_runner::example::registry().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.handlers.is_empty()
    }

    /// Starts the handler for `name` on `params`, if one is registered.
    pub(crate) fn call(&self, name: &str, params: Map<String, Value>, ctx: JobContext) -> Option<BoxedOutcome> {
        self.handlers.get(name).map(|h| h(params, ctx))
    }

    /// Runs one request in this process, exactly as the server would run it
    /// for a connection: handler lookup (`handler_not_found`), the request's
    /// deadline (`Job deadline exceeded` / `Job execution timed out`),
    /// cancellation through `cancel` (`cancelled` / `Job cancelled`), and a
    /// panicking handler reported as an error outcome. `cancel` is cancelled
    /// when this returns, so work the handler handed off sees the end too.
    ///
    /// This is how an orchestrator embeds handlers without a socket.
    ///
    /// ```
    /// # fn request(function: &str, params: serde_json::Value) -> rrq_protocol::ExecutionRequest {
    /// #     serde_json::from_value(serde_json::json!({
    /// #         "request_id": "r1", "job_id": "j1", "function_name": function, "params": params,
    /// #         "context": {"job_id": "j1", "attempt": 1, "enqueue_time": "2026-01-01T00:00:00Z",
    /// #                     "queue_name": "rrq:queue:default"}
    /// #     })).unwrap()
    /// # }
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use rrq_protocol::OutcomeStatus;
    /// let registry = rrq_runner::example::registry();
    /// let cancel = tokio_util::sync::CancellationToken::new();
    /// let outcome = registry.execute(&request("nope", serde_json::json!({})), cancel).await;
    /// assert_eq!(outcome.status, OutcomeStatus::Error);
    /// assert_eq!(outcome.error_kind(), Some("handler_not_found"));
    /// # }
    /// ```
    pub async fn execute(&self, request: &ExecutionRequest, cancel: CancellationToken) -> ExecutionOutcome {
        let outcome = self.execute_inner(request, &cancel).await;
        cancel.cancel();
        outcome
    }

    async fn execute_inner(&self, request: &ExecutionRequest, cancel: &CancellationToken) -> ExecutionOutcome {
        use crate::server::messages;
        use futures::FutureExt;
        use rrq_protocol::error_types;

        let deadline = match request.context.deadline.as_deref() {
            None => None,
            Some(text) => match parse_time(text) {
                Some(t) => Some(t),
                None => {
                    return ExecutionOutcome::error(
                        request,
                        OutcomeError::message(format!("Invalid deadline: '{text}'")),
                    );
                }
            },
        };
        let expiry_at = match deadline {
            None => None,
            Some(d) => match (d - crate::clock::now()).to_std() {
                Ok(left) if !left.is_zero() => Some(tokio::time::Instant::now() + left),
                _ => return ExecutionOutcome::timeout(request, messages::DEADLINE_EXCEEDED),
            },
        };
        let ctx = JobContext::new(request, deadline, cancel.clone());
        let Some(handler) = self.call(&request.function_name, request.params.clone(), ctx) else {
            let message = format!("No handler registered for function '{}'", request.function_name);
            return ExecutionOutcome::error(request, OutcomeError::with_kind(message, error_types::HANDLER_NOT_FOUND));
        };
        let expiry = async {
            match expiry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                ExecutionOutcome::error(request, OutcomeError::with_kind(messages::CANCELLED, error_types::CANCELLED))
            }
            () = expiry => ExecutionOutcome::timeout(request, messages::TIMED_OUT),
            result = std::panic::AssertUnwindSafe(handler).catch_unwind() => match result {
                Ok(Ok(value)) => ExecutionOutcome::success(request, value),
                Ok(Err(e)) => e.into_outcome(request),
                Err(panic) => {
                    let what = panic
                        .downcast_ref::<&str>()
                        .map(|s| (*s).to_owned())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "unknown panic".to_owned());
                    ExecutionOutcome::error(request, OutcomeError::message(format!("Handler panicked: {what}")))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrq_protocol::{ExecutionContext, OutcomeStatus, PROTOCOL_VERSION};
    use serde::Deserialize;
    use serde_json::json;

    fn request(params: Value) -> ExecutionRequest {
        ExecutionRequest {
            protocol_version: PROTOCOL_VERSION.to_owned(),
            request_id: "r1".into(),
            job_id: "j1".into(),
            function_name: "f".into(),
            params: params.as_object().cloned().unwrap_or_default(),
            context: ExecutionContext {
                job_id: "j1".into(),
                attempt: 2,
                enqueue_time: "2026-11-28T00:04:17.240701402Z".into(),
                queue_name: "rrq:queue:default".into(),
                deadline: None,
                trace_context: None,
                correlation_context: None,
                worker_id: Some("w".into()),
            },
        }
    }

    #[derive(Deserialize)]
    struct Add {
        a: i64,
        b: i64,
    }

    async fn run(registry: &Registry, req: &ExecutionRequest) -> HandlerResult<Value> {
        let ctx = JobContext::new(req, None, CancellationToken::new());
        registry.call(&req.function_name, req.params.clone(), ctx).expect("handler").await
    }

    #[tokio::test]
    async fn typed_params_and_results_round_trip() {
        let mut registry = Registry::new();
        registry
            .register("f", |p: Add, ctx: JobContext| async move { Ok(json!({"sum": p.a + p.b, "n": ctx.attempt})) });
        let out = run(&registry, &request(json!({"a": 2, "b": 3}))).await;
        assert_eq!(out, Ok(json!({"sum": 5, "n": 2})));
        assert!(registry.contains("f") && !registry.contains("g"));
    }

    #[tokio::test]
    async fn bad_params_name_the_handler() {
        let mut registry = Registry::new();
        registry.register("f", |p: Add, _ctx: JobContext| async move { Ok(p.a) });
        let err = run(&registry, &request(json!({"a": "x"}))).await.unwrap_err();
        assert!(err.message().starts_with("Invalid params for 'f':"), "{err}");
    }

    #[test]
    fn errors_map_to_outcomes() {
        let req = request(json!({}));
        let failed = HandlerError::failed("boom").with_kind("k").with_code("c").into_outcome(&req);
        assert_eq!(failed.status, OutcomeStatus::Error);
        assert_eq!(failed.error_kind(), Some("k"));
        assert_eq!(failed.error.as_ref().and_then(|e| e.code.as_deref()), Some("c"));
        let empty = HandlerError::failed("").into_outcome(&req);
        assert_eq!(empty.error_message(), Some("Unhandled handler error"));
        let retry = HandlerError::retry_after("again", Duration::from_millis(500)).into_outcome(&req);
        assert_eq!((retry.status, retry.retry_after_seconds), (OutcomeStatus::Retry, Some(0.5)));
        let timeout = HandlerError::timeout("slow").into_outcome(&req);
        assert_eq!(timeout.status, OutcomeStatus::Timeout);
        let io: HandlerError = std::io::Error::other("disk").into();
        assert_eq!(io, HandlerError::failed("disk"));
    }

    #[test]
    fn times_parse_with_and_without_offset() {
        let z = parse_time("2026-11-28T00:04:17.5Z").unwrap();
        let naive = parse_time("2026-11-28T00:04:17.5").unwrap();
        let offset = parse_time("2026-11-28T01:04:17.5+01:00").unwrap();
        assert_eq!(z, naive);
        assert_eq!(z, offset);
        assert!(parse_time("yesterday").is_none());
    }
}
