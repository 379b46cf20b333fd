//! One pool slot: a runner process (or external endpoint), its connection,
//! and the supervisor task that owns its life cycle.
//!
//! The supervisor is the only owner of the child process. Everyone else sees
//! the slot through its [`Status`] (a watch channel) and talks to the
//! supervisor with [`Command`]s, so starting, respawning, terminating and
//! restarting never race with each other.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{PoolConfig, PoolMode};
use crate::connection::Connection;
use crate::error::{Failure, PoolError};
use crate::identity::{self, Owner};
use crate::policy::{CRASH_LOOP_THRESHOLD, CrashCounter, respawn_delay};
use crate::process::{self, RunnerProcess, Spawner, kill_group};

/// How many ports one slot tries before giving up a start.
const PORT_TRIES: usize = 16;

/// Connection retry delays (external runners, or a managed one that stopped
/// accepting): 100 ms doubling to 2 s.
const CONNECT_FIRST_DELAY: Duration = Duration::from_millis(100);
const CONNECT_MAX_DELAY: Duration = Duration::from_secs(2);

/// Where a slot is in its life cycle.
#[derive(Clone, Debug)]
pub(crate) enum Status {
    /// A process is being started (or the slot is between processes).
    Starting,
    /// Takes requests: connect to `addrs`; `generation` identifies the process.
    Ready { generation: u64, addrs: Arc<[SocketAddr]>, pid: Option<u32> },
    /// Finishing its requests before a restart; takes no new ones.
    Draining,
    /// Waiting out a respawn delay after `failures` consecutive failures.
    Backoff { failures: u32, last_error: Arc<str> },
    /// The first start failed; the pool reports it and shuts down.
    Failed(Arc<str>),
    /// The pool shut down.
    Stopped,
}

/// Requests to a slot's supervisor.
#[derive(Debug)]
pub(crate) enum Command {
    /// Stop process `generation` (a request on it timed out); a new one is
    /// started at once. Ignored when that process is already gone.
    Terminate { generation: u64, reason: String },
    /// Let requests in flight finish within `grace`, then replace the process.
    Restart { grace: Duration, done: oneshot::Sender<Result<(), String>> },
}

/// Process groups of the pool's live processes, by slot, for the last-resort
/// kill when the pool is dropped without a shutdown.
#[derive(Clone, Debug, Default)]
pub(crate) struct Groups(Arc<Mutex<HashMap<usize, u32>>>);

impl Groups {
    fn lock(&self) -> MutexGuard<'_, HashMap<usize, u32>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, slot: usize, pgid: u32) {
        self.lock().insert(slot, pgid);
    }

    fn clear(&self, slot: usize) -> Option<u32> {
        self.lock().remove(&slot)
    }

    /// SIGKILLs every registered group.
    pub(crate) fn kill_all(&self) {
        for (_, pgid) in self.lock().drain() {
            let _ = kill_group(pgid, libc::SIGKILL);
        }
    }
}

/// The shared half of a slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) index: usize,
    runner: Arc<str>,
    mode: PoolMode,
    connect_timeout: Duration,
    max_frame_bytes: usize,
    status: watch::Sender<Status>,
    conn: Mutex<Option<Arc<Connection>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Requests assigned to this slot (waiting or in flight).
    pub(crate) load: AtomicUsize,
    restarts: AtomicU64,
    /// External mode: whether the last connection try succeeded.
    reachable: AtomicBool,
    /// Managed mode: the newest process generation known to have exited
    /// (and been reaped).
    exited: watch::Sender<u64>,
    commands: mpsc::UnboundedSender<Command>,
}

/// Why no connection was obtained.
#[derive(Debug)]
pub(crate) enum Acquire {
    /// The process changed while connecting: wait for the slot again.
    Stale,
    /// Give up on this request.
    Failed(PoolError),
}

impl Slot {
    pub(crate) fn new(index: usize, config: &PoolConfig) -> (Arc<Self>, mpsc::UnboundedReceiver<Command>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let slot = Arc::new(Self {
            index,
            runner: Arc::from(config.name.as_str()),
            mode: config.mode,
            connect_timeout: config.connect_timeout,
            max_frame_bytes: config.max_frame_bytes,
            status: watch::Sender::new(Status::Starting),
            conn: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            load: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            reachable: AtomicBool::new(true),
            exited: watch::Sender::new(0),
            commands,
        });
        (slot, rx)
    }

    pub(crate) fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    fn set_status(&self, status: Status) {
        self.status.send_replace(status);
    }

