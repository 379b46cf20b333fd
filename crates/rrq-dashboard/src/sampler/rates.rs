//! Completion and failure rates from the workers' health records: each
//! record carries the worker's cumulative counts, so two records of the
//! same worker give its rate over the time between them, with no read per
//! job. A worker contributes only once it has been seen twice: one that
//! appears (however large its counts), restarts (counts going down) or
//! disappears never makes a spike or a negative rate.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rrq_store::WorkerInfo;

/// One worker's last counted record and the rate it gave.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Seen {
    at: DateTime<Utc>,
    completed: u64,
    failed: u64,
    /// Completed and failed jobs per second between its last two records.
    rate: Option<(f64, f64)>,
}

/// Per-worker rates, updated at each discovery of the workers.
#[derive(Clone, Debug, Default)]
pub struct HeartbeatRates {
    workers: HashMap<String, Seen>,
}

impl HeartbeatRates {
    /// Takes the live workers of one discovery. A worker's rate is kept
    /// while the same record is read again (heartbeats are rarer than
    /// discoveries), recomputed when a newer record arrives, and forgotten
    /// with the worker.
    pub fn observe(&mut self, workers: &[WorkerInfo]) {
        let mut next = HashMap::with_capacity(workers.len());
        for w in workers {
            let (Some(at), Some(completed), Some(failed)) = (w.last_heartbeat, w.completed_jobs, w.failed_jobs) else {
                continue;
            };
            let rate = match self.workers.get(&w.worker_id) {
                Some(prev) if at == prev.at => prev.rate,
                Some(prev) if at > prev.at && completed >= prev.completed && failed >= prev.failed => {
                    let secs = (at - prev.at).num_milliseconds() as f64 / 1000.0;
                    (secs > 0.0)
                        .then(|| ((completed - prev.completed) as f64 / secs, (failed - prev.failed) as f64 / secs))
                }
                // First sight, a restart under the same id (counts went
                // down) or a clock that went back: no rate until the next
                // record.
                _ => None,
            };
            next.insert(w.worker_id.clone(), Seen { at, completed, failed, rate });
        }
        self.workers = next;
    }

    /// Completed and failed jobs per second summed over the live workers
    /// that have a rate; `None` while none has.
    pub fn rates(&self) -> Option<(f64, f64)> {
        let rates: Vec<(f64, f64)> = self.workers.values().filter_map(|s| s.rate).collect();
        (!rates.is_empty()).then(|| rates.iter().fold((0.0, 0.0), |(c, f), (dc, df)| (c + dc, f + df)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
    }

    fn record(id: &str, t: i64, completed: u64, failed: u64) -> WorkerInfo {
        WorkerInfo {
            worker_id: id.to_owned(),
            status: Some("running".to_owned()),
            active_jobs: Some(0),
            concurrency_limit: Some(4),
            queues: Some(vec![]),
            last_heartbeat: Some(at(t)),
            completed_jobs: Some(completed),
            failed_jobs: Some(failed),
            active_by_queue: None,
            ttl: None,
            health: Some(serde_json::json!({})),
        }
    }

    #[test]
    fn two_records_of_a_worker_give_its_rate_and_workers_add_up() {
        let mut r = HeartbeatRates::default();
        r.observe(&[record("a", 0, 100, 4)]);
        assert_eq!(r.rates(), None, "one record is no rate yet");
        r.observe(&[record("a", 0, 100, 4)]);
        assert_eq!(r.rates(), None, "the same record read again is no rate either");
        r.observe(&[record("a", 10, 150, 6), record("b", 10, 7, 0)]);
        assert_eq!(r.rates(), Some((5.0, 0.2)));
        // Read again before the next heartbeat: the rate holds.
        r.observe(&[record("a", 10, 150, 6), record("b", 10, 7, 0)]);
        assert_eq!(r.rates(), Some((5.0, 0.2)));
        r.observe(&[record("a", 20, 170, 6), record("b", 15, 17, 1)]);
        assert_eq!(r.rates(), Some((2.0 + 2.0, 0.2)));
    }

    #[test]
    fn appearing_restarting_or_vanishing_workers_make_no_spike() {
        let mut r = HeartbeatRates::default();
        r.observe(&[record("a", 0, 100, 0)]);
        r.observe(&[record("a", 10, 110, 0), record("new", 10, 1_000_000, 50)]);
        assert_eq!(r.rates(), Some((1.0, 0.0)), "a worker seen once adds nothing, however large its counts");
        // `a` restarts under the same id: its counts start again from zero.
        r.observe(&[record("a", 20, 3, 0), record("new", 20, 1_000_010, 50)]);
        assert_eq!(r.rates(), Some((1.0, 0.0)), "only `new` counts; no negative rate from `a`");
        r.observe(&[record("a", 30, 13, 0)]);
        assert_eq!(r.rates(), Some((1.0, 0.0)), "`new` vanished and adds nothing; `a` counts again");
        r.observe(&[]);
        assert_eq!(r.rates(), None, "no live worker, no rate");
    }

    #[test]
    fn records_without_counts_are_left_out() {
        let mut r = HeartbeatRates::default();
        let mut foreign = record("ref", 0, 0, 0);
        (foreign.completed_jobs, foreign.failed_jobs) = (None, None);
        r.observe(std::slice::from_ref(&foreign));
        foreign.last_heartbeat = Some(at(10));
        r.observe(&[foreign]);
        assert_eq!(r.rates(), None);
    }
}
