//! `rrq debug …`: synthetic data and load for trying out the other commands
//! and dashboards: fake jobs and workers, one-off submits, a steady stream of
//! jobs, and a pattern delete to clean up afterwards. One file per
//! subcommand; this one holds the command enum and what they share.
//!
//! Everything goes through the `Store` trait (and the producer for real
//! enqueues); the synthetic jobs use the admin verb
//! [`AdminStore::insert_synthetic_job`](rrq_store::AdminStore::insert_synthetic_job), the clean-up
//! [`AdminStore::delete_matching`](rrq_store::AdminStore::delete_matching).

mod clear;
mod generate_jobs;
mod generate_workers;
mod stress_test;
mod submit;

use rrq_protocol::QueueName;
use rrq_store::{Clock as _, SystemClock};

use crate::exit::{CliError, Exit};
use crate::queue::queue_arg;

pub use clear::ClearArgs;
pub use generate_jobs::GenerateJobsArgs;
pub use generate_workers::GenerateWorkersArgs;
pub use stress_test::StressTestArgs;
pub use submit::SubmitArgs;

/// Debug commands.
#[derive(Debug, clap::Subcommand)]
pub enum DebugCommand {
    /// Write synthetic jobs (ids `test_job_…`) in various states
    GenerateJobs(GenerateJobsArgs),
    /// Write synthetic worker health records for a while
    GenerateWorkers(GenerateWorkersArgs),
    /// Enqueue one job
    Submit(SubmitArgs),
    /// Delete the keys matching a pattern (default `test_*`)
    Clear(ClearArgs),
    /// Enqueue `stress_test_job` at a steady rate
    StressTest(StressTestArgs),
}

/// Runs a debug command.
pub(crate) async fn run(cmd: DebugCommand) -> Result<Exit, CliError> {
    match cmd {
        DebugCommand::GenerateJobs(args) => generate_jobs::run(args).await,
        DebugCommand::GenerateWorkers(args) => generate_workers::run(args).await,
        DebugCommand::Submit(args) => submit::run(args).await,
        DebugCommand::Clear(args) => clear::run(args).await,
        DebugCommand::StressTest(args) => stress_test::run(args).await,
    }
}

/// A small non-cryptographic generator (xorshift64*): synthetic data only.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let nanos = SystemClock.now().timestamp_nanos_opt().unwrap_or(0).unsigned_abs();
        Rng((nanos ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// Queue options, parsed, or `defaults` when none was given.
fn queues_arg(given: &[String], defaults: &[&str], option: &str) -> Result<Vec<QueueName>, CliError> {
    if given.is_empty() {
        return Ok(defaults.iter().map(|q| QueueName::new(q)).collect());
    }
    given.iter().map(|q| queue_arg(q, option)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generator_stays_in_range() {
        let mut rng = Rng::seeded();
        assert!((0..1_000).all(|_| rng.below(4) < 4));
        assert_eq!(rng.below(0), 0);
    }
}