    /// Whether the slot takes requests now.
    pub(crate) fn is_ready(&self) -> bool {
        matches!(*self.status.borrow(), Status::Ready { .. })
            && (self.mode == PoolMode::Managed || self.reachable.load(Ordering::Relaxed))
    }

    /// Whether the slot is waiting out a respawn delay after repeated crashes.
    pub(crate) fn is_crash_looping(&self) -> bool {
        matches!(*self.status.borrow(), Status::Backoff { failures, .. } if failures >= CRASH_LOOP_THRESHOLD)
    }

    pub(crate) fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    fn is_generation(&self, generation: u64) -> bool {
        matches!(*self.status.borrow(), Status::Ready { generation: g, .. } if g == generation)
    }

    /// Waits until the slot is ready; fails fast when it cannot become ready
    /// soon (first start failed, crash loop, pool stopped).
    pub(crate) async fn wait_ready(&self) -> Result<(u64, Arc<[SocketAddr]>, Option<u32>), PoolError> {
        let mut rx = self.status.subscribe();
        loop {
            let status = rx.borrow_and_update().clone();
            match status {
                Status::Ready { generation, addrs, pid } => return Ok((generation, addrs, pid)),
                Status::Failed(message) => return Err(PoolError::Unavailable(message.to_string())),
                Status::Stopped => return Err(PoolError::ShuttingDown),
                Status::Backoff { failures, last_error } if failures >= CRASH_LOOP_THRESHOLD => {
                    return Err(PoolError::Unavailable(format!(
                        "runner '{}' is crash-looping ({failures} failures in a row, last: {last_error})",
                        self.runner
                    )));
                }
                Status::Starting | Status::Draining | Status::Backoff { .. } => {}
            }
            if rx.changed().await.is_err() {
                return Err(PoolError::ShuttingDown);
            }
        }
    }

    fn usable_connection(&self, generation: u64) -> Option<Arc<Connection>> {
        let conn = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        conn.as_ref().filter(|c| !c.is_closed() && c.generation() == generation).cloned()
    }

    /// The current connection, if any.
    pub(crate) fn current_connection(&self) -> Option<Arc<Connection>> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Closes the current connection, failing its requests with `why`.
    pub(crate) fn close_connection(&self, why: &Failure) {
        let old = self.conn.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(old) = old {
            old.close(why);
        }
    }

