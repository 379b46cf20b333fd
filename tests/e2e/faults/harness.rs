//! What the fault tests share: orchestrator processes the test can signal,
//! `/proc` inspection, a raw Redis client, the record file, job-state
//! queries and polling with a deadline.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rrq_protocol::JobId;
use rrq_store::{InspectStore, RedisStore};
use serde_json::Value;

use crate::support::{TempDir, example_runner_bin, free_ports, rrq_bin};

/// Pause between two looks at something the test waits for.
pub const POLL: Duration = Duration::from_millis(50);

/// Prints one line of a test's report (what was injected, what was seen).
#[macro_export]
macro_rules! report {
    ($test:expr, $($arg:tt)*) => {
        println!("[faults::{}] {}", $test, format_args!($($arg)*))
    };
}

/// A small deterministic generator (SplitMix64) for the chaos schedule; the
/// seed comes from `RRQ_FAULT_SEED` or the clock, and is printed so a failing
/// schedule can be replayed.
#[derive(Debug)]
pub struct Rng {
    seed: u64,
    state: u64,
}

impl Rng {
    pub fn from_env() -> Rng {
        let seed = std::env::var("RRQ_FAULT_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
        });
        Rng { seed, state: seed }
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z % n as u64) as usize
    }
}

/// Scales a count up when `RRQ_SOAK=1` asks for the longer variant.
pub fn soak(normal: usize, soaked: usize) -> usize {
    if std::env::var("RRQ_SOAK").is_ok_and(|v| v == "1") { soaked } else { normal }
}

/// Polls `check` until it yields a value, at most `limit`; panics naming
/// `what` past the deadline.
pub async fn poll_until<T>(limit: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
    }
}

// ---------------------------------------------------------------------------
// Configuration.

/// One `rrq.toml` for the fault tests.
#[derive(Clone, Debug)]
pub struct Config {
    pub dsn: String,
    /// The runner's program and arguments.
    pub cmd: Vec<String>,
    /// First runner port (process `i` listens on `port + i`).
    pub port: u16,
    pub pool_size: u16,
    pub max_in_flight: u16,
    pub job_timeout_seconds: u32,
    pub grace_seconds: f64,
    /// Extra `[rrq]` lines.
    pub rrq: String,
    /// Extra `[rrq.runners.rust]` lines.
    pub runner: String,
}

impl Config {
    /// The example Rust runner with `pool_size` processes on fresh ports.
    pub fn rust(dsn: &str, pool_size: u16, max_in_flight: u16) -> Config {
        Config {
            dsn: dsn.to_owned(),
            cmd: vec![example_runner_bin().to_owned()],
            port: free_ports(pool_size),
            pool_size,
            max_in_flight,
            job_timeout_seconds: 10,
            grace_seconds: 1.0,
            rrq: String::new(),
            runner: String::new(),
        }
    }

    /// The runner's ports.
    pub fn ports(&self) -> Vec<u16> {
        (self.port..self.port + self.pool_size).collect()
    }

    pub fn render(&self) -> String {
        let cmd: Vec<String> = self.cmd.iter().map(|c| toml_string(c)).collect();
        format!(
            r#"[rrq]
redis_dsn = {dsn}
default_runner_name = "rust"
default_job_timeout_seconds = {timeout}
default_max_retries = 5
base_retry_delay_seconds = 0.01
max_retry_delay_seconds = 0.05
worker_shutdown_grace_period_seconds = {grace}
runner_shutdown_term_grace_seconds = 0.5
{rrq}

[rrq.runners.rust]
cmd = [{cmd}]
tcp_port = {port}
pool_size = {pool_size}
max_in_flight = {max_in_flight}
{runner}
"#,
            dsn = toml_string(&self.dsn),
            timeout = self.job_timeout_seconds,
            grace = self.grace_seconds,
            rrq = self.rrq,
            cmd = cmd.join(", "),
            port = self.port,
            pool_size = self.pool_size,
            max_in_flight = self.max_in_flight,
            runner = self.runner,
        )
    }

