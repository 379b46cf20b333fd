//! Metrics the worker records through the `metrics` facade. Nothing is
//! recorded anywhere unless the application installs a recorder (the CLI
//! installs a Prometheus one when `metrics_listen` is set).

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
    let labels = [("queue", queue.to_owned()), ("function", function.to_owned())];
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