    /// The connection to process `generation`, opened if needed. Liveness is
    /// checked before and after connecting, and (managed mode) the listener's
    /// owner once more, so a port taken over by another process after our
    /// runner died is never used.
    pub(crate) async fn connection(
        &self,
        generation: u64,
        addrs: &[SocketAddr],
        pid: Option<u32>,
    ) -> Result<Arc<Connection>, Acquire> {
        if let Some(c) = self.usable_connection(generation) {
            return Ok(c);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(c) = self.usable_connection(generation) {
            return Ok(c);
        }
        let give_up = Instant::now() + self.connect_timeout;
        let mut delay = CONNECT_FIRST_DELAY;
        let mut status = self.status.subscribe();
        loop {
            if !self.is_generation(generation) {
                return Err(Acquire::Stale);
            }
            let error = match TcpStream::connect(addrs).await {
                Ok(stream) => {
                    if !self.is_generation(generation) {
                        return Err(Acquire::Stale);
                    }
                    if let (Some(pid), Some(addr)) = (pid, addrs.first())
                        && identity::listener_owner(addr.port(), pid) == Owner::Foreign
                    {
                        let reason = format!("{addr} is now served by a process outside runner '{}'", self.runner);
                        warn!(runner = %self.runner, pid, %addr, "port taken over by a foreign process; restarting the runner");
                        self.retire(generation, reason.clone());
                        return Err(Acquire::Failed(PoolError::transport(reason)));
                    }
                    match Connection::open(stream, Arc::clone(&self.runner), generation, self.max_frame_bytes) {
                        Ok(conn) => {
                            let old =
                                self.conn.lock().unwrap_or_else(PoisonError::into_inner).replace(Arc::clone(&conn));
                            if let Some(old) = old {
                                old.close(&Failure::transport("runner connection replaced"));
                            }
                            self.reachable.store(true, Ordering::Relaxed);
                            return Ok(conn);
                        }
                        Err(e) => e,
                    }
                }
                Err(e) => e,
            };
            let now = Instant::now();
            if now >= give_up {
                self.reachable.store(false, Ordering::Relaxed);
                let target = addrs.first().map_or_else(String::new, ToString::to_string);
                return Err(Acquire::Failed(PoolError::Unavailable(format!(
                    "cannot connect to runner '{}' at {target}: {error}",
                    self.runner
                ))));
            }
            debug!(runner = %self.runner, error = %error, "connecting to the runner failed; retrying");
            tokio::select! {
                () = tokio::time::sleep(delay.min(give_up - now)) => {}
                _ = status.changed() => {}
            }
            delay = (delay * 2).min(CONNECT_MAX_DELAY);
        }
    }

    /// Takes process `generation` out of service at once and asks the
    /// supervisor to replace it. No-op if that process is already gone.
    pub(crate) fn retire(&self, generation: u64, reason: String) {
        self.status.send_if_modified(|s| match s {
            Status::Ready { generation: g, .. } if *g == generation => {
                *s = Status::Starting;
                true
            }
            _ => false,
        });
        // Sent even when the slot is not ready any more (draining for a
        // restart, or retired already): the supervisor ignores commands for
        // processes that are gone.
        let _ = self.commands.send(Command::Terminate { generation, reason });
    }

    /// Resolves once process `generation` has exited (or the slot stopped).
    /// Subscribes at once, so no exit after this call is missed.
    pub(crate) fn exited(&self, generation: u64) -> impl std::future::Future<Output = ()> + use<> {
        let mut exits = self.exited.subscribe();
        let mut status = self.status.subscribe();
        async move {
            tokio::select! {
                _ = exits.wait_for(|g| *g >= generation) => {}
                _ = status.wait_for(|s| matches!(s, Status::Stopped)) => {}
            }
        }
    }

    fn mark_exited(&self, generation: u64) {
        self.exited.send_modify(|g| *g = (*g).max(generation));
    }

    /// Asks for a graceful replacement; the receiver says how it went.
    pub(crate) fn restart(&self, grace: Duration) -> oneshot::Receiver<Result<(), String>> {
        let (done, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(Command::Restart { done, .. })) =
            self.commands.send(Command::Restart { grace, done })
        {
            let _ = done.send(Err("runner pool is shutting down".into()));
        }
        rx
    }

    /// Waits until the current connection has no request pending, at most
    /// `grace`.
    async fn drain(&self, grace: Duration) {
        if let Some(conn) = self.current_connection() {
            let _ = tokio::time::timeout(grace, conn.idle()).await;
        }
    }
}

/// Everything a supervisor task owns.
#[derive(Debug)]
pub(crate) struct Supervisor {
    pub(crate) slot: Arc<Slot>,
    pub(crate) config: Arc<PoolConfig>,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) closing: CancellationToken,
    pub(crate) groups: Groups,
    restart_waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

/// Why a supervised process stopped being served.
enum End {
    Exited(String),
    Terminate(String),
    Restart,
    Closing,
}

/// What a managed supervisor needs beyond the common parts.
#[derive(Debug)]
pub(crate) struct Managed {
    pub(crate) spawner: Arc<Spawner>,
    /// Ports claimed by the pool's slots.
    pub(crate) ports: Arc<Mutex<BTreeSet<u16>>>,
    /// The port this slot uses next.
    pub(crate) port: u16,
}

impl Supervisor {
    pub(crate) fn new(
        slot: Arc<Slot>,
        config: Arc<PoolConfig>,
        commands: mpsc::UnboundedReceiver<Command>,
        closing: CancellationToken,
        groups: Groups,
    ) -> Self {
        Self { slot, config, commands, closing, groups, restart_waiters: Vec::new() }
    }

    fn answer_restarts(&mut self, result: &Result<(), String>) {
        for waiter in self.restart_waiters.drain(..) {
            let _ = waiter.send(result.clone());
        }
    }