    /// Writes the file as `name` in `dir`.
    pub fn write(&self, dir: &TempDir, name: &str) -> PathBuf {
        dir.write(name, &self.render())
    }
}

fn toml_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string serialises")
}

// ---------------------------------------------------------------------------
// Processes.

/// An `rrq worker run` process, its output going to a file.
#[derive(Debug)]
pub struct Orchestrator {
    child: Child,
    pid: u32,
    log: PathBuf,
    status: Option<ExitStatus>,
}

impl Orchestrator {
    /// Starts `rrq worker run --config <config>`; output goes to `<label>.log`.
    pub fn start(dir: &TempDir, config: &Path, label: &str) -> Orchestrator {
        Self::start_with(dir, config, label, &[])
    }

    /// [`Orchestrator::start`] with extra arguments and environment.
    pub fn start_with(dir: &TempDir, config: &Path, label: &str, env: &[(&str, &str)]) -> Orchestrator {
        let log = dir.path().join(format!("{label}.log"));
        let file = File::create(&log).expect("create the worker log");
        let child = Command::new(rrq_bin())
            .args(["worker", "run", "--config"])
            .arg(config)
            .env("RUST_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone the log handle"))
            .stderr(file)
            .spawn()
            .expect("start rrq worker run");
        let pid = child.id();
        Orchestrator { child, pid, log, status: None }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The prefix of this process's worker id (`rrq_worker_{pid}_`).
    pub fn worker_prefix(&self) -> String {
        format!("rrq_worker_{}_", self.pid)
    }

    /// Everything the process printed so far (ANSI colours removed).
    pub fn log(&self) -> String {
        strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default())
    }

    /// Waits until the log contains `needle`; panics with the log past `limit`.
    pub async fn wait_log(&self, needle: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.log().contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in the worker log within {limit:?}:\n{}", self.log());
            tokio::time::sleep(POLL).await; // sleep-ok: polling with a deadline
        }
    }

    /// The runner processes: children of the worker process, looking
    /// through the runner guards the `rrq` binary starts them behind (a
    /// guard whose runner is not started yet counts as none).
    pub fn runner_pids(&self) -> Vec<u32> {
        children(self.pid)
            .into_iter()
            .flat_map(|pid| match cmdline(pid).get(1).map(String::as_str) {
                Some("__rrq-runner-guard") => children(pid),
                _ => vec![pid],
            })
            .collect()
    }

    /// Waits until the worker has `n` live runner children.
    pub async fn wait_runners(&self, n: usize, limit: Duration) -> Vec<u32> {
        poll_until(limit, &format!("{n} runner processes"), async || {
            let pids: Vec<u32> = self.runner_pids().into_iter().filter(|p| is_alive(*p)).collect();
            (pids.len() == n).then_some(pids)
        })
        .await
    }

    /// Sends a signal by name (`TERM`, `STOP`, `CONT`, `KILL`).
    pub fn signal(&self, name: &str) {
        send_signal(self.pid, name);
    }

    /// SIGKILL, then reaps the process.
    pub fn kill(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        let status = self.child.wait().expect("reap the killed worker");
        self.status = Some(status);
        status
    }

    /// Whether the process is still running (not exited).
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.try_wait().expect("poll the worker") {
            Some(status) => {
                self.status = Some(status);
                false
            }
            None => true,
        }
    }

    /// Waits for the process to exit, at most `limit` (panics past it).
    pub async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        while self.is_running() {
            assert!(Instant::now() < deadline, "the worker did not exit within {limit:?}:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline
        }
        self.status.expect("set when it exited")
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if self.status.is_none() {
            // A stopped process dies of SIGKILL too.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- log of worker {} ---\n{}", self.pid, self.log());
        }
    }
}

/// Removes ANSI escape sequences.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Children of `pid`, from `/proc/<pid>/task/*/children`.
pub fn children(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        out.extend(text.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Whether `pid` exists and is not a zombie.
pub fn is_alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    // The state follows the parenthesised command name.
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    !matches!(state, None | Some("Z" | "X"))
}

/// The command line of `pid`.
pub fn cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
}

