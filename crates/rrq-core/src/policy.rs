//! Pure policy: routing, backoff and outcome classification. No I/O here; the
//! worker loop applies what these functions decide.

use std::collections::BTreeMap;
use std::time::Duration;

use rrq_pool::PoolError;
use rrq_protocol::{ExecutionOutcome, OutcomeStatus, QueueName, error_types};
use serde_json::Value;

/// Exponential backoff between attempts: `min(base × 2^(n−1), max)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// Delay before the first retry (`base_retry_delay_seconds`).
    pub base: Duration,
    /// Upper bound (`max_retry_delay_seconds`).
    pub max: Duration,
}

impl Default for Backoff {
    /// The reference defaults: 5 s doubling up to one hour.
    fn default() -> Self {
        Self { base: Duration::from_secs(5), max: Duration::from_secs(3600) }
    }
}

impl Backoff {
    /// The delay before retry number `n` (1-based; `n = 0` counts as 1).
    pub fn delay(&self, n: u32) -> Duration {
        let exp = n.max(1).saturating_sub(1).min(30);
        let secs = self.base.as_secs_f64() * f64::from(1u32 << exp);
        // Saturates rather than panics whatever the configured values.
        Duration::try_from_secs_f64(secs.min(self.max.as_secs_f64())).unwrap_or(self.max)
    }
}

/// Which runner serves which queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Routing {
    /// Runner for jobs with neither a `runner#` prefix nor a queue route.
    pub default_runner: String,
    /// Queue → runner name (full queue keys).
    pub queue_routes: BTreeMap<QueueName, String>,
}

/// Where a job goes: the runner name and the handler name sent to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route<'a> {
    /// The runner (pool) name.
    pub runner: &'a str,
    /// The handler, without any `runner#` prefix.
    pub handler: &'a str,
}

impl Routing {
    /// Resolves a job's runner: the `runner#` prefix wins over the route of
    /// the queue it was claimed from, which wins over the default runner.
    /// `Err` carries the job's `last_error` for a job that cannot be routed.
    pub fn route<'a>(&'a self, function_name: &'a str, queue: &QueueName) -> Result<Route<'a>, String> {
        let (prefix, handler) = match function_name.split_once('#') {
            Some((_, "")) => return Err("Handler name is missing".to_owned()),
            Some(("", handler)) => (None, handler),
            Some((prefix, handler)) => (Some(prefix), handler),
            None => (None, function_name),
        };
        let runner = match prefix {
            Some(p) => p,
            None => self.queue_routes.get(queue).map(String::as_str).unwrap_or(&self.default_runner),
        };
        Ok(Route { runner, handler })
    }
}

/// What to do with a job after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum Decision {
    /// Store the result; the job is done.
    Complete(Value),
    /// Count the attempt and run it again after `delay`.
    Retry {
        /// The job's `last_error`.
        error: String,
        /// Delay before the next attempt.
        delay: Duration,
    },
    /// Count the attempt and move the job to its DLQ.
    DeadLetter {
        /// The job's `last_error`.
        reason: String,
    },
}

/// The facts about an attempt that the classification needs.
#[derive(Clone, Copy, Debug)]
pub struct Attempt {
    /// 1-based attempt number that just ended.
    pub number: u32,
    /// Attempts allowed in total: the job's `max_retries` field, whose
    /// name counts attempts, not retries (0 and 1 both allow one).
    pub max_attempts: u32,
    /// The job timeout in whole seconds.
    pub timeout_secs: i64,
    /// Whether the runner deadline had (nearly) passed when the outcome came.
    pub deadline_passed: bool,
}

/// The message of an orchestrator-side timeout (the golden data's wording).
pub fn timeout_message(timeout_secs: i64) -> String {
    format!("Job timed out after {timeout_secs}s.")
}

/// Classifies an attempt's result as the reference does (spec SEMANTICS §10),
/// with one deliberate difference: a runner `timeout` that arrives when the
/// deadline has passed gets the orchestrator's message, so the recorded error
/// does not depend on which side noticed first.
pub fn decide(attempt: Attempt, result: Result<ExecutionOutcome, PoolError>, backoff: &Backoff) -> Decision {
    let retry_or_dlq = |error: String, delay: Option<Duration>| {
        if attempt.number >= attempt.max_attempts {
            Decision::DeadLetter { reason: error }
        } else {
            Decision::Retry { error, delay: delay.unwrap_or_else(|| backoff.delay(attempt.number)) }
        }
    };
    let outcome = match result {
        Ok(o) => o,
        Err(PoolError::Timeout(_)) => return Decision::DeadLetter { reason: timeout_message(attempt.timeout_secs) },
        Err(e) => return retry_or_dlq(format!("Runner transport error: {}", with_causes(&e)), None),
    };
    let message = |fallback: &str| outcome.error_message().filter(|m| !m.is_empty()).unwrap_or(fallback).to_owned();
    match outcome.status {
        OutcomeStatus::Success => Decision::Complete(outcome.result.clone().unwrap_or(Value::Null)),
        OutcomeStatus::Retry => {
            // `try_` so that a NaN from a runner falls back to the backoff.
            let delay = outcome.retry_after_seconds.and_then(|s| Duration::try_from_secs_f64(s.clamp(0.0, 1e9)).ok());
            retry_or_dlq(message("Job requested retry"), delay)
        }
        OutcomeStatus::Timeout if attempt.deadline_passed => {
            Decision::DeadLetter { reason: timeout_message(attempt.timeout_secs) }
        }
        OutcomeStatus::Timeout => Decision::DeadLetter { reason: message(&timeout_message(attempt.timeout_secs)) },
        OutcomeStatus::Error if outcome.error_kind() == Some(error_types::HANDLER_NOT_FOUND) => {
            Decision::DeadLetter { reason: message("Handler not found") }
        }
        OutcomeStatus::Error => retry_or_dlq(message("Job failed"), None),
    }
}

