//! `cargo xtask chaos [--seed S] [--schedules N] [--minutes M] [--ci] [--cluster] [--release]`:
//! a randomized fault harness over real processes.
//!
//! Each schedule starts a private redis-server (AOF, `appendfsync always`), a
//! TCP proxy the harness controls, two or three `rrq worker run`
//! orchestrators (each with the example Rust runner, the reference Python
//! runner from PyPI, and the example runner behind a `sh -c` launcher that
//! keeps it as a child), enqueues a few hundred jobs (deferred, unique,
//! poison), injects the seeded faults, heals everything, waits until every
//! acknowledged job is terminal and checks the invariants of
//! [`check`]. A failing schedule prints its seed and its faults;
//! `--seed S --schedules 1` replays it.
//!
//! `--cluster` runs the same schedules on a Redis Cluster of three masters
//! (no replicas), each behind a proxy of its own ([`backend`]): the nodes
//! announce their proxies' ports, so the workers, the producer and the `rrq`
//! CLI (cluster DSNs, the sharded key layout) reach every node, redirections
//! included, through its proxy, while the cluster bus stays direct. Every
//! server-side fault (restart from the AOF, cut, blackhole, `DEBUG SLEEP`,
//! `CLIENT PAUSE`) hits one node or all of them, as the seed draws; no fault
//! is left out. The harness reads the job hashes straight from the master of
//! each key's slot. Unlike on one server, the CLI calls pass the proxies too,
//! so one made during a proxy fault may fail (counted, not a violation). The
//! Python runner is unchanged (runners do not touch Redis); the jobs are
//! enqueued with the Rust producer, as the reference Python client cannot use
//! the sharded layout.

mod backend;
mod check;
mod procs;
mod proxy;
mod schedule;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rrq_producer::{EnqueueOptions, Producer};
use rrq_protocol::{JobId, QueueName};
use serde_json::json;

use backend::Backend;
use check::{FinalJob, Observations, Orphan, Shown, Violation};
use procs::{Monitor, Orchestrator, Reply, now, resp1};
use schedule::{Fault, JobKind, Node, Schedule};

/// The seeds `--ci` runs (with the cluster ones, about three minutes on two
/// busy cores: 169 s of schedules on 2026-12-07).
const CI_SEEDS: &[u64] = &[101, 202, 303, 404, 505, 606, 707];
/// The seeds `--ci` runs on a cluster (`--cluster`), after those (48 s of
/// the 169 s): 3 restarts every node and then one, 13 cuts one node's
/// connections and then every node's.
const CI_CLUSTER_SEEDS: &[u64] = &[3, 13];
/// The masters of the `--cluster` variant.
const CLUSTER_MASTERS: usize = 3;
/// Restarts of orchestrators that exited by themselves, per schedule.
const MAX_SUPERVISOR_RESTARTS: usize = 10;
/// How long after its last start an orchestrator that exited by itself is
/// restarted, as a supervisor's restart delay: the budget above then covers
/// an outage of several seconds (a restarted cluster node refuses commands
/// for up to two seconds, and an orchestrator started then exits 4).
const SUPERVISOR_DELAY: Duration = Duration::from_secs(1);
/// The lease TTL of the schedules (`lease_ttl_seconds`).
const LEASE_TTL: f64 = 6.0;
/// The job timeout of jobs without their own.
const DEFAULT_TIMEOUT: i64 = 6;
/// How long after an orchestrator's SIGKILL its runners must be gone.
const ORPHAN_DEADLINE: Duration = Duration::from_secs(3);
/// How long the jobs may take to become terminal after the heal.
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Bound of every `rrq` CLI call.
const CLI_LIMIT: Duration = Duration::from_secs(10);
/// Handlers of the reference Python runner.
const HANDLERS_PY: &str = r#"
import asyncio, json, os, time
from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings
from rrq.exc import RetryJob

def _line(path, base, ev, outcome=None):
    rec = dict(base, ev=ev, t=time.time())
    if outcome is not None:
        rec["outcome"] = outcome
    with open(path, "a") as f:
        f.write(json.dumps(rec) + "\n")

async def chaos(request):
    p = request.params
    base = {"job": request.job_id, "attempt": request.context.attempt, "pid": os.getpid(), "ppid": os.getppid()}
    _line(p["path"], base, "start")
    outcome = "dropped"
    try:
        secs = float(p.get("seconds", 0))
        if p.get("ignore_cancel"):
            end = time.monotonic() + secs
            while time.monotonic() < end:
                try:
                    await asyncio.shield(asyncio.sleep(max(0.0, min(0.05, end - time.monotonic()))))
                except asyncio.CancelledError:
                    pass
        else:
            await asyncio.sleep(secs)
        outcome = p.get("outcome", "ok")
    finally:
        _line(p["path"], base, "end", outcome)
    if outcome == "fail":
        raise ValueError("chaos: failed on attempt %d" % request.context.attempt)
    if outcome == "retry" and request.context.attempt <= 1:
        raise RetryJob(defer_seconds=0.05)
    return {"attempt": request.context.attempt}

