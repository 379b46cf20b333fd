//! One persistent, multiplexed connection to a runner process.
//!
//! A writer task owns the write half (so frames never interleave and a caller
//! giving up mid-write cannot corrupt the stream); a reader task owns the read
//! half and routes each response to the request waiting for it. Any protocol
//! fault closes the connection and fails every request still pending on it;
//! the slot opens a new connection on next use.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rrq_protocol::{CancelRequest, Envelope, ExecutionOutcome, FrameDecoder, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::{Failure, PoolError};

/// What a pending request eventually receives.
pub(crate) type Reply = Result<ExecutionOutcome, PoolError>;

/// How many abandoned request ids are remembered, to log their late answers
/// quietly instead of warning about unknown ids.
const ABANDONED_MEMORY: usize = 1024;

/// Largest batch of frames written with one call.
const WRITE_BATCH: usize = 64 * 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Why a request could not be handed to the connection.
#[derive(Debug)]
pub(crate) enum SendError {
    /// The connection is closed; nothing was sent, another connection may be
    /// tried.
    Closed,
    /// The request itself is unusable here.
    Rejected(PoolError),
}

#[derive(Debug)]
struct Waiter {
    job_id: String,
    reply: oneshot::Sender<Reply>,
}

#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<String, Waiter>,
    abandoned: VecDeque<String>,
    closed: bool,
}

/// A live (or closed) connection; cheap to share behind an `Arc`.
#[derive(Debug)]
pub(crate) struct Connection {
    id: u64,
    runner: Arc<str>,
    generation: u64,
    peer: SocketAddr,
    pending: Mutex<Pending>,
    outgoing: mpsc::UnboundedSender<Bytes>,
    closed: CancellationToken,
    in_flight: watch::Sender<usize>,
    /// Requests to the reader: take in everything already received, then
    /// acknowledge.
    settle: mpsc::UnboundedSender<oneshot::Sender<()>>,
}

