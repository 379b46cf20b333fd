//! One orchestrator process (RRQ's or the reference's) under a generated
//! `rrq.toml`, with its CPU time and memory read from `/proc`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::env::{Setup, free_ports};

/// Which orchestrator runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Rrq,
    Reference,
}

impl Side {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Side::Rrq => "RRQ",
            Side::Reference => "reference",
        }
    }

    /// Both sides, the first one alternating with the repetition.
    pub(crate) fn order(rep: usize) -> [Side; 2] {
        if rep.is_multiple_of(2) { [Side::Rrq, Side::Reference] } else { [Side::Reference, Side::Rrq] }
    }
}

/// Which runner serves the `noop` jobs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunnerKind {
    /// RRQ's example runner (Rust).
    Rust,
    /// The reference's Python runner from PyPI.
    Python,
    /// The example runner of RRQ's TypeScript SDK (`sdks/typescript`) on Node.
    Node,
}

/// Runner processes and requests in flight per process.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pool {
    pub size: usize,
    pub in_flight: usize,
}

/// CPU time and memory of a process at one instant.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProcSample {
    /// User plus system CPU time, all threads.
    pub cpu_s: f64,
    /// Peak resident set size (VmHWM).
    pub peak_rss_bytes: u64,
    /// CPU time of the live descendants (the runner processes).
    pub children_cpu_s: f64,
}

pub(crate) struct Orchestrator {
    child: Child,
    side: Side,
    log: PathBuf,
    tick_s: f64,
}

impl Orchestrator {
    /// Writes the run's `rrq.toml` (identical for both sides) and starts the
    /// orchestrator with logs at warn.
    pub(crate) fn start(setup: &Setup, side: Side, runner: RunnerKind, pool: Pool, tag: &str) -> Result<Orchestrator> {
        Orchestrator::start_on(setup, &setup.redis.dsn, side, runner, pool, tag)
    }

    /// As [`Orchestrator::start`], on the Redis (or cluster) at `dsn`.
    pub(crate) fn start_on(
        setup: &Setup,
        dsn: &str,
        side: Side,
        runner: RunnerKind,
        pool: Pool,
        tag: &str,
    ) -> Result<Orchestrator> {
        let port = free_ports(pool.size)?;
        let (cmd, env) = match runner {
            RunnerKind::Rust => (format!("[{:?}]", setup.rust_runner.display().to_string()), String::new()),
            RunnerKind::Python => (
                format!(
                    "[{:?}, \"--settings\", \"bench_handlers.settings\"]",
                    setup.python_runner.display().to_string()
                ),
                format!("env = {{ PYTHONPATH = {:?} }}\n", setup.work.display().to_string()),
            ),
            RunnerKind::Node => {
                let cmd: Vec<String> = setup.node_runner.iter().map(|a| format!("{a:?}")).collect();
                (format!("[{}]", cmd.join(", ")), String::new())
            }
        };
        let config = format!(
            "[rrq]\nredis_dsn = {dsn:?}\ndefault_runner_name = \"bench\"\n\n\
             [rrq.runners.bench]\ncmd = {cmd}\ntcp_port = {port}\npool_size = {size}\nmax_in_flight = {in_flight}\n{env}",
            size = pool.size,
            in_flight = pool.in_flight,
        );
        let path = setup.work.join(format!("{tag}.toml"));
        std::fs::write(&path, config)?;
        let log = setup.work.join(format!("{tag}.log"));
        let out = std::fs::File::create(&log)?;
        let program = match side {
            Side::Rrq => &setup.rrq,
            Side::Reference => &setup.reference,
        };
        let child = Command::new(program)
            .args(["worker", "run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .env("RRQ_LOG_LEVEL", "WARNING")
            .env_remove("RRQ_CONFIG")
            .env_remove("RRQ_REDIS_DSN")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        Ok(Orchestrator { child, side, log, tick_s: clock_tick_seconds() })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails with the end of the log if the process has exited.
    pub(crate) fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("the {} orchestrator exited ({status}):\n{}", self.side.label(), self.log_tail());
        }
        Ok(())
    }

    pub(crate) fn sample(&self) -> Result<ProcSample> {
        let pid = self.child.id();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).context("read /proc/<pid>/stat")?;
        // Fields after the command name (which may hold spaces) start at field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        let cpu_s = (ticks(11) + ticks(12)) as f64 * self.tick_s;
        let children_cpu_s = descendants(pid).iter().map(|p| cpu_seconds(*p)).sum();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read /proc/<pid>/status")?;
        let kb = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(ProcSample { cpu_s, peak_rss_bytes: kb("VmHWM:") * 1024, children_cpu_s })
    }

    /// SIGTERM, then SIGKILL if it is still running after 20 s.
    pub(crate) fn stop(mut self) -> Result<()> {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                super::progress(&format!(
                    "the {} orchestrator ignored SIGTERM for 20 s; killing it",
                    self.side.label()
                ));
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// CPU seconds (user + system) of one process; 0 when it is gone.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    static TICK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tick_s = *TICK.get_or_init(clock_tick_seconds);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    (ticks(11) + ticks(12)) as f64 * tick_s
}

/// Every live descendant of `pid` (through `/proc/<pid>/task/*/children`).
fn descendants(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else { continue };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for c in children.split_whitespace().filter_map(|c| c.parse::<u32>().ok()) {
                out.push(c);
                todo.push(c);
            }
        }
    }
    out
}

/// Seconds per clock tick of `/proc/<pid>/stat` (`getconf CLK_TCK`, 100 Hz
/// when it cannot be read).
fn clock_tick_seconds() -> f64 {
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse::<f64>().ok())
        .filter(|hz| *hz > 0.0)
        .unwrap_or(100.0);
    1.0 / hz
}