registry = Registry()
registry.register("chaos", chaos)
settings = PythonRunnerSettings(registry=registry)
"#;

struct Options {
    /// Seed and cluster masters (0: one server) of each schedule.
    runs: Vec<(u64, usize)>,
    minutes: Option<f64>,
    release: bool,
}

const USAGE: &str = "cargo xtask chaos [--seed S] [--schedules N] [--minutes M] [--ci] [--cluster] [--release]";

fn parse(args: &[String]) -> Result<Options> {
    let mut seed = None;
    let mut schedules = None;
    let mut minutes = None;
    let mut ci = false;
    let mut release = false;
    let mut cluster = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value")).cloned();
        match a.as_str() {
            "--seed" => seed = Some(value("--seed")?.parse::<u64>().context("--seed takes an integer")?),
            "--schedules" => {
                schedules = Some(value("--schedules")?.parse::<usize>().context("--schedules takes a count")?)
            }
            "--minutes" => minutes = Some(value("--minutes")?.parse::<f64>().context("--minutes takes a number")?),
            "--ci" => ci = true,
            "--release" => release = true,
            "--cluster" => cluster = true,
            other => bail!("unknown argument {other:?}; usage: {USAGE}"),
        }
    }
    let nodes = if cluster { CLUSTER_MASTERS } else { 0 };
    let runs = if ci {
        // `--ci` runs both lists; `--ci --cluster` the cluster one only.
        let single = CI_SEEDS.iter().filter(|_| !cluster).map(|s| (*s, 0));
        single.chain(CI_CLUSTER_SEEDS.iter().map(|s| (*s, CLUSTER_MASTERS))).collect()
    } else {
        let base = seed.unwrap_or_else(|| (now() * 1000.0) as u64 % 1_000_000);
        let n = schedules.unwrap_or(if minutes.is_some() { 10_000 } else { 10 });
        (0..n as u64).map(|k| (base.wrapping_add(k), nodes)).collect()
    };
    Ok(Options { runs, minutes, release })
}

/// The binaries and files every schedule uses.
struct Env {
    rrq: PathBuf,
    runner: PathBuf,
    python_runner: PathBuf,
    tty: bool,
}

/// What one schedule produced.
struct Outcome {
    jobs: usize,
    refused: usize,
    faults: BTreeMap<&'static str, usize>,
    violations: Vec<Violation>,
    rendered: Vec<String>,
    notes: Vec<String>,
    took: Duration,
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let mut build = crate::cargo();
    build.args(["build", "--quiet", "-p", "rrq", "-p", "rrq-runner", "--bins"]);
    if opts.release {
        build.arg("--release");
    }
    crate::run(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join(if opts.release { "release" } else { "debug" });
    let venv = rrq_test_support::python::venv();
    let env = Env {
        rrq: target.join("rrq"),
        runner: target.join("rrq-example-runner"),
        python_runner: venv.runner(),
        tty: std::io::stdout().is_terminal(),
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("start the harness runtime")?;
    let started = Instant::now();
    let total = opts.runs.len();
    let mut outcomes: Vec<(String, Outcome)> = Vec::new();
    for (k, (seed, nodes)) in opts.runs.iter().enumerate() {
        if let Some(m) = opts.minutes
            && started.elapsed().as_secs_f64() > m * 60.0
        {
            break;
        }
        let schedule = Schedule::generate(*seed, *nodes);
        let (variant, on) = if *nodes > 0 { (" --cluster", " (cluster)") } else { ("", "") };
        let label = format!("[{}/{}] seed {seed}{on}", k + 1, total);
        let outcome = run_schedule(&env, &runtime, &schedule, &label)
            .with_context(|| format!("schedule {label}:\n{}", schedule.describe()))?;
        if env.tty {
            print!("\r\x1b[2K");
        }
        println!(
            "{label}: {} jobs, {} faults, {} violations, {:.1}s",
            outcome.jobs,
            schedule.faults.len(),
            outcome.violations.len(),
            outcome.took.as_secs_f64()
        );
        for n in &outcome.notes {
            println!("    note: {n}");
        }
        if !outcome.violations.is_empty() {
            println!("  VIOLATIONS in {}", schedule.describe().trim_end());
            for v in outcome.rendered.iter().take(20) {
                println!("    {v}");
            }
            if outcome.rendered.len() > 20 {
                println!("    ... and {} more", outcome.rendered.len() - 20);
            }
            println!("  replay: cargo xtask chaos{variant} --seed {seed} --schedules 1");
        }
        std::io::stdout().flush().ok();
        outcomes.push((format!("{seed}{on}"), outcome));
    }
    summary(&outcomes, started.elapsed());
    let failed: Vec<String> =
        outcomes.iter().filter(|(_, o)| !o.violations.is_empty()).map(|(s, _)| s.clone()).collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("invariant violations in the schedules of seeds {}", failed.join(", "))
    }
}

fn summary(outcomes: &[(String, Outcome)], took: Duration) {
    let mut faults: BTreeMap<&str, usize> = BTreeMap::new();
    let mut violations: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, o) in outcomes {
        for (k, n) in &o.faults {
            *faults.entry(k).or_default() += n;
        }
        for v in &o.violations {
            *violations.entry(v.kind()).or_default() += 1;
        }
    }
    let jobs: usize = outcomes.iter().map(|(_, o)| o.jobs).sum();
    let refused: usize = outcomes.iter().map(|(_, o)| o.refused).sum();
    println!("\n== chaos summary ==");
    println!("{:<34} {:>8}", "schedules run", outcomes.len());
    println!("{:<34} {:>8}", "jobs acknowledged", jobs);
    println!("{:<34} {:>8}", "enqueues refused by the producer", refused);
    println!("{:<34} {:>7.1}s", "duration", took.as_secs_f64());
    println!("-- faults injected --");
    for (k, n) in &faults {
        println!("{k:<34} {n:>8}");
    }
    println!("-- invariant violations --");
    if violations.is_empty() {
        println!("{:<34} {:>8}", "none", 0);
    }
    for (k, n) in &violations {
        println!("{k:<34} {n:>8}");
    }
}

