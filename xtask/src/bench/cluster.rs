//! `cluster`: the same drain on one Redis node and on a Redis Cluster of
//! three masters, with each master's share of the work.
//!
//! Each run starts its own servers through `rrq-test-support`: a private
//! `redis-server` ([`TestRedis::private`]) or a cluster of three masters
//! without replicas ([`TestCluster::with_shape`]`(3, 0)`). Replicas are left
//! out on purpose: on a small machine they would compete for the same cores
//! and add the masters' replication traffic, which the single node does not
//! carry, so the comparison would no longer be one of the key layout and the
//! client's routing alone.
//!
//! `jobs` no-op jobs are enqueued with the Rust producer (batches of 1,000),
//! the idle masters are watched for one second, then the `rrq` worker
//! (release build, Rust runner 4 × 50, the defaults of `[rrq]`, so 64 shards
//! on the cluster) drains them. From its first claim to the moment every
//! queue shard and lease index is empty, each master's `INFO commandstats`
//! (calls and µs per command), `INFO cpu` (`used_cpu_user`, `used_cpu_sys`)
//! and `INFO stats` (socket reads and writes) are diffed; the harness's own
//! polling `ZCARD`s and `INFO`s are taken out of the counts. A job's master
//! is the one serving its shard's slot (`Layout::shard_of`).
//! `RRQ_BENCH_REDIS_CONFIG="name value"` applies a `CONFIG SET` to every
//! master of both runs first, for experiments; `RRQ_BENCH_PROFILE` (see
//! `scenarios.rs`) runs over each drain with `REDIS_PIDS` (the masters'
//! process ids, comma-separated) and `RRQ_BENCH_MODE` (`single` or
//! `cluster`) set, e.g. `perf record -g -p $REDIS_PIDS -o $RRQ_BENCH_MODE.data`.
//!
//! With `--instructions`, every server runs under valgrind's callgrind and
//! the drain is measured in instructions executed per job instead of CPU
//! seconds (see `callgrind.rs`), counted from just before the worker starts
//! to the last outcome, with the harness polling once a second: repeatable
//! where CPU seconds on a small shared machine are not, and split by
//! function. The 15 % bound is then checked on instructions; rates and CPU
//! seconds under valgrind mean nothing and are not reported.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rrq_producer::{EnqueueOptions, Producer};
use rrq_protocol::{JobId, QueueName};
use rrq_store::Store;
use rrq_store::keys::{DEFAULT_QUEUE_SHARDS, Layout, Shard};
use rrq_test_support::TestRedis;
use rrq_test_support::cluster::TestCluster;
use serde_json::{Value, json};

use super::callgrind::Callgrind;
use super::env::{Setup, loadavg};
use super::orchestrator::{Orchestrator, Pool, RunnerKind, Side};
use super::progress;
use super::report::{self, Figure, Target};
use super::scenarios::{OwnCalls, Profiler, job_id, read_times, span};

/// Masters of the cluster.
pub(crate) const MASTERS: usize = 3;

/// The bound on what cluster mode may cost per job, as a factor of
/// the single node's Redis CPU per job.
pub(crate) const MAX_CPU_RATIO: f64 = 1.15;

/// Target rates the capacity line sizes a cluster for (jobs/s).
const CAPACITY_RATES: [f64; 3] = [50_000.0, 100_000.0, 250_000.0];

/// The share of one core a master is planned to use in the capacity line,
/// leaving the rest for replication, persistence and bursts.
const CAPACITY_UTILISATION: f64 = 0.5;

/// Jobs per enqueue batch.
const ENQUEUE_BATCH: usize = 1_000;

/// `CONFIG SET` arguments applied to every master of both runs before the
/// jobs are enqueued, for experiments (e.g. `zset-max-listpack-entries 0`).
const CONFIG_ENV: &str = "RRQ_BENCH_REDIS_CONFIG";

/// How long the masters' idle CPU is measured before the worker starts.
const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Functions [`function_difference`] lists (and a third as many of the
/// largest decreases).
const FUNCTIONS_SHOWN: usize = 15;

/// How often the harness polls: for the first claim, the drain's progress,
/// and the last outcomes.
#[derive(Clone, Copy)]
struct Pace {
    first: Duration,
    drain: Duration,
    tail: Duration,
}

/// Polling for CPU seconds: the end of the drain is seen within a few ms.
const PACE: Pace =
    Pace { first: Duration::from_millis(2), drain: Duration::from_millis(50), tail: Duration::from_millis(2) };

/// Polling under callgrind, where the drain runs 30–50 times slower and
/// every `ZCARD` of the harness would be counted as the masters' work (on a
/// cluster, 64 of them per poll): a poll a second while jobs are queued.
const PACE_COUNTED: Pace =
    Pace { first: Duration::from_millis(100), drain: Duration::from_secs(1), tail: Duration::from_millis(100) };

/// Where the drain runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Single,
    Cluster,
}

impl Mode {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Mode::Single => "one node",
            Mode::Cluster => "3 masters",
        }
    }

    /// Both modes, the first alternating with the repetition.
    pub(crate) fn order(rep: usize) -> [Mode; 2] {
        if rep.is_multiple_of(2) { [Mode::Single, Mode::Cluster] } else { [Mode::Cluster, Mode::Single] }
    }
}

/// The servers of one run, stopped on drop.
enum Servers {
    Single(TestRedis),
    Cluster(TestCluster),
}

impl Servers {
    async fn start(mode: Mode) -> Result<Servers> {
        // The fixtures block and panic when a server does not come up; a
        // blocking task turns that into an error.
        tokio::task::spawn_blocking(move || match mode {
            Mode::Single => Servers::Single(TestRedis::private()),
            Mode::Cluster => Servers::Cluster(TestCluster::with_shape(MASTERS, 0)),
        })
        .await
        .map_err(|e| anyhow!("starting Redis for the {} run failed: {e}", mode.label()))
    }

    fn dsn(&self) -> String {
        match self {
            Servers::Single(r) => r.url().to_owned(),
            Servers::Cluster(c) => c.dsn(),
        }
    }

