//! Round trips per second through a managed pool (manual micro-benchmark).
//!
//! ```text
//! cargo build --release -p rrq-runner --bin rrq-example-runner
//! RRQ_BENCH_RUNNER=target/release/rrq-example-runner cargo bench -p rrq-pool --bench roundtrip
//! # or: cargo bench -p rrq-pool --bench roundtrip -- path/to/rrq-example-runner
//! ```
//!
//! Optional: `RRQ_BENCH_POOL_SIZE` (default 2), `RRQ_BENCH_MAX_IN_FLIGHT`
//! (default 64), `RRQ_BENCH_REQUESTS` (default 20000), `RRQ_BENCH_PORT`
//! (default 47100), `RRQ_BENCH_HANDLER` (default `noop`, the example
//! runner's no-op handler).
//!
//! Any runner works: `RRQ_BENCH_RUNNER` is split on white space into the
//! command line, so the reference Python runner is measured with
//! `RRQ_BENCH_RUNNER="venv/bin/rrq-runner --settings handlers.settings"`
//! (a module `handlers` on `PYTHONPATH` defining a no-op async `noop`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rrq_pool::{PoolConfig, ProcessPool, Runner};
use rrq_protocol::{ExecutionContext, ExecutionRequest, OutcomeStatus, PROTOCOL_VERSION};

const CONCURRENCY: usize = 200;

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn request(n: usize) -> ExecutionRequest {
    let id = format!("bench-{n}");
    ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: id.clone(),
        job_id: id.clone(),
        function_name: std::env::var("RRQ_BENCH_HANDLER").unwrap_or_else(|_| "noop".to_owned()),
        params: serde_json::Map::new(),
        context: ExecutionContext {
            job_id: id,
            attempt: 1,
            enqueue_time: "2026-01-01T00:00:00Z".to_owned(),
            queue_name: "rrq:queue:bench".to_owned(),
            deadline: None,
            trace_context: None,
            correlation_context: None,
            worker_id: None,
        },
    }
}

fn report(label: &str, count: usize, elapsed: Duration) {
    let rate = count as f64 / elapsed.as_secs_f64();
    println!("{label:<28} {count:>7} round trips in {:>7.3}s = {rate:>9.0}/s", elapsed.as_secs_f64());
}

async fn bench(runner: String) {
    let pool_size = env_number("RRQ_BENCH_POOL_SIZE", 2);
    let max_in_flight = env_number("RRQ_BENCH_MAX_IN_FLIGHT", 64);
    let total = env_number("RRQ_BENCH_REQUESTS", 20_000);
    let port = u16::try_from(env_number("RRQ_BENCH_PORT", 47_100)).expect("RRQ_BENCH_PORT is a port");

    let cmd: Vec<String> = runner.split_whitespace().map(str::to_owned).collect();
    let mut config = PoolConfig::managed("bench", cmd, port);
    config.pool_size = pool_size.try_into().expect("RRQ_BENCH_POOL_SIZE > 0");
    config.max_in_flight = max_in_flight.try_into().expect("RRQ_BENCH_MAX_IN_FLIGHT > 0");
    let pool = Arc::new(ProcessPool::start(config).await.expect("pool starts"));
    let timeout = Duration::from_secs(30);
    println!("pool: {pool_size} process(es) x {max_in_flight} in flight");

    for n in 0..200 {
        pool.execute(request(n), timeout).await.expect("warm-up");
    }

    let sequential = (total / 10).max(1);
    let started = Instant::now();
    for n in 0..sequential {
        let outcome = pool.execute(request(n), timeout).await.expect("round trip");
        assert_eq!(outcome.status, OutcomeStatus::Success);
    }
    report("sequential", sequential, started.elapsed());

    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (pool, next) = (Arc::clone(&pool), Arc::clone(&next));
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= total {
                        break;
                    }
                    let outcome = pool.execute(request(n), timeout).await.expect("round trip");
                    assert_eq!(outcome.status, OutcomeStatus::Success);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    report(&format!("concurrency {CONCURRENCY}"), total, started.elapsed());

    pool.shutdown(Duration::from_secs(1)).await;
}

fn main() {
    let from_args = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let Some(runner) = from_args.or_else(|| std::env::var("RRQ_BENCH_RUNNER").ok()) else {
        println!("roundtrip: set RRQ_BENCH_RUNNER (or pass the path) to an rrq-example-runner binary; skipping");
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(bench(runner));
}