/// An action due later in a schedule.
enum Pending {
    OrchCont(usize, String),
    OrchRestart(usize),
    RunnerCont(u32, u64),
    RedisStart(usize),
    Unblackhole(Vec<usize>),
    OrphanCheck { procs: Vec<(u32, u64)>, after: String },
}

/// The live state of one schedule.
struct Run<'a> {
    env: &'a Env,
    dir: PathBuf,
    record: PathBuf,
    schedule: &'a Schedule,
    configs: Vec<PathBuf>,
    cli_config: PathBuf,
    orchs: Vec<Option<Orchestrator>>,
    generation: Vec<usize>,
    /// When each orchestrator was last started.
    started: Vec<Instant>,
    monitor: Monitor,
    // Dropped after the orchestrators and the monitor (field order).
    backend: Backend,
    t0: f64,
    frozen: BTreeMap<String, Vec<(f64, f64)>>,
    stopped_since: BTreeMap<String, f64>,
    stopped_runners: Vec<(u32, u64)>,
    /// Orchestrators restarted because they had exited by themselves.
    supervisor_restarts: usize,
    pending: Vec<(Instant, Pending)>,
    orphans: Vec<Orphan>,
    notes: Vec<String>,
    faults: BTreeMap<&'static str, usize>,
    /// Acknowledged job → its timeout.
    jobs: BTreeMap<String, f64>,
    /// Jobs whose handler fails (the requeue and retry targets).
    failing: Vec<String>,
    cancel_targets: Vec<String>,
    cancelled_seen: BTreeMap<String, f64>,
    resets: BTreeMap<String, Vec<f64>>,
    /// Every orchestrator started: pid → instance.
    spawned: BTreeMap<u32, String>,
}

