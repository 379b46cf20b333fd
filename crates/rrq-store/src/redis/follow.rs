//! On a Redis Cluster: following a failover that the client does not notice.
//!
//! fred learns a new cluster layout only from a redirection (`MOVED`) or a
//! connection that breaks. A master cut off the network gives neither: it
//! keeps its connections open, so every call routed to it waits out its
//! timeout, and the replica that took over its slots is never asked, until
//! the network heals. So the store watches its own calls instead:
//!
//! * every call of the command client that may write (scripts, plain
//!   commands, heartbeats, completion batches) is marked in flight while
//!   it waits ([`Follow::busy`]; a `WAIT` once its own timeout has
//!   passed), and a timeout, a shard head that did not come or a `WAIT`
//!   refused by a replica is noted ([`Follow::suspect`]);
//! * a task ([`watch`]) looks every [`TICK`] whether a call has waited
//!   longer than [`STALL`] or something was noted in the last
//!   [`SUSPECT_MEMORY`]; only then (and at most every [`PROBE_EVERY`]) it
//!   asks every master the client is connected to for its view of the
//!   slots (`CLUSTER SLOTS`, [`PROBE_TIMEOUT`] each), and when an answer
//!   differs from the client's own, has the client sync its layout
//!   (`sync_cluster`): fred then closes the connection to the master that
//!   left, opens one to its successor, and sends the calls that were
//!   waiting on the old connection to the new owner of their slots (every
//!   script is safe to run twice on a cluster, see `connect.rs`).
//!
//! Nothing of this runs on one server or behind Sentinel, and nothing is
//! sent to Redis while no call waits: the happy path costs two lock
//! operations per call and no command.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::cluster::ClusterRouting;
use futures::StreamExt as _;

use super::scripts::{self, LuaScript};

/// How often the watch looks at the calls in flight.
pub(super) const TICK: Duration = Duration::from_millis(250);
/// How long a call may wait before the watch asks the masters for their
/// layout.
pub(super) const STALL: Duration = Duration::from_secs(1);
/// How long after a timeout (or another sign of a moved master) the watch
/// keeps asking.
pub(super) const SUSPECT_MEMORY: Duration = Duration::from_secs(3);
/// How long one master may take to answer `CLUSTER SLOTS`.
pub(super) const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// The least time between two rounds of `CLUSTER SLOTS` (a call that is
/// only slow must not turn into a stream of them).
pub(super) const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long the watch waits for the client's layout sync.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// The calls in flight and the signs of a changed layout, shared by the
/// store's handles, its completion task and the watch.
#[derive(Debug, Default)]
pub(super) struct Follow {
    /// Whether anything is tracked (a cluster).
    on: bool,
    next: AtomicU64,
    /// Start and number of every call in flight.
    in_flight: Mutex<BTreeSet<(Instant, u64)>>,
    /// When something last hinted at a moved master.
    suspected: Mutex<Option<Instant>>,
    /// When the client last synced its layout on the watch's request.
    synced: Mutex<Option<Instant>>,
}

/// A call in flight; it leaves the set when dropped.
pub(super) struct Busy<'a> {
    follow: &'a Follow,
    key: Option<(Instant, u64)>,
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.follow.in_flight.lock().unwrap_or_else(PoisonError::into_inner).remove(&key);
        }
    }
}

impl Follow {
    /// Tracking on a cluster (`on`), nothing otherwise.
    pub(super) fn new(on: bool) -> Follow {
        Follow { on, ..Follow::default() }
    }

