//! The measurements. Each function runs one side once and returns raw
//! numbers; `mod.rs` repeats, alternates and aggregates them.
//!
//! Jobs get ids `{tag}-{index:08}`: jobs enqueued in one batch share a score
//! (their enqueue millisecond) and Redis orders equal scores by member, so
//! these ids make claim order equal enqueue order. The last index is then
//! the last job claimed, a cheap probe for "everything finished".

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rrq_producer::{EnqueueOptions, JobId, Producer};
use rrq_protocol::QueueName;
use rrq_store::{Store, parse_timestamp};
use serde_json::json;

use super::env::Setup;
use super::orchestrator::{Orchestrator, Pool, ProcSample, RunnerKind, Side};
use super::progress;

/// Ids per `job_fields_batch` script call (the store's chunk).
const READ_CHUNK: usize = 500;

pub(crate) struct Ctx {
    pub setup: Setup,
    pub producer: Producer,
    pub store: Arc<dyn Store>,
    pub queue: QueueName,
}

impl Ctx {
    pub(crate) async fn new(setup: Setup) -> Result<Ctx> {
        let producer = Producer::new(&setup.redis.dsn).await?;
        let store = producer.store().clone();
        let queue = QueueName::parse("default").expect("a valid queue name");
        Ok(Ctx { setup, producer, store, queue })
    }
}

/// Redis commands the harness itself sends while an orchestrator runs, so
/// they can be taken out of `INFO commandstats`.
#[derive(Default)]
pub(crate) struct OwnCalls {
    scripts: u64,
    commands: u64,
}

impl OwnCalls {
    fn read(&mut self, ids: usize) {
        let scripts = ids.div_ceil(READ_CHUNK) as u64;
        self.scripts += scripts;
        // Each script runs TYPE and HGETALL per key.
        self.commands += scripts + 2 * ids as u64;
    }
}

/// What the hash of a job says about its run (epoch seconds).
#[derive(Clone, Debug, Default)]
pub(crate) struct Times {
    status: String,
    enqueue: Option<f64>,
    /// When it was (last) due: `next_scheduled_run_time`.
    scheduled: Option<f64>,
    start: Option<f64>,
    completion: Option<f64>,
}

fn epoch(v: Option<&String>) -> Option<f64> {
    v.and_then(|s| parse_timestamp(s)).map(|t| t.timestamp_micros() as f64 / 1e6)
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "COMPLETED" | "FAILED" | "CANCELLED")
}

pub(crate) async fn read_times(store: &Arc<dyn Store>, ids: &[JobId], own: &mut OwnCalls) -> Result<Vec<Times>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(20 * READ_CHUNK) {
        own.read(chunk.len());
        for fields in store.job_fields_batch(chunk).await? {
            let Some(f) = fields else {
                out.push(Times::default());
                continue;
            };
            out.push(Times {
                status: f.get("status").cloned().unwrap_or_default().to_ascii_uppercase(),
                enqueue: epoch(f.get("enqueue_time")),
                scheduled: epoch(f.get("next_scheduled_run_time")),
                start: epoch(f.get("start_time")),
                completion: epoch(f.get("completion_time")),
            });
        }
    }
    Ok(out)
}

pub(crate) fn job_id(tag: &str, i: usize) -> String {
    format!("{tag}-{i:08}")
}

/// Enqueues `n` no-op jobs in batches; returns their ids in order.
pub(crate) async fn enqueue_noops(producer: &Producer, tag: &str, n: usize, batch: usize) -> Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(n);
    let started = Instant::now();
    for start in (0..n).step_by(batch) {
        let end = (start + batch).min(n);
        let jobs = (start..end).map(|i| {
            let options = EnqueueOptions { job_id: Some(job_id(tag, i)), ..EnqueueOptions::default() };
            ("noop".to_owned(), json!({}), options)
        });
        for r in producer.enqueue_batch(jobs).await? {
            ids.push(r?);
        }
        if n >= 200_000 && end.is_multiple_of(100_000) {
            progress(&format!("  enqueued {end} of {n} ({:.0} jobs/s)", end as f64 / started.elapsed().as_secs_f64()));
        }
    }
    Ok(ids)
}

