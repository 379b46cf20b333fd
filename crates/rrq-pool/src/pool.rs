//! `ProcessPool`: the [`Runner`] of one configured runner.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use rrq_protocol::{Envelope, ExecutionOutcome, ExecutionRequest, OutcomeError, encode_frame, error_types};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{PoolConfig, PoolMode};
use crate::connection::{Connection, Reply, SendError, send_cancel_fresh};
use crate::error::{Failure, PoolError};
use crate::policy::{SlotView, choose};
use crate::process::Spawner;
use crate::runner::{Runner, RunnerHealth};
use crate::slot::{Acquire, Groups, Managed, Slot, Status, Supervisor};

mod abandon;

/// Longest time spent delivering one cancel frame.
/// How long a transport error waits for the process behind it to be reaped
/// by itself before retiring it.
const REAP_WINDOW: Duration = Duration::from_millis(250);
const CANCEL_DELIVERY: Duration = Duration::from_secs(1);

/// Message of the outcome produced locally for a request cancelled before it
/// reached a runner (the same text runners use).
const CANCELLED_MESSAGE: &str = "Job cancelled";

/// A pool of runner processes (managed mode) or one connection to an external
/// runner, executing requests over the runner protocol.
///
/// Start it with [`ProcessPool::start`]; use it through [`Runner`]; stop it
/// with [`Runner::shutdown`]. Dropping it without a shutdown kills every
/// process group at once.
///
/// A process terminated on purpose (a timed-out request, `restart_all`) is
/// replaced at once; one that crashed is replaced after an exponential
/// backoff (100 ms doubling to 10 s, reset after 10 s of healthy uptime), and
/// after three failures in a row it is reported as crash-looping and requests
/// for it fail fast with [`PoolError::Unavailable`].
///
/// A reply that reached the socket before a timer fired wins over that timer.
/// An `execute` future dropped while its request is in flight is cleaned up
/// like a timed-out request (its process retired, or a cancel sent when the
/// process is shared). [`Runner::terminate`] retires the process carrying a
/// request (managed) or closes its connection (external).
#[derive(Debug)]
pub struct ProcessPool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<PoolConfig>,
    slots: Vec<Arc<Slot>>,
    capacity: usize,
    permits: Arc<Semaphore>,
    cursor: Mutex<usize>,
    requests: Mutex<HashMap<String, Active>>,
    /// Number of `execute` calls in progress.
    active: watch::Sender<usize>,
    /// Set first at shutdown: new and waiting requests are refused.
    stop_accepting: CancellationToken,
    /// Set once in-flight requests had their grace: supervisors stop.
    closing: CancellationToken,
    supervisors: TaskTracker,
    /// Cancel deliveries and terminations started by timeouts.
    background: TaskTracker,
    shutdown_done: tokio::sync::Mutex<bool>,
    groups: Groups,
}

/// An `execute` call in progress, for `cancel` and shutdown.
#[derive(Debug)]
struct Active {
    job_id: String,
    /// Cancelled by `cancel` or `terminate` before the request was sent.
    cancel: CancellationToken,
    sent: Option<Sent>,
}

/// Where a request went, for `cancel`, `terminate` and the clean-up after a
/// timeout.
#[derive(Clone, Debug)]
struct Sent {
    slot: Arc<Slot>,
    conn: Arc<Connection>,
    addrs: Arc<[SocketAddr]>,
    generation: u64,
}

/// Registration of one `execute` call; unregisters on drop, however the call
/// ends (including the caller dropping the future).
struct Tracking<'a> {
    inner: &'a Inner,
    request_id: String,
    job_id: String,
    sent: Option<Sent>,
    /// The request's share of the pool's capacity, once it has one.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The slot the request was assigned to.
    assigned: Option<Assigned>,
}