    /// Marks a call in flight until the guard is dropped.
    pub(super) fn busy(&self) -> Busy<'_> {
        self.busy_after(Duration::ZERO)
    }

    /// Runs `script`, marked in flight while it waits.
    pub(super) async fn eval<S: LuaScript>(&self, client: &Client, script: S) -> Result<Value, Error> {
        let _busy = self.busy();
        scripts::eval(client, script).await
    }

    /// [`Follow::busy`] for a call that may take `allowed` by itself (a
    /// `WAIT` with its timeout): it counts as waiting only past that.
    pub(super) fn busy_after(&self, allowed: Duration) -> Busy<'_> {
        if !self.on {
            return Busy { follow: self, key: None };
        }
        let key = (Instant::now() + allowed, self.next.fetch_add(1, Ordering::Relaxed));
        self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).insert(key);
        Busy { follow: self, key: Some(key) }
    }

    /// Notes a sign that a master may have moved (a timeout, a silent
    /// shard, a `WAIT` refused by a replica).
    pub(super) fn suspect(&self) {
        if self.on {
            *self.suspected.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
    }

    /// Notes a client error: a timeout is a sign.
    pub(super) fn saw(&self, e: &Error) {
        if *e.kind() == ErrorKind::Timeout {
            self.suspect();
        }
    }

    /// When the client last synced its layout on the watch's request.
    pub(super) fn last_sync(&self) -> Option<Instant> {
        *self.synced.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the watch should ask the masters now.
    fn stalled(&self, now: Instant) -> bool {
        let oldest = self.in_flight.lock().unwrap_or_else(PoisonError::into_inner).first().map(|(t, _)| *t);
        let suspected = *self.suspected.lock().unwrap_or_else(PoisonError::into_inner);
        oldest.is_some_and(|t| now.saturating_duration_since(t) > STALL)
            || suspected.is_some_and(|t| now.saturating_duration_since(t) < SUSPECT_MEMORY)
    }
}

/// Starts the watch of a cluster store's client; it ends once `follow`
/// (held by the store and its completion task) is gone.
pub(super) fn spawn(client: Client, follow: &Arc<Follow>) {
    tokio::spawn(watch(client, Arc::downgrade(follow)));
}

/// Every [`TICK`]: when a call waits too long, asks the masters for the
/// layout, and syncs the client's when it is out of date.
async fn watch(client: Client, follow: Weak<Follow>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_probe: Option<Instant> = None;
    loop {
        tick.tick().await;
        let Some(follow) = follow.upgrade() else { return };
        let now = Instant::now();
        if !follow.stalled(now) || last_probe.is_some_and(|t| now.saturating_duration_since(t) < PROBE_EVERY) {
            continue;
        }
        last_probe = Some(now);
        let Some(reason) = layout_moved(&client).await else { continue };
        tracing::warn!(%reason, "the cluster's layout changed under a waiting call; syncing the client's view");
        match tokio::time::timeout(SYNC_TIMEOUT, client.sync_cluster()).await {
            Ok(Ok(())) => {
                *follow.synced.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                tracing::info!(masters = ?masters(&client), "following the cluster's new layout");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "the cluster's layout could not be synced"),
            Err(_) => tracing::warn!("the cluster's layout sync did not finish within {SYNC_TIMEOUT:?}"),
        }
    }
}

/// The client's masters, for the log.
fn masters(client: &Client) -> Vec<String> {
    client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes().iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// Asks every master the client knows for its view of the slots, at once;
/// why the client's own view is out of date, if an answer differs from it.
async fn layout_moved(client: &Client) -> Option<String> {
    let Some(ours) = client.cached_cluster_state() else {
        return Some("the client has no layout".to_owned());
    };
    let mine = owners(&ours);
    // Only masters the client holds a connection to: fred answers a call
    // for any other node by reconnecting every node (a layout sync that
    // holds up every call).
    let connected = client.active_connections();
    let mut asks: futures::stream::FuturesUnordered<_> = ours
        .unique_primary_nodes()
        .into_iter()
        .filter(|server| connected.contains(server))
        .map(|server| {
            let options = Options {
                cluster_node: Some(server.clone()),
                timeout: Some(PROBE_TIMEOUT),
                max_attempts: Some(1),
                ..Options::default()
            };
            async move {
                let answer = client.with_options(&options).cluster_slots::<Value>().await;
                (server, answer)
            }
        })
        .collect();
    // The first answer that differs is enough: the silent master's own
    // probe is not waited for.
    while let Some((server, answer)) = asks.next().await {
        let view = match answer.and_then(|answer| ClusterRouting::from_cluster_slots(answer, server.host.clone())) {
            Ok(view) => view,
            Err(e) => {
                tracing::debug!(%server, error = %e, "no layout from this master");
                continue;
            }
        };
        if view.len() > 0 && owners(&view) != mine {
            return Some(format!("{server} reports other slot owners than the client's layout"));
        }
    }
    None
}

/// Each slot range with its master's node id, in slot order.
fn owners(routing: &ClusterRouting) -> Vec<(u16, u16, String)> {
    let mut owners: Vec<(u16, u16, String)> =
        routing.slots().iter().map(|r| (r.start, r.end, r.id.to_string())).collect();
    owners.sort_unstable();
    owners
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_waiting_past_the_stall_limit_or_a_recent_timeout_wakes_the_watch() {
        let follow = Follow::new(true);
        let now = Instant::now();
        assert!(!follow.stalled(now));
        {
            let _call = follow.busy();
            assert!(!follow.stalled(Instant::now()), "a fresh call");
            assert!(follow.stalled(Instant::now() + STALL + Duration::from_millis(1)), "a call past the limit");
        }
        {
            let _wait = follow.busy_after(Duration::from_secs(2));
            assert!(!follow.stalled(Instant::now() + STALL * 2), "within its own allowance");
            assert!(follow.stalled(Instant::now() + Duration::from_secs(2) + STALL * 2), "past it");
        }
        assert!(!follow.stalled(Instant::now() + STALL * 2), "the call has ended");
        follow.saw(&Error::new(ErrorKind::Timeout, "Request timed out."));
        assert!(follow.stalled(Instant::now()));
        assert!(!follow.stalled(Instant::now() + SUSPECT_MEMORY), "an old timeout");
        follow.saw(&Error::new(ErrorKind::IO, "Connection closed."));
        assert!(!follow.stalled(Instant::now() + SUSPECT_MEMORY), "not a sign");
    }

    #[test]
    fn nothing_is_tracked_off_a_cluster() {
        let follow = Follow::new(false);
        let _call = follow.busy();
        follow.suspect();
        assert!(!follow.stalled(Instant::now() + STALL * 10));
        assert!(follow.in_flight.lock().unwrap().is_empty());
    }
}