/// Waits until the job with the highest index in `ids` (claimed last) is
/// finished, polling its hash.
async fn wait_last(
    store: &Arc<dyn Store>,
    ids: &[JobId],
    orch: &mut Orchestrator,
    limit: Duration,
    own: &mut OwnCalls,
) -> Result<()> {
    let Some(last) = ids.last() else { return Ok(()) };
    let deadline = Instant::now() + limit;
    loop {
        let t = read_times(store, std::slice::from_ref(last), own).await?;
        if t.first().is_some_and(|t| is_terminal(&t.status)) {
            return Ok(());
        }
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("job {last} did not finish within {}s", limit.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until every job of `ids` is finished; returns whether some had to
/// be waited for (the caller's samples were then taken too early).
async fn wait_all(
    store: &Arc<dyn Store>,
    ids: &[JobId],
    orch: &mut Orchestrator,
    limit: Duration,
    own: &mut OwnCalls,
) -> Result<bool> {
    let deadline = Instant::now() + limit;
    let mut pending: Vec<JobId> = ids.to_vec();
    let mut waited = false;
    loop {
        let times = read_times(store, &pending, own).await?;
        pending = pending.into_iter().zip(times).filter(|(_, t)| !is_terminal(&t.status)).map(|(id, _)| id).collect();
        if pending.is_empty() {
            return Ok(waited);
        }
        waited = true;
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("{} jobs did not finish within {}s (first: {})", pending.len(), limit.as_secs(), pending[0]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks every job completed; returns the first start and last completion.
pub(crate) fn span(times: &[Times], ids: &[JobId]) -> Result<(f64, f64)> {
    let mut first = f64::INFINITY;
    let mut last = f64::NEG_INFINITY;
    for (t, id) in times.iter().zip(ids) {
        if t.status != "COMPLETED" {
            bail!("job {id} ended as {:?}, not COMPLETED", t.status);
        }
        let (Some(s), Some(c)) = (t.start, t.completion) else {
            bail!("job {id} has no start_time or completion_time");
        };
        first = first.min(s);
        last = last.max(c);
    }
    Ok((first, last))
}

/// One drain run.
#[derive(Clone, Debug)]
pub(crate) struct Drain {
    pub jobs: usize,
    /// Jobs over (last completion − first start), from the job hashes.
    pub rate: f64,
    /// Jobs over the harness's own wall clock (first claim seen → last job seen finished).
    pub wall_rate: f64,
    pub cpu_per_1000: f64,
    /// CPU of the runner processes per 1,000 jobs.
    pub runner_cpu_per_1000: f64,
    /// CPU of the Redis server per 1,000 jobs (throwaway server only).
    pub redis_cpu_per_1000: Option<f64>,
    pub peak_rss_mb: f64,
    pub commands_per_job: f64,
    pub scripts_per_job: f64,
    pub commands: Vec<(String, u64)>,
}

/// Drains `jobs` pre-enqueued no-op jobs.
pub(crate) async fn drain(
    ctx: &Ctx,
    side: Side,
    runner: RunnerKind,
    pool: Pool,
    jobs: usize,
    tag: &str,
) -> Result<Drain> {
    ctx.setup.redis.flush()?;
    let ids = enqueue_noops(&ctx.producer, tag, jobs, 1000).await?;
    let mut own = OwnCalls::default();
    ctx.setup.redis.reset_stats()?;
    let mut orch = Orchestrator::start(&ctx.setup, side, runner, pool, tag)?;

    // The first claim: the CPU spent before it (start-up) is not counted.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut before = orch.sample()?;
    loop {
        let len = ctx.store.queue_len(&ctx.queue).await?;
        own.commands += 1;
        if len < jobs as u64 {
            break;
        }
        orch.check_alive()?;
        if Instant::now() > deadline {
            bail!("{}: no job claimed within 120 s", side.label());
        }
        before = orch.sample()?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let redis_before = ctx.setup.redis.cpu_s();
    let first_seen = Instant::now();
    let profiler = Profiler::start(orch.pid(), &[])?;
    let limit = Duration::from_secs(1800);
    wait_last(&ctx.store, &ids, &mut orch, limit, &mut own).await?;
    drop(profiler);
    let mut wall = first_seen.elapsed();
    let mut after = orch.sample()?;
    let redis_after = ctx.setup.redis.cpu_s();
    let stats = ctx.setup.redis.command_stats()?;
    let own_at_stats = (own.scripts, own.commands);
    if wait_all(&ctx.store, &ids, &mut orch, limit, &mut own).await? {
        wall = first_seen.elapsed();
        after = orch.sample()?;
    }
    orch.stop()?;

    let times = read_times(&ctx.store, &ids, &mut own).await?;
    let (first, last) = span(&times, &ids)?;
    let total: u64 = stats.iter().filter(|(c, _)| c != "info" && c != "config").map(|(_, n)| n).sum();
    let scripts: u64 =
        stats.iter().filter(|(c, _)| c.starts_with("eval") || c.starts_with("fcall")).map(|(_, n)| n).sum();
    let n = jobs as f64;
    Ok(Drain {
        jobs,
        rate: n / (last - first).max(1e-6),
        wall_rate: n / wall.as_secs_f64().max(1e-6),
        cpu_per_1000: (after.cpu_s - before.cpu_s) / n * 1000.0,
        runner_cpu_per_1000: (after.children_cpu_s - before.children_cpu_s) / n * 1000.0,
        redis_cpu_per_1000: redis_before.zip(redis_after).map(|(b, a)| (a - b) / n * 1000.0),
        peak_rss_mb: mb(after),
        commands_per_job: total.saturating_sub(own_at_stats.1) as f64 / n,
        scripts_per_job: scripts.saturating_sub(own_at_stats.0) as f64 / n,
        commands: stats,
    })
}

/// `RRQ_BENCH_PROFILE`: a shell command started (with `ORCHESTRATOR_PID`
/// set, and what else the scenario names in `env`) when a drain's first
/// claim is seen, and interrupted with SIGINT when the last job finishes;
/// e.g. `perf record -g -p $ORCHESTRATOR_PID -o rrq.data`.
pub(crate) struct Profiler(Option<std::process::Child>);

impl Profiler {
    pub(crate) fn start(pid: u32, env: &[(&str, String)]) -> Result<Profiler> {
        let Some(cmd) = std::env::var("RRQ_BENCH_PROFILE").ok().filter(|c| !c.trim().is_empty()) else {
            return Ok(Profiler(None));
        };
        let child = std::process::Command::new("sh")
            .args(["-c", &format!("exec {cmd}")])
            .env("ORCHESTRATOR_PID", pid.to_string())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .spawn()?;
        Ok(Profiler(Some(child)))
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }
}

fn mb(s: ProcSample) -> f64 {
    s.peak_rss_bytes as f64 / (1024.0 * 1024.0)
}

/// Idle pickup: enqueue → completion of a trickle of single jobs, in ms.
pub(crate) async fn pickup(ctx: &Ctx, side: Side, jobs: usize, per_second: f64, tag: &str) -> Result<Vec<f64>> {
    ctx.setup.redis.flush()?;
    let mut own = OwnCalls::default();
    let pool = Pool { size: 4, in_flight: 50 };
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, pool, tag)?;
    // Warm-up: the orchestrator is up and its runners answer.
    for i in 0..5 {
        let options = EnqueueOptions { job_id: Some(format!("{tag}-warm-{i}")), ..EnqueueOptions::default() };
        let id = ctx.producer.enqueue("noop", json!({}), options).await?;
        let done = ctx.producer.wait_for_completion(&id, Duration::from_secs(60)).await?;
        orch.check_alive()?;
        if done.is_none() {
            bail!("{}: warm-up job {id} did not finish within 60 s", side.label());
        }
    }
    let mut ids = Vec::with_capacity(jobs);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_second));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..jobs {
        tick.tick().await;
        let options = EnqueueOptions { job_id: Some(job_id(tag, i)), ..EnqueueOptions::default() };
        ids.push(ctx.producer.enqueue("noop", json!({}), options).await?);
    }
    wait_all(&ctx.store, &ids, &mut orch, Duration::from_secs(120), &mut own).await?;
    orch.stop()?;
    let times = read_times(&ctx.store, &ids, &mut own).await?;
    let mut latencies = Vec::with_capacity(jobs);
    for (t, id) in times.iter().zip(&ids) {
        let (Some(e), Some(c)) = (t.enqueue, t.completion) else {
            bail!("job {id} has no enqueue_time or completion_time");
        };
        latencies.push((c - e) * 1000.0);
    }
    Ok(latencies)
}

/// Enqueue rates of RRQ's producer (jobs/s): sequential single calls, 64
/// single calls in flight, batches of 1,000.
pub(crate) async fn enqueue_rrq(ctx: &Ctx, single: usize, parallel: usize, batch: usize) -> Result<[f64; 5]> {
    ctx.setup.redis.flush()?;
    let producer = &ctx.producer;
    let t = Instant::now();
    for _ in 0..single {
        producer.enqueue("noop", json!({"n": 1}), EnqueueOptions::queue("bench-seq")).await?;
    }
    let seq = single as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let p = producer.clone();
        tasks.spawn(async move {
            for _ in (w..parallel).step_by(64) {
                p.enqueue("noop", json!({"n": 1}), EnqueueOptions::queue("bench-par")).await?;
            }
            Ok::<_, rrq_producer::ProducerError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let par = parallel as f64 / t.elapsed().as_secs_f64();

    let t = Instant::now();
    let (redis_before, own_before) = (ctx.setup.redis.cpu_s(), super::orchestrator::cpu_seconds(std::process::id()));
    for _ in 0..batch / 1000 {
        let jobs = (0..1000).map(|_| ("noop".to_owned(), json!({"n": 1}), EnqueueOptions::queue("bench-batch")));
        for r in producer.enqueue_batch(jobs).await? {
            r?;
        }
    }
    let batched = batch as f64 / t.elapsed().as_secs_f64();
    let own = super::orchestrator::cpu_seconds(std::process::id()) - own_before;
    let redis = ctx.setup.redis.cpu_s().zip(redis_before).map_or(f64::NAN, |(a, b)| a - b);
    progress(&format!(
        "  batches: producer CPU {:.1} µs/job, Redis CPU {:.1} µs/job",
        own / batch as f64 * 1e6,
        redis / batch as f64 * 1e6
    ));
    ctx.setup.redis.flush()?;
    Ok([seq, par, batched, own / batch as f64 * 1e6, redis / batch as f64 * 1e6])
}

/// The reference's Python client (`RRQClient.enqueue`, which calls the
/// producer library shipped in the wheel): sequential, and 64 in flight. It
/// has no batch call.
const CLIENT_BENCH_PY: &str = r#"
import asyncio, json, os, time
from rrq.client import RRQClient

async def main():
    client = RRQClient(config={"redis_dsn": os.environ["BENCH_DSN"]})
    single, parallel = int(os.environ["BENCH_SINGLE"]), int(os.environ["BENCH_PARALLEL"])
    t = time.perf_counter()
    for _ in range(single):
        await client.enqueue("noop", {"queue_name": "bench-seq", "params": {"n": 1}})
    seq = single / (time.perf_counter() - t)

    async def lane(k):
        for _ in range(k, parallel, 64):
            await client.enqueue("noop", {"queue_name": "bench-par", "params": {"n": 1}})

    t = time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(64)))
    par = parallel / (time.perf_counter() - t)
    await client.close()
    print(json.dumps({"seq": seq, "par": par}))

asyncio.run(main())
"#;

pub(crate) fn enqueue_reference(ctx: &Ctx, single: usize, parallel: usize) -> Result<[f64; 2]> {
    ctx.setup.redis.flush()?;
    let out = std::process::Command::new(&ctx.setup.python)
        .arg("-c")
        .arg(CLIENT_BENCH_PY)
        .env("BENCH_DSN", &ctx.setup.redis.dsn)
        .env("BENCH_SINGLE", single.to_string())
        .env("BENCH_PARALLEL", parallel.to_string())
        .output()?;
    if !out.status.success() {
        bail!("reference client benchmark failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ctx.setup.redis.flush()?;
    let rate = |k: &str| v[k].as_f64().ok_or_else(|| anyhow::anyhow!("no {k} in {v}"));
    Ok([rate("seq")?, rate("par")?])
}

/// One backlog run.
#[derive(Clone, Debug)]
pub(crate) struct Backlog {
    /// Seconds from the first claim to the completion of the first 1,000 jobs.
    pub head_s: f64,
    /// Peak RSS of the orchestrator after the first 10,000 jobs (or all).
    pub peak_rss_mb: f64,
    /// Rate at which the backlog was enqueued (batches of 10,000).
    pub enqueue_rate: f64,
}

/// `jobs` queued, then the time the first 1,000 take to complete.
pub(crate) async fn backlog(ctx: &Ctx, side: Side, jobs: usize, tag: &str) -> Result<Backlog> {
    ctx.setup.redis.flush()?;
    let t = Instant::now();
    let ids = enqueue_noops(&ctx.producer, tag, jobs, 10_000).await?;
    let enqueue_rate = jobs as f64 / t.elapsed().as_secs_f64();
    let mut own = OwnCalls::default();
    let pool = Pool { size: 4, in_flight: 50 };
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, pool, tag)?;
    let head = &ids[..jobs.min(1000)];
    let limit = Duration::from_secs(600);
    wait_last(&ctx.store, head, &mut orch, limit, &mut own).await?;
    wait_all(&ctx.store, head, &mut orch, limit, &mut own).await?;
    let more = &ids[..jobs.min(10_000)];
    wait_last(&ctx.store, more, &mut orch, limit, &mut own).await?;
    let sample = orch.sample()?;
    orch.stop()?;
    let times = read_times(&ctx.store, head, &mut own).await?;
    let (first, last) = span(&times, head)?;
    // Free the backlog now rather than at the next run's start.
    ctx.setup.redis.flush()?;
    Ok(Backlog { head_s: last - first, peak_rss_mb: mb(sample), enqueue_rate })
}

/// Warm-up shared by the idle scenarios: `n` no-op jobs, one at a time, so
/// the orchestrator is up, subscribed and its runners answer.
async fn warm_up(ctx: &Ctx, orch: &mut Orchestrator, side: Side, tag: &str, n: usize) -> Result<Vec<JobId>> {
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let options = EnqueueOptions { job_id: Some(job_id(tag, i)), ..EnqueueOptions::default() };
        let id = ctx.producer.enqueue("noop", json!({}), options).await?;
        let done = ctx.producer.wait_for_completion(&id, Duration::from_secs(60)).await?;
        orch.check_alive()?;
        if done.is_none() {
            bail!("{}: job {id} did not finish within 60 s", side.label());
        }
        ids.push(id);
    }
    Ok(ids)
}

/// Redis commands per second an idle orchestrator sends (`INFO
/// commandstats` over a 10 s window, the harness's own INFO taken out).
pub(crate) async fn idle(ctx: &Ctx, side: Side, tag: &str) -> Result<f64> {
    const WINDOW: Duration = Duration::from_secs(10);
    ctx.setup.redis.flush()?;
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, Pool { size: 1, in_flight: 1 }, tag)?;
    warm_up(ctx, &mut orch, side, tag, 3).await?;
    ctx.setup.redis.reset_stats()?;
    tokio::time::sleep(WINDOW).await;
    let calls: u64 = ctx.setup.redis.command_stats()?.iter().map(|(_, n)| n).sum();
    orch.check_alive()?;
    orch.stop()?;
    // CONFIG RESETSTAT's successor in the window is our INFO.
    Ok(calls.saturating_sub(1) as f64 / WINDOW.as_secs_f64())
}

/// Redis bytes (MEMORY USAGE of the job hash plus its events stream) per
/// completed job kept for its result TTL: measured once the events streams
/// have had their time (RRQ expires them after `job_events_ttl_seconds`,
/// 60 s by default; the reference keeps them with the result).
pub(crate) async fn retained_bytes(ctx: &Ctx, side: Side, tag: &str) -> Result<(f64, f64)> {
    const JOBS: usize = 50;
    ctx.setup.redis.flush()?;
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, Pool { size: 1, in_flight: 1 }, tag)?;
    let ids = warm_up(ctx, &mut orch, side, tag, JOBS).await?;
    orch.stop()?;
    let usage = |key: String| -> Result<f64> {
        Ok(ctx.setup.redis.cli(&["MEMORY", "USAGE", &key])?.trim().parse::<f64>().unwrap_or(0.0))
    };
    let total = |ids: &[JobId]| -> Result<f64> {
        let mut sum = 0.0;
        for id in ids {
            sum += usage(format!("rrq:job:{id}"))? + usage(format!("rrq:events:job:{id}"))?;
        }
        Ok(sum / ids.len() as f64)
    };
    let fresh = total(&ids)?;
    if side == Side::Rrq {
        let last = format!("rrq:events:job:{}", ids[JOBS - 1]);
        let deadline = Instant::now() + Duration::from_secs(75);
        while ctx.setup.redis.cli(&["EXISTS", &last])?.trim() != "0" {
            if Instant::now() > deadline {
                bail!("the events stream {last} did not expire within 75 s");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok((fresh, total(&ids)?))
}

/// Idle pickup with the reference's Python client as the producer: it
/// enqueues `jobs` no-op jobs one at a time, `gap_s` apart, and records the
/// wall-clock time just before each `enqueue` call.
const PICKUP_PY: &str = r#"
import asyncio, json, os, sys, time
from rrq.client import RRQClient

async def main():
    client = RRQClient(config={"redis_dsn": os.environ["BENCH_DSN"]})
    tag, jobs, gap = os.environ["BENCH_TAG"], int(os.environ["BENCH_JOBS"]), float(os.environ["BENCH_GAP_S"])
    # The client's connection is up and the worker has served it once.
    warm = await client.enqueue("noop", {"job_id": tag + "-pywarm", "params": {}})
    if await client.wait_for_completion(warm, timeout_seconds=60.0) is None:
        sys.exit("the warm-up job did not finish within 60 s")
    times = []
    due = time.monotonic()
    for i in range(jobs):
        due += gap
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        job_id = "%s-%08d" % (tag, i)
        t = time.time()
        await client.enqueue("noop", {"job_id": job_id, "params": {}})
        times.append([job_id, t])
    await client.close()
    print(json.dumps(times))

asyncio.run(main())
"#;

/// The `[[id, epoch seconds], ...]` the pickup script prints.
fn parse_enqueue_times(stdout: &[u8]) -> Result<Vec<(JobId, f64)>> {
    let v: serde_json::Value = serde_json::from_slice(stdout)?;
    let Some(rows) = v.as_array() else { bail!("the pickup script printed no list: {v}") };
    rows.iter()
        .map(|r| match (r[0].as_str(), r[1].as_f64()) {
            (Some(id), Some(t)) => Ok((JobId::from(id), t)),
            _ => bail!("the pickup script printed a bad row: {r}"),
        })
        .collect()
}

/// Milliseconds from each `from` to the matching `to`; fails on a missing one.
fn gaps_ms(ids: &[JobId], pairs: impl IntoIterator<Item = (Option<f64>, Option<f64>)>, what: &str) -> Result<Vec<f64>> {
    ids.iter()
        .zip(pairs)
        .map(|(id, pair)| match pair {
            (Some(from), Some(to)) => Ok((to - from) * 1000.0),
            _ => bail!("job {id} has no {what}"),
        })
        .collect()
}

/// Idle pickup, enqueue (the Python client's call) → completion, in ms.
pub(crate) async fn pickup_python(ctx: &Ctx, side: Side, jobs: usize, per_second: f64, tag: &str) -> Result<Vec<f64>> {
    ctx.setup.redis.flush()?;
    let mut own = OwnCalls::default();
    let pool = Pool { size: 4, in_flight: 50 };
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, pool, tag)?;
    warm_up(ctx, &mut orch, side, &format!("{tag}-warm"), 5).await?;
    let mut cmd = std::process::Command::new(&ctx.setup.python);
    cmd.arg("-c")
        .arg(PICKUP_PY)
        .env("BENCH_DSN", &ctx.setup.redis.dsn)
        .env("BENCH_TAG", tag)
        .env("BENCH_JOBS", jobs.to_string())
        .env("BENCH_GAP_S", (1.0 / per_second).to_string());
    let out = tokio::task::spawn_blocking(move || cmd.output()).await??;
    orch.check_alive()?;
    if !out.status.success() {
        bail!("the Python pickup script failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    let (ids, enqueued): (Vec<JobId>, Vec<f64>) = parse_enqueue_times(&out.stdout)?.into_iter().unzip();
    if ids.len() != jobs {
        bail!("the Python pickup script enqueued {} jobs, not {jobs}", ids.len());
    }
    wait_all(&ctx.store, &ids, &mut orch, Duration::from_secs(120), &mut own).await?;
    orch.stop()?;
    let times = read_times(&ctx.store, &ids, &mut own).await?;
    if let Some((t, id)) = times.iter().zip(&ids).find(|(t, _)| t.status != "COMPLETED") {
        bail!("job {id} ended as {:?}, not COMPLETED", t.status);
    }
    gaps_ms(&ids, enqueued.iter().zip(&times).map(|(e, t)| (Some(*e), t.completion)), "completion_time")
}

/// The deferral of the `i`th job of the deferred scenario: spread over
/// 200–800 ms by a stride coprime with the range, so consecutive jobs differ.
pub(crate) fn deferral_ms(i: usize) -> u64 {
    200 + (i as u64 * 389) % 601
}

/// Deferred-job lateness, due (`next_scheduled_run_time`) → started
/// (`start_time`), in ms: `jobs` jobs deferred by 200–800 ms, each enqueued
/// once the previous one is done, so the worker is idle when it comes due.
pub(crate) async fn deferred(ctx: &Ctx, side: Side, jobs: usize, tag: &str) -> Result<Vec<f64>> {
    ctx.setup.redis.flush()?;
    let mut own = OwnCalls::default();
    let pool = Pool { size: 4, in_flight: 50 };
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, pool, tag)?;
    warm_up(ctx, &mut orch, side, &format!("{tag}-warm"), 5).await?;
    let mut ids = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let options = EnqueueOptions {
            job_id: Some(job_id(tag, i)),
            defer_by: Some(Duration::from_millis(deferral_ms(i))),
            ..EnqueueOptions::default()
        };
        let id = ctx.producer.enqueue("noop", json!({}), options).await?;
        wait_all(&ctx.store, std::slice::from_ref(&id), &mut orch, Duration::from_secs(60), &mut own).await?;
        ids.push(id);
    }
    orch.stop()?;
    let times = read_times(&ctx.store, &ids, &mut own).await?;
    if let Some((t, id)) = times.iter().zip(&ids).find(|(t, _)| t.status != "COMPLETED") {
        bail!("job {id} ended as {:?}, not COMPLETED", t.status);
    }
    gaps_ms(&ids, times.iter().map(|t| (t.scheduled, t.start)), "next_scheduled_run_time or start_time")
}

/// Cancel latency of a running job, in ms: `jobs` times, a `sleep` job that
/// would run for two minutes is started, cancelled through the producer
/// once its hash says `ACTIVE` (and the runner has had 100 ms to start it),
/// and the hash polled every millisecond until it says `CANCELLED`. RRQ only:
/// the reference cannot cancel a running job.
pub(crate) async fn cancel(ctx: &Ctx, side: Side, jobs: usize, tag: &str) -> Result<Vec<f64>> {
    ctx.setup.redis.flush()?;
    let mut own = OwnCalls::default();
    let pool = Pool { size: 1, in_flight: 4 };
    let mut orch = Orchestrator::start(&ctx.setup, side, RunnerKind::Rust, pool, tag)?;
    warm_up(ctx, &mut orch, side, &format!("{tag}-warm"), 3).await?;
    let mut latencies = Vec::with_capacity(jobs);
    for i in 0..jobs {
        let options = EnqueueOptions {
            job_id: Some(job_id(tag, i)),
            job_timeout_seconds: Some(600),
            ..EnqueueOptions::default()
        };
        let id = ctx.producer.enqueue("sleep", json!({"seconds": 120.0}), options).await?;
        let ids = std::slice::from_ref(&id);
        let deadline = Instant::now() + Duration::from_secs(60);
        while read_times(&ctx.store, ids, &mut own).await?[0].status != "ACTIVE" {
            orch.check_alive()?;
            if Instant::now() > deadline {
                bail!("{}: job {id} did not start within 60 s", side.label());
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let asked = Instant::now();
        match ctx.producer.cancel(&id).await? {
            rrq_store::CancelResult::CancelRequested => {}
            other => bail!("cancel of the running job {id} answered {other:?}"),
        }
        let deadline = asked + Duration::from_secs(30);
        loop {
            let status = read_times(&ctx.store, ids, &mut own).await?.remove(0).status;
            if status == "CANCELLED" {
                break;
            }
            if is_terminal(&status) {
                bail!("job {id} ended {status} after its cancel");
            }
            orch.check_alive()?;
            if Instant::now() > deadline {
                bail!("{}: job {id} not CANCELLED 30 s after its cancel", side.label());
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        latencies.push(asked.elapsed().as_secs_f64() * 1000.0);
    }
    orch.stop()?;
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferrals_cover_200_to_800_ms_and_vary() {
        let d: Vec<u64> = (0..601).map(deferral_ms).collect();
        assert!(d.iter().all(|ms| (200..=800).contains(ms)));
        let mut distinct = d.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), 601, "every value of the range once per 601 jobs");
        assert!(d.windows(2).all(|w| w[0] != w[1]));
    }

    #[test]
    fn the_pickup_scripts_output_is_read_in_order() {
        let rows = parse_enqueue_times(br#"[["t-00000000", 1.5], ["t-00000001", 2.25]]"#).unwrap();
        assert_eq!(rows, vec![(JobId::from("t-00000000"), 1.5), (JobId::from("t-00000001"), 2.25)]);
        assert!(parse_enqueue_times(br#"[["t-00000000"]]"#).is_err());
        assert!(parse_enqueue_times(br#"{"t": 1}"#).is_err());
    }

    #[test]
    fn gaps_are_milliseconds_and_a_missing_time_fails() {
        let ids = [JobId::from("a"), JobId::from("b")];
        let gaps = gaps_ms(&ids, [(Some(1.0), Some(1.0025)), (Some(2.0), Some(2.5))], "x").unwrap();
        assert!((gaps[0] - 2.5).abs() < 1e-9 && (gaps[1] - 500.0).abs() < 1e-9);
        let err = gaps_ms(&ids, [(Some(1.0), Some(1.1)), (Some(2.0), None)], "start_time").unwrap_err();
        assert_eq!(err.to_string(), "job b has no start_time");
    }
}
