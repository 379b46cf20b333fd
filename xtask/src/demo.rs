//! `cargo xtask demo`: a worker, the example Rust runner and a few hundred jobs.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rrq_producer::{EnqueueOptions, JobStatus, Producer};
use rrq_protocol::JobId;
use serde_json::json;

use crate::{cargo, run as run_command};

/// A `redis-server` started for the demo, stopped on drop.
struct ThrowawayRedis(Child);

impl Drop for ThrowawayRedis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_redis() -> Result<(String, Option<ThrowawayRedis>)> {
    if let Ok(dsn) = std::env::var("RRQ_REDIS_DSN")
        && !dsn.trim().is_empty()
    {
        println!("Using Redis at {dsn} (RRQ_REDIS_DSN)");
        return Ok((dsn, None));
    }
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server; install it with `apt-get install redis-server` or set RRQ_REDIS_DSN")?;
    let guard = ThrowawayRedis(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start listening on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("Started a throwaway redis-server on 127.0.0.1:{port}");
    Ok((format!("redis://127.0.0.1:{port}/0"), Some(guard)))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

fn progress(done: usize, total: usize, completed: usize, failed: usize, started: Instant) {
    let width = 30;
    let filled = (done * width).checked_div(total).unwrap_or(width);
    print!(
        "\r[{}{}] {done}/{total} finished  ({completed} completed, {failed} dead-lettered)  {:.1}s",
        "#".repeat(filled),
        ".".repeat(width - filled),
        started.elapsed().as_secs_f64()
    );
    let _ = std::io::stdout().flush();
}

pub(crate) fn run(args: &[String]) -> Result<()> {
    let total: usize = match args.first() {
        Some(n) => n.parse().with_context(|| format!("job count must be a number, got {n:?}"))?,
        None => 500,
    };
    run_command(cargo().args(["build", "--quiet", "-p", "rrq", "-p", "rrq-runner", "--bins"]))?;
    let bin_dir = target_dir().join("debug");
    let (dsn, _redis) = start_redis()?;

    let work = std::env::temp_dir().join(format!("rrq-demo-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let config = work.join("rrq.toml");
    let port = free_port()?;
    std::fs::write(
        &config,
        format!(
            r#"[rrq]
redis_dsn = "{dsn}"
default_runner_name = "rust"
base_retry_delay_seconds = 0.05
max_retry_delay_seconds = 0.2
worker_shutdown_grace_period_seconds = 2

[rrq.runners.rust]
cmd = ["{runner}"]
tcp_port = {port}
pool_size = 2
max_in_flight = 16
"#,
            runner = bin_dir.join("rrq-example-runner").display()
        ),
    )?;

    let log_path = work.join("worker.log");
    let log = std::fs::File::create(&log_path)?;
    let mut worker = Command::new(bin_dir.join("rrq"))
        .args(["worker", "run", "--config"])
        .arg(&config)
        .env("RUST_LOG_FORMAT", "text")
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start the rrq worker")?;
    println!("Worker started (logs: {})", log_path.display());

    let rt = tokio::runtime::Runtime::new()?;
    let result = rt.block_on(drive(&dsn, total));
    let _ = Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let status = worker.wait()?;
    println!("Worker stopped ({status})");
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

async fn drive(dsn: &str, total: usize) -> Result<()> {
    let producer = Producer::new(dsn).await.context("connect the producer")?;
    let started = Instant::now();
    // A realistic mix: most jobs succeed, some retry once, a few always fail.
    let mut ids = Vec::with_capacity(total);
    for i in 0..total {
        let (function, params, max_retries) = match i % 20 {
            0 => ("fail", json!({"value": i}), Some(2)),
            1..=3 => ("retry_once", json!({"value": i.to_string(), "delay": 0.05}), None),
            4..=7 => ("sleep", json!({"seconds": 0.02}), None),
            _ => ("echo", json!({"n": i}), None),
        };
        let options = EnqueueOptions { max_retries, ..Default::default() };
        ids.push(producer.enqueue(function, params, options).await.context("enqueue")?);
    }
    println!("Enqueued {total} jobs in {:.2}s", started.elapsed().as_secs_f64());

    let run_started = Instant::now();
    let deadline = run_started + Duration::from_secs(120);
    let (mut completed, mut failed);
    loop {
        (completed, failed) = (0, 0);
        for id in &ids {
            match producer.status(id).await?.and_then(|r| r.status) {
                Some(JobStatus::Completed) => completed += 1,
                Some(JobStatus::Failed) => failed += 1,
                _ => {}
            }
        }
        progress(completed + failed, total, completed, failed, run_started);
        if completed + failed == total {
            break;
        }
        if Instant::now() > deadline {
            println!();
            bail!("jobs did not finish within two minutes; see the worker log");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!();
    let elapsed = run_started.elapsed().as_secs_f64();
    let retried = {
        let mut n = 0;
        for id in &ids {
            if let Some(job) = producer.job(id).await? {
                n += usize::from(job.current_retries > 0 && job.status == Some(JobStatus::Completed));
            }
        }
        n
    };
    println!("Summary");
    println!("  jobs             {total}");
    println!("  completed        {completed} ({retried} after a retry)");
    println!("  dead-lettered    {failed} (handler `fail`, as intended)");
    println!("  wall time        {elapsed:.2}s ({:.0} jobs/s)", total as f64 / elapsed.max(1e-9));
    let sample = JobId::new(ids[5].as_str());
    if let Some(r) = producer.status(&sample).await? {
        println!("  sample result    {} → {}", sample, r.result.unwrap_or_default());
    }
    Ok(())
}