    /// The masters, with the slots each serves ("all" for the single node).
    fn masters(&self) -> Vec<(u16, String)> {
        match self {
            Servers::Single(r) => vec![(r.port(), "all".to_owned())],
            Servers::Cluster(c) => c
                .masters()
                .into_iter()
                .map(|m| {
                    let slots: Vec<String> = m.slots.iter().map(|r| format!("{}-{}", r.start(), r.end())).collect();
                    (m.port, slots.join(","))
                })
                .collect(),
        }
    }

    fn layout(&self) -> Result<Layout> {
        Ok(match self {
            Servers::Single(_) => Layout::single(),
            Servers::Cluster(_) => Layout::sharded(DEFAULT_QUEUE_SHARDS)?,
        })
    }

    /// The port of the master serving each shard, in shard order.
    fn shard_ports(&self, layout: &Layout, queue: &QueueName) -> Vec<u16> {
        match self {
            Servers::Single(r) => vec![r.port()],
            Servers::Cluster(c) => {
                let masters = c.masters();
                layout
                    .shards()
                    .map(|s| {
                        let slot = c.slot_of(&layout.queue(queue, s));
                        masters.iter().find(|m| m.serves(slot)).map_or(0, |m| m.port)
                    })
                    .collect()
            }
        }
    }
}

/// One command's line of `INFO commandstats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Stat {
    pub calls: u64,
    /// Time spent in it, in µs (a script's time includes the commands it
    /// calls, which are counted again under their own names).
    pub usec: u64,
}

/// One node's counters at one instant.
#[derive(Clone, Debug, Default)]
struct Snapshot {
    stats: BTreeMap<String, Stat>,
    user_s: f64,
    sys_s: f64,
    /// `total_reads_processed` and `total_writes_processed` (`INFO stats`):
    /// socket reads and writes, so how well commands were batched.
    reads: u64,
    writes: u64,
}

impl Snapshot {
    fn cpu_s(&self) -> f64 {
        self.user_s + self.sys_s
    }
}

/// The harness's own connection to one master, kept for the whole drain: a
/// connection per poll would leave thousands of sockets in `TIME_WAIT`
/// (and take the ports the runner pool needs).
struct Probe {
    port: u16,
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

/// A reply the probe understands: an integer or a (bulk or status) string.
#[derive(Debug, PartialEq)]
enum Answer {
    Int(i64),
    Text(String),
}

impl Probe {
    fn open(port: u16) -> Result<Probe> {
        let writer = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connect to port {port}"))?;
        writer.set_read_timeout(Some(Duration::from_secs(10)))?;
        writer.set_nodelay(true)?;
        Ok(Probe { port, reader: BufReader::new(writer.try_clone()?), writer })
    }

    /// Sends `commands` in one write and reads their answers in order.
    fn pipeline(&mut self, commands: &[Vec<&str>]) -> Result<Vec<Answer>> {
        let mut request = Vec::new();
        for args in commands {
            request.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                request.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        self.writer.write_all(&request).with_context(|| format!("write to port {}", self.port))?;
        commands.iter().map(|args| self.answer().with_context(|| format!("{args:?} on port {}", self.port))).collect()
    }

    fn answer(&mut self) -> Result<Answer> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("the connection closed");
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (kind, rest) = line.split_at_checked(1).context("an empty reply line")?;
        match kind {
            ":" => Ok(Answer::Int(rest.parse().with_context(|| format!("bad integer {rest:?}"))?)),
            "+" => Ok(Answer::Text(rest.to_owned())),
            "-" => bail!("Redis answered an error: {rest}"),
            "$" => {
                let len: usize = rest.parse().with_context(|| format!("bad bulk length {rest:?}"))?;
                let mut body = vec![0; len + 2];
                self.reader.read_exact(&mut body)?;
                body.truncate(len);
                Ok(Answer::Text(String::from_utf8_lossy(&body).into_owned()))
            }
            _ => bail!("an unexpected reply {line:?}"),
        }
    }

    fn int(&mut self, args: &[&str]) -> Result<u64> {
        match self.pipeline(&[args.to_vec()])?.pop() {
            Some(Answer::Int(n)) => Ok(u64::try_from(n).unwrap_or(0)),
            other => bail!("{args:?} on port {} answered {other:?}", self.port),
        }
    }

    /// The server's process id (`INFO server`).
    fn pid(&mut self) -> Result<u32> {
        let text = self.info("server")?;
        let pid = info_number(&text, "process_id").with_context(|| format!("no process_id from port {}", self.port))?;
        Ok(pid as u32)
    }

    fn info(&mut self, section: &str) -> Result<String> {
        match self.pipeline(&[vec!["INFO", section]])?.pop() {
            Some(Answer::Text(text)) => Ok(text),
            other => bail!("INFO {section} on port {} answered {other:?}", self.port),
        }
    }
}

/// `cmdstat_NAME:calls=N,usec=U,...` lines as NAME → (N, U).
pub(crate) fn parse_commandstats(text: &str) -> BTreeMap<String, Stat> {
    text.lines()
        .filter_map(|line| {
            let (name, fields) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |key: &str| fields.split(',').find_map(|f| f.strip_prefix(key)?.trim().parse::<u64>().ok());
            Some((name.to_owned(), Stat { calls: field("calls=")?, usec: field("usec=").unwrap_or(0) }))
        })
        .collect()
}

/// A `name:number` field of an `INFO` reply.
fn info_number(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')?.trim().parse::<f64>().ok())
}

/// `used_cpu_user` and `used_cpu_sys` of an `INFO cpu` reply, in seconds.
pub(crate) fn parse_cpu(text: &str) -> Option<(f64, f64)> {
    Some((info_number(text, "used_cpu_user")?, info_number(text, "used_cpu_sys")?))
}

fn snapshot(probe: &mut Probe) -> Result<Snapshot> {
    let cpu_text = probe.info("cpu")?;
    let (user_s, sys_s) =
        parse_cpu(&cpu_text).with_context(|| format!("no used_cpu_user/used_cpu_sys from port {}", probe.port))?;
    let stats_text = probe.info("stats")?;
    let count = |name: &str| info_number(&stats_text, name).unwrap_or(0.0) as u64;
    Ok(Snapshot {
        stats: parse_commandstats(&probe.info("commandstats")?),
        user_s,
        sys_s,
        reads: count("total_reads_processed"),
        writes: count("total_writes_processed"),
    })
}

/// One command's calls and µs per job.
pub(crate) type PerJob = (f64, f64);

/// One master's part of a drain.
#[derive(Clone, Debug)]
pub(crate) struct NodeRun {
    pub port: u16,
    pub slots: String,
    /// Jobs whose shard this master serves.
    pub jobs: usize,
    /// Keys it holds after the drain (`DBSIZE`: the completed jobs' hashes
    /// and what else is left).
    pub keys: u64,
    /// Commands over the drain, the harness's own taken out.
    pub commands: u64,
    /// Per command (the harness's own taken out).
    pub by_command: BTreeMap<String, Stat>,
    /// Redis CPU over the drain (user + system).
    pub cpu_s: f64,
    /// The system part of it (mostly socket reads and writes).
    pub cpu_sys_s: f64,
    /// Socket reads and writes over the drain.
    pub reads: u64,
    pub writes: u64,
    /// CPU an idle master used per second (measured before the worker
    /// started), in µs/s.
    pub idle_us_per_s: f64,
    /// Instructions it executed over the drain (`--instructions` only).
    pub instructions: Option<u64>,
}

/// One drain, on one node or on the cluster.
#[derive(Clone, Debug)]
pub(crate) struct Run {
    pub mode: Mode,
    pub jobs: usize,
    /// Jobs over (last completion − first start), from the job hashes.
    pub rate: f64,
    /// CPU of the `rrq` worker (without its runners) over the drain.
    pub worker_cpu_s: f64,
    pub nodes: Vec<NodeRun>,
    /// Instructions per function over the drain, every master together
    /// (`--instructions` only; empty otherwise).
    pub functions: BTreeMap<String, u64>,
}

impl Run {
    pub(crate) fn commands(&self) -> u64 {
        self.nodes.iter().map(|n| n.commands).sum()
    }

