//! `rrq debug generate-workers`: synthetic worker health records, kept
//! fresh for a while.

use std::time::{Duration, Instant};

use rrq_protocol::QueueName;
use rrq_store::{Clock as _, SystemClock, WorkerHealth};
use serde_json::json;

use super::Rng;
use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected, Progress};
use crate::output::OutputArgs;

/// How often the health records are rewritten.
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// TTL of a synthetic health record.
const HEALTH_TTL: Duration = Duration::from_secs(60);

/// `rrq debug generate-workers` options.
#[derive(Debug, clap::Args)]
pub struct GenerateWorkersArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Number of workers
    #[arg(long, default_value_t = 5)]
    count: u64,
    /// Seconds to keep their health records fresh
    #[arg(long, default_value_t = 60)]
    duration: u64,
}

/// Whole seconds left until `deadline`, rounded up.
fn seconds_left(deadline: Instant) -> u64 {
    let left = deadline.saturating_duration_since(Instant::now());
    left.as_secs() + u64::from(left.subsec_nanos() > 0)
}

pub(super) async fn run(args: GenerateWorkersArgs) -> Result<Exit, CliError> {
    let Connected { store, .. } = ops::connect(&args.config).await?;
    if !args.out.json {
        outln!("Simulating {} workers for {} seconds...", args.count, args.duration);
    }
    let duration = Duration::from_secs(args.duration);
    let progress = Progress::timed(duration, "Simulating workers", args.out.json);
    let started = Instant::now();
    let deadline = started + duration;
    let mut rng = Rng::seeded();
    let mut rounds = 0u64;
    loop {
        let epoch = SystemClock.now().timestamp().unsigned_abs();
        for i in 0..args.count {
            let limit = 1 + rng.below(10);
            let health = WorkerHealth {
                active_jobs: rng.below(limit + 1),
                concurrency_limit: limit,
                queues: vec![QueueName::new("default").as_str().to_owned()],
                status: rng.pick(&["running", "polling", "idle (no jobs)"]).to_string(),
                timestamp: json!(epoch),
                worker_id: format!("test_worker_{i}"),
                completed_jobs: None,
                failed_jobs: None,
                active_by_queue: None,
            };
            store.heartbeat(&health, HEALTH_TTL).await?;
        }
        rounds += 1;
        if seconds_left(deadline) == 0 {
            break;
        }
        tokio::time::sleep(HEARTBEAT_EVERY.min(deadline.saturating_duration_since(Instant::now()))).await;
        progress.elapsed(started.elapsed());
        if seconds_left(deadline) == 0 {
            break;
        }
    }
    progress.finish();
    if args.out.json {
        crate::output::print_json(&json!({
            "workers": args.count,
            "duration_seconds": args.duration,
            "heartbeat_rounds": rounds,
        }));
    } else {
        outln!("Worker simulation complete");
    }
    Ok(Exit::Ok)
}
