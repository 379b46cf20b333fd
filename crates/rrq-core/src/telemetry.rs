//! Metrics the worker records through the `metrics` facade. Nothing is
//! recorded anywhere unless the application installs a recorder (the CLI
//! installs a Prometheus one when `metrics_listen` is set).

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use metrics::{counter, gauge, histogram};

use crate::job_task::Ending;

/// Jobs claimed, by queue.
pub(crate) fn claimed(queue: &str) {
    counter!("rrq_jobs_claimed_total", "queue" => queue.to_owned()).increment(1);
}

/// How an attempt ended, by queue and function, with its duration.
pub(crate) fn ended(queue: &str, function: &str, ending: Ending, elapsed: Duration) {
    let name = match ending {
        Ending::Completed => "rrq_jobs_completed_total",
        Ending::Retried => "rrq_jobs_retried_total",
        Ending::DeadLettered => "rrq_jobs_dead_lettered_total",
        Ending::Cancelled => "rrq_jobs_cancelled_total",
        Ending::Released => "rrq_jobs_released_total",
        Ending::Abandoned => "rrq_jobs_abandoned_total",
    };
    let labels = [("queue", queue.to_owned()), ("function", FUNCTIONS.label(function))];
    counter!(name, &labels).increment(1);
    histogram!("rrq_job_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Jobs running in this worker.
pub(crate) fn in_flight(n: usize) {
    gauge!("rrq_jobs_in_flight").set(n as f64);
}

/// Jobs waiting (ready or scheduled) in a queue.
pub(crate) fn queue_depth(queue: &str, n: u64) {
    gauge!("rrq_queue_depth", "queue" => queue.to_owned()).set(n as f64);
}

/// Process restarts of a runner since the worker started.
pub(crate) fn runner_restarts(runner: &str, n: u64) {
    gauge!("rrq_runner_restarts", "runner" => runner.to_owned()).set(n as f64);
}

/// Distinct `function` label values kept; later names are reported as
/// [`OTHER_FUNCTION`]. Function names come from job data, so without a bound
/// any producer could create unbounded metric series.
pub(crate) const MAX_FUNCTION_LABELS: usize = 200;

/// The `function` label of names beyond the first [`MAX_FUNCTION_LABELS`].
pub(crate) const OTHER_FUNCTION: &str = "other";

static FUNCTIONS: LabelSet = LabelSet::new(MAX_FUNCTION_LABELS);

/// The first `max` distinct values keep their own label.
struct LabelSet {
    max: usize,
    seen: Mutex<Option<HashSet<String>>>,
}

impl LabelSet {
    const fn new(max: usize) -> Self {
        Self { max, seen: Mutex::new(None) }
    }

    fn label(&self, value: &str) -> String {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let seen = seen.get_or_insert_with(HashSet::new);
        if seen.contains(value) {
            return value.to_owned();
        }
        if seen.len() < self.max {
            seen.insert(value.to_owned());
            return value.to_owned();
        }
        OTHER_FUNCTION.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_labels_are_bounded() {
        let set = LabelSet::new(3);
        for name in ["a", "b", "c"] {
            assert_eq!(set.label(name), name);
        }
        assert_eq!(set.label("d"), OTHER_FUNCTION, "a fourth name has no label of its own");
        assert_eq!(set.label("b"), "b", "names seen first keep theirs");
        for i in 0..1000 {
            assert_eq!(set.label(&format!("f{i}")), OTHER_FUNCTION);
        }
        assert_eq!(set.seen.lock().unwrap().as_ref().unwrap().len(), 3);
    }
}