    /// Life cycle of a managed slot: start, serve, respawn, stop.
    pub(crate) async fn run_managed(mut self, mut managed: Managed) {
        let mut crashes = CrashCounter::default();
        let mut first = true;
        let mut generation = 0_u64;
        let index = self.slot.index;
        'life: loop {
            if self.closing.is_cancelled() {
                break;
            }
            self.slot.set_status(Status::Starting);
            let started = tokio::select! {
                started = self.start_process(&mut managed) => started,
                () = self.closing.cancelled() => break 'life,
            };
            let mut process = match started {
                Ok(process) => process,
                Err(message) => {
                    warn!(runner = %self.slot.runner, slot = index, error = %message, "runner process failed to start");
                    self.answer_restarts(&Err(message.clone()));
                    if first {
                        self.slot.set_status(Status::Failed(Arc::from(message.as_str())));
                        self.closing.cancelled().await;
                        break 'life;
                    }
                    let failures = crashes.record_failed_start();
                    if !self.backoff(failures, message).await {
                        break 'life;
                    }
                    continue 'life;
                }
            };
            first = false;
            generation += 1;
            let pid = process.pid;
            self.answer_restarts(&Ok(()));
            let addrs: Arc<[SocketAddr]> = Arc::from(vec![process.addr]);
            self.slot.set_status(Status::Ready { generation, addrs, pid: Some(pid) });

            let end = self.serve(&mut process, generation).await;
            let grace = self.config.term_grace;
            match end {
                End::Exited(status) => {
                    // Not ready any more; fail what was in flight, clean up the group.
                    self.slot.set_status(Status::Starting);
                    self.slot.close_connection(&Failure::transport(format!("runner process exited ({status})")));
                    let _ = kill_group(pid, libc::SIGKILL);
                    self.groups.clear(index);
                    self.slot.mark_exited(generation);
                    self.slot.restarts.fetch_add(1, Ordering::Relaxed);
                    let uptime = process.started.elapsed();
                    let stderr = process.stderr.collect(Duration::from_millis(200)).await;
                    warn!(
                        runner = %self.slot.runner, slot = index, pid, %status,
                        uptime_ms = uptime.as_millis() as u64, stderr = %stderr.join("\n"),
                        "runner process exited unexpectedly"
                    );
                    let failures = crashes.record_exit(uptime);
                    if !self.backoff(failures, format!("runner process exited ({status})")).await {
                        break 'life;
                    }
                }
                End::Terminate(reason) => {
                    info!(runner = %self.slot.runner, slot = index, pid, %reason, "terminating runner process");
                    self.slot.set_status(Status::Starting);
                    let why = Failure::transport(format!("runner process terminated: {reason}"));
                    self.slot.close_connection(&why);
                    process::terminate(&mut process, grace).await;
                    self.groups.clear(index);
                    self.slot.mark_exited(generation);
                    self.slot.restarts.fetch_add(1, Ordering::Relaxed);
                }
                End::Restart => {
                    info!(runner = %self.slot.runner, slot = index, pid, "restarting runner process");
                    self.slot.close_connection(&Failure::transport("runner process restarted"));
                    process::terminate(&mut process, grace).await;
                    self.groups.clear(index);
                    self.slot.mark_exited(generation);
                    self.slot.restarts.fetch_add(1, Ordering::Relaxed);
                }
                End::Closing => {
                    self.slot.close_connection(&Failure::ShuttingDown);
                    process::terminate(&mut process, grace).await;
                    self.groups.clear(index);
                    self.slot.mark_exited(generation);
                    break 'life;
                }
            }
        }
        // A start interrupted by shutdown may have left a group behind.
        if let Some(pgid) = self.groups.clear(index) {
            let _ = kill_group(pgid, libc::SIGKILL);
        }
        self.answer_restarts(&Err("runner pool is shutting down".into()));
        self.slot.close_connection(&Failure::ShuttingDown);
        self.slot.set_status(Status::Stopped);
        debug!(runner = %self.slot.runner, slot = index, "supervisor stopped");
    }

    /// Starts a process, moving to other ports when the port is taken.
    async fn start_process(&self, managed: &mut Managed) -> Result<RunnerProcess, String> {
        let program = self.config.cmd.first().cloned().unwrap_or_default();
        let mut port = managed.port;
        let mut last_error = None;
        for _ in 0..PORT_TRIES {
            if !process::port_is_free(port) {
                let next = next_port(&managed.ports, port).ok_or_else(|| self.no_port_message(port))?;
                warn!(runner = %self.slot.runner, slot = self.slot.index, port, next, "port in use; trying the next free port");
                port = next;
                continue;
            }
            let groups = self.groups.clone();
            let index = self.slot.index;
            match process::start(&managed.spawner, &self.config, port, move |pgid| groups.set(index, pgid)).await {
                Ok(process) => {
                    managed.port = port;
                    return Ok(process);
                }
                Err(e) => {
                    self.groups.clear(index);
                    let message = e.describe(&self.slot.runner, &program);
                    if !e.is_port_problem(port) {
                        return Err(message);
                    }
                    let next = next_port(&managed.ports, port).ok_or_else(|| self.no_port_message(port))?;
                    warn!(runner = %self.slot.runner, slot = index, error = %message, next, "trying the next free port");
                    last_error = Some(message);
                    port = next;
                }
            }
        }
        Err(last_error.unwrap_or_else(|| self.no_port_message(port)))
    }

    fn no_port_message(&self, port: u16) -> String {
        format!("no free port for runner '{}' (last tried {port})", self.slot.runner)
    }

