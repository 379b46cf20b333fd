//! `rrq worker run`: one orchestrator process.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rrq_config::{RunnerMode, Settings};
use rrq_core::{Backoff, Routing, Worker, WorkerConfig};
use rrq_pool::Runner;
use rrq_protocol::QueueName;
use rrq_store::{RedisStore, Store};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::exit::{CliError, Exit};
use crate::{ConfigArgs, logging};

/// Worker commands.
#[derive(Debug, clap::Subcommand)]
pub enum WorkerCommand {
    /// Run a worker until SIGINT/SIGTERM (or, with --burst, until the queues are empty)
    Run(RunArgs),
    /// Run a development worker that restarts when watched files change
    Watch(crate::watch::WatchArgs),
    /// List the live workers: status, queues, jobs in flight, heartbeat age
    List(crate::worker_list::ListArgs),
}

/// `rrq worker run` options.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Queue to take jobs from (repeatable; bare or full names). Default: default_queue_name
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Stop once no job is ready and none is running
    #[arg(long)]
    burst: bool,
    /// Override runner_management_mode
    #[arg(long, value_parser = ["managed", "external"])]
    runner_mode: Option<String>,
    /// Serve /metrics and /healthz on this address (overrides metrics_listen)
    #[arg(long)]
    metrics_listen: Option<String>,
}

/// Runs a worker command.
pub async fn run(cmd: WorkerCommand) -> Result<Exit, CliError> {
    match cmd {
        WorkerCommand::Run(args) => run_worker(args).await,
        WorkerCommand::Watch(args) => crate::watch::run(args).await,
        WorkerCommand::List(args) => crate::worker_list::run(args).await,
    }
}

/// Loads settings, printing where they came from as the reference does.
pub(crate) fn load_settings(args: &ConfigArgs) -> Result<Settings, CliError> {
    let loaded = rrq_config::load(args.config.as_deref()).map_err(|e| CliError::new(Exit::Config, e))?;
    outln!("Loading RRQ settings from {}.", loaded.source.describe());
    for w in &loaded.warnings {
        warn!("{w}");
        eprintln!("warning: {w}");
    }
    Ok(loaded.settings)
}

/// The queues a worker polls: `--queue` values, else the default queue;
/// normalised, sorted, without duplicates.
pub(crate) fn queues(settings: &Settings, requested: &[String]) -> Result<Vec<QueueName>, CliError> {
    let mut set = BTreeSet::new();
    for q in requested {
        let name = QueueName::parse(q)
            .ok_or_else(|| CliError::new(Exit::Usage, anyhow::anyhow!("--queue needs a non-empty queue name")))?;
        set.insert(name);
    }
    if set.is_empty() {
        set.insert(settings.default_queue.clone());
    }
    Ok(set.into_iter().collect())
}

/// The runners the worker must start: the route of each polled queue, and the
/// default runner if some queue has no route.
pub(crate) fn needed_runners(settings: &Settings, queues: &[QueueName]) -> Result<BTreeSet<String>, CliError> {
    let mut needed = BTreeSet::new();
    for q in queues {
        match settings.runner_routes.get(q) {
            Some(r) => {
                if !settings.runners.contains_key(r) {
                    return Err(CliError::new(
                        Exit::Config,
                        anyhow::anyhow!(
                            "runner_routes sends queue '{q}' to runner '{r}', which is not configured; add [rrq.runners.{r}] or fix the route"
                        ),
                    ));
                }
                needed.insert(r.clone());
            }
            None => {
                let d = &settings.default_runner_name;
                if !settings.runners.contains_key(d) {
                    return Err(CliError::new(
                        Exit::Config,
                        anyhow::anyhow!(
                            "default runner '{d}' is not configured; add [rrq.runners.{d}] or set default_runner_name"
                        ),
                    ));
                }
                needed.insert(d.clone());
            }
        }
    }
    for name in &needed {
        let r = &settings.runners[name];
        if r.max_in_flight.get() > 64 {
            return Err(CliError::new(
                Exit::Config,
                anyhow::anyhow!(
                    "max_in_flight must be <= 64 for runner '{name}' (runners cap in-flight requests per connection at 64)"
                ),
            ));
        }
    }
    Ok(needed)
}

/// The worker configuration the settings describe; invalid cron entries stop
/// start-up with the entry's key.
pub(crate) fn worker_config(
    settings: &Settings,
    queues: Vec<QueueName>,
    burst: bool,
) -> Result<WorkerConfig, CliError> {
    let mut config = WorkerConfig::new(queues);
    config.backoff = Backoff { base: settings.base_retry_delay, max: settings.max_retry_delay };
    config.routing =
        Routing { default_runner: settings.default_runner_name.clone(), queue_routes: settings.runner_routes.clone() };
    config.poll_interval = settings.poll_delay.max(Duration::from_millis(10));
    config.heartbeat_interval = settings.health_check_interval;
    config.health_ttl =
        Duration::from_secs((settings.health_check_interval + settings.health_check_ttl_buffer).as_secs().max(1));
    config.shutdown_grace = settings.shutdown_grace;
    config.burst = burst;
    config.unique_lock_ttl = Duration::from_secs(settings.unique_job_lock_ttl_seconds.max(1) as u64);
    config.lock_extension = Duration::from_secs(settings.lock_timeout_extension_seconds.max(0) as u64);
    config.max_payload_bytes = settings.max_payload_bytes;
    config.lease_ttl = settings.lease_ttl;
    // Two renewals (and their retries) fit before an attempt must be
    // abandoned, so one slow answer does not cost a job its lease.
    config.renew_interval = settings.lease_ttl / 5;
    config.recovery_interval = settings.lease_ttl / 3;
    // Terminating a runner waits out the pool's SIGTERM grace, then SIGKILLs.
    config.terminate_budget = settings.runner_term_grace + Duration::from_secs(1);
    config.cron = crate::inspect::cron_entries(settings, rrq_store::Clock::now(&rrq_store::SystemClock))
        .map_err(|e| CliError::new(Exit::Config, e))?;
    Ok(config)
}