fn run_schedule(env: &Env, runtime: &tokio::runtime::Runtime, schedule: &Schedule, label: &str) -> Result<Outcome> {
    let started = Instant::now();
    let dir = std::env::temp_dir().join(format!("rrq-chaos-{}-{}", std::process::id(), schedule.seed));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("chaos_handlers.py"), HANDLERS_PY)?;
    let record = dir.join("record.jsonl");
    let backend = if schedule.nodes > 0 { Backend::cluster(&dir, schedule.nodes)? } else { Backend::single(&dir)? };
    let monitor = Monitor::start(record.clone());
    let mut configs = Vec::new();
    for w in 0..schedule.workers {
        let port = procs::free_ports(4, schedule.seed.wrapping_add(w as u64 * 31))?;
        let path = dir.join(format!("w{w}.toml"));
        std::fs::write(&path, worker_config(env, &dir, &backend.worker_dsn(), port))?;
        configs.push(path);
    }
    let cli_config = dir.join("cli.toml");
    std::fs::write(&cli_config, format!("[rrq]\nredis_dsn = {}\n", toml_str(&backend.tool_dsn())))?;
    let mut run = Run {
        env,
        dir: dir.clone(),
        record: record.clone(),
        schedule,
        configs,
        cli_config,
        orchs: Vec::new(),
        generation: vec![0; schedule.workers],
        started: vec![Instant::now(); schedule.workers],
        monitor,
        backend,
        t0: now(),
        frozen: BTreeMap::new(),
        stopped_since: BTreeMap::new(),
        stopped_runners: Vec::new(),
        supervisor_restarts: 0,
        pending: Vec::new(),
        orphans: Vec::new(),
        notes: Vec::new(),
        faults: BTreeMap::new(),
        jobs: BTreeMap::new(),
        failing: Vec::new(),
        cancel_targets: Vec::new(),
        cancelled_seen: BTreeMap::new(),
        resets: BTreeMap::new(),
        spawned: BTreeMap::new(),
    };
    for w in 0..schedule.workers {
        let o = run.spawn(w)?;
        run.orchs.push(Some(o));
    }
    run.wait_runners(label);
    let refused = runtime.block_on(run.enqueue())?;
    run.t0 = now();
    let t0 = Instant::now();
    for (at, fault) in &schedule.faults {
        let due = t0 + Duration::from_secs_f64(*at);
        run.tick_until(due);
        run.inject(fault);
    }
    // Let the last faults play out, then heal everything.
    run.tick_until(Instant::now() + Duration::from_secs(1));
    run.heal()?;
    run.status(label, "waiting for the jobs to end");
    run.drain(label);
    let jobs = run.final_jobs();
    run.shutdown();
    let cancelled = run.cancelled_seen.len();
    if cancelled > 0 {
        run.faults.insert("(cancel targets seen CANCELLED)", cancelled);
    }
    run.faults.insert("(processes watched)", run.monitor.tracked().len());
    let obs = run.observations(jobs);
    let violations = obs.check();
    let rendered: Vec<String> = violations.iter().map(|v| Shown(v, run.t0).to_string()).collect();
    if !violations.is_empty() {
        run.notes.push(format!("kept {} (record.jsonl, worker logs)", run.dir.display()));
    }
    let outcome = Outcome {
        jobs: run.jobs.len(),
        refused,
        faults: std::mem::take(&mut run.faults),
        violations,
        rendered,
        notes: std::mem::take(&mut run.notes),
        took: started.elapsed(),
    };
    let keep = !outcome.violations.is_empty();
    drop(run);
    if !keep {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(outcome)
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

fn worker_config(env: &Env, dir: &Path, dsn: &str, port: u16) -> String {
    let runner = toml_str(&env.runner.display().to_string());
    let python = toml_str(&env.python_runner.display().to_string());
    // No exec: the runner stays a child of the shell.
    let launcher = toml_str("\"$0\" \"$@\"; status=$?; exit $status");
    format!(
        r#"[rrq]
redis_dsn = {dsn}
default_runner_name = "rust"
default_job_timeout_seconds = {DEFAULT_TIMEOUT}
default_max_retries = 10
default_poll_delay_seconds = 0.05
base_retry_delay_seconds = 0.05
max_retry_delay_seconds = 0.2
worker_shutdown_grace_period_seconds = 1
runner_shutdown_term_grace_seconds = 0.5
lease_ttl_seconds = {LEASE_TTL}

[rrq.runner_routes]
chaos_py = "python"
chaos_sh = "launched"

[rrq.runners.rust]
cmd = [{runner}]
tcp_port = {port}
pool_size = 2
max_in_flight = 8

[rrq.runners.python]
cmd = [{python}, "--settings", "chaos_handlers.settings"]
tcp_port = {py}
pool_size = 1
max_in_flight = 8
env = {{ PYTHONPATH = {dir} }}

[rrq.runners.launched]
cmd = ["sh", "-c", {launcher}, {runner}]
tcp_port = {sh}
pool_size = 1
max_in_flight = 8
"#,
        py = port + 2,
        sh = port + 3,
        dir = toml_str(&dir.display().to_string()),
        dsn = toml_str(dsn),
    )
}

/// Runs an `rrq` CLI command with a deadline; whether it succeeded.
fn cli(rrq: &Path, config: &Path, args: &[&str]) -> bool {
    let child = Command::new(rrq)
        .args(args)
        .arg("--config")
        .arg(config)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else { return false };
    let deadline = Instant::now() + CLI_LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status.success(),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10)); // sleep-ok: polling with a deadline
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
        }
    }
}

