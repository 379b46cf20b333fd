//! Validated settings.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use rrq_protocol::{DlqName, QueueName};
use serde_json::{Map, Value};

use crate::raw::{RawCron, RawRrq, RawRunner, RawTelemetry, RawWatch};
use crate::{Error, Warning};

mod sections;
use sections::{unique_cron_names, validate_cron, validate_runner, validate_telemetry, validate_watch};

/// Whether the worker starts runner processes itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunnerMode {
    /// The worker spawns and supervises the runner processes.
    Managed,
    /// Runners are started elsewhere; the worker connects to them.
    External,
}

impl RunnerMode {
    /// Parses `managed` / `external`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "managed" => Some(RunnerMode::Managed),
            "external" => Some(RunnerMode::External),
            _ => None,
        }
    }
}

/// One `[rrq.runners.NAME]` table.
#[derive(Clone, Debug, PartialEq)]
pub struct RunnerSettings {
    /// Program and arguments (required in managed mode).
    pub cmd: Vec<String>,
    /// Processes in the pool (default: the number of CPUs).
    pub pool_size: NonZeroUsize,
    /// Concurrent requests per process (default 1).
    pub max_in_flight: NonZeroUsize,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Host of an external runner (managed mode always uses 127.0.0.1).
    pub tcp_host: String,
    /// First port of the pool.
    pub tcp_port: u16,
    /// Non-loopback hosts allowed for external runners.
    pub allowed_hosts: Vec<String>,
    /// Longest wait for one response.
    pub response_timeout: Option<Duration>,
}

/// One cron entry (`[[rrq.cron_jobs]]` or the older `[[rrq.cron]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct CronEntry {
    /// Where it was written, e.g. `rrq.cron_jobs[0]` (for error messages).
    pub key: String,
    /// The name given in the file (`name`, an RRQ extension), trimmed;
    /// unique among the entries that have one.
    pub name: Option<String>,
    /// Handler (may be `runner#handler`).
    pub function_name: String,
    /// The cron expression as written (validated by the scheduler).
    pub schedule: String,
    /// Job params.
    pub params: Map<String, Value>,
    /// Target queue (default queue when absent).
    pub queue: Option<QueueName>,
    /// Use the orchestrator unique lock `cron:{function_name}`.
    pub unique: bool,
    /// IANA time zone of the schedule (UTC when absent).
    pub timezone: Option<String>,
    /// Enqueue one catch-up run for ticks missed while no worker ran.
    pub catch_up: bool,
}

/// `[rrq.watch]`.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchSettings {
    /// Directory watched.
    pub path: PathBuf,
    /// Globs a change must match.
    pub include_patterns: Vec<String>,
    /// Globs that exclude a change.
    pub ignore_patterns: Vec<String>,
    /// Do not apply `.gitignore`.
    pub no_gitignore: bool,
    /// Commands run before every (re)start.
    pub pre_restart_cmds: Vec<Vec<String>>,
    /// Working directory of those commands (the watch root when absent).
    pub pre_restart_cwd: Option<PathBuf>,
    /// Per-command timeout.
    pub pre_restart_timeout: Option<Duration>,
}

/// `[rrq.telemetry]` (RRQ extension): OTLP export settings as written in the
/// file. The `OTEL_*` variables override each of them when the exporter
/// starts; this is only the file's part.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TelemetrySettings {
    /// Base URL; the signal path (`/v1/traces`, `/v1/metrics`, `/v1/logs`)
    /// is appended (`otlp_endpoint`).
    pub otlp_endpoint: Option<String>,
    /// Traces URL used as is; `Some("")` turns traces off.
    pub traces_endpoint: Option<String>,
    /// Metrics URL used as is; `Some("")` turns metrics off.
    pub metrics_endpoint: Option<String>,
    /// Logs URL used as is; `Some("")` turns logs off.
    pub logs_endpoint: Option<String>,
    /// Headers of every request.
    pub otlp_headers: BTreeMap<String, String>,
    /// Headers of trace requests (over `otlp_headers`).
    pub traces_headers: BTreeMap<String, String>,
    /// Headers of metric requests (over `otlp_headers`).
    pub metrics_headers: BTreeMap<String, String>,
    /// Headers of log requests (over `otlp_headers`).
    pub logs_headers: BTreeMap<String, String>,
    /// `service.name` of the resource.
    pub service_name: Option<String>,
    /// Other resource attributes (`deployment.environment`, ...).
    pub resource_attributes: BTreeMap<String, String>,
    /// How often metrics are exported.
    pub metric_export_interval: Option<Duration>,
}

