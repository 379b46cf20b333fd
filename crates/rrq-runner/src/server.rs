//! Serving the runner protocol: accept connections, run requests, answer.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rrq_protocol::{
    CancelRequest, DEFAULT_MAX_FRAME_BYTES, Envelope, ExecutionOutcome, ExecutionRequest, FrameDecoder, OutcomeError,
    PROTOCOL_VERSION, encode_frame, error_types,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::registry::Registry;
use crate::{ServeError, address};

/// How many requests one connection may have running at once (the reference
/// runners' limit, which orchestrators rely on).
///
/// ```
/// assert_eq!(rrq_runner::MAX_IN_FLIGHT_PER_CONNECTION, rrq_runner::ServeOptions::default().max_in_flight_per_connection);
/// ```
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 64;

/// Outcome messages the SDK produces itself (the handler never ran, or was
/// stopped).
///
/// ```
/// assert_eq!(rrq_runner::messages::CANCELLED, "Job cancelled");
/// ```
pub mod messages {
    /// `protocol_version` other than `"2"`.
    pub const UNSUPPORTED_VERSION: &str = "Unsupported protocol version";
    /// The connection already has the maximum of requests running.
    pub const BUSY: &str = "Runner busy: too many in-flight requests";
    /// The deadline had passed when the request arrived.
    pub const DEADLINE_EXCEEDED: &str = "Job deadline exceeded";
    /// The handler was stopped at its deadline.
    pub const TIMED_OUT: &str = "Job execution timed out";
    /// The handler was stopped by a cancel frame or by shutdown.
    pub const CANCELLED: &str = "Job cancelled";
    /// The runner is draining and takes no new requests.
    pub const SHUTTING_DOWN: &str = "Runner shutting down";
}

/// Tunables of a [`Server`]. The defaults are the protocol's limits.
///
/// ```
/// use std::time::Duration;
/// let options = rrq_runner::ServeOptions { drain_grace: Duration::from_secs(3), ..Default::default() };
/// assert_eq!(options.max_in_flight_per_connection, 64);
/// ```
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Requests one connection may have running; more are answered with
    /// [`messages::BUSY`].
    pub max_in_flight_per_connection: usize,
    /// Largest frame payload accepted or sent.
    pub max_frame_bytes: usize,
    /// After a stop signal, how long running requests may take to finish
    /// before they are cancelled.
    pub drain_grace: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            max_in_flight_per_connection: MAX_IN_FLIGHT_PER_CONNECTION,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            drain_grace: Duration::from_secs(1),
        }
    }
}

/// A bound listener and the handlers it serves.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rrq_runner::ServeError> {
/// let server = rrq_runner::Server::bind(rrq_runner::example::registry(), "127.0.0.1:0".parse().unwrap()).await?;
/// let addr = server.local_addr();
/// // Serve until the future resolves; here: at once.
/// server.run_until(async {}).await?;
/// assert!(addr.ip().is_loopback());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    registry: Arc<Registry>,
    options: ServeOptions,
}

impl Server {
    /// Binds `addr`, which must be a loopback address (port 0 picks a free one).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use rrq_runner::{Registry, ServeError, Server};
    /// let refused = Server::bind(Registry::new(), "0.0.0.0:0".parse().unwrap()).await;
    /// assert!(matches!(refused, Err(ServeError::NotLoopback(_))));
    /// # }
    /// ```
    pub async fn bind(registry: Registry, addr: SocketAddr) -> Result<Self, ServeError> {
        if !addr.ip().is_loopback() {
            return Err(ServeError::NotLoopback(addr));
        }
        let listener = TcpListener::bind(addr).await.map_err(|source| ServeError::Bind { addr, source })?;
        Ok(Self { listener, registry: Arc::new(registry), options: ServeOptions::default() })
    }

    /// Replaces the options.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rrq_runner::ServeError> {
    /// use rrq_runner::{Registry, ServeOptions, Server};
    /// let options = ServeOptions { max_in_flight_per_connection: 8, ..Default::default() };
    /// let server = Server::bind(Registry::new(), "127.0.0.1:0".parse().unwrap()).await?.with_options(options);
    /// # drop(server); Ok(()) }
    /// ```
    pub fn with_options(mut self, options: ServeOptions) -> Self {
        self.options = options;
        self
    }

