//! RRQ against the reference orchestrator (`rrq==0.11.1` from PyPI), side by
//! side on one Redis: drains, idle pickup, enqueue rates, orchestrator CPU
//! and memory, a large backlog. See `docs/performance.md`.
//!
//! Usage: `rrq-bench [--quick] [--reps N] [--check] [--no-wait]
//! [--only rrq|reference] [--drain-jobs N] [--backlog-jobs N] [--cluster-jobs N] [--instructions] [SCENARIO...]` with scenarios `drain-rust`,
//! `drain-python`, `drain-1x1`, `pickup`, `pickup-python` (idle pickup with the reference's Python
//! client as the producer), `deferred` (due → started of jobs deferred by 200–800 ms), `cancel`
//! (cancel → `CANCELLED` of a running job, RRQ only), `enqueue`, `backlog`, `idle` (Redis commands/s
//! of an idle orchestrator), `retained` (Redis bytes per completed job kept for its result),
//! `dashboard` (RRQ only: the dashboard's JSON endpoints over `--backlog-jobs` queued jobs and a
//! tenth as many in the DLQ, see `dashboard.rs`), `cluster` (RRQ only: the same drain of
//! `--cluster-jobs N` jobs, default 50,000, on one node and on a three-master Redis Cluster, with
//! each master's commands and CPU per job, or with `--instructions` the instructions each executes
//! under valgrind's callgrind, see `cluster.rs`) (default: all).
//!
//! Every run starts from an empty database (`FLUSHDB`), both orchestrators
//! read the same generated `rrq.toml` with logs at warn, and the two sides
//! alternate which goes first. Figures are medians over the repetitions.

mod callgrind;
mod cluster;
mod dashboard;
mod env;
mod orchestrator;
mod report;
mod scenarios;

use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use env::{Setup, loadavg, target_dir, wait_for_quiet_machine};
use orchestrator::{Pool, RunnerKind, Side};
use report::{Figure, Target, median, percentile};
use scenarios::Ctx;

const SCENARIOS: [&str; 14] = [
    "drain-rust",
    "drain-python",
    "drain-node",
    "drain-1x1",
    "pickup",
    "pickup-python",
    "deferred",
    "cancel",
    "enqueue",
    "backlog",
    "idle",
    "retained",
    "dashboard",
    "cluster",
];

/// Running jobs the cancel scenario cancels, one at a time.
const CANCEL_JOBS: usize = 30;

/// Deferred jobs of the deferred scenario, one at a time.
const DEFERRED_JOBS: usize = 40;

/// Jobs the reference gets in the 1 × 1 drain: it takes one job per poll
/// (about ten a second), so 20,000 would take over half an hour.
const ONE_BY_ONE_REFERENCE_JOBS: usize = 200;

/// A progress line on stderr, with the time since the benchmark started.
pub(crate) fn progress(msg: &str) {
    static START: OnceLock<Instant> = OnceLock::new();
    let t = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[{:02}:{:02}] {msg}", t / 60, t % 60);
}

struct Options {
    reps: usize,
    /// Skip the wait for a quiet machine (trial runs, not measurements).
    no_wait: bool,
    /// Run one side only (profiling, trials).
    only: Option<Side>,
    check: bool,
    drain_jobs: usize,
    backlog_jobs: usize,
    /// Jobs of each drain of the `cluster` scenario.
    cluster_jobs: usize,
    /// Count the `cluster` scenario's Redis instructions under callgrind.
    instructions: bool,
    scenarios: Vec<&'static str>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        reps: 3,
        no_wait: false,
        only: None,
        check: false,
        drain_jobs: 20_000,
        backlog_jobs: 1_000_000,
        cluster_jobs: 50_000,
        instructions: false,
        scenarios: Vec::new(),
    };
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<usize> {
        v.with_context(|| format!("{what} needs a value"))?.parse().with_context(|| format!("{what} takes a number"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.reps = 1,
            "--check" => o.check = true,
            "--no-wait" => o.no_wait = true,
            "--instructions" => o.instructions = true,
            "--only" => {
                o.only = Some(match it.next().map(String::as_str) {
                    Some("rrq") => Side::Rrq,
                    Some("reference") => Side::Reference,
                    _ => bail!("--only takes rrq or reference"),
                })
            }
            "--reps" => o.reps = number(it.next(), "--reps")?.max(1),
            "--drain-jobs" => o.drain_jobs = number(it.next(), "--drain-jobs")?.max(1),
            "--backlog-jobs" => o.backlog_jobs = number(it.next(), "--backlog-jobs")?.max(1000),
            "--cluster-jobs" => o.cluster_jobs = number(it.next(), "--cluster-jobs")?.max(1),
            "all" => o.scenarios.extend(SCENARIOS),
            s => match SCENARIOS.iter().find(|k| **k == s) {
                Some(k) => o.scenarios.push(k),
                None => bail!("unknown argument {s:?}; scenarios: {}, all", SCENARIOS.join(", ")),
            },
        }
    }
    if o.scenarios.is_empty() {
        o.scenarios.extend(SCENARIOS);
    }
    if o.instructions && o.scenarios != ["cluster"] {
        bail!("--instructions counts the `cluster` scenario only: run `cargo xtask bench --instructions cluster`");
    }
    Ok(o)
}

