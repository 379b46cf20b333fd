//! Helpers: an in-process fake runner, requests, the Python fake runner,
//! polling with a deadline.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rrq_pool::PoolConfig;
use rrq_protocol::{
    DEFAULT_MAX_FRAME_BYTES, Envelope, ExecutionContext, ExecutionOutcome, ExecutionRequest, FrameDecoder,
    PROTOCOL_VERSION, encode_frame_to_vec,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A request for `function` of job `job` (request id `job-r`).
pub fn request(job: &str, function: &str, params: Value) -> ExecutionRequest {
    ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: format!("{job}-r"),
        job_id: job.to_owned(),
        function_name: function.to_owned(),
        params: params.as_object().cloned().unwrap_or_default(),
        context: ExecutionContext {
            job_id: job.to_owned(),
            attempt: 1,
            enqueue_time: "2026-11-28T00:04:17.240701402Z".to_owned(),
            queue_name: "rrq:queue:default".to_owned(),
            deadline: None,
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_worker_test".to_owned()),
        },
    }
}

/// A success outcome answering `request` with `result`.
pub fn success(request: &ExecutionRequest, result: Value) -> ExecutionOutcome {
    ExecutionOutcome::success(request, result)
}

/// Polls `check` until it returns `Some`, failing the test after `PATIENCE`.
pub async fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(2);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(delay).await; // sleep-ok: polling with a deadline
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Awaits `fut`, failing the test after `PATIENCE`.
pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// An in-process runner endpoint whose every byte the test scripts.
pub struct Fake {
    listener: TcpListener,
    pub port: u16,
}

impl Fake {
    pub async fn bind() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().unwrap().port();
        Self { listener, port }
    }

    /// An external-mode configuration pointing at this fake.
    pub fn config(&self) -> PoolConfig {
        let mut config = PoolConfig::external("fake", "127.0.0.1", self.port);
        config.connect_timeout = Duration::from_secs(2);
        config
    }

    /// The next connection the pool opens.
    pub async fn accept(&self) -> Peer {
        let (stream, _) = within("a connection from the pool", self.listener.accept()).await.expect("accept");
        Peer { stream, buf: BytesMut::new(), decoder: FrameDecoder::default() }
    }
}

/// One connection from the pool, seen from the fake runner.
pub struct Peer {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Peer {
    /// The next message, or `None` once the pool closed the connection.
    pub async fn recv(&mut self) -> Option<Envelope> {
        within("a frame from the pool", async {
            loop {
                if let Some(message) = self.decoder.decode(&mut self.buf).expect("valid frame from the pool") {
                    return Some(message);
                }
                if self.stream.read_buf(&mut self.buf).await.unwrap_or(0) == 0 {
                    return None;
                }
            }
        })
        .await
    }

    /// The next message, which must be a request.
    pub async fn request(&mut self) -> ExecutionRequest {
        match self.recv().await {
            Some(Envelope::Request(r)) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    /// Waits until the pool closes this connection.
    pub async fn expect_closed(&mut self) {
        if let Some(message) = self.recv().await {
            panic!("expected the pool to close the connection, got {message:?}");
        }
    }

    pub async fn respond(&mut self, outcome: ExecutionOutcome) {
        let frame = encode_frame_to_vec(&Envelope::Response(outcome), DEFAULT_MAX_FRAME_BYTES).unwrap();
        self.write_raw(&frame).await;
    }

    pub async fn write_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write to the pool");
    }
}

/// A Python 3 interpreter (the real binary, not a shim, for quick starts).
pub fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let candidate = std::env::var("RRQ_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned());
        let out = std::process::Command::new(&candidate)
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .unwrap_or_else(|e| panic!("the managed-mode tests need {candidate}: {e}"));
        assert!(out.status.success(), "{candidate} does not run");
        String::from_utf8(out.stdout).unwrap().trim().to_owned()
    })
}

/// A private temporary directory holding the fake runner script; removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rrq-pool-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fake_runner.py"), include_str!("fake_runner.py")).unwrap();
        Self { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The event log the runner writes when `FAKE_LOG` points at it.
    pub fn log(&self) -> PathBuf {
        self.path("events.jsonl")
    }

    /// A managed configuration running the fake runner, logging to `log()`.
    pub fn config(&self, name: &str, pool_size: usize) -> PoolConfig {
        let cmd = vec![python().to_owned(), self.path("fake_runner.py").to_string_lossy().into_owned()];
        let mut config = PoolConfig::managed(name, cmd, free_ports(pool_size));
        config.pool_size = pool_size.try_into().unwrap();
        config.connect_timeout = Duration::from_secs(5);
        config.term_grace = Duration::from_millis(500);
        config.env.insert("FAKE_LOG".into(), self.log().to_string_lossy().into_owned());
        config
    }

    /// The events logged so far.
    pub fn events(&self) -> Vec<Value> {
        read_events(&self.log())
    }

    /// Logged events of one kind.
    pub fn events_of(&self, kind: &str) -> Vec<Value> {
        self.events().into_iter().filter(|e| e["event"] == kind).collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn read_events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The first of `n` consecutive ports that are free right now. Ports come
/// from a per-process window below the kernel's ephemeral range (32768 and
/// up), so outgoing connections never take them, and parallel test
/// processes rarely collide.
pub fn free_ports(n: usize) -> u16 {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = 20000 + (std::process::id() as usize % 64) * 160;
    loop {
        let offset = NEXT.fetch_add(n, Ordering::Relaxed) % 150;
        let first = u16::try_from(base + offset).unwrap();
        if (0..n as u16).all(|i| std::net::TcpListener::bind(("127.0.0.1", first + i)).is_ok()) {
            return first;
        }
    }
}

/// Whether `pid` is gone (or a zombie nobody reaped yet).
pub fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers.
    #[allow(unsafe_code, reason = "signalling a test process")]
    let rc = unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Whether something accepts connections on 127.0.0.1:`port`.
pub fn can_bind(port: u16) -> bool {
    std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).is_ok()
}

/// The value of `result[key]` of a success.
pub fn result_field(outcome: &ExecutionOutcome, key: &str) -> Value {
    outcome.result.as_ref().and_then(|r| r.get(key)).cloned().unwrap_or(json!(null))
}
