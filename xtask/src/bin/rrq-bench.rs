//! RRQ's benchmark harness (run it through `cargo xtask bench`, which builds
//! it in release mode). Prints a table of figures and writes them as JSON.
//!
//! Scenarios:
//! * `enqueue`: producer enqueue rate, one job per call (sequential and 64
//!   calls in flight) and in batches of 1,000.

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rrq_producer::{EnqueueOptions, Producer};
use serde_json::{Value, json};

struct Redis {
    dsn: String,
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

fn redis() -> Result<Redis> {
    if let Ok(dsn) = std::env::var("RRQ_REDIS_DSN")
        && !dsn.trim().is_empty()
    {
        return Ok(Redis { dsn, child: None });
    }
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start redis-server (apt-get install redis-server, or set RRQ_REDIS_DSN)")?;
    let r = Redis { dsn: format!("redis://127.0.0.1:{port}/0"), child: Some(child) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(r)
}

struct Figure {
    name: String,
    value: f64,
    unit: &'static str,
}

fn step(msg: &str) {
    eprint!("  {msg}...");
    let _ = std::io::stderr().flush();
}

async fn enqueue(dsn: &str, figures: &mut Vec<Figure>) -> Result<()> {
    let producer = Producer::new(dsn).await?;
    let params = json!({"n": 1});

    step("single enqueue, sequential (5,000 jobs)");
    let n = 5_000;
    let t = Instant::now();
    for _ in 0..n {
        producer.enqueue("noop", params.clone(), EnqueueOptions::queue("bench-seq")).await?;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    eprintln!(" {rate:.0}/s");
    figures.push(Figure { name: "enqueue single, sequential".into(), value: rate, unit: "jobs/s" });

    step("single enqueue, 64 in flight (20,000 jobs)");
    let n = 20_000;
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..64 {
        let p = producer.clone();
        let params = params.clone();
        tasks.spawn(async move {
            for _ in (w..n).step_by(64) {
                p.enqueue("noop", params.clone(), EnqueueOptions::queue("bench-par")).await?;
            }
            Ok::<_, rrq_producer::ProducerError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    eprintln!(" {rate:.0}/s");
    figures.push(Figure { name: "enqueue single, 64 in flight".into(), value: rate, unit: "jobs/s" });

    step("batch enqueue, 1,000 per call (100,000 jobs)");
    let n = 100_000;
    let t = Instant::now();
    for _ in 0..n / 1000 {
        let batch = (0..1000).map(|_| ("noop".to_owned(), params.clone(), EnqueueOptions::queue("bench-batch")));
        for r in producer.enqueue_batch(batch).await? {
            r?;
        }
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    eprintln!(" {rate:.0}/s");
    figures.push(Figure { name: "enqueue batch of 1,000".into(), value: rate, unit: "jobs/s" });
    Ok(())
}

fn main() -> Result<()> {
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "enqueue".into());
    let redis = redis()?;
    eprintln!("RRQ benchmarks on {} ({} CPUs)", redis.dsn, std::thread::available_parallelism().map_or(1, |n| n.get()));
    let rt = tokio::runtime::Runtime::new()?;
    let mut figures = Vec::new();
    match scenario.as_str() {
        "enqueue" | "all" => rt.block_on(enqueue(&redis.dsn, &mut figures))?,
        other => bail!("unknown scenario {other:?}; known: enqueue, all"),
    }
    println!("\n{:<40} {:>14}", "figure", "value");
    for f in &figures {
        println!("{:<40} {:>10.0} {}", f.name, f.value, f.unit);
    }
    let json: Value = figures.iter().map(|f| (f.name.clone(), json!({"value": f.value, "unit": f.unit}))).collect();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench-results.json");
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    println!("\nraw figures: {}", path.display());
    Ok(())
}