/// The port of a runner process, from its `--tcp-socket 127.0.0.1:PORT` argument.
pub fn runner_port(pid: u32) -> Option<u16> {
    let args = cmdline(pid);
    let at = args.iter().position(|a| a == "--tcp-socket")?;
    args.get(at + 1)?.rsplit_once(':')?.1.parse().ok()
}

/// Sends signal `name` to `pid` with kill(1).
pub fn send_signal(pid: u32, name: &str) {
    let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status().expect("run kill");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits until none of `pids` is alive; returns how long that took.
pub async fn wait_all_dead(pids: &[u32], limit: Duration) -> Duration {
    let started = Instant::now();
    poll_until(limit, &format!("processes {pids:?} to die"), async || pids.iter().all(|p| !is_alive(*p)).then_some(()))
        .await;
    started.elapsed()
}

// ---------------------------------------------------------------------------
// Raw Redis access (no client library: poison values, stalls, ACLs).

/// A reply from [`redis`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    /// The reply as text (status, bulk or integer).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Int(n) => Some(n.to_string()),
            Reply::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// Sends one command to the Redis on `port` and reads its reply; `limit`
/// bounds the wait (a stalled server makes this fail, not hang).
pub fn redis_with(port: u16, args: &[&[u8]], limit: Duration) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(limit))?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req)?;
    read_reply(&mut BufReader::new(stream))
}

/// Sends many commands on one connection and reads every reply (a pipeline).
pub fn redis_pipeline(port: u16, commands: &[Vec<String>]) -> Vec<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to redis");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("set a read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
    let mut replies = Vec::with_capacity(commands.len());
    for chunk in commands.chunks(1000) {
        let mut req = Vec::new();
        for args in chunk {
            req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                req.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        stream.write_all(&req).expect("send the pipeline");
        for _ in chunk {
            replies.push(read_reply(&mut reader).expect("read a pipelined reply"));
        }
    }
    replies
}

/// [`redis_with`] with text arguments and a 10 s limit; panics on I/O errors.
pub fn redis(port: u16, args: &[&str]) -> Reply {
    let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    redis_with(port, &args, Duration::from_secs(10)).unwrap_or_else(|e| panic!("redis command {args:?}: {e}"))
}

fn read_reply(r: &mut impl BufRead) -> std::io::Result<Reply> {
    let mut line = String::new();
    r.read_line(&mut line)?;
    let line = line.trim_end_matches(['\r', '\n']);
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, format!("bad reply line {line:?}"));
    let (kind, rest) = line.split_at_checked(1).ok_or_else(bad)?;
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse().map_err(|_| bad())?),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            if len < 0 {
                Reply::Bulk(None)
            } else {
                let mut body = vec![0; usize::try_from(len).map_err(|_| bad())? + 2];
                r.read_exact(&mut body)?;
                body.truncate(body.len() - 2);
                Reply::Bulk(Some(body))
            }
        }
        "*" => {
            let len: i64 = rest.parse().map_err(|_| bad())?;
            let mut items = Vec::new();
            for _ in 0..len.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        _ => return Err(bad()),
    })
}

// ---------------------------------------------------------------------------
// Job state.

/// Status of each job (`MISSING` for a vanished hash), read in batches.
pub async fn statuses(store: &RedisStore, ids: &[JobId]) -> Result<Vec<String>, rrq_store::StoreError> {
    let fields = store.job_fields_batch(ids).await?;
    Ok(fields
        .into_iter()
        .map(|f| f.and_then(|f| f.get("status").cloned()).unwrap_or_else(|| "MISSING".to_owned()))
        .collect())
}

/// How many jobs are in each status.
pub fn tally(statuses: &[String]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in statuses {
        *out.entry(s.clone()).or_insert(0) += 1;
    }
    out
}