    pub(crate) fn cpu_s(&self) -> f64 {
        self.nodes.iter().map(|n| n.cpu_s).sum()
    }

    pub(crate) fn commands_per_job(&self) -> f64 {
        self.commands() as f64 / self.jobs as f64
    }

    /// Redis CPU per job, all masters together, in µs.
    pub(crate) fn cpu_us_per_job(&self) -> f64 {
        self.cpu_s() / self.jobs as f64 * 1e6
    }

    pub(crate) fn worker_cpu_us_per_job(&self) -> f64 {
        self.worker_cpu_s / self.jobs as f64 * 1e6
    }

    /// Each master's share of the Redis CPU, in %.
    pub(crate) fn cpu_shares(&self) -> Vec<f64> {
        let total = self.cpu_s();
        self.nodes.iter().map(|n| if total > 0.0 { n.cpu_s / total * 100.0 } else { f64::NAN }).collect()
    }

    /// Calls and µs per job, summed over every master, per command name.
    pub(crate) fn profile(&self) -> BTreeMap<String, PerJob> {
        let n = self.jobs as f64;
        let mut sum: BTreeMap<String, PerJob> = BTreeMap::new();
        for node in &self.nodes {
            for (c, st) in &node.by_command {
                let e = sum.entry(c.clone()).or_default();
                e.0 += st.calls as f64 / n;
                e.1 += st.usec as f64 / n;
            }
        }
        sum
    }

    fn per_job(&self, f: impl Fn(&NodeRun) -> f64) -> f64 {
        self.nodes.iter().map(f).sum::<f64>() / self.jobs as f64
    }

    /// System CPU per job (all masters), in µs.
    pub(crate) fn sys_us_per_job(&self) -> f64 {
        self.per_job(|n| n.cpu_sys_s) * 1e6
    }

    /// Socket reads and writes per job (all masters).
    pub(crate) fn io_per_job(&self) -> (f64, f64) {
        (self.per_job(|n| n.reads as f64), self.per_job(|n| n.writes as f64))
    }

    /// Instructions per job, all masters together (`--instructions` only).
    pub(crate) fn instructions_per_job(&self) -> Option<f64> {
        let total = self.nodes.iter().map(|n| n.instructions).sum::<Option<u64>>()?;
        Some(total as f64 / self.jobs as f64)
    }

    /// Each master's share of the instructions, in % (`--instructions` only).
    pub(crate) fn instruction_shares(&self) -> Option<Vec<f64>> {
        let counts = self.nodes.iter().map(|n| n.instructions).collect::<Option<Vec<u64>>>()?;
        let total: u64 = counts.iter().sum();
        Some(counts.iter().map(|c| if total > 0 { *c as f64 / total as f64 * 100.0 } else { f64::NAN }).collect())
    }

    /// Idle CPU of all masters together, in µs/s.
    pub(crate) fn idle_us_per_s(&self) -> f64 {
        self.nodes.iter().map(|n| n.idle_us_per_s).sum()
    }