    /// Serves a ready process until it exits or is told to stop.
    async fn serve(&mut self, process: &mut RunnerProcess, generation: u64) -> End {
        loop {
            tokio::select! {
                status = process.child.wait() => {
                    return End::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
                }
                () = self.closing.cancelled() => return End::Closing,
                command = self.commands.recv() => match command {
                    None => return End::Closing,
                    Some(Command::Terminate { generation: g, reason }) if g == generation => return End::Terminate(reason),
                    Some(Command::Terminate { .. }) => {}
                    Some(Command::Restart { grace, done }) => {
                        self.restart_waiters.push(done);
                        self.slot.set_status(Status::Draining);
                        let drain = self.slot.drain(grace);
                        tokio::pin!(drain);
                        loop {
                            tokio::select! {
                                () = &mut drain => return End::Restart,
                                status = process.child.wait() => {
                                    return End::Exited(status.map_or_else(|e| e.to_string(), |s| s.to_string()));
                                }
                                () = self.closing.cancelled() => return End::Closing,
                                // A terminate while draining does not wait for the drain.
                                command = self.commands.recv() => match command {
                                    None => return End::Closing,
                                    Some(Command::Terminate { generation: g, reason }) if g == generation => {
                                        return End::Terminate(reason);
                                    }
                                    Some(Command::Terminate { .. }) => {}
                                    Some(Command::Restart { done, .. }) => self.restart_waiters.push(done),
                                },
                            }
                        }
                    }
                },
            }
        }
    }

    /// Waits out the respawn delay; false when the pool is closing. A restart
    /// request ends the wait early.
    async fn backoff(&mut self, failures: u32, last_error: String) -> bool {
        let delay = respawn_delay(failures);
        if failures >= CRASH_LOOP_THRESHOLD {
            warn!(
                runner = %self.slot.runner, slot = self.slot.index, failures,
                delay_ms = delay.as_millis() as u64, "runner process is crash-looping"
            );
        }
        self.slot.set_status(Status::Backoff { failures, last_error: Arc::from(last_error.as_str()) });
        let until = Instant::now() + delay;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return true,
                () = self.closing.cancelled() => return false,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Restart { done, .. }) => {
                        self.restart_waiters.push(done);
                        return true;
                    }
                    Some(Command::Terminate { .. }) => {}
                },
            }
        }
    }

    /// Life cycle of an external slot: one endpoint, connections only.
    pub(crate) async fn run_external(mut self, addrs: Arc<[SocketAddr]>) {
        let mut generation = 1_u64;
        self.slot.set_status(Status::Ready { generation, addrs: Arc::clone(&addrs), pid: None });
        loop {
            tokio::select! {
                () = self.closing.cancelled() => break,
                command = self.commands.recv() => match command {
                    None => break,
                    Some(Command::Terminate { generation: g, reason }) if g == generation => {
                        info!(runner = %self.slot.runner, %reason, "dropping the connection to the external runner");
                        self.slot.close_connection(&Failure::transport(format!("runner connection dropped: {reason}")));
                    }
                    Some(Command::Terminate { .. }) => continue,
                    Some(Command::Restart { grace, done }) => {
                        self.slot.set_status(Status::Draining);
                        tokio::select! {
                            () = self.slot.drain(grace) => {}
                            () = self.closing.cancelled() => {
                                let _ = done.send(Err("runner pool is shutting down".into()));
                                break;
                            }
                        }
                        self.slot.close_connection(&Failure::transport("runner connection restarted"));
                        let _ = done.send(Ok(()));
                    }
                },
            }
            generation += 1;
            self.slot.set_status(Status::Ready { generation, addrs: Arc::clone(&addrs), pid: None });
        }
        self.slot.close_connection(&Failure::ShuttingDown);
        self.slot.set_status(Status::Stopped);
    }
}

/// Claims the next free port above `current` not used by another slot, and
/// releases `current`.
fn next_port(ports: &Mutex<BTreeSet<u16>>, current: u16) -> Option<u16> {
    let mut claimed = ports.lock().unwrap_or_else(PoisonError::into_inner);
    let mut candidate = current.checked_add(1)?;
    while claimed.contains(&candidate) {
        candidate = candidate.checked_add(1)?;
    }
    claimed.remove(&current);
    claimed.insert(candidate);
    Some(candidate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_port_skips_ports_of_other_slots() {
        let ports = Mutex::new(BTreeSet::from([9000, 9001, 9002]));
        assert_eq!(next_port(&ports, 9000), Some(9003));
        assert_eq!(*ports.lock().unwrap(), BTreeSet::from([9001, 9002, 9003]));
        assert_eq!(next_port(&ports, 9001), Some(9004));
        let top = Mutex::new(BTreeSet::from([65535]));
        assert_eq!(next_port(&top, 65535), None);
    }
}