async fn run_worker(args: RunArgs) -> Result<Exit, CliError> {
    let mut settings = load_settings(&args.config)?;
    logging::init_exporting("info", &settings.telemetry);
    apply_runner_mode(&mut settings, args.runner_mode.as_deref());
    let queues = queues(&settings, &args.queues)?;
    let probe_queue = queues[0].clone();
    #[cfg(not(feature = "dashboard"))]
    if let Some(addr) = &settings.dashboard_listen {
        return Err(CliError::new(
            Exit::Config,
            anyhow::anyhow!(
                "dashboard_listen = {addr:?} is set, but this rrq was built without its `dashboard` feature; remove the key or rebuild with it"
            ),
        ));
    }
    let metrics_addr = args.metrics_listen.clone().or_else(|| settings.metrics_listen.clone());
    // The in-process dashboard charts completions from the same recorder.
    let handle = if metrics_addr.is_some() || settings.dashboard_listen.is_some() {
        Some(crate::serve::install_recorder()?)
    } else {
        logging::install_metrics(None)?;
        None
    };
    let recorder = metrics_addr.zip(handle.clone());
    let built = build_worker(&settings, queues, args.burst).await?;
    let shutdown = CancellationToken::new();
    if let Some(handle) = &handle {
        let handle = handle.clone();
        crate::serve::spawn_upkeep(move || handle.run_upkeep(), shutdown.child_token());
    }
    if let Some((addr, handle)) = recorder {
        let health =
            crate::serve::HealthSources { store: built.store.clone(), probe_queue, runners: built.runners.clone() };
        let local = crate::serve::spawn(&addr, handle, health, shutdown.child_token()).await?;
        outln!("Serving /metrics and /healthz on http://{local}");
    }
    #[cfg(feature = "dashboard")]
    if let Some(addr) = &settings.dashboard_listen {
        let local =
            crate::dashboard::start_in_worker(&settings, built.store.clone(), addr, handle, shutdown.child_token())
                .await?;
        outln!("Dashboard on http://{local}");
    }
    spawn_signal_handler(shutdown.clone());
    let stats = built.worker.run(shutdown.clone()).await;
    shutdown.cancel();
    let stats = stats?;
    info!(?stats, "worker stopped");
    Ok(Exit::Ok)
}

/// Applies `--runner-mode` over `runner_management_mode`.
pub(crate) fn apply_runner_mode(settings: &mut Settings, mode: Option<&str>) {
    if let Some(mode) = mode.and_then(RunnerMode::parse) {
        settings.runner_mode = mode;
    }
}

/// A worker ready to run, with handles on what it runs on.
pub(crate) struct Built {
    /// The worker.
    pub worker: Worker,
    /// Its store.
    pub store: Arc<dyn Store>,
    /// Its runners by name.
    pub runners: Vec<(String, Arc<dyn Runner>)>,
}

/// Connects to Redis, starts the runner pools the queues need, and returns
/// the worker ready to run.
pub(crate) async fn build_worker(settings: &Settings, queues: Vec<QueueName>, burst: bool) -> Result<Built, CliError> {
    let needed = needed_runners(settings, &queues)?;
    let config = worker_config(settings, queues, burst)?;
    let store: Arc<dyn Store> = Arc::new(
        RedisStore::connect_with(
            &settings.redis_dsn,
            rrq_store::ConnectOptions::default()
                .with_ca_file_opt(settings.redis_ca_file.clone())
                .with_queue_shards_opt(settings.queue_shards),
        )
        .await?
        .with_defaults(crate::ops::job_defaults(settings))
        .with_keyspace_notifications(settings.keyspace_notifications)
        .with_events_ttl(settings.job_events_ttl),
    );
    let mut worker = Worker::new(config, store.clone());
    let mut runners = Vec::new();
    for name in &needed {
        let runner = crate::runners::start(name, settings)
            .await
            .with_context(|| format!("runner '{name}' could not be started"))?;
        worker = worker.runner(name.clone(), runner.clone());
        runners.push((name.clone(), runner));
    }
    Ok(Built { worker, store, runners })
}

/// Cancels `token` on the first SIGINT or SIGTERM.
pub(crate) fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                token.cancel();
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received; shutting down"),
            _ = term.recv() => info!("SIGTERM received; shutting down"),
        }
        token.cancel();
    });
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::worker_config;

    #[test]
    fn lease_ttl_seconds_sets_the_lease_a_fifth_of_it_for_renewal_and_a_third_for_recovery() {
        let (settings, _) =
            rrq_config::parse("[rrq]\nlease_ttl_seconds = 6\nrunner_shutdown_term_grace_seconds = 0.5").unwrap();
        let config = worker_config(&settings, Vec::new(), false).unwrap();
        assert_eq!(config.lease_ttl, Duration::from_secs(6));
        assert_eq!(config.renew_interval, Duration::from_millis(1200));
        assert_eq!(config.recovery_interval, Duration::from_secs(2));
        assert_eq!(config.terminate_budget, Duration::from_millis(1500), "the term grace plus a second");
        let (settings, _) = rrq_config::parse("").unwrap();
        let config = worker_config(&settings, Vec::new(), false).unwrap();
        assert_eq!((config.lease_ttl, config.renew_interval), (Duration::from_secs(15), Duration::from_secs(3)));
        assert_eq!(config.terminate_budget, Duration::from_secs(6));
    }
}