/// Waits until every job is COMPLETED; returns the time it took. Read errors
/// (Redis down) count as "not yet".
pub async fn wait_all_completed(store: &RedisStore, ids: &[JobId], limit: Duration) -> Duration {
    let started = Instant::now();
    let deadline = started + limit;
    loop {
        let last = statuses(store, ids).await;
        if let Ok(s) = &last
            && s.iter().all(|s| s == "COMPLETED")
        {
            return started.elapsed();
        }
        if Instant::now() >= deadline {
            let summary = match last {
                Ok(s) => format!("{:?}", tally(&s)),
                Err(e) => format!("unreadable: {e}"),
            };
            panic!("not every job completed within {limit:?}: {summary}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: polling with a deadline
    }
}

/// `n` job ids `{prefix}-{i}`.
pub fn ids(prefix: &str, n: usize) -> Vec<JobId> {
    (0..n).map(|i| JobId::new(format!("{prefix}-{i}"))).collect()
}

// ---------------------------------------------------------------------------
// The record file written by the example runner's `record` handler.

/// One execution: `{job_id, attempt, start, end}`.
#[derive(Clone, Debug)]
pub struct Run {
    pub attempt: u64,
    pub start: f64,
    pub end: f64,
}

/// Every execution recorded, by job id.
#[derive(Debug, Default)]
pub struct Records {
    pub runs: BTreeMap<String, Vec<Run>>,
}

/// How many executions the record file holds so far (its lines; cheaper
/// than [`Records::load`] for polling).
pub fn count_runs(path: &Path) -> usize {
    std::fs::read(path).map_or(0, |b| b.iter().filter(|c| **c == b'\n').count())
}

impl Records {
    /// Reads the file (missing = no runs yet).
    pub fn load(path: &Path) -> Records {
        let mut runs: BTreeMap<String, Vec<Run>> = BTreeMap::new();
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("bad record line {line:?}: {e}"));
            let run = Run {
                attempt: v["attempt"].as_u64().expect("attempt"),
                start: v["start"].as_f64().expect("start"),
                end: v["end"].as_f64().expect("end"),
            };
            runs.entry(v["job_id"].as_str().expect("job_id").to_owned()).or_default().push(run);
        }
        Records { runs }
    }

    /// Executions recorded.
    pub fn len(&self) -> usize {
        self.runs.values().map(Vec::len).sum()
    }

    /// Jobs with two executions that overlapped in time.
    pub fn overlapping(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, runs) in &self.runs {
            let mut sorted = runs.clone();
            sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
            if sorted.windows(2).any(|w| w[1].start < w[0].end) {
                out.push(id.clone());
            }
        }
        out
    }

    /// Jobs whose executions, in start order, do not carry strictly
    /// increasing attempt numbers (an attempt that was not counted).
    pub fn uncounted(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (id, runs) in &self.runs {
            let mut sorted = runs.clone();
            sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
            if sorted.windows(2).any(|w| w[1].attempt <= w[0].attempt) {
                out.push(id.clone());
            }
        }
        out
    }

    /// The longest time between two consecutive execution starts (how long
    /// the work stood still), in seconds.
    pub fn longest_gap(&self) -> f64 {
        let mut starts: Vec<f64> = self.runs.values().flatten().map(|r| r.start).collect();
        starts.sort_by(f64::total_cmp);
        starts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max)
    }

    /// Executions beyond the first of each job (re-runs after a fault).
    pub fn reruns(&self) -> usize {
        self.runs.values().map(|r| r.len().saturating_sub(1)).sum()
    }
}

/// Enqueues `n` jobs `{prefix}-{i}` of `function` with `params` in one batch.
pub async fn enqueue_many(
    producer: &rrq_producer::Producer,
    prefix: &str,
    n: usize,
    function: &str,
    params: Value,
) -> Vec<JobId> {
    let ids = ids(prefix, n);
    let jobs = ids.iter().map(|id| {
        let options = rrq_producer::EnqueueOptions { job_id: Some(id.as_str().to_owned()), ..Default::default() };
        (function.to_owned(), params.clone(), options)
    });
    for r in producer.enqueue_batch(jobs).await.expect("enqueue the batch") {
        r.expect("every job is created");
    }
    ids
}

/// A store connection for the test's own reads.
pub async fn store(dsn: &str) -> RedisStore {
    RedisStore::connect(dsn).await.expect("connect the test's store")
}