fn figures() -> Vec<Figure> {
    let mut figures =
        vec![
            Figure::new("drain_rust", "drain 20k no-op jobs, Rust runner 4×50", "jobs/s", 0)
                .target(Target::AtLeast(20_000.0))
                .target(Target::RatioAtLeast(10.0)),
            Figure::new("drain_python", "drain 20k no-op jobs, Python runner 4×50", "jobs/s", 0)
                .target(Target::RatioAtLeast(2.0)),
            Figure::new("drain_node", "drain 20k no-op jobs, Node (TypeScript SDK) runner 4×50", "jobs/s", 0),
            Figure::new("drain_1x1", "drain, Rust runner 1×1 (RRQ 20k, ref 200 jobs)", "jobs/s", 0)
                .target(Target::RatioAtLeast(100.0)),
            Figure::new("pickup_p50", "idle pickup, enqueue → completion, p50", "ms", 2).target(Target::AtMost(2.0)),
            Figure::new("pickup_p99", "idle pickup, enqueue → completion, p99", "ms", 2).target(Target::AtMost(10.0)),
            Figure::new("pickup_py_p50", "idle pickup, Python client enqueue → completion, p50", "ms", 2)
                .target(Target::AtMost(2.0)),
            Figure::new("pickup_py_p99", "idle pickup, Python client enqueue → completion, p99", "ms", 2)
                .target(Target::AtMost(10.0)),
            Figure::new("deferred_p50", "deferred job (200–800 ms) lateness, due → started, p50", "ms", 2)
                .target(Target::AtMost(5.0)),
            Figure::new("deferred_p99", "deferred job (200–800 ms) lateness, due → started, p99", "ms", 2),
            Figure::new("cancel_p50", "cancel of a running job → CANCELLED, p50", "ms", 2)
                .reference_note("cannot cancel a running job"),
            Figure::new("cancel_p99", "cancel of a running job → CANCELLED, p99", "ms", 2)
                .target(Target::AtMost(100.0))
                .reference_note("cannot cancel a running job"),
            Figure::new("cpu_rust", "orchestrator CPU per 1,000 jobs (Rust drain)", "s", 3)
                .target(Target::AtMost(0.05)),
            Figure::new("runner_cpu_rust", "runner processes' CPU per 1,000 jobs (Rust drain)", "s", 3),
            Figure::new("redis_cpu_rust", "Redis server CPU per 1,000 jobs (Rust drain)", "s", 3),
            Figure::new("cpu_python", "orchestrator CPU per 1,000 jobs (Python drain)", "s", 3),
            Figure::new("cpu_node", "orchestrator CPU per 1,000 jobs (Node drain)", "s", 3),
            Figure::new("cpu_1x1", "orchestrator CPU per 1,000 jobs (1×1 drain)", "s", 3),
            Figure::new("rss_rust", "orchestrator peak RSS (Rust drain)", "MB", 1),
            Figure::new("commands_rust", "Redis commands per job (Rust drain)", "calls", 1),
            Figure::new("scripts_rust", "Redis script calls per job (Rust drain)", "calls", 2),
            Figure::new("enqueue_seq", "enqueue, one job per call, sequential", "jobs/s", 0),
            Figure::new("enqueue_par", "enqueue, one job per call, 64 in flight", "jobs/s", 0),
            Figure::new("enqueue_batch", "enqueue, batches of 1,000", "jobs/s", 0)
                .target(Target::AtLeast(100_000.0))
                .reference_note("no batch API"),
            Figure::new("backlog_1k_head", "first 1,000 jobs done, 1k backlog", "ms", 1),
            Figure::new("backlog_1m_head", "first 1,000 jobs done, 1M backlog", "ms", 1)
                .target(Target::AtMostFactorOf("backlog_1k_head", "1k backlog", 1.1)),
            Figure::new("backlog_1m_rss", "orchestrator peak RSS, 1M backlog", "MB", 1).target(Target::AtMost(64.0)),
            Figure::new("idle_commands", "idle orchestrator, Redis commands/s (10 s window)", "calls/s", 1)
                .target(Target::AtMost(20.0)),
            Figure::new("retained_fresh", "Redis bytes per completed job, just after completion", "bytes", 0),
            Figure::new("retained_bytes", "Redis bytes per completed job kept for its result", "bytes", 0)
                .target(Target::AtMost(1024.0)),
            Figure::new("backlog_1m_enqueue", "enqueue the 1M backlog (batches of 10,000)", "jobs/s", 0)
                .reference_note("RRQ producer"),
        ];
    figures.extend(cluster::figures());
    for e in &dashboard::ENDPOINTS {
        for (key, label) in [(e.p50, e.label50), (e.p99, e.label99)] {
            figures.push(
                Figure::new(key, label, "ms", 2)
                    .target(Target::AtMost(dashboard::TARGET_MS))
                    .reference_note("RRQ only"),
            );
        }
    }
    figures
}

