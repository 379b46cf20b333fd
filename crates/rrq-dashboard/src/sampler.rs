//! The background sampler: every few seconds it reads the counts the
//! overview shows (one cheap read per queue) into a snapshot and a bounded
//! ring buffer of rates, and less often it runs the scanning discovery of
//! queues and workers. Requests read the snapshot; none of them scans.
//!
//! The chart's rates come from the workers' health records when they carry
//! cumulative counts (`rates`): that works for a dashboard running apart
//! from any worker. Without such records it falls back to a completion
//! counter of the process, if any, and to the growth of the default DLQ.

mod rates;

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_store::{Clock as _, Store, SystemClock};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::data::{self, Discovery, Known, QueueCounts};
pub use rates::HeartbeatRates;

/// One point of the throughput chart.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Point {
    /// End of the interval.
    pub t: DateTime<Utc>,
    /// Jobs per second that completed: summed over the workers whose
    /// health records carry counts (their rate between their last two
    /// heartbeats), else from the process's [`crate::CompletedCounter`];
    /// `None` when neither is available.
    pub completed: Option<f64>,
    /// Jobs per second that reached a DLQ: from the workers' health
    /// records like `completed`, else the growth of the default DLQ in the
    /// interval (a requeue or purge in the same interval hides as many).
    pub failed: f64,
}

/// What the overview shows; replaced whole on every sample.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Snapshot {
    /// Every known queue with its counts.
    pub queues: Vec<QueueCounts>,
    /// The default DLQ (full key).
    pub dlq: String,
    /// Entries in the default DLQ.
    pub failed: u64,
    /// Jobs running, summed over live workers' health records.
    pub active: u64,
    /// Workers with a live health record.
    pub workers_alive: usize,
    /// When the counts were read.
    pub sampled_at: Option<DateTime<Utc>>,
    /// The last read error, if the last sample failed.
    pub error: Option<String>,
    /// When queues and workers were last discovered.
    pub discovered_at: Option<DateTime<Utc>>,
}

/// Shared state between the sampler and the request handlers.
#[derive(Debug)]
pub struct Samples {
    inner: Mutex<Inner>,
    capacity: usize,
    /// The sampling interval.
    pub interval: Duration,
}

#[derive(Debug, Default)]
struct Inner {
    snapshot: Snapshot,
    discovery: Discovery,
    points: VecDeque<Point>,
    last: Option<(DateTime<Utc>, u64, Option<u64>)>,
    rates: HeartbeatRates,
}

impl Samples {
    /// A buffer holding `window / interval` points.
    pub fn new(interval: Duration, window: Duration) -> Self {
        let capacity = (window.as_secs_f64() / interval.as_secs_f64().max(0.001)).ceil().max(1.0) as usize;
        Self { inner: Mutex::new(Inner::default()), capacity, interval }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().snapshot.clone()
    }

    /// The latest discovery.
    pub fn discovery(&self) -> Discovery {
        self.lock().discovery.clone()
    }

    /// The chart's points, oldest first.
    pub fn points(&self) -> Vec<Point> {
        self.lock().points.iter().cloned().collect()
    }

    /// How many points the buffer keeps at most.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Records the totals read at `t` and makes a point of the rates since
    /// the previous totals: the workers' heartbeat rates when there are
    /// some, else these totals' growth (counts that went down, e.g. by a
    /// requeue, count 0).
    pub fn record(&self, t: DateTime<Utc>, failed_total: u64, completed_total: Option<u64>) {
        let mut inner = self.lock();
        let heartbeats = inner.rates.rates();
        if let Some((t0, f0, c0)) = inner.last {
            let secs = (t - t0).num_milliseconds() as f64 / 1000.0;
            if secs > 0.0 {
                let (completed, failed) = match heartbeats {
                    Some((completed, failed)) => (Some(completed), failed),
                    None => (
                        match (completed_total, c0) {
                            (Some(c), Some(c0)) => Some(c.saturating_sub(c0) as f64 / secs),
                            _ => None,
                        },
                        failed_total.saturating_sub(f0) as f64 / secs,
                    ),
                };
                inner.points.push_back(Point { t, completed, failed });
                while inner.points.len() > self.capacity {
                    inner.points.pop_front();
                }
            }
        }
        inner.last = Some((t, failed_total, completed_total));
    }

    fn set_snapshot(&self, snapshot: Snapshot) {
        self.lock().snapshot = snapshot;
    }

    fn set_discovery(&self, discovery: Discovery) {
        let mut inner = self.lock();
        inner.rates.observe(&discovery.workers);
        inner.discovery = discovery;
    }
}

/// Longest one sampling or discovery pass may take before the overview
/// reports Redis as not answering (the pass is dropped; the next one
/// starts afresh).
const PASS_BUDGET: Duration = Duration::from_secs(3);

/// A count of completed jobs that only grows, when the process has one
/// (a worker serving the dashboard in-process counts its own completions).
pub type CompletedCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The queues the overview lists: configured, discovered and paused ones,
/// and those live workers poll or run jobs of (a queue whose every job is
/// running has an empty sorted set, yet is busy).
fn overview_queues(
    known: &Known,
    discovery: &Discovery,
    paused: &[rrq_protocol::QueueName],
) -> Vec<rrq_protocol::QueueName> {
    let from_workers = discovery.workers.iter().flat_map(|w| {
        let polled = w.queues.iter().flatten();
        let running = w.active_by_queue.iter().flat_map(|m| m.keys());
        polled.chain(running).filter_map(|q| rrq_protocol::QueueName::parse(q))
    });
    let set: BTreeSet<_> =
        known.queues.iter().chain(discovery.queues.iter()).chain(paused.iter()).cloned().chain(from_workers).collect();
    set.into_iter().collect()
}