    /// The address actually bound.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rrq_runner::ServeError> {
    /// let server = rrq_runner::Server::bind(rrq_runner::Registry::new(), "127.0.0.1:0".parse().unwrap()).await?;
    /// assert_ne!(server.local_addr().port(), 0, "port 0 picks a free port");
    /// # Ok(()) }
    /// ```
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets running
    /// requests finish for the drain grace, cancels the rest, flushes their
    /// outcomes and closes every connection.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rrq_runner::ServeError> {
    /// let server = rrq_runner::Server::bind(rrq_runner::example::registry(), "127.0.0.1:0".parse().unwrap()).await?;
    /// let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    /// let serving = tokio::spawn(server.run_until(async { let _ = stopped.await; }));
    /// stop.send(()).unwrap();
    /// serving.await.unwrap()?;
    /// # Ok(()) }
    /// ```
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let state = Arc::new(State {
            registry: self.registry,
            options: self.options,
            running: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            stopping: CancellationToken::new(),
            abort: CancellationToken::new(),
            close_connections: CancellationToken::new(),
            requests: TaskTracker::new(),
        });
        let connections = TaskTracker::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(serve_connection(Arc::clone(&state), stream, peer));
                    }
                    Err(e) => {
                        // Usually out of file descriptors: back off instead of spinning.
                        warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(self.listener);
        info!(running = state.requests.len(), "runner stopping");
        state.stopping.cancel();
        state.requests.close();
        if tokio::time::timeout(state.options.drain_grace, state.requests.wait()).await.is_err() {
            state.abort.cancel();
            let _ = tokio::time::timeout(Duration::from_millis(500), state.requests.wait()).await;
        }
        state.close_connections.cancel();
        connections.close();
        let _ = tokio::time::timeout(Duration::from_millis(500), connections.wait()).await;
        Ok(())
    }
}

/// Serves `registry` on `addr` until SIGTERM, SIGINT or the death of the
/// parent process.
///
/// ```no_run
/// # #[tokio::main] async fn main() -> Result<(), rrq_runner::ServeError> {
/// rrq_runner::serve(rrq_runner::example::registry(), "127.0.0.1:9100".parse().unwrap()).await
/// # }
/// ```
pub async fn serve(registry: Registry, addr: SocketAddr) -> Result<(), ServeError> {
    let stop = StopSignals::install()?;
    let server = Server::bind(registry, addr).await?;
    info!(addr = %server.local_addr(), "runner listening");
    server.run_until(stop.wait()).await
}

/// Serves `registry` on the address given by `--tcp-socket host:port` (or
/// `RRQ_RUNNER_TCP_SOCKET`), as an orchestrator starts a runner.
///
/// ```no_run
/// use rrq_runner::{HandlerResult, JobContext, Registry};
/// use serde_json::Value;
///
/// #[tokio::main]
/// async fn main() -> Result<(), rrq_runner::ServeError> {
///     let mut registry = Registry::new();
///     registry.register("hello", |_: Value, _ctx: JobContext| async move { HandlerResult::Ok("hi") });
///     // Started by the orchestrator as `my-runner --tcp-socket 127.0.0.1:PORT`.
///     rrq_runner::run_from_args(registry).await
/// }
/// ```
pub async fn run_from_args(registry: Registry) -> Result<(), ServeError> {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let env = std::env::var(address::TCP_SOCKET_ENV).ok();
    let addr = address::socket_from_args(&args, env.as_deref())?;
    serve(registry, addr).await
}

/// The process-level reasons to stop.
struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    parent: Option<u32>,
}

impl StopSignals {
    fn install() -> Result<Self, ServeError> {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate()).map_err(ServeError::Signal)?;
        let int = signal(SignalKind::interrupt()).map_err(ServeError::Signal)?;
        // A runner started by init (or a container entry point) has no
        // orchestrator parent to outlive.
        let parent = Some(std::os::unix::process::parent_id()).filter(|&p| p > 1);
        Ok(Self { term, int, parent })
    }

    async fn wait(mut self) {
        let orphaned = async {
            let Some(parent) = self.parent else { return std::future::pending().await };
            // Polling is portable and immune to the thread-scoped semantics of
            // PR_SET_PDEATHSIG; a parent change is seen within the period.
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                if std::os::unix::process::parent_id() != parent {
                    return;
                }
            }
        };
        tokio::select! {
            _ = self.term.recv() => info!("SIGTERM received"),
            _ = self.int.recv() => info!("SIGINT received"),
            () = orphaned => warn!("parent process exited; stopping"),
        }
    }
}