impl Drop for Tracking<'_> {
    fn drop(&mut self) {
        self.inner.lock_requests().remove(&self.request_id);
        self.inner.active.send_modify(|n| *n = n.saturating_sub(1));
        if let Some(sent) = self.sent.take() {
            // Still sent at this point only when the caller dropped the
            // `execute` future while the request was in flight: the runner
            // would keep working on it unseen. Treat it like a timeout.
            let reason = format!("job {} abandoned by its caller", self.job_id);
            self.inner.abandon_sent(sent, &self.job_id, &self.request_id, reason);
        }
    }
}

/// A request assigned to a slot; releases the slot's load on drop.
struct Assigned(Arc<Slot>);

impl Drop for Assigned {
    fn drop(&mut self) {
        self.0.load.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// How `dispatch` ended.
enum Dispatched {
    /// With an outcome produced locally (cancelled before it was sent).
    Done(ExecutionOutcome),
    /// With the request handed to a connection; the reply comes here.
    Sent(oneshot::Receiver<Reply>),
}

/// How waiting for a reply ended.
#[allow(clippy::large_enum_variant, reason = "returned once per request, straight to the caller")]
enum Waited {
    Reply(Result<ExecutionOutcome, PoolError>),
    /// The runner's `response_timeout` expired first.
    ResponseTimeout,
    /// The request's own deadline passed.
    Deadline,
}

impl ProcessPool {
    /// Validates `config`, starts every process (managed) or connects to the
    /// runner (external), and returns once all are ready. Any failure stops
    /// what was started and is returned; a process that exits during start-up
    /// is reported with its exit status and last stderr lines.
    pub async fn start(config: PoolConfig) -> Result<Self, PoolError> {
        config.validate()?;
        let mut config = config;
        if config.mode == PoolMode::External {
            config.pool_size = std::num::NonZeroUsize::MIN;
        }
        let config = Arc::new(config);
        let size = config.effective_pool_size();
        let capacity = size * config.max_in_flight.get();
        let closing = CancellationToken::new();
        let groups = Groups::default();
        let mut slots = Vec::with_capacity(size);
        let mut receivers = Vec::with_capacity(size);
        for index in 0..size {
            let (slot, rx) = Slot::new(index, &config);
            slots.push(slot);
            receivers.push(rx);
        }
        let inner = Arc::new(Inner {
            config: Arc::clone(&config),
            slots,
            capacity,
            permits: Arc::new(Semaphore::new(capacity)),
            cursor: Mutex::new(0),
            requests: Mutex::new(HashMap::new()),
            active: watch::Sender::new(0),
            stop_accepting: CancellationToken::new(),
            closing: closing.clone(),
            supervisors: TaskTracker::new(),
            background: TaskTracker::new(),
            shutdown_done: tokio::sync::Mutex::new(false),
            groups: groups.clone(),
        });
        let pool = ProcessPool { inner };
        let supervisor = |slot: &Arc<Slot>, rx| {
            Supervisor::new(Arc::clone(slot), Arc::clone(&config), rx, closing.clone(), groups.clone())
        };
        match config.mode {
            PoolMode::Managed => {
                let leftovers = crate::identity::sweep_leftovers(crate::process::OWNER_ENV);
                if !leftovers.is_empty() {
                    warn!(runner = %config.name, pids = ?leftovers, "killed runner processes left behind by an orchestrator that is gone");
                }
                let spawner = Spawner::new(&config.name)
                    .map_err(|e| PoolError::Unavailable(format!("cannot start a spawner thread: {e}")))?;
                let spawner = Arc::new(spawner);
                let ports: BTreeSet<u16> = (0..size).map(|i| config.base_port + i as u16).collect();
                let ports = Arc::new(Mutex::new(ports));
                for (slot, rx) in pool.inner.slots.iter().zip(receivers) {
                    let managed = Managed {
                        spawner: Arc::clone(&spawner),
                        ports: Arc::clone(&ports),
                        port: config.base_port + slot.index as u16,
                    };
                    pool.inner.supervisors.spawn(supervisor(slot, rx).run_managed(managed));
                }
            }
            PoolMode::External => {
                let addrs = resolve(&config).await?;
                let (slot, rx) = (&pool.inner.slots[0], receivers.pop().expect("one slot"));
                pool.inner.supervisors.spawn(supervisor(slot, rx).run_external(addrs));
            }
        }
        if let Err(e) = pool.wait_started().await {
            pool.shutdown(Duration::ZERO).await;
            return Err(e);
        }
        info!(runner = %config.name, processes = size, capacity, mode = ?config.mode, "runner pool started");
        Ok(pool)
    }

    async fn wait_started(&self) -> Result<(), PoolError> {
        for slot in &self.inner.slots {
            let mut rx = slot.subscribe();
            let status = rx
                .wait_for(|s| matches!(s, Status::Ready { .. } | Status::Failed(_) | Status::Stopped))
                .await
                .map(|s| s.clone())
                .map_err(|_| PoolError::ShuttingDown)?;
            match status {
                Status::Failed(message) => return Err(PoolError::Unavailable(message.to_string())),
                Status::Stopped => return Err(PoolError::ShuttingDown),
                Status::Ready { generation, addrs, pid } if self.inner.config.mode == PoolMode::External => {
                    // Reach the external runner now, so a wrong endpoint fails
                    // start-up instead of the first job.
                    match slot.connection(generation, &addrs, pid).await {
                        Ok(_) => {}
                        Err(Acquire::Failed(e)) => return Err(e),
                        Err(Acquire::Stale) => return Err(PoolError::ShuttingDown),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The pool's configuration (after start-up adjustments).
    pub fn config(&self) -> &PoolConfig {
        &self.inner.config
    }

    /// Gracefully replaces every process (watch mode): requests in flight get
    /// `grace` to finish, the rest fail as transport errors (so the worker
    /// retries them); requests arriving meanwhile wait for the new process.
    /// Returns once every slot is ready again.
    pub async fn restart_all(&self, grace: Duration) -> Result<(), PoolError> {
        if self.inner.stop_accepting.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        info!(runner = %self.inner.config.name, "restarting every runner process");
        let acks: Vec<_> = self.inner.slots.iter().map(|s| s.restart(grace)).collect();
        let mut failure = None;
        for ack in acks {
            match ack.await {
                Ok(Ok(())) => {}
                Ok(Err(message)) => failure = Some(PoolError::Unavailable(message)),
                Err(_) => failure = Some(PoolError::ShuttingDown),
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Process ids of the ready processes, by slot (managed mode; `None` for
    /// slots without a ready process). For diagnostics and tests.
    pub fn pids(&self) -> Vec<Option<u32>> {
        self.inner
            .slots
            .iter()
            .map(|s| match s.status() {
                Status::Ready { pid, .. } => pid,
                _ => None,
            })
            .collect()
    }

    /// Addresses of the ready processes, by slot. For diagnostics and tests.
    pub fn addresses(&self) -> Vec<Option<SocketAddr>> {
        self.inner
            .slots
            .iter()
            .map(|s| match s.status() {
                Status::Ready { addrs, .. } => addrs.first().copied(),
                _ => None,
            })
            .collect()
    }
}

impl Drop for ProcessPool {
    fn drop(&mut self) {
        self.inner.stop_accepting.cancel();
        self.inner.closing.cancel();
        // Last resort: nothing may outlive the pool, even without a shutdown.
        self.inner.groups.kill_all();
        for slot in &self.inner.slots {
            slot.close_connection(&Failure::ShuttingDown);
        }
    }
}

/// Resolves an external runner's host once.
async fn resolve(config: &PoolConfig) -> Result<Arc<[SocketAddr]>, PoolError> {
    let host = config.host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Arc::from(vec![SocketAddr::new(ip, config.base_port)]));
    }
    let found: Vec<SocketAddr> = tokio::net::lookup_host((bare, config.base_port))
        .await
        .map_err(|e| PoolError::Unavailable(format!("cannot resolve runner '{}' host '{bare}': {e}", config.name)))?
        .collect();
    if found.is_empty() {
        return Err(PoolError::Unavailable(format!("runner '{}' host '{bare}' has no address", config.name)));
    }
    debug!(runner = %config.name, host = bare, addrs = ?found, "external runner resolved");
    Ok(Arc::from(found))
}

impl Inner {
    fn lock_requests(&self) -> MutexGuard<'_, HashMap<String, Active>> {
        self.requests.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn track(&self, request: &ExecutionRequest) -> Result<(Tracking<'_>, CancellationToken), PoolError> {
        let cancel = CancellationToken::new();
        {
            let mut requests = self.lock_requests();
            if requests.contains_key(&request.request_id) {
                return Err(PoolError::transport(format!("request id {} is already in flight", request.request_id)));
            }
            let active = Active { job_id: request.job_id.clone(), cancel: cancel.clone(), sent: None };
            requests.insert(request.request_id.clone(), active);
        }
        self.active.send_modify(|n| *n += 1);
        let tracking = Tracking {
            inner: self,
            request_id: request.request_id.clone(),
            job_id: request.job_id.clone(),
            sent: None,
            permit: None,
            assigned: None,
        };
        Ok((tracking, cancel))
    }

    /// Assigns the next request to the least-loaded process.
    fn assign(&self) -> Assigned {
        let mut cursor = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        let views: Vec<SlotView> = self
            .slots
            .iter()
            .map(|s| SlotView { ready: s.is_ready(), load: s.load.load(std::sync::atomic::Ordering::Acquire) })
            .collect();
        let index = choose(&views, self.config.max_in_flight.get(), *cursor);
        *cursor = (index + 1) % self.slots.len();
        let slot = Arc::clone(&self.slots[index]);
        slot.load.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Assigned(slot)
    }

    /// Everything between "accepted" and "sent": a free slot, a ready
    /// process, its connection. The permit and the slot's load are held by
    /// `track` until the call ends.
    async fn dispatch(
        &self,
        request: &ExecutionRequest,
        frame: Bytes,
        track: &mut Tracking<'_>,
        cancelled: &CancellationToken,
    ) -> Result<Dispatched, PoolError> {
        let local_cancel = || {
            debug!(job_id = %request.job_id, "request cancelled before it reached a runner");
            let error = OutcomeError::with_kind(CANCELLED_MESSAGE, error_types::CANCELLED);
            Ok(Dispatched::Done(ExecutionOutcome::error(request, error)))
        };
        let permit = tokio::select! {
            permit = Arc::clone(&self.permits).acquire_owned() => permit.map_err(|_| PoolError::ShuttingDown)?,
            () = self.stop_accepting.cancelled() => return Err(PoolError::ShuttingDown),
            () = cancelled.cancelled() => return local_cancel(),
        };
        track.permit = Some(permit);
        let assigned = self.assign();
        let slot = Arc::clone(&assigned.0);
        track.assigned = Some(assigned);
        loop {
            let (generation, addrs, pid) = tokio::select! {
                ready = slot.wait_ready() => ready?,
                () = self.stop_accepting.cancelled() => return Err(PoolError::ShuttingDown),
                () = cancelled.cancelled() => return local_cancel(),
            };
            let conn = tokio::select! {
                conn = slot.connection(generation, &addrs, pid) => match conn {
                    Ok(conn) => conn,
                    Err(Acquire::Stale) => continue,
                    Err(Acquire::Failed(e)) => return Err(e),
                },
                () = self.stop_accepting.cancelled() => return Err(PoolError::ShuttingDown),
                () = cancelled.cancelled() => return local_cancel(),
            };
            // Registering as sent and queueing the frame happen under the
            // requests lock, so a concurrent `cancel` either sees "not sent"
            // (and the check below catches it) or queues its cancel frame
            // behind the request on the same connection.
            let sent = {
                let mut requests = self.lock_requests();
                let Some(active) = requests.get_mut(&request.request_id) else {
                    return Err(PoolError::transport("request is no longer tracked"));
                };
                if active.cancel.is_cancelled() {
                    drop(requests);
                    return local_cancel();
                }
                match conn.send(&request.request_id, &request.job_id, frame.clone()) {
                    Ok(rx) => {
                        let sent = Sent { slot: Arc::clone(&slot), conn: Arc::clone(&conn), addrs, generation };
                        active.sent = Some(sent.clone());
                        track.sent = Some(sent);
                        Ok(rx)
                    }
                    Err(e) => Err(e),
                }
            };
            return match sent {
                Ok(rx) => Ok(Dispatched::Sent(rx)),
                Err(SendError::Closed) => continue,
                Err(SendError::Rejected(e)) => Err(e),
            };
        }
    }

    /// Waits for the reply to a sent request, until the request's deadline
    /// or the runner's response timeout. When a timer fires, whatever the
    /// runner already wrote to the socket is read and dispatched first: a
    /// reply that arrived in time wins even if this task only noticed the
    /// timer later (a stopped or starved orchestrator wakes up with both
    /// ready, and the timer must not win that race).
    async fn wait_reply(&self, mut reply: oneshot::Receiver<Reply>, conn: &Connection, deadline: Instant) -> Waited {
        let response_deadline = self.config.response_timeout.map(|limit| Instant::now() + limit);
        let (limit, expired) = match response_deadline {
            Some(at) if at < deadline => (at, Waited::ResponseTimeout),
            _ => (deadline, Waited::Deadline),
        };
        let settled = |reply: Result<Reply, TryRecvError>| match reply {
            Ok(Ok(outcome)) => Some(Waited::Reply(Ok(outcome))),
            Ok(Err(e)) => Some(Waited::Reply(Err(e))),
            Err(TryRecvError::Closed) => Some(Waited::Reply(Err(PoolError::transport("runner connection closed")))),
            Err(TryRecvError::Empty) => None,
        };
        tokio::select! {
            biased;
            reply = &mut reply => return settled(reply.map_err(|_| TryRecvError::Closed)).unwrap_or(expired),
            () = tokio::time::sleep_until(limit) => {}
        }
        conn.settle().await;
        settled(reply.try_recv()).unwrap_or(expired)
    }
}

fn encode_request(request: &ExecutionRequest, max_frame_bytes: usize) -> Result<Bytes, PoolError> {
    let mut buf = BytesMut::new();
    encode_frame(&Envelope::Request(request.clone()), &mut buf, max_frame_bytes)
        .map_err(|e| PoolError::transport_caused_by("request cannot be sent", e))?;
    Ok(buf.freeze())
}

#[async_trait]
impl Runner for ProcessPool {
    async fn execute(&self, request: ExecutionRequest, timeout: Duration) -> Result<ExecutionOutcome, PoolError> {
        let inner = &*self.inner;
        if inner.stop_accepting.is_cancelled() {
            return Err(PoolError::ShuttingDown);
        }
        let deadline = Instant::now() + timeout;
        let frame = encode_request(&request, inner.config.max_frame_bytes)?;
        let (mut track, cancelled) = inner.track(&request)?;
        let dispatched =
            tokio::time::timeout_at(deadline, inner.dispatch(&request, frame, &mut track, &cancelled)).await;
        let waited = match dispatched {
            Ok(Ok(Dispatched::Done(outcome))) => return Ok(outcome),
            Ok(Ok(Dispatched::Sent(reply))) => {
                let conn = Arc::clone(&track.sent.as_ref().expect("a sent request has its connection").conn);
                inner.wait_reply(reply, &conn, deadline).await
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => Waited::Deadline,
        };
        match waited {
            Waited::Reply(Err(error @ PoolError::Transport { .. })) => {
                // The connection failed under the request (the process died,
                // is shutting down, or broke the protocol): it may still be
                // running the handler. Report the failure only once that
                // process has exited, so the worker cannot retry the job
                // beside its own first execution.
                inner.retire_after_transport_error(&track, &request.job_id, &error).await;
                Err(error)
            }
            Waited::Reply(reply) => reply,
            Waited::ResponseTimeout => {
                warn!(runner = %inner.config.name, job_id = %request.job_id, "no response within the runner's response timeout");
                inner.abandon(&mut track, format!("response timeout for job {}", request.job_id));
                Err(PoolError::transport("runner response timeout"))
            }
            Waited::Deadline => {
                debug!(runner = %inner.config.name, job_id = %request.job_id, "request timed out");
                inner.abandon(&mut track, format!("job {} timed out", request.job_id));
                Err(PoolError::Timeout(timeout))
            }
        }
    }

    async fn cancel(&self, job_id: &str, request_id: &str) {
        let inner = &*self.inner;
        let fresh = {
            let requests = inner.lock_requests();
            let Some(active) = requests.get(request_id) else {
                debug!(%job_id, %request_id, "cancel for a request that is not in flight");
                return;
            };
            if active.job_id != job_id {
                warn!(%job_id, %request_id, "cancel ignored: the request belongs to another job");
                return;
            }
            match &active.sent {
                None => {
                    active.cancel.cancel();
                    return;
                }
                Some(sent) => {
                    if sent.conn.send_cancel(job_id, Some(request_id), inner.config.max_frame_bytes) {
                        return;
                    }
                    Arc::clone(&sent.addrs)
                }
            }
        };
        send_cancel_fresh(&fresh, job_id, Some(request_id), inner.config.max_frame_bytes, CANCEL_DELIVERY).await;
    }

    async fn terminate(&self, job_id: &str, request_id: &str) {
        let inner = &*self.inner;
        let sent = {
            let requests = inner.lock_requests();
            let Some(active) = requests.get(request_id) else {
                debug!(%job_id, %request_id, "terminate for a request that is not in flight");
                return;
            };
            if active.job_id != job_id {
                warn!(%job_id, %request_id, "terminate ignored: the request belongs to another job");
                return;
            }
            match &active.sent {
                None => {
                    active.cancel.cancel();
                    return;
                }
                Some(sent) => sent.clone(),
            }
        };
        inner.terminate_sent(&sent, request_id, format!("job {job_id} terminated")).await;
    }

    fn capacity(&self) -> usize {
        self.inner.capacity
    }

    fn health(&self) -> RunnerHealth {
        let slots = &self.inner.slots;
        RunnerHealth {
            ready: slots.iter().filter(|s| s.is_ready()).count(),
            configured: slots.len(),
            in_flight: *self.inner.active.borrow(),
            restarts: slots.iter().map(|s| s.restarts()).sum(),
            crash_looping: slots.iter().filter(|s| s.is_crash_looping()).count(),
        }
    }

    async fn shutdown(&self, grace: Duration) {
        let inner = &*self.inner;
        let mut done = inner.shutdown_done.lock().await;
        if *done {
            return;
        }
        inner.stop_accepting.cancel();
        let mut active = inner.active.subscribe();
        let drained = tokio::time::timeout(grace, active.wait_for(|n| *n == 0)).await.is_ok();
        if !drained {
            let left = *inner.active.borrow();
            info!(runner = %inner.config.name, left, "shutdown grace over with requests in flight");
            if inner.config.cancel_hints {
                let targets: Vec<_> = inner
                    .lock_requests()
                    .iter()
                    .filter_map(|(id, a)| a.sent.as_ref().map(|s| (a.job_id.clone(), id.clone(), Arc::clone(&s.addrs))))
                    .collect();
                let max = inner.config.max_frame_bytes;
                let deliveries = targets.iter().map(|(job_id, request_id, addrs)| {
                    send_cancel_fresh(addrs, job_id, Some(request_id), max, CANCEL_DELIVERY)
                });
                futures::future::join_all(deliveries).await;
            }
        }
        inner.closing.cancel();
        inner.supervisors.close();
        inner.supervisors.wait().await;
        inner.background.close();
        let _ = tokio::time::timeout(CANCEL_DELIVERY, inner.background.wait()).await;
        info!(runner = %inner.config.name, "runner pool stopped");
        *done = true;
    }
}