impl Run<'_> {
    /// The hash of job `id` (keys are spelled by rrq-store only).
    fn job_key(&self, id: &str) -> String {
        self.backend.layout.job(&JobId::new(id))
    }

    fn spawn(&mut self, w: usize) -> Result<Orchestrator> {
        let label = format!("w{w}#{}", self.generation[w]);
        self.generation[w] += 1;
        self.started[w] = Instant::now();
        let log = self.dir.join(format!("{label}.log"));
        let o = Orchestrator::spawn(&self.env.rrq, &self.configs[w], &log, &label)?;
        self.monitor.add_root(o.pid, o.start, &label);
        self.spawned.insert(o.pid, label);
        Ok(o)
    }

    fn status(&self, label: &str, what: &str) {
        if self.env.tty {
            print!("\r\x1b[2K{label}: {what}");
            std::io::stdout().flush().ok();
        }
    }

    /// Waits (bounded) until every orchestrator runs its runner processes.
    fn wait_runners(&self, label: &str) {
        self.status(label, "starting orchestrators and runners");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let ready = self.orchs.iter().flatten().all(|o| self.monitor.live_under(&o.label).len() >= 4);
            if ready {
                // The Python runner answers a moment after it appears.
                std::thread::sleep(Duration::from_millis(500)); // sleep-ok: settle time before the burst
                return;
            }
            std::thread::sleep(Duration::from_millis(50)); // sleep-ok: polling with a deadline
        }
    }

    /// Enqueues the schedule's jobs; returns how many the producer refused.
    async fn enqueue(&mut self) -> Result<usize> {
        let producer = Producer::new(&self.backend.tool_dsn()).await.context("connect the producer")?;
        let path = self.record.display().to_string();
        let mut refused = 0;
        let mut raw: Vec<Vec<String>> = Vec::new();
        for spec in &self.schedule.jobs {
            let mut options = EnqueueOptions {
                max_retries: Some(spec.max_retries),
                defer_by: spec.defer.map(Duration::from_secs_f64),
                idempotency_key: spec.unique.clone(),
                ..EnqueueOptions::default()
            };
            let chaos = |seconds: f64, outcome: &str, ignore: bool| json!({"path": path, "seconds": seconds, "outcome": outcome, "ignore_cancel": ignore});
            let mut poison_field: Option<(&str, String)> = None;
            let (function, params) = match &spec.kind {
                JobKind::Chaos { runner, seconds, outcome, ignore_cancel } => {
                    options.queue = match *runner {
                        "python" => Some("chaos_py".to_owned()),
                        "launched" => Some("chaos_sh".to_owned()),
                        _ => None,
                    };
                    ("chaos", chaos(*seconds, outcome, *ignore_cancel))
                }
                JobKind::TimesOut { seconds, timeout } => {
                    options.job_timeout_seconds = Some(*timeout);
                    ("chaos", chaos(*seconds, "ok", false))
                }
                JobKind::UnknownHandler => ("no_such_handler", json!({})),
                JobKind::HugeResultTtl => {
                    // The Rust producer refuses it, a foreign producer may not:
                    // written behind the producer's back like the others.
                    options.defer_by = Some(Duration::from_secs(3600));
                    poison_field = Some(("result_ttl_seconds", i64::MAX.to_string()));
                    ("chaos", chaos(0.01, "ok", false))
                }
                JobKind::HugeTimeout => {
                    options.defer_by = Some(Duration::from_secs(3600));
                    poison_field = Some(("job_timeout_seconds", (1u64 << 62).to_string()));
                    ("chaos", chaos(0.01, "ok", false))
                }
                JobKind::BadJson => {
                    options.defer_by = Some(Duration::from_secs(3600));
                    poison_field = Some(("job_params", "{\"path\": not json".to_owned()));
                    ("chaos", chaos(0.01, "ok", false))
                }
            };
            let timeout = options.job_timeout_seconds.unwrap_or(DEFAULT_TIMEOUT) as f64;
            match producer.enqueue(function, params, options).await {
                Ok(id) => {
                    let id = id.as_str().to_owned();
                    if let Some((field, value)) = poison_field {
                        // Written behind the producer's back, then made due now.
                        let layout = &self.backend.layout;
                        let job = JobId::new(id.as_str());
                        raw.push(vec!["HSET".into(), layout.job(&job), field.into(), value]);
                        raw.push(vec![
                            "ZADD".into(),
                            layout.queue(&QueueName::new("default"), layout.shard_of(&job)),
                            format!("{}", (now() * 1000.0) as i64),
                            id.clone(),
                        ]);
                    }
                    if matches!(&spec.kind, JobKind::Chaos { outcome: "fail", .. }) {
                        self.failing.push(id.clone());
                    }
                    self.jobs.insert(id, timeout);
                }
                Err(e) => {
                    refused += 1;
                    if !matches!(spec.kind, JobKind::Chaos { .. }) {
                        self.notes.push(format!("the producer refused {:?}: {e}", spec.kind));
                    }
                }
            }
        }
        self.failing.sort();
        self.failing.dedup();
        if self.backend.routed(&raw, Duration::from_secs(10)).iter().any(Option::is_none) {
            bail!("cannot write the poison fields");
        }
        Ok(refused)
    }

    /// Runs the due pending actions and polls the cancel targets until `until`.
    fn tick_until(&mut self, until: Instant) {
        let mut last_poll = Instant::now() - Duration::from_secs(1);
        loop {
            self.run_pending(false);
            if last_poll.elapsed() >= Duration::from_millis(100) {
                self.poll_cancelled();
                last_poll = Instant::now();
            }
            if Instant::now() >= until {
                return;
            }
            let step = until.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
            std::thread::sleep(step); // sleep-ok: the schedule's clock
        }
    }

    /// Runs the pending actions that are due (all of them with `all`, except orphan checks).
    fn run_pending(&mut self, all: bool) {
        let now_i = Instant::now();
        let pending = std::mem::take(&mut self.pending);
        let (due, later): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(at, p)| *at <= now_i || (all && !matches!(p, Pending::OrphanCheck { .. })));
        self.pending = later;
        for (_, p) in due {
            match p {
                Pending::OrchCont(w, label) => {
                    if let Some(o) = self.orchs[w].as_ref().filter(|o| o.label == label) {
                        o.signal("CONT");
                    }
                    self.close_stop(&label, now());
                }
                Pending::OrchRestart(w) => {
                    if self.orchs[w].is_none() {
                        match self.spawn(w) {
                            Ok(o) => self.orchs[w] = Some(o),
                            Err(e) => self.notes.push(format!("cannot restart w{w}: {e:#}")),
                        }
                    }
                }
                Pending::RunnerCont(pid, start) => {
                    procs::signal(pid, start, "CONT");
                    self.stopped_runners.retain(|r| *r != (pid, start));
                }
                Pending::RedisStart(i) => {
                    let redis = &mut self.backend.nodes[i].redis;
                    if !redis.running()
                        && let Err(e) = redis.launch()
                    {
                        self.notes.push(format!("redis (node {i}) did not come back: {e:#}"));
                    }
                }
                Pending::Unblackhole(nodes) => {
                    for i in nodes {
                        self.backend.nodes[i].proxy.resume();
                    }
                }
                Pending::OrphanCheck { procs, after } => {
                    for (pid, start) in procs {
                        if procs::alive(pid, start) && !self.orphans.iter().any(|o| o.pid == pid) {
                            self.orphans.push(Orphan { pid, cmd: procs::cmdline(pid), after: after.clone() });
                        }
                    }
                }
            }
        }
    }

    fn count_cli(&mut self, ok: bool) {
        *self.faults.entry(if ok { "(cli calls that succeeded)" } else { "(cli calls that failed)" }).or_default() += 1;
    }

    fn close_stop(&mut self, label: &str, to: f64) {
        if let Some(from) = self.stopped_since.remove(label) {
            self.frozen.entry(label.to_owned()).or_default().push((from, to));
        }
    }

    fn later(&mut self, secs: f64, p: Pending) {
        self.pending.push((Instant::now() + Duration::from_secs_f64(secs), p));
    }

    fn poll_cancelled(&mut self) {
        let open: Vec<&String> = self.cancel_targets.iter().filter(|j| !self.cancelled_seen.contains_key(*j)).collect();
        if open.is_empty() {
            return;
        }
        let cmds: Vec<Vec<String>> =
            open.iter().map(|j| vec!["HGET".into(), self.job_key(j), "status".into()]).collect();
        let t = now();
        let replies = self.backend.routed(&cmds, Duration::from_millis(500));
        let seen: Vec<String> = open
            .iter()
            .zip(replies)
            .filter(|(_, r)| *r == Some(Reply::Bulk(Some("CANCELLED".into()))))
            .map(|(j, _)| (*j).clone())
            .collect();
        for j in seen {
            self.cancelled_seen.insert(j, t);
        }
    }

    /// Jobs that started and have not ended, from the record file.
    fn running_jobs(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        let lines: Vec<check::Line> = text.lines().filter_map(check::Line::parse).collect();
        let mut jobs: Vec<String> =
            check::executions(&lines).into_iter().filter(|e| e.end.is_none()).map(|e| e.job).collect();
        jobs.sort();
        jobs.dedup();
        jobs
    }

    fn statuses(&self, ids: &[String]) -> Vec<Option<String>> {
        let cmds: Vec<Vec<String>> =
            ids.iter().map(|j| vec!["HGET".into(), self.job_key(j), "status".into()]).collect();
        self.backend
            .routed(&cmds, Duration::from_secs(2))
            .into_iter()
            .map(|r| if let Some(Reply::Bulk(s)) = r { s } else { None })
            .collect()
    }

    fn inject(&mut self, fault: &Fault) {
        *self.faults.entry(fault.kind()).or_default() += 1;
        let t = now();
        match fault {
            Fault::OrchKill { w, restart_after } => {
                let Some(mut o) = self.orchs[*w].take() else { return };
                // The monitor's view plus a fresh look, just before the kill.
                let mut procs = self.monitor.live_under(&o.label);
                for p in procs::tree_under(o.pid) {
                    if !procs.contains(&p) {
                        procs.push(p);
                    }
                }
                *self.faults.entry("(processes checked after a SIGKILL)").or_default() += procs.len();
                o.kill();
                self.monitor.remove_root(o.pid);
                self.close_stop(&o.label, t);
                self.frozen.entry(o.label.clone()).or_default().push((t, f64::INFINITY));
                let after = format!("SIGKILL of {} at {:+.2}s (deadline {ORPHAN_DEADLINE:?})", o.label, t - self.t0);
                self.later(ORPHAN_DEADLINE.as_secs_f64(), Pending::OrphanCheck { procs, after });
                self.later(*restart_after, Pending::OrchRestart(*w));
            }
            Fault::OrchStop { w, secs } => {
                if let Some(o) = &self.orchs[*w]
                    && !self.stopped_since.contains_key(&o.label)
                    && o.signal("STOP")
                {
                    let label = o.label.clone();
                    self.stopped_since.insert(label.clone(), t);
                    self.later(*secs, Pending::OrchCont(*w, label));
                }
            }
            Fault::RunnerKill { w, pick } | Fault::RunnerStop { w, pick, .. } => {
                let Some(o) = &self.orchs[*w] else { return };
                let live = self.monitor.live_under(&o.label);
                if live.is_empty() {
                    return;
                }
                let (pid, start) = live[(*pick % live.len() as u64) as usize];
                if let Fault::RunnerStop { secs, .. } = fault {
                    if procs::signal(pid, start, "STOP") {
                        self.stopped_runners.push((pid, start));
                        self.later(*secs, Pending::RunnerCont(pid, start));
                    }
                } else {
                    procs::signal(pid, start, "KILL");
                }
            }
            Fault::RedisRestart { node, down, hard } => {
                for i in self.targets(*node) {
                    let redis = &mut self.backend.nodes[i].redis;
                    if redis.running() {
                        redis.stop(*hard);
                        self.later(*down, Pending::RedisStart(i));
                    }
                }
            }
            Fault::Cut { node } => {
                for i in self.targets(*node) {
                    self.backend.nodes[i].proxy.cut();
                }
            }
            Fault::Blackhole { node, dir, secs } => {
                let nodes = self.targets(*node);
                for &i in &nodes {
                    self.backend.nodes[i].proxy.blackhole(*dir);
                }
                self.later(*secs, Pending::Unblackhole(nodes));
            }
            Fault::RedisSleep { node, secs } => {
                for i in self.targets(*node) {
                    let (port, secs) = (self.backend.nodes[i].redis.port, *secs);
                    // Blocks its connection for `secs`: on a thread of its own.
                    std::thread::spawn(move || {
                        let arg = format!("{secs:.2}");
                        let _ = resp1(port, &["DEBUG", "SLEEP", &arg], Duration::from_secs_f64(secs + 5.0));
                    });
                }
            }
            Fault::ClientPause { node, secs } => {
                let ms = format!("{}", (secs * 1000.0) as u64);
                for i in self.targets(*node) {
                    let port = self.backend.nodes[i].redis.port;
                    let _ = resp1(port, &["CLIENT", "PAUSE", &ms], Duration::from_secs(2));
                }
            }
            Fault::Cancel { n } => {
                // Running jobs first, then waiting ones (deferred, retrying):
                // a cancel of a finished job tests nothing.
                let mut candidates: Vec<String> = self
                    .running_jobs()
                    .into_iter()
                    .filter(|j| !self.failing.contains(j) && self.jobs.contains_key(j))
                    .collect();
                candidates.truncate(*n);
                let rest: Vec<String> = self.jobs.keys().filter(|j| !self.failing.contains(j)).cloned().collect();
                let statuses = self.statuses(&rest);
                let waiting: Vec<String> = rest
                    .into_iter()
                    .zip(statuses)
                    .filter(|(_, s)| matches!(s.as_deref(), Some("PENDING" | "RETRYING" | "ACTIVE")))
                    .map(|(j, _)| j)
                    .collect();
                let seed = self.schedule.seed as usize;
                let mut k = 0;
                while candidates.len() < *n && k < waiting.len() {
                    let j = &waiting[(seed.wrapping_mul(31).wrapping_add(k * 97)) % waiting.len()];
                    if !candidates.contains(j) {
                        candidates.push(j.clone());
                    }
                    k += 1;
                }
                for j in candidates {
                    let ok = cli(&self.env.rrq, &self.cli_config, &["job", "cancel", &j]);
                    self.count_cli(ok);
                    if !self.cancel_targets.contains(&j) {
                        self.cancel_targets.push(j);
                    }
                }
            }
            Fault::Requeue { n } | Fault::Retry { n } => {
                let failing = self.failing.clone();
                let statuses = self.statuses(&failing);
                let failed: Vec<String> = failing
                    .into_iter()
                    .zip(statuses)
                    .filter(|(_, s)| s.as_deref() == Some("FAILED"))
                    .map(|(j, _)| j)
                    .take(*n)
                    .collect();
                for j in failed {
                    let at = now();
                    let ok = if matches!(fault, Fault::Requeue { .. }) {
                        cli(&self.env.rrq, &self.cli_config, &["dlq", "requeue", "--job-id", &j, "--yes"])
                    } else {
                        cli(&self.env.rrq, &self.cli_config, &["job", "retry", &j])
                    };
                    self.count_cli(ok);
                    if ok {
                        self.resets.entry(j).or_default().push(at);
                    }
                }
            }
        }
    }

    /// The nodes a server-side fault hits.
    fn targets(&self, node: Node) -> Vec<usize> {
        node.indices(self.backend.nodes.len())
    }

    /// Ends every fault: resume the proxy and stopped processes, Redis back,
    /// killed orchestrators restarted.
    fn heal(&mut self) -> Result<()> {
        self.run_pending(true);
        for n in &self.backend.nodes {
            n.proxy.resume();
        }
        for (pid, start) in std::mem::take(&mut self.stopped_runners) {
            procs::signal(pid, start, "CONT");
        }
        let t = now();
        for w in 0..self.orchs.len() {
            if let Some(o) = &self.orchs[w] {
                let label = o.label.clone();
                if self.stopped_since.contains_key(&label) {
                    o.signal("CONT");
                    self.close_stop(&label, t);
                }
            }
        }
        for n in &mut self.backend.nodes {
            if !n.redis.running() {
                n.redis.launch()?;
            }
        }
        for n in &self.backend.nodes {
            let _ = resp1(n.redis.port, &["CLIENT", "UNPAUSE"], Duration::from_secs(5));
        }
        for w in 0..self.orchs.len() {
            if self.orchs[w].is_none() {
                let o = self.spawn(w)?;
                self.orchs[w] = Some(o);
            }
        }
        self.restart_exited();
        Ok(())
    }

    /// Restarts, as a supervisor would, orchestrators that exited by
    /// themselves (one started while Redis was down exits 4, as documented).
    /// Bounded per schedule.
    fn restart_exited(&mut self) {
        for w in 0..self.orchs.len() {
            let exited = self.orchs[w].as_mut().is_some_and(|o| o.has_exited());
            if !exited
                || self.supervisor_restarts >= MAX_SUPERVISOR_RESTARTS
                || self.started[w].elapsed() < SUPERVISOR_DELAY
            {
                continue;
            }
            self.supervisor_restarts += 1;
            self.notes.push(format!("w{w} had exited by itself; restarted it"));
            match self.spawn(w) {
                Ok(o) => self.orchs[w] = Some(o),
                Err(e) => self.notes.push(format!("cannot restart w{w}: {e:#}")),
            }
        }
    }

    /// Waits (bounded) until every acknowledged job is terminal.
    fn drain(&mut self, label: &str) {
        let ids: Vec<String> = self.jobs.keys().cloned().collect();
        let deadline = Instant::now() + DRAIN_LIMIT;
        loop {
            self.run_pending(false);
            self.poll_cancelled();
            self.restart_exited();
            let open = self
                .statuses(&ids)
                .iter()
                .filter(|s| !matches!(s.as_deref(), Some("COMPLETED" | "FAILED" | "CANCELLED")))
                .count();
            if open == 0 {
                break;
            }
            if Instant::now() > deadline {
                self.notes.push(format!("{open} jobs not terminal {DRAIN_LIMIT:?} after the heal"));
                break;
            }
            self.status(label, &format!("waiting for {open} jobs to end"));
            std::thread::sleep(Duration::from_millis(200)); // sleep-ok: polling with a deadline
        }
        // The orphan checks still due.
        let last = self.pending.iter().map(|(at, _)| *at).max();
        if let Some(at) = last {
            self.tick_until(at);
        }
    }

    fn final_jobs(&self) -> BTreeMap<String, FinalJob> {
        let ids: Vec<&String> = self.jobs.keys().collect();
        let mut cmds: Vec<Vec<String>> = Vec::new();
        for j in &ids {
            cmds.push(vec!["HMGET".into(), self.job_key(j), "status".into(), "last_error".into()]);
            cmds.push(vec!["PTTL".into(), self.backend.layout.lock(&JobId::new(j.as_str()))]);
        }
        let replies = self.backend.routed(&cmds, Duration::from_secs(10));
        let mut out = BTreeMap::new();
        for (i, j) in ids.iter().enumerate() {
            let mut f = FinalJob { lock_pttl_ms: -2, timeout_seconds: self.jobs[*j], ..FinalJob::default() };
            if let Some(Some(Reply::Array(fields))) = replies.get(2 * i) {
                let text = |k: usize| match fields.get(k) {
                    Some(Reply::Bulk(s)) => s.clone(),
                    _ => None,
                };
                f.status = text(0);
                f.last_error = text(1);
            }
            if let Some(Some(Reply::Int(ms))) = replies.get(2 * i + 1) {
                f.lock_pttl_ms = *ms;
            }
            out.insert((*j).clone(), f);
        }
        out
    }

    /// SIGTERM to every orchestrator; then no runner may be left.
    fn shutdown(&mut self) {
        for o in self.orchs.iter().flatten() {
            o.signal("TERM");
        }
        for o in self.orchs.iter_mut().flatten() {
            if o.wait_exit(Duration::from_secs(15)).is_none() {
                self.notes.push(format!("{} did not exit within 15 s of SIGTERM; killed", o.label));
                o.kill();
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let live: Vec<(u32, procs::Tracked)> = self
                .monitor
                .tracked()
                .into_iter()
                .filter(|(pid, k)| k.died.is_none() && procs::alive(*pid, k.start))
                .collect();
            if live.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                for (pid, k) in live {
                    if !self.orphans.iter().any(|o| o.pid == pid) {
                        self.orphans.push(Orphan {
                            pid,
                            cmd: k.cmd,
                            after: "the end of the run (5 s after every orchestrator exited)".into(),
                        });
                    }
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(50)); // sleep-ok: polling with a deadline
        }
    }

    fn observations(&self, jobs: BTreeMap<String, FinalJob>) -> Observations {
        let text = std::fs::read_to_string(&self.record).unwrap_or_default();
        let tracked = self.monitor.tracked();
        let mut owners: BTreeMap<u32, String> =
            tracked.iter().filter_map(|(pid, k)| k.owner.clone().map(|o| (*pid, o))).collect();
        owners.extend(self.spawned.iter().map(|(pid, label)| (*pid, label.clone())));
        Observations {
            lines: text.lines().filter_map(check::Line::parse).collect(),
            jobs,
            deaths: tracked.iter().filter_map(|(pid, k)| k.died.map(|d| (*pid, d))).collect(),
            owners,
            frozen: self.frozen.clone(),
            resets: self.resets.clone(),
            cancelled_seen: self.cancelled_seen.clone(),
            orphans: self.orphans.clone(),
        }
    }
}

impl Drop for Run<'_> {
    fn drop(&mut self) {
        // Everything dies with the schedule, also on a panic.
        for o in self.orchs.iter_mut().flatten() {
            o.kill();
        }
        self.monitor.kill_all();
    }
}