impl Connection {
    /// Wraps a connected stream and starts its reader and writer tasks.
    pub(crate) fn open(
        stream: TcpStream,
        runner: Arc<str>,
        generation: u64,
        max_frame_bytes: usize,
    ) -> std::io::Result<Arc<Self>> {
        stream.set_nodelay(true)?;
        let peer = stream.peer_addr()?;
        let (reader, writer) = stream.into_split();
        let (outgoing, rx) = mpsc::unbounded_channel();
        let (settle, settle_rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            runner,
            generation,
            peer,
            pending: Mutex::new(Pending::default()),
            outgoing,
            closed: CancellationToken::new(),
            in_flight: watch::Sender::new(0),
            settle,
        });
        debug!(runner = %conn.runner, conn = conn.id, %peer, "runner connection opened");
        tokio::spawn(write_loop(Arc::clone(&conn), writer, rx));
        tokio::spawn(read_loop(Arc::clone(&conn), reader, FrameDecoder::new(max_frame_bytes), settle_rx));
        Ok(conn)
    }

    /// The process generation this connection belongs to.
    pub(crate) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the connection can no longer carry requests.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Requests waiting for a response on this connection.
    pub(crate) fn in_flight(&self) -> usize {
        *self.in_flight.borrow()
    }

    /// Whether `request_id` still waits for its response here.
    pub(crate) fn is_pending(&self, request_id: &str) -> bool {
        self.lock().waiters.contains_key(request_id)
    }

    /// Returns once the reader has read everything the runner had written
    /// to the socket by now and delivered every complete response in it (or
    /// the connection is closed, which fails what is pending).
    pub(crate) async fn settle(&self) {
        let (ack, acked) = oneshot::channel();
        if self.settle.send(ack).is_ok() {
            let _ = acked.await;
        }
    }

    /// Resolves once no request is pending (or the connection is closed).
    pub(crate) async fn idle(&self) {
        let mut rx = self.in_flight.subscribe();
        tokio::select! {
            _ = rx.wait_for(|n| *n == 0) => {}
            () = self.closed.cancelled() => {}
        }
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish_count(&self, pending: &Pending) {
        self.in_flight.send_replace(pending.waiters.len());
    }

    /// Registers a request and queues its encoded frame; the receiver gets the
    /// runner's outcome or the reason the connection failed.
    pub(crate) fn send(
        &self,
        request_id: &str,
        job_id: &str,
        frame: Bytes,
    ) -> Result<oneshot::Receiver<Reply>, SendError> {
        let (reply, rx) = oneshot::channel();
        {
            let mut pending = self.lock();
            if pending.closed {
                return Err(SendError::Closed);
            }
            if pending.waiters.contains_key(request_id) {
                return Err(SendError::Rejected(PoolError::transport(format!(
                    "request id {request_id} is already in flight on this runner"
                ))));
            }
            pending.waiters.insert(request_id.to_owned(), Waiter { job_id: job_id.to_owned(), reply });
            self.publish_count(&pending);
        }
        if self.outgoing.send(frame).is_err() {
            // The writer is gone: the connection is closing right now.
            let mut pending = self.lock();
            pending.waiters.remove(request_id);
            self.publish_count(&pending);
            return Err(SendError::Closed);
        }
        Ok(rx)
    }

    /// Queues a cancel frame behind everything already written; false when
    /// the connection is closed.
    pub(crate) fn send_cancel(&self, job_id: &str, request_id: Option<&str>, max_frame_bytes: usize) -> bool {
        let Some(frame) = cancel_frame(job_id, request_id, max_frame_bytes) else { return false };
        !self.is_closed() && self.outgoing.send(frame).is_ok()
    }

    /// Forgets a request whose caller gave up; its late answer is dropped.
    /// Returns whether it was still pending.
    pub(crate) fn abandon(&self, request_id: &str) -> bool {
        let mut pending = self.lock();
        let removed = pending.waiters.remove(request_id).is_some();
        if removed {
            if pending.abandoned.len() == ABANDONED_MEMORY {
                pending.abandoned.pop_front();
            }
            pending.abandoned.push_back(request_id.to_owned());
            self.publish_count(&pending);
        }
        removed
    }

    /// Closes the connection and fails every pending request with `why`.
    /// Idempotent: only the first reason is delivered.
    pub(crate) fn close(&self, why: &Failure) {
        let drained = {
            let mut pending = self.lock();
            if pending.closed {
                return;
            }
            pending.closed = true;
            let drained = std::mem::take(&mut pending.waiters);
            self.publish_count(&pending);
            drained
        };
        self.closed.cancel();
        if !drained.is_empty() {
            debug!(runner = %self.runner, conn = self.id, failed = drained.len(), reason = ?why, "runner connection closed with requests pending");
        }
        for (_, waiter) in drained {
            let _ = waiter.reply.send(Err(why.to_error()));
        }
    }

    /// Routes one response; an error closes the connection.
    fn deliver(&self, outcome: ExecutionOutcome) -> Result<(), Failure> {
        let mut pending = self.lock();
        let Some(request_id) = outcome.request_id.clone() else {
            return match pending.waiters.len() {
                0 => {
                    warn!(runner = %self.runner, job_id = %outcome.job_id, "response without request_id dropped: nothing pending");
                    Ok(())
                }
                1 => {
                    let id = pending.waiters.keys().next().cloned().expect("one waiter");
                    let waiter = pending.waiters.remove(&id).expect("present");
                    self.publish_count(&pending);
                    drop(pending);
                    warn!(runner = %self.runner, job_id = %outcome.job_id, "response without request_id");
                    let _ = waiter.reply.send(Err(PoolError::transport("runner response has no request_id")));
                    Ok(())
                }
                n => Err(Failure::transport(format!(
                    "runner sent a response without request_id while {n} requests were pending"
                ))),
            };
        };
        let Some(waiter) = pending.waiters.remove(&request_id) else {
            if let Some(at) = pending.abandoned.iter().position(|id| *id == request_id) {
                pending.abandoned.remove(at);
                debug!(runner = %self.runner, %request_id, "late response for an abandoned request dropped");
            } else {
                warn!(runner = %self.runner, %request_id, job_id = %outcome.job_id, "response for an unknown request id dropped");
            }
            return Ok(());
        };
        self.publish_count(&pending);
        drop(pending);
        let reply = if waiter.job_id == outcome.job_id {
            Ok(outcome)
        } else {
            Err(PoolError::transport(format!(
                "runner answered request {request_id} for job '{}' instead of '{}'",
                outcome.job_id, waiter.job_id
            )))
        };
        let _ = waiter.reply.send(reply);
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Encodes a cancel frame (`None` only if the limit is absurdly small).
pub(crate) fn cancel_frame(job_id: &str, request_id: Option<&str>, max_frame_bytes: usize) -> Option<Bytes> {
    let cancel = CancelRequest::new(job_id, request_id.map(str::to_owned));
    let mut buf = BytesMut::new();
    encode_frame(&Envelope::Cancel(cancel), &mut buf, max_frame_bytes).ok()?;
    Some(buf.freeze())
}

/// Delivers a cancel frame on a fresh, short-lived connection, as the
/// reference orchestrator does. True when it was written within `limit`.
pub(crate) async fn send_cancel_fresh(
    addrs: &[SocketAddr],
    job_id: &str,
    request_id: Option<&str>,
    max_frame_bytes: usize,
    limit: Duration,
) -> bool {
    let Some(frame) = cancel_frame(job_id, request_id, max_frame_bytes) else { return false };
    let deliver = async {
        let mut stream = TcpStream::connect(addrs).await?;
        stream.write_all(&frame).await?;
        stream.shutdown().await
    };
    match tokio::time::timeout(limit, deliver).await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            debug!(%job_id, error = %e, "cancel frame not delivered");
            false
        }
        Err(_) => {
            debug!(%job_id, "cancel frame not delivered in time");
            false
        }
    }
}

