//! The worker's guarantees against a real Redis, with real processes: `rrq
//! worker run` (the e2e build of the CLI) running the example Rust runner,
//! jobs written by our producer, state read back through `RedisStore`.
//!
//! Covered: retries with backoff and the DLQ, timeouts (a shared runner
//! process kept, a frozen one replaced), cron ticks enqueued exactly once by
//! two workers, orphan recovery after a SIGKILL, queue pause/resume across
//! processes, cancelling a running job, graceful shutdown, and pickup
//! latency.
//!
//! Every wait polls Redis (or a process) against a deadline; when a test
//! fails, each worker it started prints its output (see [`Worker`]'s `Drop`).
//! Linux only: runner processes are found through `/proc`, and runners dying
//! with a SIGKILLed worker relies on the Linux parent-death signal.
#![cfg(target_os = "linux")]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{AdminStore, Clock, InspectStore, Job, RedisStore, SystemClock};
use rrq_test_support::TestRedis;
use serde_json::{Value, json};

use crate::support::{TempDir, assert_success, example_runner_bin, free_ports, rrq_bin, run_rrq};

/// Pause between two looks at Redis or a process while waiting on a deadline.
const POLL: Duration = Duration::from_millis(20);

/// `last_error` of a job put back by a graceful shutdown.
const SHUTDOWN_MESSAGE: &str = "Job execution interrupted by worker shutdown. Re-queued.";

/// A running `rrq worker run` process. Its stdout and stderr are collected
/// as they come; dropping it kills the process (its runners die with it),
/// and prints the output if the test is failing.
pub(crate) struct Worker {
    name: String,
    child: Mutex<Child>,
    pid: u32,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Worker {
    pub(crate) fn start(name: &str, config: &Path, args: &[&str]) -> Worker {
        let mut child = Command::new(rrq_bin())
            .args(["worker", "run", "--config"])
            .arg(config)
            .args(args)
            .env("RUST_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the worker");
        let output = Arc::new(Mutex::new(Vec::new()));
        let streams: [Option<Box<dyn Read + Send>>; 2] = [
            child.stdout.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
            child.stderr.take().map(|s| Box::new(s) as Box<dyn Read + Send>),
        ];
        for mut stream in streams.into_iter().flatten() {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(&buf[..n]);
                }
            });
        }
        let pid = child.id();
        Worker { name: name.to_owned(), child: Mutex::new(child), pid, output }
    }

    /// The prefix of this process's worker id (`rrq_worker_{pid}_{hex}`).
    fn id_prefix(&self) -> String {
        format!("rrq_worker_{}_", self.pid)
    }

    pub(crate) fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap_or_else(PoisonError::into_inner)).into_owned()
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        self.child.lock().unwrap_or_else(PoisonError::into_inner).try_wait().expect("poll the worker")
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill").args(["-s", signal, &self.pid.to_string()]).status().expect("run kill(1)");
        assert!(status.success(), "kill -s {signal} {} failed", self.pid);
    }

    /// SIGKILL, and reap.
    fn kill(&self) {
        let mut child = self.child.lock().unwrap_or_else(PoisonError::into_inner);
        child.kill().expect("SIGKILL the worker");
        child.wait().expect("reap the worker");
    }

    /// Waits for the process to exit, at most `limit`.
    async fn wait_exit(&self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.exit_status() {
                return status;
            }
            assert!(Instant::now() < deadline, "worker {} did not exit within {limit:?}", self.name);
            tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
        }
    }

    /// Its live child processes: the runners, looking through the runner
    /// guards the `rrq` binary starts them behind.
    fn runner_pids(&self) -> Vec<u32> {
        let is_guard = |pid: u32| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).nth(1) == Some(b"__rrq-runner-guard".as_slice())
        };
        let mut pids: Vec<u32> = children(self.pid)
            .into_iter()
            .flat_map(|pid| if is_guard(pid) { children(pid) } else { vec![pid] })
            .collect();
        pids.sort_unstable();
        pids
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(PoisonError::into_inner);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("----- output of worker {} (pid {}) -----\n{}", self.name, self.pid, self.output());
        }
    }
}

/// Polls `probe` until it returns `Some`, at most `limit`; fails naming
/// `what` past the deadline, or at once if one of `workers` exited.
async fn eventually<T>(
    what: &str,
    limit: Duration,
    workers: &[&Worker],
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        for w in workers {
            if let Some(status) = w.exit_status() {
                panic!("waiting for {what}: worker {} exited ({status})", w.name);
            }
        }
        assert!(Instant::now() < deadline, "waiting for {what}: not within {limit:?}");
        tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
    }
}

