//! What every scenario runs on: one Redis, the binaries, the reference venv,
//! a scratch directory, and the machine's load.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The Redis every run uses: `RRQ_REDIS_DSN`, or a throwaway `redis-server`.
pub(crate) struct Redis {
    pub dsn: String,
    child: Option<Child>,
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Redis {
    pub(crate) fn start() -> Result<Redis> {
        if let Ok(dsn) = std::env::var("RRQ_REDIS_DSN")
            && !dsn.trim().is_empty()
        {
            return Ok(Redis { dsn, child: None });
        }
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (apt-get install redis-server, or set RRQ_REDIS_DSN)")?;
        let r = Redis { dsn: format!("redis://127.0.0.1:{port}/0"), child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.cli(&["PING"]).map(|s| s.trim() != "PONG").unwrap_or(true) {
            if Instant::now() > deadline {
                bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(r)
    }

    /// Runs one command with `redis-cli`; returns its raw output.
    pub(crate) fn cli(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("redis-cli")
            .args(["-u", &self.dsn])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("run redis-cli (apt-get install redis-tools)")?;
        if !out.status.success() {
            bail!("redis-cli {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// CPU seconds of the throwaway server so far (`None` for an external one).
    pub(crate) fn cpu_s(&self) -> Option<f64> {
        self.child.as_ref().map(|c| super::orchestrator::cpu_seconds(c.id()))
    }

    /// Empties the benchmark's database (synchronously, so its memory is
    /// freed before the next run starts).
    pub(crate) fn flush(&self) -> Result<()> {
        self.cli(&["FLUSHDB"]).map(drop)
    }

    pub(crate) fn reset_stats(&self) -> Result<()> {
        self.cli(&["CONFIG", "RESETSTAT"]).map(drop)
    }

    /// `INFO commandstats` as (command, calls) pairs.
    pub(crate) fn command_stats(&self) -> Result<Vec<(String, u64)>> {
        let text = self.cli(&["INFO", "commandstats"])?;
        let mut out = Vec::new();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("cmdstat_") else { continue };
            let Some((name, fields)) = rest.split_once(':') else { continue };
            let calls = fields
                .split(',')
                .find_map(|f| f.strip_prefix("calls="))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            out.push((name.to_owned(), calls));
        }
        Ok(out)
    }

    pub(crate) fn version(&self) -> String {
        self.cli(&["INFO", "server"])
            .ok()
            .and_then(|t| t.lines().find_map(|l| l.strip_prefix("redis_version:").map(|v| v.trim().to_owned())))
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A base port with `count` consecutive free ports (a runner pool uses
/// `tcp_port .. tcp_port + pool_size`).
///
/// Tried first around ports the system hands out; when outgoing connections
/// hold most of the ephemeral range (tens of thousands of sockets in
/// `TIME_WAIT` after many short connections, which take its even ports),
/// below that range, where no outgoing connection lands.
pub(crate) fn free_ports(count: usize) -> Result<u16> {
    let all_free = |base: u16| (0..count as u16).all(|i| TcpListener::bind(("127.0.0.1", base + i)).is_ok());
    for _ in 0..50 {
        let base = free_port()?;
        if usize::from(base) + count >= 65_000 {
            continue;
        }
        if all_free(base) {
            return Ok(base);
        }
    }
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse::<usize>().ok())
        .unwrap_or(32_768);
    let step = count.max(1) + 1;
    if let Some(base) = (20_000..ephemeral_low.saturating_sub(count)).step_by(step).find_map(|b| {
        let base = u16::try_from(b).ok()?;
        all_free(base).then_some(base)
    }) {
        return Ok(base);
    }
    bail!("no {count} consecutive free ports found")
}

/// The workspace's target directory.
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// Paths of everything the scenarios start.
pub(crate) struct Setup {
    pub redis: Redis,
    /// RRQ's orchestrator (`rrq`, release build).
    pub rrq: PathBuf,
    /// The reference orchestrator binary from the `rrq==0.11.1` wheel
    /// (empty, like the venv's other paths, when no chosen scenario runs the
    /// reference or its Python code).
    pub reference: PathBuf,
    /// RRQ's example runner (release build): the Rust runner of both sides.
    pub rust_runner: PathBuf,
    /// The reference Python runner (`rrq-runner` in the venv).
    pub python_runner: PathBuf,
    /// The TypeScript SDK's example runner: `node .../main.js` (built with
    /// npm; empty unless `drain-node` is chosen).
    pub node_runner: Vec<String>,
    /// The venv's interpreter (reference client benchmark).
    pub python: PathBuf,
    /// Scratch directory: configurations, logs, the Python handler module.
    pub work: PathBuf,
}

/// The no-op handler module the reference Python runner serves.
const HANDLERS_PY: &str = r#"from rrq.registry import Registry
from rrq.runner_settings import PythonRunnerSettings

registry = Registry()


async def noop(request):
    return None


registry.register("noop", noop)
settings = PythonRunnerSettings(registry=registry)
"#;

impl Setup {
    /// Checks the release binaries and prepares what `scenarios` need: the
    /// reference venv for all but the RRQ-only `dashboard` and `cluster`, the TypeScript
    /// runner for `drain-node`.
    pub(crate) fn prepare(scenarios: &[&str]) -> Result<Setup> {
        let release = target_dir().join("release");
        let rrq = release.join("rrq");
        let rust_runner = release.join("rrq-example-runner");
        for bin in [&rrq, &rust_runner] {
            if !bin.exists() {
                bail!("{} is missing; run the benchmark through `cargo xtask bench`, which builds it", bin.display());
            }
        }
        let (mut reference, mut python_runner, mut python) = (PathBuf::new(), PathBuf::new(), PathBuf::new());
        if scenarios.iter().any(|s| !matches!(*s, "dashboard" | "cluster")) {
            super::progress("reference package: Python venv with rrq==0.11.1 (installed on first use)");
            let venv = rrq_test_support::python::venv();
            reference = venv.reference_orchestrator();
            if !reference.exists() {
                bail!("the reference orchestrator is missing at {}", reference.display());
            }
            (python_runner, python) = (venv.runner(), venv.python());
        }
        let work = std::env::temp_dir().join(format!("rrq-bench-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        std::fs::write(work.join("bench_handlers.py"), HANDLERS_PY)?;
        let redis = Redis::start()?;
        let node_runner =
            if scenarios.contains(&"drain-node") { rrq_test_support::node::typescript_runner() } else { Vec::new() };
        Ok(Setup { redis, rrq, reference, rust_runner, python_runner, node_runner, python, work })
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

/// The 1-, 5- and 15-minute load averages.
pub(crate) fn loadavg() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = text.split_whitespace().map(|v| v.parse().unwrap_or(f64::NAN));
    [it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN), it.next().unwrap_or(f64::NAN)]
}

/// Waits (up to ten minutes, polling every 30 s) for the 1-minute load to
/// drop to 1.0 or below, so the figures are not taken on a busy machine.
/// Returns the load when measuring starts.
pub(crate) fn wait_for_quiet_machine() -> f64 {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let load = loadavg()[0];
        if load <= 1.0 {
            return load;
        }
        if Instant::now() >= deadline {
            super::progress(&format!(
                "load still {load:.2} after ten minutes; measuring anyway (noted in the results)"
            ));
            return load;
        }
        super::progress(&format!("1-minute load is {load:.2} (> 1.0): waiting 30 s for a quieter machine"));
        std::thread::sleep(Duration::from_secs(30));
    }
}