    /// The per-master table: the cost is Redis CPU, or instructions when
    /// they were counted.
    pub(crate) fn table(&self) -> String {
        let n = self.jobs as f64;
        // Each master's cost over the drain, in the unit's terms.
        let (unit, costs, shares, decimals) = match self.instruction_shares() {
            Some(shares) => {
                let costs = self.nodes.iter().map(|node| node.instructions.unwrap_or(0) as f64).collect();
                ("instructions", costs, shares, 0)
            }
            None => {
                ("CPU µs", self.nodes.iter().map(|node| node.cpu_s * 1e6).collect::<Vec<f64>>(), self.cpu_shares(), 1)
            }
        };
        let mut rows = vec![[
            "master".to_owned(),
            "slots".to_owned(),
            "jobs".to_owned(),
            "keys".to_owned(),
            "commands/job".to_owned(),
            format!("{unit}/job"),
            format!("{unit}/own job"),
            format!("{} share", unit.split(' ').next().unwrap_or(unit)),
        ]];
        for ((node, share), cost) in self.nodes.iter().zip(shares).zip(&costs) {
            rows.push([
                format!("127.0.0.1:{}", node.port),
                node.slots.clone(),
                format!("{} ({:.1} %)", node.jobs, node.jobs as f64 / n * 100.0),
                node.keys.to_string(),
                format!("{:.2}", node.commands as f64 / n),
                format!("{:.decimals$}", cost / n),
                format!("{:.decimals$}", cost / (node.jobs.max(1) as f64)),
                format!("{share:.1} %"),
            ]);
        }
        if self.nodes.len() > 1 {
            let all = costs.iter().sum::<f64>() / n;
            rows.push([
                "all masters".to_owned(),
                String::new(),
                self.jobs.to_string(),
                self.nodes.iter().map(|n| n.keys).sum::<u64>().to_string(),
                format!("{:.2}", self.commands_per_job()),
                format!("{all:.decimals$}"),
                format!("{all:.decimals$}"),
                "100 %".to_owned(),
            ]);
        }
        let widths: Vec<usize> = (0..8).map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
        let mut out = String::new();
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, w))| {
                    let pad = " ".repeat(w - cell.chars().count());
                    if c < 2 { format!("{cell}{pad}") } else { format!("{pad}{cell}") }
                })
                .collect();
            out.push_str(&format!("  {}\n", cells.join("  ")));
        }
        out
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "mode": self.mode.label(),
            "jobs": self.jobs,
            "rate": self.rate,
            "worker_cpu_us_per_job": self.worker_cpu_us_per_job(),
            "commands_per_job": self.commands_per_job(),
            "redis_cpu_us_per_job": self.cpu_us_per_job(),
            "redis_instructions_per_job": self.instructions_per_job(),
            "masters": self.nodes.iter().zip(self.cpu_shares()).map(|(n, share)| json!({
                "port": n.port,
                "slots": n.slots,
                "jobs": n.jobs,
                "keys": n.keys,
                "commands": n.commands,
                "cpu_s": n.cpu_s,
                "cpu_sys_s": n.cpu_sys_s,
                "reads": n.reads,
                "writes": n.writes,
                "idle_cpu_us_per_s": n.idle_us_per_s,
                "cpu_share_pct": share,
                "commands_per_job": n.commands as f64 / self.jobs as f64,
                "cpu_us_per_job": n.cpu_s / self.jobs as f64 * 1e6,
                "cpu_us_per_own_job": n.cpu_s / n.jobs.max(1) as f64 * 1e6,
                "instructions": n.instructions,
                "commandstats": n.by_command.iter().map(|(c, st)| (c.clone(), json!({"calls": st.calls, "usec": st.usec}))).collect::<serde_json::Map<_, _>>(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Jobs per second one master core can carry at `cpu_us_per_job` µs of
/// Redis CPU per job.
pub(crate) fn jobs_per_core(cpu_us_per_job: f64) -> f64 {
    1e6 / cpu_us_per_job
}

/// Masters needed for `rate` jobs/s when each master may be busy
/// `utilisation` (0–1) of one core at `cpu_us_per_job` µs per job.
pub(crate) fn masters_for(rate: f64, cpu_us_per_job: f64, utilisation: f64) -> u64 {
    (rate * cpu_us_per_job / 1e6 / utilisation).ceil().max(1.0) as u64
}

/// Enqueues `n` no-op jobs with ids `{tag}-{index:08}`.
async fn enqueue(producer: &Producer, tag: &str, n: usize) -> Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(n);
    let started = Instant::now();
    let mut reported = Instant::now();
    for start in (0..n).step_by(ENQUEUE_BATCH) {
        let end = (start + ENQUEUE_BATCH).min(n);
        let jobs = (start..end).map(|i| {
            let options = EnqueueOptions { job_id: Some(job_id(tag, i)), ..EnqueueOptions::default() };
            ("noop".to_owned(), json!({}), options)
        });
        for r in producer.enqueue_batch(jobs).await? {
            ids.push(r?);
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            progress(&format!("  enqueued {end} of {n} ({:.0} jobs/s)", end as f64 / started.elapsed().as_secs_f64()));
        }
    }
    Ok(ids)
}

/// Sum of `ZCARD key` over `keys` (per port, one pipeline on that port's
/// probe), counting the calls per port in `own` (they are the harness's,
/// not the worker's).
fn poll(probes: &mut [Probe], own: &mut BTreeMap<u16, u64>, keys: &BTreeMap<u16, Vec<String>>) -> Result<u64> {
    let mut sum = 0;
    for probe in probes.iter_mut() {
        let Some(keys) = keys.get(&probe.port) else { continue };
        let commands: Vec<Vec<&str>> = keys.iter().map(|k| vec!["ZCARD", k.as_str()]).collect();
        *own.entry(probe.port).or_default() += commands.len() as u64;
        for answer in probe.pipeline(&commands)? {
            match answer {
                Answer::Int(n) => sum += u64::try_from(n).unwrap_or(0),
                other => bail!("ZCARD on port {} answered {other:?}", probe.port),
            }
        }
    }
    Ok(sum)
}

/// Drains `jobs` pre-enqueued no-op jobs on fresh servers of `mode`.
/// With `callgrind`, the servers run under it and count the drain's
/// instructions.
pub(crate) async fn drain(
    setup: &Setup,
    mode: Mode,
    jobs: usize,
    tag: &str,
    callgrind: Option<&Callgrind>,
) -> Result<Run> {
    progress(&format!(
        "  starting {} (private redis-server{})",
        mode.label(),
        if mode == Mode::Cluster { "s, no replicas" } else { "" }
    ));
    let servers = Servers::start(mode).await?;
    let dsn = servers.dsn();
    let layout = servers.layout()?;
    let queue = QueueName::parse("default").context("the queue name `default`")?;
    let producer = Producer::new(&dsn).await?;
    let store: Arc<dyn Store> = producer.store().clone();
    let masters = servers.masters();
    let shard_ports = servers.shard_ports(&layout, &queue);
    let port_of = |shard: Shard| shard_ports.get(usize::from(shard.index())).copied().unwrap_or(0);
    if shard_ports.contains(&0) {
        bail!("some shard of {} has no master serving its slot", mode.label());
    }

    let mut probes: Vec<Probe> = masters.iter().map(|(p, _)| Probe::open(*p)).collect::<Result<_>>()?;
    if let Some(config) = std::env::var(CONFIG_ENV).ok().filter(|c| !c.trim().is_empty()) {
        let mut args = vec!["CONFIG", "SET"];
        args.extend(config.split_whitespace());
        for probe in &mut probes {
            match probe.pipeline(&[args.clone()])?.pop() {
                Some(Answer::Text(ok)) if ok == "OK" => {}
                other => bail!("{CONFIG_ENV}: {args:?} on port {} answered {other:?}", probe.port),
            }
        }
        progress(&format!("  {CONFIG_ENV}: CONFIG SET {config} on every master"));
    }
    progress(&format!("  enqueueing {jobs} jobs (batches of {ENQUEUE_BATCH})"));
    let ids = enqueue(&producer, tag, jobs).await?;
    let mut jobs_on: BTreeMap<u16, usize> = BTreeMap::new();
    for id in &ids {
        *jobs_on.entry(port_of(layout.shard_of(id))).or_default() += 1;
    }
    // The harness's own commands per master while the worker runs.
    let mut own_zcard: BTreeMap<u16, u64> = BTreeMap::new();
    let (mut queue_keys, mut lease_keys) = (BTreeMap::<u16, Vec<String>>::new(), BTreeMap::<u16, Vec<String>>::new());
    for s in layout.shards() {
        queue_keys.entry(port_of(s)).or_default().push(layout.queue(&queue, s));
        lease_keys.entry(port_of(s)).or_default().push(layout.leases(s));
    }

    let redis_pids: Vec<u32> = probes.iter_mut().map(Probe::pid).collect::<Result<_>>()?;
    // What the masters cost when idle (a cluster's nodes ping each other).
    let idle_from: Vec<Snapshot> = probes.iter_mut().map(snapshot).collect::<Result<_>>()?;
    let idle_started = Instant::now();
    tokio::time::sleep(IDLE_WINDOW).await; // sleep-ok: the idle window is measured, not waited out
    let idle_to: Vec<Snapshot> = probes.iter_mut().map(snapshot).collect::<Result<_>>()?;
    let idle_s = idle_started.elapsed().as_secs_f64();
    let idle: Vec<f64> = idle_from.iter().zip(&idle_to).map(|(a, b)| (b.cpu_s() - a.cpu_s()) / idle_s * 1e6).collect();

    // Under callgrind, counting starts before the worker does (it takes a
    // fraction of a second per master): nothing the worker makes the masters
    // do is left out, its start-up included (script loads, subscriptions),
    // which weighs on the cluster's side.
    let pace = if let Some(callgrind) = callgrind {
        callgrind.start(&redis_pids)?;
        PACE_COUNTED
    } else {
        PACE
    };
    let mut orch =
        Orchestrator::start_on(setup, &dsn, Side::Rrq, RunnerKind::Rust, Pool { size: 4, in_flight: 50 }, tag)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut worker_before = orch.sample()?;
    while poll(&mut probes, &mut own_zcard, &queue_keys)? >= jobs as u64 {
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("{}: no job claimed within 120 s", mode.label());
        }
        worker_before = orch.sample()?;
        tokio::time::sleep(pace.first).await;
    }
    let before: Vec<Snapshot> = probes.iter_mut().map(snapshot).collect::<Result<_>>()?;
    own_zcard.clear();
    let profiler = Profiler::start(
        orch.pid(),
        &[
            ("REDIS_PIDS", redis_pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")),
            ("RRQ_BENCH_MODE", if mode == Mode::Single { "single" } else { "cluster" }.to_owned()),
        ],
    )?;
    progress(&format!("  draining on {} …", mode.label()));

    // Every queue shard empty, then every lease index: every claimed job's
    // outcome is written (a claim moves a job from the one to the other
    // atomically, and no-op jobs do not come back).
    let deadline = Instant::now() + Duration::from_secs(1800);
    let mut reported = Instant::now();
    loop {
        let left = poll(&mut probes, &mut own_zcard, &queue_keys)?;
        if left == 0 {
            break;
        }
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("{}: {left} jobs still queued after 30 minutes", mode.label());
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            reported = Instant::now();
            progress(&format!("  {} of {jobs} claimed", jobs as u64 - left));
        }
        tokio::time::sleep(pace.drain).await;
    }
    loop {
        let running = poll(&mut probes, &mut own_zcard, &lease_keys)?;
        if running == 0 {
            break;
        }
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("{}: {running} jobs still leased after 30 minutes", mode.label());
        }
        tokio::time::sleep(pace.tail).await;
    }
    let after: Vec<Snapshot> = probes.iter_mut().map(snapshot).collect::<Result<_>>()?;
    drop(profiler);
    let counts = callgrind.map(|c| c.finish(&redis_pids)).transpose()?;
    let worker_after = orch.sample()?;
    orch.stop()?;

    let mut own = OwnCalls::default();
    let times = read_times(&store, &ids, &mut own).await?;
    let (first, last) = span(&times, &ids)?;
    let mut nodes = Vec::with_capacity(masters.len());
    let mut functions = BTreeMap::new();
    for c in counts.iter().flatten() {
        for (f, n) in &c.functions {
            *functions.entry(f.clone()).or_default() += n;
        }
    }
    for (i, (((((port, slots), b), a), probe), idle)) in
        masters.iter().zip(&before).zip(&after).zip(&mut probes).zip(idle).enumerate()
    {
        let mut by_command = BTreeMap::new();
        for (c, st) in &a.stats {
            let was = b.stats.get(c).copied().unwrap_or_default();
            let delta = Stat { calls: st.calls.saturating_sub(was.calls), usec: st.usec.saturating_sub(was.usec) };
            let own = match c.as_str() {
                // The snapshot after: INFO cpu and stats are counted by
                // the INFO commandstats after them (itself not yet).
                "info" => 2,
                "zcard" => own_zcard.get(port).copied().unwrap_or(0),
                _ => 0,
            };
            let calls = delta.calls.saturating_sub(own);
            // The harness's share of the time, in proportion to its calls.
            let usec = (delta.usec * calls).checked_div(delta.calls).unwrap_or(0);
            if calls > 0 {
                by_command.insert(c.clone(), Stat { calls, usec });
            }
        }
        let keys = probe.int(&["DBSIZE"])?;
        nodes.push(NodeRun {
            port: *port,
            slots: slots.clone(),
            jobs: jobs_on.get(port).copied().unwrap_or(0),
            keys,
            commands: by_command.values().map(|st| st.calls).sum(),
            by_command,
            cpu_s: a.cpu_s() - b.cpu_s(),
            cpu_sys_s: a.sys_s - b.sys_s,
            reads: a.reads.saturating_sub(b.reads),
            writes: a.writes.saturating_sub(b.writes),
            idle_us_per_s: idle,
            instructions: counts.as_ref().and_then(|c| c.get(i)).map(|c| c.total),
        });
    }
    drop(servers);
    Ok(Run {
        mode,
        jobs,
        rate: jobs as f64 / (last - first).max(1e-6),
        worker_cpu_s: worker_after.cpu_s - worker_before.cpu_s,
        nodes,
        functions,
    })
}

/// The figures this scenario fills (RRQ's column only).
pub(crate) fn figures() -> Vec<Figure> {
    vec![
        Figure::new("cluster_rate_single", "cluster bench: drain on one node, Rust runner 4×50", "jobs/s", 0),
        Figure::new("cluster_rate", "cluster bench: the same drain on 3 masters", "jobs/s", 0),
        Figure::new("cluster_redis_cpu_single", "cluster bench: Redis CPU per job, one node", "µs", 1),
        Figure::new("cluster_redis_cpu", "cluster bench: Redis CPU per job, 3 masters together", "µs", 1),
        Figure::new("cluster_cpu_ratio", "cluster bench: Redis CPU per job, 3 masters ÷ one node", "×", 3)
            .target(Target::AtMost(MAX_CPU_RATIO)),
        Figure::new("cluster_share_min", "cluster bench: smallest master's share of Redis CPU", "%", 1),
        Figure::new("cluster_share_max", "cluster bench: largest master's share of Redis CPU", "%", 1),
        Figure::new("cluster_commands_single", "cluster bench: Redis commands per job, one node", "calls", 2),
        Figure::new("cluster_commands", "cluster bench: Redis commands per job, 3 masters together", "calls", 2),
        Figure::new("cluster_worker_cpu_single", "cluster bench: worker CPU per job, one node", "µs", 1),
        Figure::new("cluster_worker_cpu", "cluster bench: worker CPU per job, 3 masters", "µs", 1),
        Figure::new("cluster_ir_single", "cluster bench: Redis instructions per job, one node", "instr.", 0),
        Figure::new("cluster_ir", "cluster bench: Redis instructions per job, 3 masters together", "instr.", 0),
        Figure::new("cluster_ir_ratio", "cluster bench: Redis instructions per job, 3 masters ÷ one node", "×", 3)
            .target(Target::AtMost(MAX_CPU_RATIO)),
        Figure::new("cluster_ir_share_min", "cluster bench: smallest master's share of instructions", "%", 1),
        Figure::new("cluster_ir_share_max", "cluster bench: largest master's share of instructions", "%", 1),
    ]
    .into_iter()
    .map(|f| f.reference_note("RRQ only"))
    .collect()
}

/// Runs the scenario `reps` times (one node and the cluster each time,
/// alternating which goes first) and records its figures and runs; with
/// `instructions`, under callgrind (see the module's comment).
pub(crate) async fn run(
    setup: &Setup,
    reps: usize,
    jobs: usize,
    instructions: bool,
    figures: &mut [Figure],
    runs: &mut Vec<Value>,
) -> Result<()> {
    let callgrind = if instructions { Some(Callgrind::install()?) } else { None };
    for rep in 0..reps {
        let mut pair: BTreeMap<&str, Run> = BTreeMap::new();
        for mode in Mode::order(rep) {
            let load = loadavg()[0];
            let tag = format!("cluster-{}-{rep}", if mode == Mode::Single { "single" } else { "cluster" });
            progress(&format!("cluster #{}: {} draining {jobs} jobs", rep + 1, mode.label()));
            let started = Instant::now();
            let run = drain(setup, mode, jobs, &tag, callgrind.as_ref()).await?;
            println!(
                "\ncluster #{} on {}: {jobs} jobs, {:.0} jobs/s{}\n{}",
                rep + 1,
                mode.label(),
                run.rate,
                if callgrind.is_some() { " (under callgrind)" } else { "" },
                run.table()
            );
            let mut record = run.json();
            record["scenario"] = json!("cluster");
            record["side"] = json!(Side::Rrq.label());
            record["rep"] = json!(rep);
            record["load_1m"] = json!(load);
            record["seconds"] = json!(started.elapsed().as_secs_f64());
            runs.push(record);
            let suffix = if mode == Mode::Single { "_single" } else { "" };
            push(figures, &format!("cluster_commands{suffix}"), run.commands_per_job());
            if let (Some(ir), Some(shares)) = (run.instructions_per_job(), run.instruction_shares()) {
                progress(&format!("  per job: {ir:.0} Redis instructions, {:.2} commands", run.commands_per_job()));
                push(figures, &format!("cluster_ir{suffix}"), ir);
                if mode == Mode::Cluster {
                    push(figures, "cluster_ir_share_min", shares.iter().copied().fold(f64::INFINITY, f64::min));
                    push(figures, "cluster_ir_share_max", shares.iter().copied().fold(0.0, f64::max));
                }
            } else {
                progress(&cpu_line(&run));
                push(figures, &format!("cluster_rate{suffix}"), run.rate);
                push(figures, &format!("cluster_redis_cpu{suffix}"), run.cpu_us_per_job());
                push(figures, &format!("cluster_worker_cpu{suffix}"), run.worker_cpu_us_per_job());
                if mode == Mode::Cluster {
                    let shares = run.cpu_shares();
                    push(figures, "cluster_share_min", shares.iter().copied().fold(f64::INFINITY, f64::min));
                    push(figures, "cluster_share_max", shares.iter().copied().fold(0.0, f64::max));
                }
            }
            pair.insert(if mode == Mode::Single { "single" } else { "cluster" }, run);
        }
        let (Some(single), Some(cluster)) = (pair.get("single"), pair.get("cluster")) else { continue };
        if let (Some(s), Some(c), Some(shares)) =
            (single.instructions_per_job(), cluster.instructions_per_job(), cluster.instruction_shares())
        {
            let ratio = c / s;
            push(figures, "cluster_ir_ratio", ratio);
            let summary = format!(
                "cluster #{}: masters carry {}; Redis instructions per job {c:.0} on 3 masters vs {s:.0} on one node \
                 = {ratio:.3}× (at most {MAX_CPU_RATIO}× allowed: {}); commands per job {:.2} vs {:.2}",
                rep + 1,
                carried(cluster, &shares, "instructions"),
                if ratio <= MAX_CPU_RATIO { "met" } else { "MISSED" },
                cluster.commands_per_job(),
                single.commands_per_job(),
            );
            println!("{summary}");
            progress(&summary);
            println!("{}", function_difference(single, cluster));
            continue;
        }
        let ratio = cluster.cpu_us_per_job() / single.cpu_us_per_job();
        push(figures, "cluster_cpu_ratio", ratio);
        let summary = format!(
            "cluster #{}: masters carry {}; Redis CPU per job {:.1} µs on 3 masters vs {:.1} µs on one node = {ratio:.3}× \
             (at most {MAX_CPU_RATIO}× allowed: {}); commands per job {:.2} vs {:.2}; {:.0} vs {:.0} jobs/s",
            rep + 1,
            carried(cluster, &cluster.cpu_shares(), "CPU"),
            cluster.cpu_us_per_job(),
            single.cpu_us_per_job(),
            if ratio <= MAX_CPU_RATIO { "met" } else { "MISSED" },
            cluster.commands_per_job(),
            single.commands_per_job(),
            cluster.rate,
            single.rate,
        );
        println!("{summary}");
        progress(&summary);
        println!("{}", difference(single, cluster));
        let per_core = jobs_per_core(cluster.cpu_us_per_job());
        let needs: Vec<String> = CAPACITY_RATES
            .iter()
            .map(|r| {
                format!(
                    "{} jobs/s: {}",
                    report::group(*r, 0),
                    masters_for(*r, cluster.cpu_us_per_job(), CAPACITY_UTILISATION)
                )
            })
            .collect();
        let capacity = format!(
            "capacity: one master core carries {} jobs/s at {:.1} µs of Redis CPU per job; masters needed at {:.0} % of a core each: {}",
            report::group(per_core, 0),
            cluster.cpu_us_per_job(),
            CAPACITY_UTILISATION * 100.0,
            needs.join(", ")
        );
        println!("{capacity}");
        progress(&capacity);
    }
    Ok(())
}

/// One run's progress line in CPU terms, with the commands that took the
/// most time.
fn cpu_line(run: &Run) -> String {
    let mut profile: Vec<(String, (f64, f64))> = run.profile().into_iter().collect();
    profile.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    let profile: Vec<String> =
        profile.iter().take(6).map(|(c, (calls, us))| format!("{c} {calls:.2}× {us:.1} µs")).collect();
    let (reads, writes) = run.io_per_job();
    format!(
        "  {:.0} jobs/s; per job: Redis {:.1} µs CPU ({:.1} µs system), {:.2} commands, {reads:.2} socket reads, \
         {writes:.2} writes; worker {:.1} µs; idle Redis {:.0} µs/s; time in commands per job: {}",
        run.rate,
        run.cpu_us_per_job(),
        run.sys_us_per_job(),
        run.commands_per_job(),
        run.worker_cpu_us_per_job(),
        run.idle_us_per_s(),
        profile.join(", "),
    )
}

/// "33.1 % CPU / 33.4 % jobs, …": each master's share of the cost beside
/// its share of the jobs.
fn carried(run: &Run, shares: &[f64], what: &str) -> String {
    run.nodes
        .iter()
        .zip(shares)
        .map(|(n, s)| format!("{s:.1} % {what} / {:.1} % jobs", n.jobs as f64 / run.jobs as f64 * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Functions whose instructions per job differ most between the two runs
/// (every master of the cluster together), largest increases first.
pub(crate) fn function_difference(single: &Run, cluster: &Run) -> String {
    let (ns, nc) = (single.jobs as f64, cluster.jobs as f64);
    let mut rows: Vec<(&String, f64, f64)> = single
        .functions
        .keys()
        .chain(cluster.functions.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|f| {
            let per = |run: &Run, n: f64| run.functions.get(f).copied().unwrap_or(0) as f64 / n;
            (f, per(single, ns), per(cluster, nc))
        })
        .collect();
    rows.sort_by(|x, y| (y.2 - y.1).total_cmp(&(x.2 - x.1)));
    let mut out = String::from(
        "  functions whose instructions per job differ most (one node → 3 masters, each function's own):\n",
    );
    let shown = FUNCTIONS_SHOWN.min(rows.len());
    let tail = rows.len().saturating_sub(FUNCTIONS_SHOWN / 3).max(shown);
    for (f, a, b) in rows[..shown].iter().chain(&rows[tail..]) {
        out.push_str(&format!("    {f:<32} {a:>9.0} → {b:>9.0} ({:+.0})\n", b - a));
    }
    out
}

/// Where the cluster's extra cost per job goes: system CPU, socket reads
/// and writes, and each command whose calls or time per job differ.
pub(crate) fn difference(single: &Run, cluster: &Run) -> String {
    let (sr, sw) = single.io_per_job();
    let (cr, cw) = cluster.io_per_job();
    let mut out = format!(
        "  per job, one node → 3 masters: Redis CPU {:.1} → {:.1} µs (user {:.1} → {:.1}, system {:.1} → {:.1}); \
         socket reads {sr:.3} → {cr:.3}, writes {sw:.3} → {cw:.3}; idle Redis CPU {:.0} → {:.0} µs/s\n",
        single.cpu_us_per_job(),
        cluster.cpu_us_per_job(),
        single.cpu_us_per_job() - single.sys_us_per_job(),
        cluster.cpu_us_per_job() - cluster.sys_us_per_job(),
        single.sys_us_per_job(),
        cluster.sys_us_per_job(),
        single.idle_us_per_s(),
        cluster.idle_us_per_s(),
    );
    let (a, b) = (single.profile(), cluster.profile());
    let mut rows: Vec<(String, PerJob, PerJob)> = a
        .keys()
        .chain(b.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|c| (c.clone(), a.get(c).copied().unwrap_or_default(), b.get(c).copied().unwrap_or_default()))
        .filter(|(_, x, y)| (y.0 - x.0).abs() >= 0.005 || (y.1 - x.1).abs() >= 0.05)
        .collect();
    rows.sort_by(|x, y| (y.2.1 - y.1.1).total_cmp(&(x.2.1 - x.1.1)));
    out.push_str("  commands whose calls or time per job differ (calls/job, µs/job in the command; a script's time includes its commands):\n");
    for (c, x, y) in rows {
        out.push_str(&format!(
            "    {c:<16} calls {:>7.3} → {:>7.3}   µs {:>6.2} → {:>6.2} ({:+.2})\n",
            x.0,
            y.0,
            x.1,
            y.1,
            y.1 - x.1
        ));
    }
    out
}

fn push(figures: &mut [Figure], key: &str, value: f64) {
    super::push(figures, key, Side::Rrq, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_replies_parse() {
        let stats = "# Commandstats\r\ncmdstat_zrange:calls=640,usec=900,usec_per_call=1.41,rejected_calls=0,failed_calls=0\r\n\
                     cmdstat_evalsha:calls=12,usec=30,usec_per_call=2.50,rejected_calls=0,failed_calls=0\r\n";
        let calls = parse_commandstats(stats);
        assert_eq!(calls.get("zrange"), Some(&Stat { calls: 640, usec: 900 }));
        assert_eq!(calls.get("evalsha"), Some(&Stat { calls: 12, usec: 30 }));
        assert_eq!(calls.len(), 2);
        let cpu = "# CPU\r\nused_cpu_sys:1.250000\r\nused_cpu_user:2.500000\r\nused_cpu_sys_children:9.0\r\n";
        assert_eq!(parse_cpu(cpu), Some((2.5, 1.25)));
        assert_eq!(parse_cpu("# CPU\r\nused_cpu_sys:1.0\r\n"), None);
    }

    #[test]
    fn the_capacity_model_rounds_masters_up() {
        // 25 µs per job: 40,000 jobs/s per fully busy core.
        assert_eq!(jobs_per_core(25.0), 40_000.0);
        // 100,000 jobs/s at 25 µs with masters kept at half a core: 5.
        assert_eq!(masters_for(100_000.0, 25.0, 0.5), 5);
        assert_eq!(masters_for(100_001.0, 25.0, 0.5), 6);
        assert_eq!(masters_for(1.0, 25.0, 0.5), 1);
    }

    #[test]
    fn a_run_adds_up_its_masters() {
        let node = |port, jobs, commands, cpu_s| NodeRun {
            port,
            slots: String::new(),
            jobs,
            keys: jobs as u64,
            commands,
            by_command: BTreeMap::from([
                ("evalsha".to_owned(), Stat { calls: commands / 2, usec: commands }),
                ("zrange".to_owned(), Stat { calls: commands / 2, usec: commands / 4 }),
            ]),
            cpu_s,
            cpu_sys_s: cpu_s / 2.0,
            reads: commands / 10,
            writes: commands / 10,
            idle_us_per_s: 100.0,
            instructions: None,
        };
        let run = Run {
            mode: Mode::Cluster,
            jobs: 1000,
            rate: 1.0,
            worker_cpu_s: 0.02,
            nodes: vec![node(1, 300, 4000, 0.010), node(2, 700, 6000, 0.030)],
            functions: BTreeMap::new(),
        };
        assert_eq!(run.commands_per_job(), 10.0);
        assert!((run.cpu_us_per_job() - 40.0).abs() < 1e-9);
        let shares = run.cpu_shares();
        assert!((shares[0] - 25.0).abs() < 1e-9 && (shares[1] - 75.0).abs() < 1e-9, "{shares:?}");
        let profile = run.profile();
        assert_eq!(profile.get("evalsha"), Some(&(5.0, 10.0)));
        assert_eq!(profile.get("zrange"), Some(&(5.0, 2.5)));
        assert!((run.sys_us_per_job() - 20.0).abs() < 1e-9);
        assert_eq!(run.io_per_job(), (1.0, 1.0));
        assert_eq!(run.idle_us_per_s(), 200.0);
        assert!(run.table().contains("all masters"));
        // The single node: half the zrange calls, and the difference names them.
        let mut single = run.clone();
        single.nodes[0].by_command.get_mut("zrange").unwrap().calls = 0;
        let diff = difference(&single, &run);
        assert!(diff.contains("zrange"), "{diff}");
        assert!(!diff.contains("evalsha"), "{diff}");
        assert_eq!(run.instructions_per_job(), None, "no instructions without callgrind");
        assert!(run.table().contains("CPU µs/job"));
    }

    #[test]
    fn counted_instructions_make_the_table_shares_and_function_difference() {
        let node = |port, jobs, instructions| NodeRun {
            port,
            slots: String::new(),
            jobs,
            keys: 0,
            commands: 0,
            by_command: BTreeMap::new(),
            cpu_s: 1.0,
            cpu_sys_s: 0.0,
            reads: 0,
            writes: 0,
            idle_us_per_s: 0.0,
            instructions: Some(instructions),
        };
        let cluster = Run {
            mode: Mode::Cluster,
            jobs: 100,
            rate: 1.0,
            worker_cpu_s: 0.0,
            nodes: vec![node(1, 40, 12_000_000), node(2, 60, 18_000_000)],
            functions: BTreeMap::from([("getNodeByQuery".to_owned(), 600_000), ("dictFind".to_owned(), 900_000)]),
        };
        let single = Run {
            mode: Mode::Single,
            nodes: vec![node(1, 100, 27_000_000)],
            functions: BTreeMap::from([("dictFind".to_owned(), 1_000_000)]),
            ..cluster.clone()
        };
        assert_eq!(cluster.instructions_per_job(), Some(300_000.0));
        assert_eq!(single.instructions_per_job(), Some(270_000.0));
        assert_eq!(cluster.instruction_shares(), Some(vec![40.0, 60.0]));
        let table = cluster.table();
        assert!(table.contains("instructions/job") && table.contains("300000"), "{table}");
        let diff = function_difference(&single, &cluster);
        let lines: Vec<&str> = diff.lines().skip(1).collect();
        assert!(lines[0].contains("getNodeByQuery") && lines[0].contains("+6000"), "{diff}");
        assert!(lines.last().unwrap().contains("dictFind") && diff.contains("(-1000)"), "{diff}");
        // One master without a count: no total, no shares.
        let mut partial = cluster.clone();
        partial.nodes[1].instructions = None;
        assert_eq!(partial.instructions_per_job(), None);
        assert_eq!(partial.instruction_shares(), None);
    }
}