#[derive(Debug)]
struct State {
    registry: Arc<Registry>,
    options: ServeOptions,
    /// Running requests of every connection, for cancel frames (which may
    /// arrive on any connection).
    running: Mutex<HashMap<u64, Running>>,
    next_id: AtomicU64,
    /// Set when the server stops: new requests are refused.
    stopping: CancellationToken,
    /// Set after the drain grace: running handlers are cancelled.
    abort: CancellationToken,
    /// Set last: every connection closes after flushing its outcomes.
    close_connections: CancellationToken,
    requests: TaskTracker,
}

#[derive(Debug)]
struct Running {
    job_id: String,
    request_id: String,
    cancel: CancellationToken,
}

impl State {
    fn cancel(&self, cancel: &CancelRequest) {
        if cancel.protocol_version != PROTOCOL_VERSION {
            debug!(version = %cancel.protocol_version, "ignoring cancel of another protocol version");
            return;
        }
        let running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let mut hits = 0;
        for r in running.values() {
            let same_request = cancel.request_id.as_ref().is_none_or(|id| *id == r.request_id);
            if r.job_id == cancel.job_id && same_request {
                r.cancel.cancel();
                hits += 1;
            }
        }
        debug!(job_id = %cancel.job_id, request_id = ?cancel.request_id, hits, "cancel frame");
    }
}

/// Removes a request from the shared table and its connection's count when
/// its task ends, however it ends.
struct RunningGuard {
    state: Arc<State>,
    id: u64,
    busy: Arc<AtomicUsize>,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.state.running.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.id);
        self.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Per-connection outbox size; the reader waits when it is full.
const OUTBOX: usize = 2 * MAX_IN_FLIGHT_PER_CONNECTION;

enum End {
    Eof,
    Closing,
    Protocol(String),
    Io(io::Error),
}

async fn serve_connection(state: Arc<State>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let (mut reader, writer) = stream.into_split();
    let closed = state.close_connections.child_token();
    let (outbox, rx) = mpsc::channel(OUTBOX);
    let writer = tokio::spawn(write_loop(writer, rx, closed.clone(), state.options.max_frame_bytes));
    let busy = Arc::new(AtomicUsize::new(0));
    let decoder = FrameDecoder::new(state.options.max_frame_bytes);
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut frames = 0_u64;
    let end = 'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Envelope::Request(request))) => {
                    frames += 1;
                    accept(&state, request, &outbox, &busy, &closed).await;
                }
                Ok(Some(Envelope::Cancel(cancel))) => {
                    frames += 1;
                    state.cancel(&cancel);
                }
                Ok(Some(Envelope::Response(_))) => break 'read End::Protocol("unexpected response message".into()),
                Ok(None) => break,
                Err(e) => break 'read End::Protocol(e.to_string()),
            }
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) if buf.is_empty() => break End::Eof,
                Ok(0) => {
                    let detail = decoder.decode_eof(&mut buf).err().map_or_else(|| "truncated frame".to_owned(), |e| e.to_string());
                    break End::Protocol(detail);
                }
                Ok(_) => {}
                Err(e) => break End::Io(e),
            },
            () = closed.cancelled() => break End::Closing,
        }
    };
    match &end {
        End::Eof if frames == 0 => debug!(%peer, "empty connection closed (readiness probe)"),
        End::Eof => debug!(%peer, frames, "connection closed by the orchestrator"),
        End::Closing => debug!(%peer, "closing connection"),
        End::Protocol(e) => warn!(%peer, error = %e, "protocol error; closing connection"),
        End::Io(e) => warn!(%peer, error = %e, "connection read failed"),
    }
    if !matches!(end, End::Closing) {
        // The orchestrator is gone (or broken): outcomes could not be
        // delivered, so stop the requests it sent on this connection.
        closed.cancel();
    }
    drop(outbox);
    drop(reader);
    let _ = writer.await;
}

