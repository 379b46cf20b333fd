//! The `rrq` command line: run workers and operate queues, jobs and the DLQ.
//!
//! Place in the graph: the top. This crate alone reads the environment,
//! installs the log subscriber and picks exit codes; all behaviour lives in
//! the libraries (`rrq-config`, `rrq-store`, `rrq-pool`, `rrq-core`).
//!
//! The library form exists so that tests (and wrappers) can run the exact
//! command in-process or as their own binary; `main.rs` only calls [`main`].
//!
//! Everything a command prints on stdout goes through `outln!`, so that a
//! reader that goes away (`rrq queue list | head -1`) ends the command
//! quietly instead of panicking; `clippy::print_stdout` is denied here.

#![deny(clippy::print_stdout)]

/// `println!` for command output: a closed stdout ends the process quietly
/// with success (see `output::stdout_failed`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            crate::output::stdout_failed(&e);
        }
    }};
}

mod completions;
mod cron_cmd;
#[cfg(feature = "dashboard")]
mod dashboard;
mod debug;
mod dlq;
mod enqueue;
mod exit;
mod health;
pub mod inspect;
mod job;
mod logging;
mod ops;
#[cfg(feature = "otlp")]
pub mod otlp;
mod output;
mod queue;
mod runner_check;
mod runner_cmd;
mod runners;
mod serve;
mod watch;
mod worker;
mod worker_list;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use exit::{CliError, Exit};

/// The reference release whose Redis keys and job fields (the schema) this
/// build reads and writes.
pub const REDIS_SCHEMA: &str = "0.11.1";

/// What `rrq --version` prints after `rrq `: the version, and the runner
/// protocol and Redis schema it speaks.
pub fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "{} (runner protocol {}, Redis schema of rrq {REDIS_SCHEMA})",
            env!("CARGO_PKG_VERSION"),
            rrq_protocol::PROTOCOL_VERSION
        )
    });
    VERSION.as_str()
}

/// rrq: a Redis job queue orchestrator.
#[derive(Debug, Parser)]
#[command(name = "rrq", bin_name = "rrq", version = version(), about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that reads settings.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArgs {
    /// Path of rrq.toml (default: $RRQ_CONFIG, else ./rrq.toml)
    #[arg(long, global = true, env = "RRQ_CONFIG", hide_env_values = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a worker, or list the live ones
    #[command(subcommand)]
    Worker(worker::WorkerCommand),
    /// List the cron entries of rrq.toml with their next runs
    #[command(subcommand)]
    Cron(cron_cmd::CronCommand),
    /// List, inspect, count, pause and resume queues
    #[command(subcommand)]
    Queue(queue::QueueCommand),
    /// Show, list, cancel, retry, replay and trace jobs
    #[command(subcommand)]
    Job(job::JobCommand),
    /// List, inspect, requeue and purge dead-lettered jobs
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Check that workers are alive (their health records)
    #[command(alias = "check")]
    Health(health::HealthArgs),
    /// Synthetic jobs, workers and load; one-off submits; pattern deletes
    #[command(subcommand)]
    Debug(debug::DebugCommand),
    /// Run a language runner in the foreground
    #[command(subcommand)]
    Runner(runner_cmd::RunnerCommand),
    /// Print a shell completion script
    Completions(completions::CompletionsArgs),
    /// Serve the web dashboard (queues, jobs, DLQ, workers, cron)
    #[cfg(feature = "dashboard")]
    Dashboard(dashboard::DashboardArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> ExitCode {
    // First: in a runner guard process this runs the guard and never
    // returns (so every binary built on this function installs the hook).
    rrq_pool::guard::run_if_requested();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { Exit::Usage } else { Exit::Ok };
            let _ = e.print();
            return code.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return Exit::Failure.into();
        }
    };
    let result = runtime.block_on(async move {
        let result = match cli.command {
            Command::Worker(cmd) => worker::run(cmd).await,
            Command::Cron(cmd) => cron_cmd::run(cmd).await,
            Command::Queue(cmd) => queue::run(cmd).await,
            Command::Job(cmd) => job::run(cmd).await,
            Command::Dlq(cmd) => dlq::run(cmd).await,
            Command::Health(args) => health::run(args).await,
            Command::Debug(cmd) => debug::run(cmd).await,
            Command::Runner(cmd) => runner_cmd::run(cmd).await,
            Command::Completions(args) => completions::run(args),
            #[cfg(feature = "dashboard")]
            Command::Dashboard(args) => dashboard::run(args).await,
        };
        // Sends what the worker commands' exporters hold (see `logging`).
        #[cfg(feature = "otlp")]
        otlp::shutdown(std::time::Duration::from_secs(5)).await;
        result
    });
    match result {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("Error: {}", e.error);
            for cause in e.error.chain().skip(1) {
                eprintln!("Caused by: {cause}");
            }
            e.exit.into()
        }
    }
}