/// Reads the overview counts once.
pub async fn sample_once(
    store: &dyn Store,
    known: &Known,
    samples: &Samples,
    completed: Option<&CompletedCounter>,
) -> Result<(), rrq_store::StoreError> {
    let now = SystemClock.now();
    let discovery = samples.discovery();
    let paused = data::paused(store).await?;
    let active = data::active_by_queue(&discovery.workers);
    let mut queues = Vec::new();
    for q in overview_queues(known, &discovery, &paused) {
        let running = active.get(q.as_str()).copied().unwrap_or(0);
        queues.push(data::queue_counts(store, &q, now, paused.contains(&q), running).await?);
    }
    let failed = data::dlq_len(store, &known.default_dlq).await?;
    samples.record(now, failed, completed.map(|c| c()));
    let active = discovery.workers.iter().filter_map(|w| w.active_jobs).sum();
    samples.set_snapshot(Snapshot {
        queues,
        dlq: known.default_dlq.as_str().to_owned(),
        failed,
        active,
        workers_alive: discovery.workers.len(),
        sampled_at: Some(now),
        error: None,
        discovered_at: discovery.at,
    });
    Ok(())
}

/// Runs the scanning discovery once.
pub async fn discover_once(store: &dyn Store, samples: &Samples) -> Result<(), rrq_store::StoreError> {
    let d = data::discover(store, SystemClock.now()).await?;
    samples.set_discovery(d);
    Ok(())
}

/// Samples every `samples.interval` and discovers every `discover_every`
/// until `stop`.
pub async fn run(
    store: Arc<dyn Store>,
    known: Arc<Known>,
    samples: Arc<Samples>,
    discover_every: Duration,
    completed: Option<CompletedCounter>,
    stop: CancellationToken,
) {
    // Discover first, so the first sample already lists every queue.
    match tokio::time::timeout(PASS_BUDGET, discover_once(store.as_ref(), &samples)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => warn!(error = %e, "dashboard: discovering queues and workers failed"),
        Err(_) => warn!("dashboard: discovering queues and workers took too long"),
    }
    let mut sample = tokio::time::interval(samples.interval);
    sample.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut discover = tokio::time::interval_at(tokio::time::Instant::now() + discover_every, discover_every);
    discover.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = stop.cancelled() => return,
            _ = sample.tick() => {
                let read = sample_once(store.as_ref(), &known, &samples, completed.as_ref());
                let failure = match tokio::time::timeout(PASS_BUDGET, read).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(format!("reading Redis failed: {e}")),
                    Err(_) => Some(format!("Redis did not answer within {}s", PASS_BUDGET.as_secs())),
                };
                if let Some(failure) = failure {
                    warn!(error = %failure, "dashboard: sampling counts failed");
                    let mut s = samples.snapshot();
                    s.error = Some(failure);
                    samples.set_snapshot(s);
                }
            }
            _ = discover.tick() => {
                match tokio::time::timeout(PASS_BUDGET, discover_once(store.as_ref(), &samples)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => warn!(error = %e, "dashboard: discovering queues and workers failed"),
                    Err(_) => warn!("dashboard: discovering queues and workers took too long"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_900_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn the_ring_buffer_keeps_the_last_window_of_rates() {
        let s = Samples::new(Duration::from_secs(2), Duration::from_secs(6));
        assert_eq!(s.capacity(), 3);
        s.record(at(0), 10, Some(100));
        assert!(s.points().is_empty(), "one reading is no rate yet");
        s.record(at(2), 14, Some(110));
        assert_eq!(s.points(), vec![Point { t: at(2), completed: Some(5.0), failed: 2.0 }]);
        // A requeue shrinks the DLQ: that is no negative failure rate.
        s.record(at(4), 4, Some(110));
        assert_eq!(s.points()[1].failed, 0.0);
        s.record(at(6), 6, None);
        s.record(at(8), 8, None);
        let points = s.points();
        assert_eq!(points.len(), 3, "bounded");
        assert_eq!(points[0].t, at(4), "oldest dropped first");
        assert_eq!(points[2].completed, None, "no counter, no completion rate");
    }

    #[test]
    fn heartbeat_counts_make_the_points_when_workers_report_them() {
        let s = Samples::new(Duration::from_secs(2), Duration::from_secs(60));
        let worker = |t: i64, completed: u64, failed: u64| {
            let mut w = rrq_store::WorkerInfo::from(rrq_store::WorkerRecord {
                worker_id: "w".into(),
                health: Some(serde_json::json!({})),
                ttl: None,
            });
            (w.last_heartbeat, w.completed_jobs, w.failed_jobs) = (Some(at(t)), Some(completed), Some(failed));
            Discovery { queues: vec![], workers: vec![w], at: Some(at(t)) }
        };
        s.set_discovery(worker(0, 40, 1));
        s.record(at(0), 7, None);
        s.set_discovery(worker(10, 90, 3));
        s.record(at(2), 100, None);
        assert_eq!(
            s.points(),
            vec![Point { t: at(2), completed: Some(5.0), failed: 0.2 }],
            "the workers' own rates, not the DLQ's growth"
        );
    }
}
