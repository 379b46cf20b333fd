//! `rrq debug stress-test`: enqueue `stress_test_job` at a steady rate, one
//! batch a second.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rrq_producer::EnqueueOptions;
use serde_json::{Value, json};

use super::{Rng, queues_arg};
use crate::ConfigArgs;
use crate::enqueue::{producer, producer_error};
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected, Progress};
use crate::output::OutputArgs;

/// `rrq debug stress-test` options.
#[derive(Debug, clap::Args)]
pub struct StressTestArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Jobs enqueued per second
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    jobs_per_second: u64,
    /// Seconds to run
    #[arg(long, default_value_t = 60)]
    duration: u64,
    /// Queue to spread jobs over (repeatable; default: stress_test)
    #[arg(long = "queues")]
    queues: Vec<String>,
}

pub(super) async fn run(args: StressTestArgs) -> Result<Exit, CliError> {
    let queues = queues_arg(&args.queues, &["stress_test"], "--queues")?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let producer = producer(store, &settings);
    if !args.out.json {
        outln!("Starting stress test: {} jobs/sec for {}s", args.jobs_per_second, args.duration);
    }
    let progress = Progress::timed(Duration::from_secs(args.duration), "Stress test", args.out.json);
    let start = Instant::now();
    let mut rng = Rng::seeded();
    let mut total = 0u64;
    let mut per_queue: BTreeMap<&str, u64> = BTreeMap::new();
    for batch in 0..args.duration {
        let jobs: Vec<(String, Value, EnqueueOptions)> = (0..args.jobs_per_second)
            .map(|k| {
                let queue = rng.pick(&queues);
                *per_queue.entry(queue.as_str()).or_default() += 1;
                let params = json!({"job_number": total + k, "batch": batch});
                ("stress_test_job".to_owned(), params, EnqueueOptions::queue(queue.as_str()))
            })
            .collect();
        for result in producer.enqueue_batch(jobs).await.map_err(producer_error)? {
            result.map_err(producer_error)?;
        }
        total += args.jobs_per_second;
        progress.message(format!("Stress test: {total} jobs submitted"));
        tokio::time::sleep_until((start + Duration::from_secs(batch + 1)).into()).await;
        progress.elapsed(start.elapsed());
    }
    progress.finish();
    if args.out.json {
        crate::output::print_json(&json!({
            "submitted": total,
            "jobs_per_second": args.jobs_per_second,
            "duration_seconds": args.duration,
            "queues": per_queue,
        }));
    } else {
        outln!("Stress test complete: {total} jobs submitted");
    }
    Ok(Exit::Ok)
}