/// `error` and its causes, joined by ": " as the job's recorded error.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use rrq_protocol::OutcomeError;

    fn outcome(status: OutcomeStatus, error: Option<OutcomeError>, after: Option<f64>) -> ExecutionOutcome {
        ExecutionOutcome {
            job_id: "j".into(),
            request_id: Some("r".into()),
            status,
            result: Some(Value::from("ok")),
            error,
            retry_after_seconds: after,
        }
    }

    fn attempt(number: u32, max_attempts: u32) -> Attempt {
        Attempt { number, max_attempts, timeout_secs: 1, deadline_passed: false }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let secs: Vec<u64> = (0..=5).map(|n| b.delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 5, 10, 20, 40, 80]);
        assert_eq!(b.delay(40), Duration::from_secs(3600));
        let small = Backoff { base: Duration::from_millis(10), max: Duration::from_millis(50) };
        assert_eq!(small.delay(4), Duration::from_millis(50));
    }

    #[test]
    fn routing_prefers_prefix_then_queue_then_default() {
        let q = QueueName::new("bulk");
        let r = Routing {
            default_runner: "python".into(),
            queue_routes: [(q.clone(), "rust".to_owned())].into_iter().collect(),
        };
        assert_eq!(r.route("alt#go", &q).unwrap(), Route { runner: "alt", handler: "go" });
        assert_eq!(r.route("go", &q).unwrap(), Route { runner: "rust", handler: "go" });
        assert_eq!(r.route("#go", &QueueName::new("x")).unwrap(), Route { runner: "python", handler: "go" });
        assert_eq!(r.route("python#", &q).unwrap_err(), "Handler name is missing");
    }

    #[test]
    fn attempts_count_to_max_retries() {
        let b = Backoff::default();
        let err = || Ok(outcome(OutcomeStatus::Error, Some(OutcomeError::message("boom: gamma")), None));
        assert_eq!(
            decide(attempt(1, 2), err(), &b),
            Decision::Retry { error: "boom: gamma".into(), delay: Duration::from_secs(5) }
        );
        assert_eq!(decide(attempt(2, 2), err(), &b), Decision::DeadLetter { reason: "boom: gamma".into() });
        // max_retries = 1 or 0 means a single attempt
        assert!(matches!(decide(attempt(1, 0), err(), &b), Decision::DeadLetter { .. }));
    }

    #[test]
    fn runner_retry_delay_is_used_verbatim_and_errors_ignore_it() {
        let b = Backoff::default();
        let retry = Ok(outcome(OutcomeStatus::Retry, None, Some(0.5)));
        assert_eq!(
            decide(attempt(1, 5), retry, &b),
            Decision::Retry { error: "Job requested retry".into(), delay: Duration::from_millis(500) }
        );
        let err = Ok(outcome(OutcomeStatus::Error, None, Some(0.5)));
        assert_eq!(
            decide(attempt(1, 5), err, &b),
            Decision::Retry { error: "Job failed".into(), delay: Duration::from_secs(5) }
        );
    }

    #[test]
    fn timeouts_and_missing_handlers_are_not_retried() {
        let b = Backoff::default();
        assert_eq!(
            decide(attempt(1, 5), Err(PoolError::Timeout(Duration::from_secs(1))), &b),
            Decision::DeadLetter { reason: "Job timed out after 1s.".into() }
        );
        let nf = OutcomeError::with_kind("No handler registered for function 'x'", error_types::HANDLER_NOT_FOUND);
        assert_eq!(
            decide(attempt(1, 5), Ok(outcome(OutcomeStatus::Error, Some(nf), None)), &b),
            Decision::DeadLetter { reason: "No handler registered for function 'x'".into() }
        );
        let late = OutcomeError::with_kind("Job execution timed out.", error_types::TIMEOUT);
        let at_deadline = Attempt { deadline_passed: true, ..attempt(1, 5) };
        assert_eq!(
            decide(at_deadline, Ok(outcome(OutcomeStatus::Timeout, Some(late.clone()), None)), &b),
            Decision::DeadLetter { reason: "Job timed out after 1s.".into() }
        );
        assert_eq!(
            decide(attempt(1, 5), Ok(outcome(OutcomeStatus::Timeout, Some(late), None)), &b),
            Decision::DeadLetter { reason: "Job execution timed out.".into() }
        );
    }

    #[test]
    fn a_transport_error_is_recorded_with_its_cause() {
        let cause = std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe");
        let e = PoolError::transport_caused_by("runner connection write failed", cause);
        assert_eq!(
            decide(attempt(1, 5), Err(e), &Backoff::default()),
            Decision::Retry {
                error: "Runner transport error: runner connection write failed: broken pipe".into(),
                delay: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn transport_errors_are_retried_with_a_prefix() {
        let b = Backoff::default();
        assert_eq!(
            decide(attempt(1, 5), Err(PoolError::transport("runner connection closed")), &b),
            Decision::Retry {
                error: "Runner transport error: runner connection closed".into(),
                delay: Duration::from_secs(5)
            }
        );
    }

    #[test]
    fn success_stores_the_result() {
        let b = Backoff::default();
        assert_eq!(
            decide(attempt(1, 5), Ok(outcome(OutcomeStatus::Success, None, None)), &b),
            Decision::Complete(Value::from("ok"))
        );
    }
}
