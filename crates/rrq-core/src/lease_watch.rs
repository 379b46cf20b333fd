//! The per-lease watchdog: renews the locks of running attempts in its own
//! task, so no other store call of the worker can delay a renewal, and
//! abandons an attempt early enough that its runner is stopped before the
//! lock can lapse.
//!
//! Each attempt knows `held_until`: when the last *confirmed* renewal (or the
//! claim) was sent, plus the lease TTL. The lock cannot lapse earlier than
//! that. Once `held_until - margin` is reached without a confirmed renewal
//! the attempt is told [`Control::Lost`]; the margin covers stopping the
//! runner (cancel grace + terminate budget) plus a safety second.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rrq_protocol::JobId;
use rrq_store::{Lease, LeaseState, Store};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use crate::job_task::Control;

/// One attempt of a job: the job id and the lease token of the claim.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct AttemptId {
    pub job_id: JobId,
    pub token: String,
}

impl AttemptId {
    pub(crate) fn of(lease: &Lease) -> Self {
        Self { job_id: lease.job_id.clone(), token: lease.token.clone() }
    }
}

/// A running attempt as the worker tracks it.
#[derive(Debug)]
pub(crate) struct Running {
    pub lease: Lease,
    pub control: watch::Sender<Control>,
    /// The lock is held at least until then (see the module docs).
    pub held_until: Instant,
    /// Its task panicked once and a dead-letter task took over.
    pub poisoned: bool,
}

/// The running attempts, shared by the worker loop and the watchdog.
#[derive(Clone, Debug, Default)]
pub(crate) struct Attempts(Arc<Mutex<HashMap<AttemptId, Running>>>);

impl Attempts {
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<AttemptId, Running>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Tells every attempt still running normally to stop with `to`.
    pub(crate) fn stop_all(&self, to: Control) {
        for r in self.lock().values() {
            stop(&r.control, to);
        }
    }
}

/// Moves an attempt from `Run`/`Cancel` to `to` (`Lost` or `Shutdown`); an
/// attempt already stopping keeps its first reason.
pub(crate) fn stop(control: &watch::Sender<Control>, to: Control) {
    control.send_if_modified(|c| {
        let changed = matches!(*c, Control::Run | Control::Cancel);
        if changed {
            *c = to;
        }
        changed
    });
}

/// Moves a running attempt to `Cancel` (from `Run` only: an attempt already
/// stopping keeps its reason). Used by renewal and by the cancel signal.
pub(crate) fn request_cancel(control: &watch::Sender<Control>) {
    control.send_if_modified(|c| {
        let changed = *c == Control::Run;
        if changed {
            *c = Control::Cancel;
        }
        changed
    });
}

/// Timings of the watchdog.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    pub ttl: Duration,
    pub renew_interval: Duration,
    /// How long before `held_until` an attempt is abandoned.
    pub margin: Duration,
}

/// Delay before retrying a renewal that failed or timed out.
const RETRY_RENEW: Duration = Duration::from_millis(500);

/// Renews and watches the attempts until `stop` is cancelled.
pub(crate) async fn watch(attempts: Attempts, store: Arc<dyn Store>, timing: Timing, stop: CancellationToken) {
    let mut next_renew = Instant::now() + timing.renew_interval;
    loop {
        let abandon_at = abandon_overdue(&attempts, timing.margin);
        let wake = abandon_at.map_or(next_renew, |a| a.min(next_renew));
        tokio::select! {
            () = stop.cancelled() => return,
            () = sleep_until(wake) => {}
        }
        if Instant::now() < next_renew {
            continue;
        }
        let renewed = tokio::select! {
            () = stop.cancelled() => return,
            ok = renew(&attempts, store.as_ref(), timing) => ok,
        };
        next_renew =
            Instant::now() + if renewed { timing.renew_interval } else { RETRY_RENEW.min(timing.renew_interval) };
    }
}

/// Abandons attempts whose lock is within `margin` of lapsing; returns when
/// the next one would be due.
fn abandon_overdue(attempts: &Attempts, margin: Duration) -> Option<Instant> {
    let now = Instant::now();
    let mut next: Option<Instant> = None;
    for (id, r) in attempts.lock().iter() {
        if !matches!(*r.control.borrow(), Control::Run | Control::Cancel) {
            continue;
        }
        let due = r.held_until.checked_sub(margin).unwrap_or(now);
        if due <= now {
            error!(
                job_id = %id.job_id,
                "job lock not renewed in time; stopping the attempt before the lock can lapse"
            );
            stop(&r.control, Control::Lost);
        } else {
            next = Some(next.map_or(due, |n| n.min(due)));
        }
    }
    next
}

/// One renewal of every attempt still running normally; `false` when the
/// store failed or did not answer in time.
async fn renew(attempts: &Attempts, store: &dyn Store, timing: Timing) -> bool {
    let sent = Instant::now();
    let (ids, leases, answer_by) = {
        let map = attempts.lock();
        let mut ids = Vec::new();
        let mut leases = Vec::new();
        let mut answer_by: Option<Instant> = None;
        for (id, r) in map.iter() {
            // An attempt stopping for shutdown still holds its lock until
            // it is released; a lost one is given up.
            if *r.control.borrow() == Control::Lost {
                continue;
            }
            ids.push(id.clone());
            leases.push(r.lease.clone());
            let due = if *r.control.borrow() == Control::Shutdown {
                r.held_until
            } else {
                r.held_until.checked_sub(timing.margin).unwrap_or(sent)
            };
            answer_by = Some(answer_by.map_or(due, |a| a.min(due)));
        }
        (ids, leases, answer_by)
    };
    let Some(answer_by) = answer_by else { return true };
    // An answer after the first attempt must be abandoned is of no use.
    let limit = answer_by.saturating_duration_since(sent).min(timing.ttl);
    let states = match timeout(limit, store.renew(&leases, timing.ttl)).await {
        Ok(Ok(states)) => states,
        Ok(Err(e)) => {
            warn!(error = %e, "could not renew job locks");
            return false;
        }
        Err(_) => {
            warn!(waited_ms = limit.as_millis() as u64, "job lock renewal did not answer in time");
            return false;
        }
    };
    let held_until = sent.checked_add(timing.ttl).unwrap_or(sent);
    let mut map = attempts.lock();
    for (id, state) in ids.iter().zip(states) {
        let Some(r) = map.get_mut(id) else { continue };
        match state {
            LeaseState::Held => r.held_until = r.held_until.max(held_until),
            LeaseState::CancelRequested => {
                r.held_until = r.held_until.max(held_until);
                request_cancel(&r.control);
            }
            LeaseState::Lost => stop(&r.control, Control::Lost),
        }
    }
    true
}
