//! The window rule: which ticks of a set of entries are due at a check.

use chrono::{DateTime, Utc};

use super::CronJob;

/// Decides, for a set of cron entries, when to wake up and which ticks are
/// due (the window rule of the module docs).
#[derive(Clone, Debug)]
pub struct CronScheduler {
    jobs: Vec<CronJob>,
    last_checked: DateTime<Utc>,
    /// Per entry, its first tick after `last_checked` (or after the check
    /// that last fired it); `None` when it will never fire again.
    next: Vec<Option<DateTime<Utc>>>,
}

impl CronScheduler {
    /// A scheduler whose first window starts at `start` (exclusive).
    pub fn new(jobs: Vec<CronJob>, start: DateTime<Utc>) -> CronScheduler {
        let next = jobs.iter().map(|j| j.next_after(start)).collect();
        CronScheduler { jobs, last_checked: start, next }
    }

    /// The entries, in configuration order.
    pub fn jobs(&self) -> &[CronJob] {
        &self.jobs
    }

    /// The end of the last checked window.
    pub fn last_checked(&self) -> DateTime<Utc> {
        self.last_checked
    }

    /// When the next tick of any entry falls; `None` when no entry will
    /// ever fire again (or there are none).
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        self.next.iter().flatten().min().copied()
    }

    /// The ticks due at `now`: at most one per entry (the latest in the
    /// window since the previous check), in configuration order. A `now`
    /// earlier than the previous check (the wall clock went back) yields
    /// nothing and leaves the window where it was, so no tick fires twice.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<(CronJob, DateTime<Utc>)> {
        if now < self.last_checked {
            return Vec::new();
        }
        let mut due = Vec::new();
        for (job, next) in self.jobs.iter().zip(self.next.iter_mut()) {
            let Some(first) = next.filter(|t| *t <= now) else { continue };
            due.push((job.clone(), job.latest_in(first, now)));
            *next = job.next_after(now);
        }
        self.last_checked = now;
        due
    }
}