fn push(figures: &mut [Figure], key: &str, side: Side, value: f64) {
    let f = figures.iter_mut().find(|f| f.key == key).expect("known figure");
    match side {
        Side::Rrq => f.rrq.push(value),
        Side::Reference => f.reference.push(value),
    }
}

/// Runs the benchmark; the exit code is non-zero only on errors, or with
/// `--check` when a target is missed.
pub(crate) fn main() -> Result<ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = parse(&args)?;
    progress(&format!(
        "RRQ vs reference rrq 0.11.1: {} ({} repetition{})",
        options.scenarios.join(", "),
        options.reps,
        if options.reps == 1 { "" } else { "s" }
    ));
    let load_at_start = if options.no_wait { loadavg()[0] } else { wait_for_quiet_machine() };
    let setup = Setup::prepare(&options.scenarios)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    progress(&format!(
        "Redis {} at {}; {cpus} CPUs; 1-minute load {load_at_start:.2}",
        setup.redis.version(),
        setup.redis.dsn
    ));
    let meta = json!({
        "command": format!("cargo xtask bench {}", args.join(" ")).trim_end(),
        "cpus": cpus,
        "cpu_model": cpu_model(),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "redis_version": setup.redis.version(),
        "reference": format!("rrq=={}", rrq_test_support::python::REFERENCE_VERSION),
        "repetitions": options.reps,
        "drain_jobs": options.drain_jobs,
        "backlog_jobs": options.backlog_jobs,
        "cluster_jobs": options.cluster_jobs,
        "instructions": options.instructions,
        "load_at_start": load_at_start,
        "unix_time": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
    });
    let runtime = tokio::runtime::Runtime::new()?;
    let mut figures = figures();
    let mut runs = Vec::new();
    let result = runtime.block_on(async {
        let ctx = Ctx::new(setup).await?;
        for scenario in &options.scenarios {
            run_scenario(&ctx, scenario, &options, &mut figures, &mut runs).await?;
            write_json(&figures, &meta, &runs)?;
        }
        anyhow::Ok(())
    });
    let path = write_json(&figures, &meta, &runs)?;
    result?;
    println!("\n{}", report::table(&figures, options.reps));
    let loads: Vec<f64> = runs.iter().filter_map(|r| r["load_1m"].as_f64()).collect();
    println!(
        "machine: {cpus} CPUs ({}); Redis {}; 1-minute load at start {load_at_start:.2}, during runs {:.2}–{:.2} (the benchmark's own processes included)",
        cpu_model(),
        meta["redis_version"].as_str().unwrap_or("?"),
        loads.iter().copied().fold(f64::INFINITY, f64::min),
        loads.iter().copied().fold(0.0, f64::max),
    );
    println!("raw figures: {}", path.display());
    if options.check && !report::all_met(&figures) {
        eprintln!("some targets were missed");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

fn write_json(figures: &[Figure], meta: &Value, runs: &[Value]) -> Result<std::path::PathBuf> {
    let path = target_dir().join("bench-results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report::json(figures, meta.clone(), runs))?)?;
    Ok(path)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("model name").and_then(|r| r.split_once(':')).map(|(_, m)| m.trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

async fn run_scenario(
    ctx: &Ctx,
    scenario: &str,
    o: &Options,
    figures: &mut [Figure],
    runs: &mut Vec<Value>,
) -> Result<()> {
    let n = o.drain_jobs;
    if scenario == "cluster" {
        if o.only == Some(Side::Reference) {
            return Ok(());
        }
        return cluster::run(&ctx.setup, o.reps, o.cluster_jobs, o.instructions, figures, runs).await;
    }
    for rep in 0..o.reps {
        for side in Side::order(rep) {
            if o.only.is_some_and(|only| only != side) {
                continue;
            }
            let load = loadavg()[0];
            let tag = format!("{scenario}-{}-{rep}", side.label().to_ascii_lowercase());
            let mut record = json!({"scenario": scenario, "side": side.label(), "rep": rep, "load_1m": load});
            let started = Instant::now();
            match scenario {
                "drain-rust" | "drain-python" | "drain-node" | "drain-1x1" => {
                    let (runner, pool, jobs, key, cpu_key) = match scenario {
                        "drain-rust" => {
                            (RunnerKind::Rust, Pool { size: 4, in_flight: 50 }, n, "drain_rust", "cpu_rust")
                        }
                        "drain-python" => {
                            (RunnerKind::Python, Pool { size: 4, in_flight: 50 }, n, "drain_python", "cpu_python")
                        }
                        "drain-node" => {
                            (RunnerKind::Node, Pool { size: 4, in_flight: 50 }, n, "drain_node", "cpu_node")
                        }
                        _ => {
                            let jobs = if side == Side::Rrq { n } else { n.min(ONE_BY_ONE_REFERENCE_JOBS) };
                            (RunnerKind::Rust, Pool { size: 1, in_flight: 1 }, jobs, "drain_1x1", "cpu_1x1")
                        }
                    };
                    progress(&format!("{scenario} #{}: {} draining {jobs} jobs", rep + 1, side.label()));
                    let d = scenarios::drain(ctx, side, runner, pool, jobs, &tag).await?;
                    progress(&format!(
                        "  {:.0} jobs/s, CPU {:.3} s/1000 jobs (runners {:.3}, Redis {:.3}), peak RSS {:.1} MB, {:.1} Redis commands/job",
                        d.rate,
                        d.cpu_per_1000,
                        d.runner_cpu_per_1000,
                        d.redis_cpu_per_1000.unwrap_or(f64::NAN),
                        d.peak_rss_mb,
                        d.commands_per_job
                    ));
                    push(figures, key, side, d.rate);
                    push(figures, cpu_key, side, d.cpu_per_1000);
                    if scenario == "drain-rust" {
                        push(figures, "runner_cpu_rust", side, d.runner_cpu_per_1000);
                        if let Some(redis) = d.redis_cpu_per_1000 {
                            push(figures, "redis_cpu_rust", side, redis);
                        }
                        push(figures, "rss_rust", side, d.peak_rss_mb);
                        push(figures, "commands_rust", side, d.commands_per_job);
                        push(figures, "scripts_rust", side, d.scripts_per_job);
                    }
                    record["jobs"] = json!(d.jobs);
                    record["rate"] = json!(d.rate);
                    record["wall_rate"] = json!(d.wall_rate);
                    record["cpu_per_1000"] = json!(d.cpu_per_1000);
                    record["runner_cpu_per_1000"] = json!(d.runner_cpu_per_1000);
                    record["redis_cpu_per_1000"] = json!(d.redis_cpu_per_1000);
                    record["peak_rss_mb"] = json!(d.peak_rss_mb);
                    record["commands_per_job"] = json!(d.commands_per_job);
                    record["scripts_per_job"] = json!(d.scripts_per_job);
                    record["commandstats"] = d.commands.iter().map(|(c, k)| (c.clone(), json!(k))).collect();
                }
                "pickup" => {
                    progress(&format!("pickup #{}: {} trickle of 200 jobs at 20/s", rep + 1, side.label()));
                    let lat = scenarios::pickup(ctx, side, 200, 20.0, &tag).await?;
                    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
                    progress(&format!("  p50 {p50:.2} ms, p99 {p99:.2} ms"));
                    push(figures, "pickup_p50", side, p50);
                    push(figures, "pickup_p99", side, p99);
                    record["p50_ms"] = json!(p50);
                    record["p99_ms"] = json!(p99);
                    record["latencies_ms"] = json!(lat);
                }
                "pickup-python" => {
                    progress(&format!(
                        "pickup-python #{}: {} trickle of 200 jobs at 20/s from the Python client",
                        rep + 1,
                        side.label()
                    ));
                    let lat = scenarios::pickup_python(ctx, side, 200, 20.0, &tag).await?;
                    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
                    progress(&format!("  p50 {p50:.2} ms, p99 {p99:.2} ms"));
                    push(figures, "pickup_py_p50", side, p50);
                    push(figures, "pickup_py_p99", side, p99);
                    record["p50_ms"] = json!(p50);
                    record["p99_ms"] = json!(p99);
                    record["latencies_ms"] = json!(lat);
                }
                "deferred" => {
                    progress(&format!(
                        "deferred #{}: {} {DEFERRED_JOBS} jobs deferred by 200–800 ms, one at a time",
                        rep + 1,
                        side.label()
                    ));
                    let late = scenarios::deferred(ctx, side, DEFERRED_JOBS, &tag).await?;
                    let (p50, p99) = (percentile(&late, 50.0), percentile(&late, 99.0));
                    progress(&format!("  lateness p50 {p50:.2} ms, p99 {p99:.2} ms"));
                    push(figures, "deferred_p50", side, p50);
                    push(figures, "deferred_p99", side, p99);
                    record["p50_ms"] = json!(p50);
                    record["p99_ms"] = json!(p99);
                    record["lateness_ms"] = json!(late);
                }
                "cancel" => {
                    if side == Side::Reference {
                        progress(&format!(
                            "cancel #{}: skipped for the reference (no cancel of a running job)",
                            rep + 1
                        ));
                        continue;
                    }
                    progress(&format!("cancel #{}: {} {CANCEL_JOBS} running jobs cancelled", rep + 1, side.label()));
                    let lat = scenarios::cancel(ctx, side, CANCEL_JOBS, &tag).await?;
                    let (p50, p99) = (percentile(&lat, 50.0), percentile(&lat, 99.0));
                    progress(&format!("  p50 {p50:.2} ms, p99 {p99:.2} ms"));
                    push(figures, "cancel_p50", side, p50);
                    push(figures, "cancel_p99", side, p99);
                    record["p50_ms"] = json!(p50);
                    record["p99_ms"] = json!(p99);
                    record["latencies_ms"] = json!(lat);
                }
                "enqueue" => match side {
                    Side::Rrq => {
                        progress(&format!(
                            "enqueue #{}: RRQ producer (5k sequential, 20k 64 in flight, 100k in batches)",
                            rep + 1
                        ));
                        let [seq, par, batch, producer_us, redis_us] =
                            scenarios::enqueue_rrq(ctx, 5_000, 20_000, 100_000).await?;
                        progress(&format!("  {seq:.0}/s sequential, {par:.0}/s 64 in flight, {batch:.0}/s batched"));
                        push(figures, "enqueue_seq", side, seq);
                        push(figures, "enqueue_par", side, par);
                        push(figures, "enqueue_batch", side, batch);
                        record["rates"] = json!({"seq": seq, "par": par, "batch": batch});
                        record["batch_cpu_us_per_job"] = json!({"producer": producer_us, "redis": redis_us});
                    }
                    Side::Reference => {
                        progress(&format!(
                            "enqueue #{}: reference Python client (5k sequential, 20k 64 in flight)",
                            rep + 1
                        ));
                        let [seq, par] = scenarios::enqueue_reference(ctx, 5_000, 20_000)?;
                        progress(&format!("  {seq:.0}/s sequential, {par:.0}/s 64 in flight"));
                        push(figures, "enqueue_seq", side, seq);
                        push(figures, "enqueue_par", side, par);
                        record["rates"] = json!({"seq": seq, "par": par});
                    }
                },
                "backlog" => {
                    for (jobs, head_key) in [(1_000, "backlog_1k_head"), (o.backlog_jobs, "backlog_1m_head")] {
                        progress(&format!("backlog #{}: {} with {jobs} jobs queued", rep + 1, side.label()));
                        let b = scenarios::backlog(ctx, side, jobs, &format!("{tag}-{jobs}")).await?;
                        progress(&format!(
                            "  first 1,000 done in {:.1} ms; peak RSS {:.1} MB",
                            b.head_s * 1000.0,
                            b.peak_rss_mb
                        ));
                        push(figures, head_key, side, b.head_s * 1000.0);
                        if jobs == o.backlog_jobs {
                            push(figures, "backlog_1m_rss", side, b.peak_rss_mb);
                            if side == Side::Rrq {
                                push(figures, "backlog_1m_enqueue", side, b.enqueue_rate);
                            }
                        }
                        record[format!("backlog_{jobs}")] = json!({
                            "head_ms": b.head_s * 1000.0, "peak_rss_mb": b.peak_rss_mb, "enqueue_rate": b.enqueue_rate
                        });
                    }
                }
                "dashboard" => {
                    if side == Side::Reference {
                        continue;
                    }
                    let sizes = dashboard::Sizes::for_backlog(o.backlog_jobs);
                    progress(&format!(
                        "dashboard #{}: {} queued + {} scheduled, {} in the DLQ; {} requests per endpoint",
                        rep + 1,
                        sizes.queued,
                        sizes.scheduled,
                        sizes.dead,
                        dashboard::REQUESTS
                    ));
                    let run = dashboard::run(ctx, sizes, &tag).await?;
                    let mut endpoints = serde_json::Map::new();
                    for (e, lat) in dashboard::ENDPOINTS.iter().zip(&run.latencies) {
                        let (p50, p99) = (percentile(lat, 50.0), percentile(lat, 99.0));
                        progress(&format!(
                            "  {:<13} p50 {p50:>7.2} ms, p99 {p99:>7.2} ms (target ≤ {} ms)",
                            e.name,
                            dashboard::TARGET_MS
                        ));
                        push(figures, e.p50, side, p50);
                        push(figures, e.p99, side, p99);
                        endpoints.insert(e.name.to_owned(), json!({"p50_ms": p50, "p99_ms": p99, "latencies_ms": lat}));
                    }
                    record["endpoints"] = Value::Object(endpoints);
                    record["details"] = run.details;
                }
                "idle" => {
                    progress(&format!("idle #{}: {} idle for 10 s", rep + 1, side.label()));
                    let rate = scenarios::idle(ctx, side, &tag).await?;
                    progress(&format!("  {rate:.1} Redis commands/s"));
                    push(figures, "idle_commands", side, rate);
                    record["commands_per_s"] = json!(rate);
                }
                "retained" => {
                    progress(&format!("retained #{}: {} 50 completed jobs", rep + 1, side.label()));
                    let (fresh, kept) = scenarios::retained_bytes(ctx, side, &tag).await?;
                    progress(&format!("  {fresh:.0} bytes/job at completion, {kept:.0} bytes/job retained"));
                    push(figures, "retained_fresh", side, fresh);
                    push(figures, "retained_bytes", side, kept);
                    record["bytes_fresh"] = json!(fresh);
                    record["bytes_retained"] = json!(kept);
                }
                other => bail!("unknown scenario {other}"),
            }
            record["seconds"] = json!(started.elapsed().as_secs_f64());
            runs.push(record);
        }
    }
    let summary: Vec<String> = figures
        .iter()
        .filter(|f| !f.rrq.is_empty())
        .filter(|f| runs.iter().any(|r| r["scenario"] == scenario) && scenario_of(f.key) == scenario)
        .map(|f| {
            format!(
                "{} {} (ref {})",
                f.key,
                median(&f.rrq).map_or("–".into(), |m| report::group(m, f.decimals)),
                median(&f.reference).map_or("–".into(), |m| report::group(m, f.decimals))
            )
        })
        .collect();
    if !summary.is_empty() {
        progress(&format!("{scenario} done: {}", summary.join(", ")));
    }
    Ok(())
}

/// The scenario that measures a figure.
fn scenario_of(key: &str) -> &'static str {
    match key {
        "drain_rust" | "cpu_rust" | "runner_cpu_rust" | "redis_cpu_rust" | "rss_rust" | "commands_rust"
        | "scripts_rust" => "drain-rust",
        "drain_python" | "cpu_python" => "drain-python",
        "drain_node" | "cpu_node" => "drain-node",
        "drain_1x1" | "cpu_1x1" => "drain-1x1",
        "pickup_p50" | "pickup_p99" => "pickup",
        "pickup_py_p50" | "pickup_py_p99" => "pickup-python",
        "deferred_p50" | "deferred_p99" => "deferred",
        "cancel_p50" | "cancel_p99" => "cancel",
        k if k.starts_with("enqueue") => "enqueue",
        "idle_commands" => "idle",
        "retained_fresh" | "retained_bytes" => "retained",
        k if k.starts_with("dashboard_") => "dashboard",
        k if k.starts_with("cluster_") => "cluster",
        _ => "backlog",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_belongs_to_a_listed_scenario() {
        for f in figures() {
            let s = scenario_of(f.key);
            assert!(SCENARIOS.contains(&s), "{} maps to {s}", f.key);
            if s == "backlog" {
                assert!(f.key.starts_with("backlog"), "{} fell through to backlog", f.key);
            }
        }
        assert_eq!(scenario_of("pickup_py_p99"), "pickup-python");
        assert_eq!(scenario_of("deferred_p50"), "deferred");
        assert_eq!(scenario_of("cancel_p99"), "cancel");
    }

    #[test]
    fn the_dashboard_scenario_owns_a_p50_and_a_p99_per_endpoint_with_the_page_target() {
        let o = parse(&["--backlog-jobs".to_owned(), "20000".to_owned(), "dashboard".to_owned()]).unwrap();
        assert_eq!((o.scenarios.as_slice(), o.backlog_jobs), (["dashboard"].as_slice(), 20_000));
        let all = figures();
        for e in &dashboard::ENDPOINTS {
            for key in [e.p50, e.p99] {
                let f = all.iter().find(|f| f.key == key).unwrap_or_else(|| panic!("no figure {key}"));
                assert_eq!(scenario_of(key), "dashboard");
                assert_eq!(f.unit, "ms");
                assert!(matches!(f.targets.as_slice(), [Target::AtMost(ms)] if *ms == 200.0), "{key}");
            }
        }
        let owned = all.iter().filter(|f| scenario_of(f.key) == "dashboard").count();
        assert_eq!(owned, 2 * dashboard::ENDPOINTS.len(), "no other figure falls to the dashboard");
        assert_eq!(scenario_of("backlog_1m_rss"), "backlog");
    }

    #[test]
    fn the_new_scenarios_parse() {
        let args: Vec<String> = ["--reps", "1", "pickup-python", "deferred", "cancel"].map(String::from).into();
        let o = parse(&args).unwrap();
        assert_eq!(o.scenarios, ["pickup-python", "deferred", "cancel"]);
        assert_eq!(o.reps, 1);
    }

    #[test]
    fn the_cluster_scenario_takes_its_job_count_and_owns_its_figures() {
        let args: Vec<String> = ["--cluster-jobs", "2000", "cluster"].map(String::from).into();
        let o = parse(&args).unwrap();
        assert_eq!((o.scenarios.as_slice(), o.cluster_jobs), (["cluster"].as_slice(), 2000));
        assert_eq!(parse(&["cluster".to_owned()]).unwrap().cluster_jobs, 50_000);
        assert!(parse(&["--instructions".to_owned(), "cluster".to_owned()]).unwrap().instructions);
        let other = parse(&["--instructions".to_owned(), "drain-rust".to_owned()]).map(|_| ()).unwrap_err();
        assert!(other.to_string().contains("cluster"), "{other}");
        assert!(parse(&["--instructions".to_owned()]).is_err(), "every scenario, not only cluster");
        assert!(parse(&["--cluster-jobs".to_owned(), "many".to_owned()]).is_err());
        let owned: Vec<&str> = figures().iter().filter(|f| scenario_of(f.key) == "cluster").map(|f| f.key).collect();
        assert_eq!(owned.len(), cluster::figures().len());
        assert!(owned.contains(&"cluster_cpu_ratio"));
    }
}