/// The one OTLP protocol this build speaks.
pub const OTLP_PROTOCOL: &str = "http/protobuf";

/// The reference's default include globs.
pub fn default_include_patterns() -> Vec<String> {
    ["*.py", "*.toml"].map(String::from).to_vec()
}

/// The reference's default ignore globs.
pub fn default_ignore_patterns() -> Vec<String> {
    [
        ".git",
        ".git/**",
        ".venv",
        ".venv/**",
        "target",
        "target/**",
        "dist",
        "dist/**",
        "build",
        "build/**",
        "__pycache__",
        "**/__pycache__",
        "**/__pycache__/**",
        "*.pyc",
        "**/*.pyc",
        ".ruff_cache",
        ".ruff_cache/**",
        ".pytest_cache",
        ".pytest_cache/**",
    ]
    .map(String::from)
    .to_vec()
}

/// Every setting of `rrq.toml`, validated, with defaults applied.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    /// Redis URL (after `RRQ_REDIS_DSN`).
    pub redis_dsn: String,
    /// A PEM file of extra CA certificates to trust for `rediss://`
    /// (`RRQ_REDIS_CA_FILE`; unset or empty for none).
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// Default queue (full key).
    pub default_queue: QueueName,
    /// Default DLQ (full key).
    pub default_dlq: DlqName,
    /// Default attempts per job.
    pub default_max_retries: u32,
    /// Default per-attempt timeout in seconds (> 0).
    pub default_job_timeout_seconds: i64,
    /// Added to the job timeout for the reference's lock TTL and unique lock floor.
    pub lock_timeout_extension_seconds: i64,
    /// Default result TTL in seconds (0 = forever, < 0 = unchanged).
    pub default_result_ttl_seconds: i64,
    /// Base idle poll delay.
    pub poll_delay: Duration,
    /// How long to wait for a runner to accept connections.
    pub runner_connect_timeout: Duration,
    /// SIGTERM → SIGKILL delay for runner process groups.
    pub runner_term_grace: Duration,
    /// Send cancel frames for in-flight requests on timeouts and shutdown.
    pub runner_cancel_hints: bool,
    /// Re-emit runner output through the worker's logs.
    pub capture_runner_output: bool,
    /// Minimum unique-lock TTL; also the producers' idempotency TTL.
    pub unique_job_lock_ttl_seconds: i64,
    /// Runner for jobs without prefix or route.
    pub default_runner_name: String,
    /// Managed or external runners.
    pub runner_mode: RunnerMode,
    /// Runner definitions by name.
    pub runners: BTreeMap<String, RunnerSettings>,
    /// Queue → runner.
    pub runner_routes: BTreeMap<QueueName, String>,
    /// Heartbeat period.
    pub health_check_interval: Duration,
    /// Added to the interval to form the health TTL.
    pub health_check_ttl_buffer: Duration,
    /// Backoff base.
    pub base_retry_delay: Duration,
    /// Backoff cap.
    pub max_retry_delay: Duration,
    /// How long shutdown waits for running jobs.
    pub shutdown_grace: Duration,
    /// Cron entries (`cron_jobs` then `cron`).
    pub cron: Vec<CronEntry>,
    /// Watch-mode settings.
    pub watch: WatchSettings,
    /// Correlation attribute → params path.
    pub correlation_mappings: BTreeMap<String, String>,
    /// Where to serve `/metrics` and `/healthz` (RRQ extension; off when absent).
    pub metrics_listen: Option<String>,
    /// Where a worker serves the web dashboard in-process (RRQ extension;
    /// off when absent). A non-loopback address needs RRQ_DASHBOARD_TOKEN.
    pub dashboard_listen: Option<String>,
    /// Largest accepted job payload in bytes (RRQ extension): the worker
    /// dead-letters a job whose `job_params` JSON is larger, without running it.
    pub max_payload_bytes: usize,
    /// Whether workers use Redis keyspace notifications to learn of jobs added
    /// by any producer (RRQ extension, default `true`; the worker adds `Kz`
    /// to the server's `notify-keyspace-events`). Off, jobs from producers
    /// that publish no ready signal wait for the regular poll.
    pub keyspace_notifications: bool,
    /// How long a job's events stream is kept after its terminal event (RRQ
    /// extension `job_events_ttl_seconds`, default 60 s, never longer than
    /// the result): waiters block on it from `$`, so it is only a wake-up.
    pub job_events_ttl: Duration,
    /// TTL of a running job's lease (RRQ extension, `lease_ttl_seconds`,
    /// default 15 s, at least 1 s); the worker renews leases and recovers
    /// expired ones every third of it.
    pub lease_ttl: Duration,
    /// Replicas that must confirm each enqueue before a producer reports it
    /// done (RRQ extension `min_replicas_acked`, default 0 = off): the
    /// producer sends `WAIT` after the write, one more round trip, so that
    /// an acknowledged job survives a Sentinel failover.
    pub min_replicas_acked: u32,
    /// How long a producer waits for those confirmations before the
    /// enqueue fails (RRQ extension `replica_ack_timeout_seconds`, default
    /// 1 s, at most 60 s).
    pub replica_ack_timeout: Duration,
    /// Shards per queue on a Redis Cluster (RRQ extension `queue_shards`, 1
    /// to 256; unset: the store's default, 64). The same in every producer
    /// and worker of one cluster; ignored on a single server and Sentinel.
    pub queue_shards: Option<u16>,
    /// OTLP export (`[rrq.telemetry]`, RRQ extension).
    pub telemetry: TelemetrySettings,
}