/// Live (not zombie) processes whose parent is `pid`.
fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(child) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some((state, ppid)) = proc_state(child)
            && ppid == pid
            && state != 'Z'
        {
            out.push(child);
        }
    }
    out.sort_unstable();
    out
}

/// Whether `pid` exists and is not a zombie.
fn is_alive(pid: u32) -> bool {
    proc_state(pid).is_some_and(|(state, _)| state != 'Z')
}

/// State and parent pid from `/proc/{pid}/stat` (`pid (comm) S ppid ...`).
fn proc_state(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat[stat.rfind(')')? + 1..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    Some((state, ppid))
}

/// An `rrq.toml` with one runner (`rust`, the example runner) on free ports:
/// the test's `[rrq]` lines, then `tail` (cron entries).
pub(crate) fn config(dir: &TempDir, file: &str, redis: &TestRedis, rrq: &str, tail: &str, pool_size: u16) -> PathBuf {
    let port = free_ports(pool_size);
    let text = format!(
        r#"[rrq]
redis_dsn = "{dsn}"
default_runner_name = "rust"
runner_shutdown_term_grace_seconds = 0.5
{rrq}

[rrq.runners.rust]
cmd = ["{bin}"]
tcp_port = {port}
pool_size = {pool_size}
max_in_flight = 4

{tail}
"#,
        dsn = redis.url(),
        bin = example_runner_bin(),
    );
    dir.write(file, &text)
}

/// `[rrq]` lines most tests share: short grace, tiny backoff.
pub(crate) const QUICK: &str =
    "worker_shutdown_grace_period_seconds = 1\nbase_retry_delay_seconds = 0.01\nmax_retry_delay_seconds = 0.05";

pub(crate) struct Env {
    pub(crate) redis: TestRedis,
    pub(crate) dir: TempDir,
    pub(crate) store: RedisStore,
    producer: Producer,
}

impl Env {
    pub(crate) async fn new(name: &str) -> Env {
        Env::on(name, TestRedis::private()).await
    }

    /// An environment on a given server.
    pub(crate) async fn on(name: &str, redis: TestRedis) -> Env {
        let dir = TempDir::new(name);
        let store = RedisStore::connect(redis.url()).await.expect("connect the observer");
        let producer = Producer::new(redis.url()).await.expect("connect the producer");
        Env { redis, dir, store, producer }
    }

    async fn enqueue(&self, id: &str, function: &str, params: Value, options: EnqueueOptions) {
        let options = EnqueueOptions { job_id: Some(id.to_owned()), ..options };
        self.producer.enqueue(function, params, options).await.expect("enqueue");
    }

    async fn job(&self, id: &str) -> Job {
        match self.store.job(&JobId::new(id)).await.expect("read the job") {
            Some(Ok(job)) => job,
            Some(Err(e)) => panic!("job {id} cannot be parsed: {e}"),
            None => panic!("job {id} does not exist"),
        }
    }

    /// Waits until the job is completed, failed or cancelled.
    async fn finished(&self, id: &str, limit: Duration) -> Job {
        let done = self.producer.wait_for_completion(&JobId::new(id), limit).await.expect("wait for the job");
        assert!(done.is_some(), "job {id} did not finish within {limit:?}: {:?}", self.job(id).await);
        self.job(id).await
    }

    /// Waits until `worker` has written its health record: its loop runs
    /// and it listens for ready signals.
    pub(crate) async fn ready(&self, worker: &Worker) {
        let prefix = worker.id_prefix();
        eventually(&format!("worker {} to start", worker.name), Duration::from_secs(20), &[worker], async || {
            let workers = self.store.workers().await.expect("list workers");
            workers.iter().any(|w| w.worker_id.starts_with(&prefix)).then_some(())
        })
        .await;
    }

    async fn in_queue(&self, queue: &str, id: &str) -> bool {
        let entries = self.store.queue_entries(&QueueName::new(queue), 0, 10_000).await.expect("read the queue");
        entries.iter().any(|(j, _)| j.as_str() == id)
    }

    async fn in_dlq(&self, id: &str) -> bool {
        let ids = self.store.dlq_ids(&DlqName::new("default"), 0, 10_000).await.expect("read the DLQ");
        ids.iter().any(|j| j.as_str() == id)
    }

    fn rrq(&self, config: &Path, args: &[&str]) -> String {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().expect("UTF-8 path")]);
        let out = run_rrq(&all, &[], Duration::from_secs(30));
        assert_success(&out);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn retries(n: u32) -> EnqueueOptions {
    EnqueueOptions { max_retries: Some(n), ..EnqueueOptions::default() }
}

fn timeout(seconds: i64) -> EnqueueOptions {
    EnqueueOptions { job_timeout_seconds: Some(seconds), ..EnqueueOptions::default() }
}

/// Seconds from `$earlier` to `$later`, two job timestamps (a macro, so the
/// timestamp type need not be named: this package does not depend on chrono).
macro_rules! secs_between {
    ($later:expr, $earlier:expr) => {
        (($later) - ($earlier)).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
    };
}

fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970").as_secs_f64()
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_back_off_then_succeed_or_end_in_the_dlq() {
    let env = Env::new("retries").await;
    // Backoff: 0.2 s after the first failure, then 0.4 s capped to 0.3 s. A
    // slow fallback poll: the worker must wake for its retries by itself.
    let rrq = "worker_shutdown_grace_period_seconds = 1\nbase_retry_delay_seconds = 0.2\nmax_retry_delay_seconds = 0.3\n\
               default_poll_delay_seconds = 5";
    let cfg = config(&env.dir, "rrq.toml", &env.redis, rrq, "", 1);
    env.enqueue("flaky", "retry_once", json!({"value": "r", "delay": 0.3}), retries(3)).await;
    env.enqueue("doomed", "fail", json!({"value": "f"}), retries(3)).await;
    let worker = Worker::start("retries", &cfg, &[]);

    // retry_once asks for a retry after 0.3 s on attempt 1, then succeeds.
    let flaky = env.finished("flaky", Duration::from_secs(20)).await;
    assert_eq!(flaky.status, Some(JobStatus::Completed), "{flaky:?}");
    assert_eq!(flaky.result, Some(json!("ok:r")), "only attempt 2 returns a result");
    assert_eq!(flaky.current_retries, 1);
    assert_eq!(flaky.last_error.as_deref(), Some("retry requested"), "a success keeps the last error");
    let retry_at = flaky.next_scheduled_run_time.expect("a retried job records its next run time");
    let asked = secs_between!(retry_at, flaky.enqueue_time);
    assert!(asked >= 0.3, "the runner's delay is used verbatim: retry {asked:.3} s after enqueue");
    let second_start = flaky.start_time.expect("start time of the last attempt");
    assert!(second_start >= retry_at, "attempt 2 ran before its retry time: {second_start} < {retry_at}");
    let late = secs_between!(second_start, retry_at);
    assert!(late < 1.0, "attempt 2 ran {late:.3} s after its retry time");

    // fail always fails: three attempts (max_retries counts attempts), then the DLQ.
    let doomed = env.finished("doomed", Duration::from_secs(20)).await;
    assert_eq!(doomed.status, Some(JobStatus::Failed), "{doomed:?}");
    assert_eq!(doomed.current_retries, 3);
    assert_eq!(doomed.last_error.as_deref(), Some("boom: f"));
    assert!(env.in_dlq("doomed").await, "doomed is in rrq:dlq:default");
    assert!(!env.in_queue("default", "doomed").await, "a dead-lettered job leaves its queue");
    let took = secs_between!(doomed.completion_time.expect("completion time"), doomed.enqueue_time);
    // 0.2 s + 0.3 s of backoff; the default backoff (5 s, 10 s) would take
    // 15 s, and retries found by the 5 s poll 10 s.
    assert!((0.5..3.0).contains(&took), "three attempts with 0.2 s and 0.3 s backoff took {took:.3} s");
    let last_retry = doomed.next_scheduled_run_time.expect("next run time of the last retry");
    let last_start = doomed.start_time.expect("start time of the last attempt");
    assert!(last_start >= last_retry, "attempt 3 ran before its retry time");
    assert!(worker.exit_status().is_none(), "the worker keeps running");
}

/// Waits until every job of `ids` is ACTIVE.
async fn running(env: &Env, worker: &Worker, ids: &[&str]) {
    eventually(&format!("{ids:?} to start"), Duration::from_secs(10), &[worker], async || {
        for id in ids {
            if env.job(id).await.status != Some(JobStatus::Active) {
                return None;
            }
        }
        Some(())
    })
    .await;
}

/// Checks a job that timed out after 1 s: failed once, in the DLQ.
async fn assert_timed_out(env: &Env, id: &str) {
    let job = env.finished(id, Duration::from_secs(15)).await;
    assert_eq!(job.status, Some(JobStatus::Failed), "{job:?}");
    assert_eq!(job.last_error.as_deref(), Some("Job timed out after 1s."));
    assert_eq!(job.current_retries, 1, "a timeout is not retried, though max_retries is 3");
    assert!(env.in_dlq(id).await);
    assert!(!env.in_queue("default", id).await);
    let ran = secs_between!(job.completion_time.expect("completion time"), job.start_time.expect("start time"));
    assert!((1.0..5.0).contains(&ran), "timed out after {ran:.3} s, not about 1 s");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_job_is_dead_lettered_once_and_its_runner_replaced() {
    let env = Env::new("timeout").await;
    // One runner process taking up to 4 requests at once.
    let cfg = config(&env.dir, "rrq.toml", &env.redis, QUICK, "", 1);
    let worker = Worker::start("timeout", &cfg, &[]);
    env.ready(&worker).await;
    // A 1 s timeout, with attempts to spare: a retry would be visible.
    let slow = || EnqueueOptions { max_retries: Some(3), ..timeout(1) };

    // A timeout while the process runs another job: the timed-out request is
    // cancelled, the process and the other job are left alone.
    env.enqueue("slow-shared", "sleep", json!({"seconds": 10}), slow()).await;
    env.enqueue("neighbour", "sleep", json!({"seconds": 2}), timeout(10)).await;
    running(&env, &worker, &["slow-shared", "neighbour"]).await;
    let shared = worker.runner_pids();
    assert_eq!(shared.len(), 1, "one runner process (pool_size 1): {shared:?}");
    assert_timed_out(&env, "slow-shared").await;
    let neighbour = env.finished("neighbour", Duration::from_secs(15)).await;
    assert_eq!(neighbour.status, Some(JobStatus::Completed), "{neighbour:?}");
    assert_eq!(neighbour.current_retries, 0, "the neighbour's attempt was not disturbed");
    assert_eq!(worker.runner_pids(), shared, "a process serving other requests is kept");

    // A timeout alone on the process. The example runner enforces the
    // deadline too, so either side may notice first; the job is recorded the
    // same way, and the runner (kept or replaced) runs the next job.
    env.enqueue("slow", "sleep", json!({"seconds": 10}), slow()).await;
    running(&env, &worker, &["slow"]).await;
    assert_timed_out(&env, "slow").await;
    env.enqueue("next", "success", json!({"value": "next"}), EnqueueOptions::default()).await;
    let next = env.finished("next", Duration::from_secs(15)).await;
    assert_eq!((next.status, next.result), (Some(JobStatus::Completed), Some(json!("ok:next"))));

    // A runner that does not answer at all (frozen): the orchestrator's
    // timeout terminates the process...
    env.enqueue("frozen", "sleep", json!({"seconds": 10}), slow()).await;
    running(&env, &worker, &["frozen"]).await;
    let frozen = worker.runner_pids();
    assert_eq!(frozen.len(), 1, "{frozen:?}");
    let old = frozen[0];
    let status = Command::new("kill").args(["-s", "STOP", &old.to_string()]).status().expect("run kill(1)");
    assert!(status.success(), "SIGSTOP the runner {old}");
    assert_timed_out(&env, "frozen").await;
    eventually("the frozen runner to be terminated", Duration::from_secs(10), &[&worker], async || {
        (!is_alive(old)).then_some(())
    })
    .await;
    // ...and replaces it: the next job runs on a new process.
    env.enqueue("after", "success", json!({"value": "after"}), EnqueueOptions::default()).await;
    let after = env.finished("after", Duration::from_secs(15)).await;
    assert_eq!((after.status, after.result), (Some(JobStatus::Completed), Some(json!("ok:after"))));
    let now = worker.runner_pids();
    assert_eq!(now.len(), 1, "{now:?}");
    assert_ne!(now[0], old, "the runner process was replaced");
}

/// A counter from the worker's `worker stopped` log line (its final stats).
fn final_stat(output: &str, name: &str) -> u64 {
    let line =
        output.lines().rfind(|l| l.contains("worker stopped")).unwrap_or_else(|| panic!("no stats in:\n{output}"));
    let key = format!("{name}: ");
    let at = line.find(&key).unwrap_or_else(|| panic!("no {name} in {line}")) + key.len();
    let digits: String = line[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().unwrap_or_else(|_| panic!("bad {name} in {line}"))
}

/// The tick (epoch seconds) of a cron job id `cron:{function}:{hash}:{epoch}`.
fn tick_of(id: &str) -> i64 {
    id.rsplit(':').next().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("cron job id without a tick: {id}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_enqueue_and_run_each_cron_tick_once() {
    let env = Env::new("cron").await;
    let record = env.dir.path().join("runs.jsonl");
    let cron = format!(
        "[[rrq.cron_jobs]]\nfunction_name = \"record\"\nschedule = \"*/1 * * * * *\"\nparams = {{ path = \"{}\", seconds = 0.01 }}\n",
        record.display()
    );
    // Each worker its own file: its runner needs its own port.
    let cfg_a = config(&env.dir, "a.toml", &env.redis, QUICK, &cron, 1);
    let cfg_b = config(&env.dir, "b.toml", &env.redis, QUICK, &cron, 1);
    let spawned = epoch_now();
    let a = Worker::start("cron-a", &cfg_a, &[]);
    let b = Worker::start("cron-b", &cfg_b, &[]);
    env.ready(&a).await;
    env.ready(&b).await;
    let both_up = epoch_now();

    // Let both run until four ticks after both were up have been enqueued.
    let first_shared = both_up.ceil() as i64;
    eventually("four cron ticks with both workers up", Duration::from_secs(15), &[&a, &b], async || {
        let ids = env.store.job_ids(0).await.expect("list jobs");
        let last = ids.iter().filter(|id| id.as_str().starts_with("cron:")).map(|id| tick_of(id.as_str())).max();
        last.filter(|t| *t >= first_shared + 3).map(|_| ())
    })
    .await;
    let stopping = epoch_now();
    a.signal("TERM");
    b.signal("TERM");
    let (sa, sb) = (a.wait_exit(Duration::from_secs(15)).await, b.wait_exit(Duration::from_secs(15)).await);
    assert!(sa.success() && sb.success(), "workers exit 0 after SIGTERM: {sa}, {sb}");
    let stopped = epoch_now();

    // A tick enqueued just before the SIGTERMs may not have been claimed:
    // a cron-less burst worker runs what is left.
    let drain_cfg = config(&env.dir, "drain.toml", &env.redis, QUICK, "", 1);
    let drain = Worker::start("cron-drain", &drain_cfg, &["--burst"]);
    assert!(drain.wait_exit(Duration::from_secs(20)).await.success(), "the burst worker exits 0");

    let mut ticks: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for id in env.store.job_ids(0).await.expect("list jobs") {
        if id.as_str().starts_with("cron:") {
            ticks.entry(tick_of(id.as_str())).or_default().push(id.into_string());
        }
    }
    let count = ticks.len() as i64;
    let (first, last) = (*ticks.keys().next().expect("cron jobs"), *ticks.keys().last().expect("cron jobs"));
    println!(
        "cron: {count} ticks {first}..={last}; workers spawned at {spawned:.3}, both up at {both_up:.3}, \
         SIGTERM at {stopping:.3}, both stopped at {stopped:.3}"
    );
    for (tick, ids) in &ticks {
        assert_eq!(ids.len(), 1, "tick {tick} enqueued more than once: {ids:?}");
    }
    assert_eq!(last - first + 1, count, "every second fired, none twice: {:?}", ticks.keys().collect::<Vec<_>>());
    assert!(first > spawned.floor() as i64, "a tick before the workers started: {first}");
    assert!(last <= stopped.floor() as i64, "a tick after the workers stopped: {last}");
    assert!(first <= first_shared && last >= stopping.floor() as i64 - 1, "a second with both workers up is missing");
    // With the bounds above, the count is the elapsed seconds, give or take one.

    // Both workers fired the ticks; exactly one of them created each job.
    let (out_a, out_b) = (a.output(), b.output());
    let created = final_stat(&out_a, "cron_enqueued") + final_stat(&out_b, "cron_enqueued");
    assert_eq!(created, count as u64, "jobs created by the two workers");
    let skipped = final_stat(&out_a, "cron_skipped") + final_stat(&out_b, "cron_skipped");
    assert!(skipped >= 1, "no worker ever found a tick's job already created: the workers did not compete");
    let shared_ticks = (stopping.floor() as i64 - first_shared).max(0) as u64;
    println!(
        "cron: worker A created {} and skipped {}, worker B created {} and skipped {}",
        final_stat(&out_a, "cron_enqueued"),
        final_stat(&out_a, "cron_skipped"),
        final_stat(&out_b, "cron_enqueued"),
        final_stat(&out_b, "cron_skipped"),
    );
    for out in [&out_a, &out_b] {
        let fired = final_stat(out, "cron_enqueued") + final_stat(out, "cron_skipped");
        assert!(fired + 1 >= shared_ticks, "a worker fired {fired} of the {shared_ticks} ticks both were up for");
    }

    // Every tick's job ran once, and completed.
    let runs = std::fs::read_to_string(&record).expect("read the run records");
    let mut ran: BTreeMap<String, u32> = BTreeMap::new();
    for line in runs.lines() {
        let run: Value = serde_json::from_str(line).expect("a JSON run record");
        assert_eq!(run["attempt"], 1, "{line}");
        *ran.entry(run["job_id"].as_str().expect("job_id").to_owned()).or_default() += 1;
    }
    for ids in ticks.values() {
        let job = env.job(&ids[0]).await;
        assert_eq!(job.status, Some(JobStatus::Completed), "{job:?}");
        assert_eq!(ran.get(&ids[0]), Some(&1), "{} ran {:?} times", ids[0], ran.get(&ids[0]));
    }
    assert_eq!(ran.len(), ticks.len(), "runs of jobs that are not cron ticks: {ran:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_of_a_killed_worker_is_recovered_by_another() {
    let env = Env::new("orphan").await;
    let cfg_a = config(&env.dir, "a.toml", &env.redis, QUICK, "", 1);
    let cfg_b = config(&env.dir, "b.toml", &env.redis, QUICK, "", 1);
    env.enqueue("orphan", "sleep", json!({"seconds": 3}), EnqueueOptions { max_retries: Some(3), ..timeout(300) })
        .await;
    let a = Worker::start("orphan-a", &cfg_a, &[]);

    // Kill A one second into the attempt (the job sleeps 3 s).
    let prefix_a = a.id_prefix();
    let first_start = eventually("the job to run on A for a second", Duration::from_secs(20), &[&a], async || {
        let job = env.job("orphan").await;
        let on_a =
            job.status == Some(JobStatus::Active) && job.worker_id.as_deref().is_some_and(|w| w.starts_with(&prefix_a));
        let start = job.start_time.filter(|_| on_a)?;
        let running = secs_between!(SystemClock.now(), start);
        (running >= 1.0).then_some(start)
    })
    .await;
    let runners = a.runner_pids();
    assert_eq!(runners.len(), 1, "A runs one runner process: {runners:?}");
    a.kill();
    let killed = Instant::now();

    // The runners die with their worker (parent-death signal).
    eventually("A's runners to die with it", Duration::from_secs(5), &[], async || {
        runners.iter().all(|p| !is_alive(*p)).then_some(())
    })
    .await;

    let b = Worker::start("orphan-b", &cfg_b, &[]);
    let prefix_b = b.id_prefix();
    let second_start = eventually("the job to run again on B", Duration::from_secs(40), &[&b], async || {
        let job = env.job("orphan").await;
        let on_b =
            job.status == Some(JobStatus::Active) && job.worker_id.as_deref().is_some_and(|w| w.starts_with(&prefix_b));
        job.start_time.filter(|_| on_b)
    })
    .await;
    let recovery = killed.elapsed();
    println!("orphan recovery: ACTIVE again on B {:.3} s after SIGKILL of A", recovery.as_secs_f64());
    assert!(recovery <= Duration::from_secs(35), "recovery took {recovery:?}");
    // Not before A's lease (15 s, renewed every 5 s) could have expired.
    let gap = secs_between!(second_start, first_start);
    assert!(gap >= 14.0, "re-run {gap:.3} s after the first start, before A's 15 s lease expired");

    let done = env.finished("orphan", Duration::from_secs(20)).await;
    assert_eq!((done.status, done.result.clone()), (Some(JobStatus::Completed), Some(json!("slept"))), "{done:?}");
    assert_eq!(done.current_retries, 1, "the lost attempt is counted (docs/compatibility.md, deviation 9)");
    assert_eq!(done.last_error.as_deref(), Some("Recovered after lock expiry or worker crash."));
    assert!(done.worker_id.as_deref().is_some_and(|w| w.starts_with(&prefix_b)), "{done:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_paused_queue_is_skipped_by_a_running_worker_until_resumed() {
    let env = Env::new("pause").await;
    // A slow fallback poll: the pickup after `resume` must come from its signal.
    let rrq = format!("{QUICK}\ndefault_poll_delay_seconds = 5");
    let cfg = config(&env.dir, "rrq.toml", &env.redis, &rrq, "", 1);
    let worker = Worker::start("pause", &cfg, &["--queue", "default", "--queue", "other"]);
    env.ready(&worker).await;

    let out = env.rrq(&cfg, &["queue", "pause", "default"]);
    assert!(out.contains("paused"), "{out}");
    env.enqueue("held", "success", json!({"value": "held"}), EnqueueOptions::default()).await;
    // Jobs on the other queue keep running; each pickup is a polling cycle
    // that also looked at the paused queue.
    for i in 0..3 {
        let id = format!("probe-{i}");
        env.enqueue(&id, "success", json!({"value": i}), EnqueueOptions::queue("other")).await;
        let probe = env.finished(&id, Duration::from_secs(10)).await;
        assert_eq!(probe.status, Some(JobStatus::Completed), "{probe:?}");
    }
    let held = env.job("held").await;
    assert_eq!(held.status, Some(JobStatus::Pending), "a paused queue's job is not taken: {held:?}");
    assert!(env.in_queue("default", "held").await);

    let out = env.rrq(&cfg, &["queue", "resume", "default"]);
    assert!(out.contains("resumed"), "{out}");
    let resumed = Instant::now();
    let held = env.finished("held", Duration::from_secs(10)).await;
    assert_eq!((held.status, held.result), (Some(JobStatus::Completed), Some(json!("ok:held"))));
    let took = resumed.elapsed();
    println!("pause: held job completed {:.3} s after resume", took.as_secs_f64());
    // `queue resume` signals the workers: no wait for the (5 s) poll.
    assert!(took < Duration::from_secs(2), "held job completed {took:?} after resume");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_running_job_stops_it_and_the_worker_goes_on() {
    let env = Env::new("cancel").await;
    let cfg = config(&env.dir, "rrq.toml", &env.redis, QUICK, "", 1);
    let worker = Worker::start("cancel", &cfg, &[]);
    env.ready(&worker).await;
    env.enqueue("victim", "sleep", json!({"seconds": 30}), timeout(60)).await;
    running(&env, &worker, &["victim"]).await;

    let out = env.rrq(&cfg, &["job", "cancel", "victim"]);
    assert!(out.contains("Cancel requested"), "{out}");
    let asked = Instant::now();
    // The cancel script publishes the id on rrq:cancel: the worker stops
    // the job at once and sends the runner a cancel frame (the lease
    // renewal, every 5 s, is only the fallback).
    let victim = eventually("victim to be cancelled", Duration::from_secs(12), &[&worker], async || {
        let job = env.job("victim").await;
        (job.status == Some(JobStatus::Cancelled)).then_some(job)
    })
    .await;
    let took = asked.elapsed();
    println!("cancel: running job CANCELLED {:.3} s after `rrq job cancel`", took.as_secs_f64());
    assert!(took < Duration::from_secs(2), "cancelled {took:?} after the request, not at once");
    assert_eq!(victim.current_retries, 0, "a cancel is not a failed attempt");
    assert!(!env.in_queue("default", "victim").await && !env.in_dlq("victim").await);
    let fields = env.store.job_fields(&JobId::new("victim")).await.expect("read").expect("job exists");
    assert!(!fields.contains_key("cancel_requested"), "the request flag is cleared: {fields:?}");

    env.enqueue("after", "success", json!({"value": "a"}), EnqueueOptions::default()).await;
    let after = env.finished("after", Duration::from_secs(10)).await;
    assert_eq!((after.status, after.result), (Some(JobStatus::Completed), Some(json!("ok:a"))));
    let again = env.job("victim").await;
    assert_eq!(again.status, Some(JobStatus::Cancelled), "the cancelled job stays cancelled: {again:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_quick_jobs_and_puts_long_ones_back() {
    let env = Env::new("shutdown").await;
    // A grace well above the quick job's 0.6 s: "active" means claimed, and
    // on a loaded machine the handler may start a while after the claim (a
    // 1 s grace once left it too little and put it back).
    let rrq = QUICK.replace("worker_shutdown_grace_period_seconds = 1", "worker_shutdown_grace_period_seconds = 5");
    let cfg = config(&env.dir, "rrq.toml", &env.redis, &rrq, "", 1);
    let worker = Worker::start("shutdown", &cfg, &[]);
    env.ready(&worker).await;
    env.enqueue("long", "sleep", json!({"seconds": 30}), timeout(60)).await;
    env.enqueue("quick", "sleep", json!({"seconds": 0.6}), timeout(60)).await;
    running(&env, &worker, &["long", "quick"]).await;
    let runners = worker.runner_pids();
    assert!(!runners.is_empty());

    let term_at = SystemClock.now();
    let term = Instant::now();
    worker.signal("TERM");
    let status = worker.wait_exit(Duration::from_secs(15)).await;
    println!("shutdown: worker exited {:.3} s after SIGTERM (grace 5 s)", term.elapsed().as_secs_f64());
    assert!(status.success(), "exit {status}");

    // The quick job was in flight at the SIGTERM and finished within the grace.
    let quick = env.job("quick").await;
    assert_eq!((quick.status, quick.result.clone()), (Some(JobStatus::Completed), Some(json!("slept"))), "{quick:?}");
    assert!(quick.completion_time.is_some_and(|t| t > term_at), "quick finished before the SIGTERM: {quick:?}");

    // The long one went back to its queue, attempt not counted.
    let long = env.job("long").await;
    assert_eq!(long.status, Some(JobStatus::Pending), "{long:?}");
    assert_eq!(long.last_error.as_deref(), Some(SHUTDOWN_MESSAGE));
    assert_eq!(long.current_retries, 0);
    assert_eq!((long.worker_id.as_deref(), long.start_time), (None, None), "{long:?}");
    assert!(env.in_queue("default", "long").await, "long is back in rrq:queue:default");
    assert!(!env.in_dlq("long").await);

    eventually("the runners to stop", Duration::from_secs(5), &[], async || {
        runners.iter().all(|p| !is_alive(*p)).then_some(())
    })
    .await;
}

/// The `p`-th percentile (nearest rank) of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_worker_picks_up_new_jobs_within_milliseconds() {
    let env = Env::new("latency").await;
    // A slow fallback poll: pickup must come from the ready signal.
    let rrq = format!("{QUICK}\ndefault_poll_delay_seconds = 5");
    let cfg = config(&env.dir, "rrq.toml", &env.redis, &rrq, "", 1);
    let worker = Worker::start("latency", &cfg, &[]);
    env.ready(&worker).await;

    let mut latencies = Vec::new();
    for i in 0..50 {
        let id = format!("noop-{i}");
        env.enqueue(&id, "noop", json!({}), EnqueueOptions::default()).await;
        let job = env.finished(&id, Duration::from_secs(10)).await;
        assert_eq!(job.status, Some(JobStatus::Completed), "{job:?}");
        let done = job.completion_time.expect("completion time");
        latencies.push(secs_between!(done, job.enqueue_time) * 1000.0);
    }
    latencies.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&latencies, 0.50), percentile(&latencies, 0.99));
    println!(
        "pickup latency (enqueue -> COMPLETED, 50 noop jobs, idle worker): p50 {p50:.2} ms, p99 {p99:.2} ms, min {:.2} ms, max {:.2} ms",
        latencies[0],
        latencies[latencies.len() - 1]
    );
    // Loose: a debug build on a loaded CI machine. The benchmark measures the real target.
    assert!(p50 < 50.0, "p50 {p50:.2} ms; all: {latencies:?}");
    assert!(worker.exit_status().is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deferred_job_starts_when_due_without_waiting_for_the_poll() {
    let env = Env::new("deferred").await;
    // A slow fallback poll: the start must come from the keyspace event
    // (ZADD of the deferred job) and the timer armed on the queue head.
    let rrq = format!("{QUICK}\ndefault_poll_delay_seconds = 5");
    let cfg = config(&env.dir, "rrq.toml", &env.redis, &rrq, "", 1);
    let worker = Worker::start("deferred", &cfg, &[]);
    env.ready(&worker).await;
    let mut lateness = Vec::new();
    for i in 0..3 {
        let id = format!("later-{i}");
        let options = EnqueueOptions { defer_by: Some(Duration::from_millis(700)), ..EnqueueOptions::default() };
        env.enqueue(&id, "noop", json!({}), options).await;
        let job = env.finished(&id, Duration::from_secs(15)).await;
        assert_eq!(job.status, Some(JobStatus::Completed), "{job:?}");
        let since_enqueue = secs_between!(job.completion_time.expect("completion time"), job.enqueue_time) * 1000.0;
        let late = since_enqueue - 700.0;
        assert!(late >= 0.0, "ran {late:.1} ms before it was due");
        lateness.push(late);
    }
    println!("deferred: completion after the due time, ms: {lateness:?}");
    for late in &lateness {
        assert!(*late < 500.0, "a deferred job finished {late:.1} ms after it was due: {lateness:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_config_the_worker_warns_and_the_poll_still_picks_jobs_up() {
    // A managed Redis that hides CONFIG: keyspace notifications cannot be
    // turned on, and jobs the Python client or redis-cli add wait for the poll.
    let env = Env::on("no-config", TestRedis::private_with_args(&["--rename-command", "CONFIG", "\"\""])).await;
    let cfg = config(&env.dir, "rrq.toml", &env.redis, QUICK, "", 1);
    let worker = Worker::start("no-config", &cfg, &[]);
    env.ready(&worker).await;
    let output = worker.output();
    assert!(
        output.contains("keyspace notifications are unavailable") && output.contains("keyspace_notifications"),
        "one clear warning naming the fallback and the config key: {output}"
    );
    // A job written redis-cli style: the hash and a ZADD, no PUBLISH.
    let raw = env.store.clone();
    let mut fields = BTreeMap::new();
    for (k, v) in [
        ("id", "raw-1"),
        ("function_name", "noop"),
        ("job_params", "{}"),
        ("status", "PENDING"),
        ("queue_name", "rrq:queue:default"),
        ("current_retries", "0"),
        ("max_retries", "1"),
        ("job_timeout_seconds", "30"),
        ("enqueue_time", "2026-01-01T00:00:00+00:00"),
    ] {
        fields.insert(k.to_owned(), v.to_owned());
    }
    raw.put_job_fields(&JobId::new("raw-1"), &fields).await.expect("write the hash");
    let redis_cli = Command::new("redis-cli")
        .args(["-p", &env.redis.port().to_string(), "ZADD", "rrq:queue:default", "0", "raw-1"])
        .output()
        .expect("run redis-cli");
    assert!(redis_cli.status.success(), "{redis_cli:?}");
    let job = env.finished("raw-1", Duration::from_secs(10)).await;
    assert_eq!(job.status, Some(JobStatus::Completed), "{job:?}");
}