async fn accept(
    state: &Arc<State>,
    request: ExecutionRequest,
    outbox: &mpsc::Sender<ExecutionOutcome>,
    busy: &Arc<AtomicUsize>,
    closed: &CancellationToken,
) {
    let refuse = |message: &str| ExecutionOutcome::error(&request, OutcomeError::message(message));
    let immediate = if request.protocol_version != PROTOCOL_VERSION {
        Some(refuse(messages::UNSUPPORTED_VERSION))
    } else if state.stopping.is_cancelled() {
        Some(refuse(messages::SHUTTING_DOWN))
    } else if busy.load(Ordering::Acquire) >= state.options.max_in_flight_per_connection {
        Some(refuse(messages::BUSY))
    } else if !state.registry.contains(&request.function_name) {
        let message = format!("No handler registered for function '{}'", request.function_name);
        Some(ExecutionOutcome::error(&request, OutcomeError::with_kind(message, error_types::HANDLER_NOT_FOUND)))
    } else {
        None
    };
    if let Some(outcome) = immediate {
        let _ = outbox.send(outcome).await;
        return;
    }
    let id = state.next_id.fetch_add(1, Ordering::Relaxed);
    let cancel = state.abort.child_token();
    let running =
        Running { job_id: request.job_id.clone(), request_id: request.request_id.clone(), cancel: cancel.clone() };
    state.running.lock().unwrap_or_else(PoisonError::into_inner).insert(id, running);
    busy.fetch_add(1, Ordering::AcqRel);
    let guard = RunningGuard { state: Arc::clone(state), id, busy: Arc::clone(busy) };

    let outbox = outbox.clone();
    let closed = closed.clone();
    let registry = state.registry.clone();
    state.requests.spawn(async move {
        let _guard = guard;
        let outcome = tokio::select! {
            biased;
            () = closed.cancelled() => {
                cancel.cancel();
                return;
            }
            outcome = registry.execute(&request, cancel.clone()) => outcome,
        };
        let _ = outbox.send(outcome).await;
    });
}

async fn write_loop(
    mut writer: OwnedWriteHalf,
    mut outbox: mpsc::Receiver<ExecutionOutcome>,
    closed: CancellationToken,
    max_frame_bytes: usize,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let first = tokio::select! {
            biased;
            next = outbox.recv() => match next {
                Some(outcome) => outcome,
                None => break,
            },
            () = closed.cancelled() => break,
        };
        encode_outcome(first, &mut buf, max_frame_bytes);
        if outbox.is_empty() {
            // Handlers started together finish together: let the ones that
            // are ready run first, so their outcomes share this write.
            tokio::task::yield_now().await;
        }
        // Batch whatever else is ready into one write.
        while buf.len() < 64 * 1024 {
            match outbox.try_recv() {
                Ok(more) => encode_outcome(more, &mut buf, max_frame_bytes),
                Err(_) => break,
            }
        }
        if let Err(e) = writer.write_all(&buf).await {
            debug!(error = %e, "connection write failed");
            closed.cancel();
            break;
        }
        buf.clear();
    }
    let _ = writer.shutdown().await;
}

fn encode_outcome(outcome: ExecutionOutcome, buf: &mut BytesMut, max_frame_bytes: usize) {
    let (job_id, request_id) = (outcome.job_id.clone(), outcome.request_id.clone());
    if let Err(e) = encode_frame(&Envelope::Response(outcome), buf, max_frame_bytes) {
        warn!(%job_id, error = %e, "outcome could not be encoded; sending an error instead");
        let replacement = ExecutionOutcome {
            job_id,
            request_id,
            status: rrq_protocol::OutcomeStatus::Error,
            result: None,
            error: Some(OutcomeError::message(format!("Handler result could not be sent: {e}"))),
            retry_after_seconds: None,
        };
        if let Err(e) = encode_frame(&Envelope::Response(replacement), buf, max_frame_bytes) {
            warn!(error = %e, "replacement outcome could not be encoded either");
        }
    }
}