/// The most shards per queue `queue_shards` accepts (rrq-store's
/// `keys::MAX_QUEUE_SHARDS`; this crate does not depend on the store).
const MAX_QUEUE_SHARDS: u16 = 256;

fn invalid(key: impl Into<String>, value: impl std::fmt::Display, reason: impl Into<String>) -> Error {
    Error::Invalid { key: key.into(), value: value.to_string(), reason: reason.into() }
}

/// The longest duration any key accepts: 100 years. Longer values (and
/// `inf`/`nan`, which TOML allows) cannot mean anything useful, and would
/// overflow the arithmetic done on them. The same bound as the store's
/// `MAX_DURATION_SECONDS` for job-supplied durations.
pub const MAX_SECONDS: f64 = 100.0 * 365.0 * 86_400.0;

/// A duration key `>= 0` seconds.
fn seconds(key: &str, v: f64) -> Result<Duration, Error> {
    if !v.is_finite() || !(0.0..=MAX_SECONDS).contains(&v) {
        return Err(invalid(key, v, "must be a finite number >= 0 (seconds, at most 100 years)"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// A whole-seconds key, refused past 100 years: Redis rejects an expiry whose
/// milliseconds overflow, and sums of such values would overflow.
fn at_most_100_years(key: &str, v: i64) -> Result<i64, Error> {
    if v > MAX_SECONDS as i64 {
        return Err(invalid(key, v, "must be at most 100 years (3153600000 seconds)"));
    }
    Ok(v)
}

/// A duration key `> 0` seconds.
fn positive_seconds(key: &str, v: f64) -> Result<Duration, Error> {
    if !v.is_finite() || v <= 0.0 || v > MAX_SECONDS {
        return Err(invalid(key, v, "must be a finite number > 0 (seconds, at most 100 years)"));
    }
    Ok(Duration::from_secs_f64(v))
}

fn cpu_count() -> NonZeroUsize {
    std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN)
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().map(|ip| ip.is_loopback()).unwrap_or(false)
}

pub(crate) fn validate(
    raw: RawRrq,
    env: &dyn Fn(&str) -> Option<String>,
    warnings: &mut Vec<Warning>,
) -> Result<Settings, Error> {
    let redis_dsn = env("RRQ_REDIS_DSN")
        .filter(|v| !v.trim().is_empty())
        .or(raw.redis_dsn)
        .unwrap_or_else(|| "redis://localhost:6379/0".to_owned());
    let redis_ca_file = env(crate::REDIS_CA_FILE_ENV).filter(|v| !v.is_empty()).map(std::path::PathBuf::from);
    let capture_runner_output = match env("RRQ_CAPTURE_RUNNER_OUTPUT").filter(|v| !v.is_empty()) {
        Some(v) => matches!(v.as_str(), "1" | "true" | "yes"),
        None => raw.capture_runner_output.unwrap_or(false),
    };

    let default_job_timeout_seconds =
        at_most_100_years("rrq.default_job_timeout_seconds", raw.default_job_timeout_seconds.unwrap_or(300))?;
    if default_job_timeout_seconds <= 0 {
        return Err(invalid(
            "rrq.default_job_timeout_seconds",
            default_job_timeout_seconds,
            "default_job_timeout_seconds must be positive",
        ));
    }
    let ext = raw.default_lock_timeout_extension_seconds.unwrap_or(60);
    if ext < 0 || default_job_timeout_seconds.checked_add(ext).and_then(|s| s.checked_mul(1000)).is_none() {
        return Err(invalid("rrq.default_lock_timeout_extension_seconds", ext, "must be >= 0 and small enough"));
    }
    let max_retries = raw.default_max_retries.unwrap_or(5);
    let default_max_retries = u32::try_from(max_retries.max(0)).unwrap_or(u32::MAX);
    let term =
        seconds("rrq.runner_shutdown_term_grace_seconds", raw.runner_shutdown_term_grace_seconds.unwrap_or(5.0))?;
    let runner_mode = match raw.runner_management_mode.as_deref() {
        None => RunnerMode::Managed,
        Some(m) => RunnerMode::parse(m).ok_or_else(|| {
            invalid("rrq.runner_management_mode", format!("{m:?}"), "expected \"managed\" or \"external\"")
        })?,
    };
    let connect_ms = raw.runner_connect_timeout_ms.filter(|v| *v > 0).unwrap_or(15_000);

    let mut runners = BTreeMap::new();
    for (name, r) in raw.runners {
        let runner = validate_runner(&name, r, runner_mode, warnings)?;
        runners.insert(name, runner);
    }

    let health_interval = match (raw.worker_health_check_interval_seconds, raw.heartbeat_interval_seconds) {
        (Some(v), _) => v,
        (None, Some(v)) => {
            warnings.push(Warning(
                "`heartbeat_interval_seconds` is an older spelling; use `worker_health_check_interval_seconds`".into(),
            ));
            v
        }
        (None, None) => 60.0,
    };
    let health_interval = positive_seconds("rrq.worker_health_check_interval_seconds", health_interval)?;

    let default_queue = QueueName::parse(raw.default_queue_name.as_deref().unwrap_or("default"))
        .ok_or_else(|| invalid("rrq.default_queue_name", "\"\"", "queue name cannot be empty"))?;
    let mut cron = Vec::new();
    for (list, entries) in [("cron_jobs", raw.cron_jobs), ("cron", raw.cron)] {
        if list == "cron" && !entries.is_empty() {
            warnings.push(Warning(
                "`[[rrq.cron]]` is an older spelling of `[[rrq.cron_jobs]]`; its entries are scheduled".into(),
            ));
        }
        for (i, c) in entries.into_iter().enumerate() {
            let key = format!("rrq.{list}[{i}]");
            if c.args.is_some() || c.kwargs.is_some() {
                warnings.push(Warning(format!(
                    "`{key}` uses the older `args`/`kwargs`; write `params` (kwargs become params, args go to params.args)"
                )));
            }
            cron.push(validate_cron(key, c)?);
        }
    }
    unique_cron_names(&cron)?;
    let max_payload = raw.max_payload_bytes.unwrap_or(10 * 1024 * 1024);
    let max_payload_bytes = usize::try_from(max_payload)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| invalid("rrq.max_payload_bytes", max_payload, "must be > 0"))?;

    let events_ttl = raw.job_events_ttl_seconds.unwrap_or(60.0);
    let job_events_ttl = seconds("rrq.job_events_ttl_seconds", events_ttl)?;
    if job_events_ttl < Duration::from_millis(1) {
        return Err(invalid("rrq.job_events_ttl_seconds", events_ttl, "must be at least 0.001"));
    }
    let acked = raw.min_replicas_acked.unwrap_or(0);
    let min_replicas_acked = u32::try_from(acked)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| invalid("rrq.min_replicas_acked", acked, "must be a whole number from 0 (off) to 100"))?;
    let queue_shards = match raw.queue_shards {
        None => None,
        Some(n) => Some(u16::try_from(n).ok().filter(|n| (1..=MAX_QUEUE_SHARDS).contains(n)).ok_or_else(|| {
            invalid("rrq.queue_shards", n, format!("must be a whole number from 1 to {MAX_QUEUE_SHARDS}"))
        })?),
    };
    let ack_timeout = raw.replica_ack_timeout_seconds.unwrap_or(1.0);
    if !ack_timeout.is_finite() || !(0.001..=60.0).contains(&ack_timeout) {
        return Err(invalid(
            "rrq.replica_ack_timeout_seconds",
            ack_timeout,
            "must be a number of seconds from 0.001 to 60",
        ));
    }
    let lease = raw.lease_ttl_seconds.unwrap_or(15.0);
    if !lease.is_finite() || !(1.0..=MAX_SECONDS).contains(&lease) {
        return Err(invalid(
            "rrq.lease_ttl_seconds",
            lease,
            "must be a finite number of seconds >= 1 (at most 100 years)",
        ));
    }

    Ok(Settings {
        redis_dsn,
        redis_ca_file,
        default_queue,
        default_dlq: DlqName::new(raw.default_dlq_name.as_deref().unwrap_or("default")),
        default_max_retries,
        default_job_timeout_seconds,
        lock_timeout_extension_seconds: ext,
        default_result_ttl_seconds: at_most_100_years(
            "rrq.default_result_ttl_seconds",
            raw.default_result_ttl_seconds.unwrap_or(86_400),
        )?,
        poll_delay: seconds("rrq.default_poll_delay_seconds", raw.default_poll_delay_seconds.unwrap_or(0.1))?,
        runner_connect_timeout: Duration::from_millis(connect_ms as u64),
        runner_term_grace: term,
        runner_cancel_hints: raw.runner_enable_inflight_cancel_hints.unwrap_or(false),
        capture_runner_output,
        unique_job_lock_ttl_seconds: at_most_100_years(
            "rrq.default_unique_job_lock_ttl_seconds",
            raw.default_unique_job_lock_ttl_seconds.unwrap_or(21_600),
        )?,
        default_runner_name: raw.default_runner_name.unwrap_or_else(|| "python".to_owned()),
        runner_mode,
        runners,
        runner_routes: raw.runner_routes.into_iter().map(|(q, r)| (QueueName::new(&q), r)).collect(),
        health_check_interval: health_interval,
        health_check_ttl_buffer: seconds(
            "rrq.worker_health_check_ttl_buffer_seconds",
            raw.worker_health_check_ttl_buffer_seconds.unwrap_or(10.0),
        )?,
        base_retry_delay: seconds("rrq.base_retry_delay_seconds", raw.base_retry_delay_seconds.unwrap_or(5.0))?,
        max_retry_delay: seconds("rrq.max_retry_delay_seconds", raw.max_retry_delay_seconds.unwrap_or(3600.0))?,
        shutdown_grace: seconds(
            "rrq.worker_shutdown_grace_period_seconds",
            raw.worker_shutdown_grace_period_seconds.unwrap_or(10.0),
        )?,
        cron,
        watch: validate_watch(raw.watch.unwrap_or_default())?,
        correlation_mappings: raw.correlation_mappings,
        metrics_listen: raw.metrics_listen,
        dashboard_listen: raw.dashboard_listen.filter(|a| !a.trim().is_empty()),
        max_payload_bytes,
        keyspace_notifications: raw.keyspace_notifications.unwrap_or(true),
        job_events_ttl,
        lease_ttl: Duration::from_secs_f64(lease),
        min_replicas_acked,
        replica_ack_timeout: Duration::from_secs_f64(ack_timeout),
        queue_shards,
        telemetry: validate_telemetry(raw.telemetry.unwrap_or_default())?,
    })
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cron_name_tests;
