//! The `rrq` binary's operations commands, run as a user runs them: the real
//! executable against a private `redis-server`, with jobs written by
//! `rrq-producer` (or the reference Python client) and moved between states
//! through the `Store` trait, as a worker would.
//!
//! Every test owns its Redis server and its scratch directory, so tests run
//! in parallel without seeing each other's queues.

mod cluster;
mod cron;
mod dashboard;
mod debug;
mod dlq;
mod enqueue;
mod errors;
mod health;
mod interop;
mod job;
mod queue;
mod runner;
mod tls;
mod version;
mod worker_list;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{AttemptCount, ClaimRequest, Fence, InspectStore, Lease, RedisStore, WorkerStore};
use rrq_test_support::TestRedis;
use serde_json::Value;

/// A Redis server, a directory holding `rrq.toml` pointing at it, and
/// clients to arrange data.
#[derive(Debug)]
pub struct Env {
    pub redis: TestRedis,
    pub dir: Scratch,
    pub store: RedisStore,
    pub producer: Producer,
}

impl Env {
    /// A fresh server and a config file naming it.
    pub async fn new() -> Env {
        let redis = TestRedis::private();
        let dir = Scratch::create();
        dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"{}\"\n", redis.url()));
        let store = RedisStore::connect(redis.url()).await.expect("connect to the test redis");
        let producer = Producer::connect(redis.url(), ProducerConfig::default()).await.expect("producer connects");
        Env { redis, dir, store, producer }
    }

    /// Runs `rrq ARGS --config <this env's rrq.toml>`.
    pub fn rrq(&self, args: &[&str]) -> Run {
        let config = self.dir.path("rrq.toml");
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().expect("utf-8 path")]);
        rrq_in(self.dir.root(), &all, &[])
    }

    /// Enqueues `function` with `params` on `queue`, returning the id.
    pub async fn enqueue(&self, function: &str, params: Value, queue: &str) -> JobId {
        self.producer.enqueue(function, params, EnqueueOptions::queue(queue)).await.expect("enqueue")
    }

    /// Claims every ready job of `queue` (they become ACTIVE) and returns the leases.
    pub async fn claim(&self, queue: &str, max: usize) -> Vec<Lease> {
        let req = ClaimRequest {
            queue: QueueName::new(queue),
            worker_id: "cli-test-worker".to_owned(),
            max,
            now: Utc::now(),
            lease_ttl: Duration::from_secs(60),
            max_payload_bytes: usize::MAX,
        };
        let batch = self.store.claim(req).await.expect("claim");
        batch.jobs.into_iter().map(|c| c.lease).collect()
    }

    /// Enqueues a job, claims it and moves it to the default DLQ with `error`:
    /// a FAILED job, as a worker leaves it once its attempts are used up.
    pub async fn failed(&self, function: &str, queue: &str, error: &str) -> JobId {
        let id = self.enqueue(function, serde_json::json!({"why": error}), queue).await;
        let lease = self.claim(queue, 1).await.pop().expect("the job is ready");
        assert_eq!(lease.job_id, id, "the queue held only this job");
        let fence = self.store.dead_letter(&lease, error, AttemptCount::Counted, Utc::now()).await;
        assert_eq!(fence.expect("dead_letter"), Fence::Applied);
        id
    }

    /// A stored field of a job.
    pub async fn field(&self, id: &JobId, name: &str) -> Option<String> {
        self.store.job_fields(id).await.expect("read job").and_then(|f| f.get(name).cloned())
    }
}

/// The outcome of one run of the binary.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn code(self, expected: i32) -> Run {
        assert_eq!(self.code, expected, "exit code\nstdout:\n{}\nstderr:\n{}", self.stdout, self.stderr);
        self
    }

    /// Asserts success.
    #[track_caller]
    pub fn ok(self) -> Run {
        self.code(0)
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr))
    }

    /// The stdout line that starts with `prefix` (after leading blanks).
    #[track_caller]
    pub fn line(&self, prefix: &str) -> String {
        self.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("no line starting with {prefix:?} in:\n{}", self.stdout))
            .to_owned()
    }

    /// The whitespace-separated cells of the stdout line starting with `prefix`.
    #[track_caller]
    pub fn cells(&self, prefix: &str) -> Vec<String> {
        self.line(prefix).split_whitespace().map(str::to_owned).collect()
    }
}

/// Runs the binary in `cwd` with no inherited RRQ variables, no stdin, and
/// `env` added.
pub fn rrq_in(cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_rrq-cli"))
        .args(args)
        .current_dir(cwd)
        .env_remove("RRQ_CONFIG")
        .env_remove("RRQ_REDIS_DSN")
        .env_remove("RRQ_REDIS_CA_FILE")
        .env_remove("RUST_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run the rrq binary");
    Run {
        code: out.status.code().expect("rrq exited normally"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A scratch directory removed when dropped.
#[derive(Debug)]
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new empty directory under the system temp dir.
    pub fn create() -> Scratch {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!("rrq-cli-test-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create scratch dir");
        Scratch(dir)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes a file inside it.
    pub fn write(&self, name: &str, text: &str) {
        std::fs::write(self.path(name), text).expect("write scratch file");
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `s` parses as an RFC 3339 time.
pub fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok())
}