/// One non-blocking `recv` into `buf`'s spare capacity, straight from the
/// kernel: unlike tokio's `try_read`, it does not trust the runtime's cached
/// readiness, which is stale when the executor was frozen.
fn read_now(reader: &OwnedReadHalf, buf: &mut BytesMut) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    buf.reserve(8 * 1024);
    let spare = buf.spare_capacity_mut();
    let fd = reader.as_ref().as_raw_fd();
    // SAFETY: `spare` is writable memory of `spare.len()` bytes owned by
    // `buf`; recv writes at most that many bytes into it and returns how many.
    #[allow(unsafe_code, reason = "a non-blocking recv that bypasses tokio's readiness cache")]
    let n = unsafe { libc::recv(fd, spare.as_mut_ptr().cast(), spare.len(), libc::MSG_DONTWAIT) };
    let Ok(n) = usize::try_from(n) else { return Err(std::io::Error::last_os_error()) };
    // SAFETY: recv initialised the first `n` bytes of the spare capacity.
    #[allow(unsafe_code, reason = "recv initialised these bytes")]
    unsafe {
        buf.set_len(buf.len() + n);
    }
    Ok(n)
}

async fn write_loop(conn: Arc<Connection>, mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<Bytes>) {
    let mut batch = BytesMut::new();
    loop {
        let first = tokio::select! {
            biased;
            () = conn.closed.cancelled() => break,
            next = rx.recv() => match next {
                Some(frame) => frame,
                None => break,
            },
        };
        if rx.is_empty() {
            // Frames usually come in bursts (a claim starts many jobs at
            // once): let the tasks that are ready run first, so the burst
            // goes out in one write instead of one syscall per frame.
            tokio::task::yield_now().await;
        }
        let result = if rx.is_empty() {
            writer.write_all(&first).await
        } else {
            batch.clear();
            batch.extend_from_slice(&first);
            while batch.len() < WRITE_BATCH {
                match rx.try_recv() {
                    Ok(frame) => batch.extend_from_slice(&frame),
                    Err(_) => break,
                }
            }
            writer.write_all(&batch).await
        };
        if let Err(e) = result {
            conn.close(&Failure::transport_caused_by("runner connection write failed", e));
            break;
        }
    }
    let _ = writer.shutdown().await;
}

async fn read_loop(
    conn: Arc<Connection>,
    mut reader: OwnedReadHalf,
    decoder: FrameDecoder,
    mut settle: mpsc::UnboundedReceiver<oneshot::Sender<()>>,
) {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    // Settle requests answered once the buffer has been decoded.
    let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
    let why = 'read: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Envelope::Response(outcome))) => {
                    if let Err(why) = conn.deliver(outcome) {
                        break 'read why;
                    }
                }
                Ok(Some(other)) => {
                    let kind = match other {
                        Envelope::Request(_) => "request",
                        _ => "cancel",
                    };
                    break 'read Failure::transport(format!("runner sent an unexpected {kind} message"));
                }
                Ok(None) => break,
                Err(e) => break 'read Failure::transport_caused_by("runner sent an invalid frame", e),
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
        tokio::select! {
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) if buf.is_empty() => break Failure::transport("runner connection closed"),
                Ok(0) => {
                    let closed = "runner connection closed inside a frame";
                    break match decoder.decode_eof(&mut buf) {
                        Err(e) => Failure::transport_caused_by(closed, e),
                        Ok(_) => Failure::transport(format!("{closed}: a partial frame")),
                    };
                }
                Ok(_) => {}
                Err(e) => break Failure::transport_caused_by("runner connection read failed", e),
            },
            Some(ack) = settle.recv() => {
                // Read what the kernel holds right now, without waiting for
                // the runtime to report readiness (it may not have looked
                // since the data arrived).
                loop {
                    match read_now(&reader, &mut buf) {
                        Ok(0) => break, // end of stream: the next read reports it
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(_) => break, // would block, or an error the next read reports
                    }
                }
                acks.push(ack);
            }
            () = conn.closed.cancelled() => return,
        }
    };
    if conn.in_flight() > 0 {
        warn!(runner = %conn.runner, conn = conn.id, peer = %conn.peer, reason = ?why, "runner connection failed");
    } else {
        debug!(runner = %conn.runner, conn = conn.id, reason = ?why, "runner connection ended");
    }
    conn.close(&why);
}
