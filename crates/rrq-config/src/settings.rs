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
    /// OTLP export (`[rrq.telemetry]`, RRQ extension).
    pub telemetry: TelemetrySettings,
}

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
        telemetry: validate_telemetry(raw.telemetry.unwrap_or_default())?,
    })
}

fn validate_telemetry(t: RawTelemetry) -> Result<TelemetrySettings, Error> {
    const FIX: &str = "must be an http:// or https:// URL, e.g. http://localhost:4318";
    let url = |key: &str, v: Option<String>, may_be_empty: bool| -> Result<Option<String>, Error> {
        let Some(v) = v else { return Ok(None) };
        let trimmed = v.trim();
        if trimmed.is_empty() && may_be_empty {
            return Ok(Some(String::new()));
        }
        if !(trimmed.starts_with("http://") || trimmed.starts_with("https://")) || trimmed.len() <= "https://".len() {
            let fix = if may_be_empty { format!("{FIX} (or \"\" to turn this signal off)") } else { FIX.to_owned() };
            return Err(invalid(format!("rrq.telemetry.{key}"), format!("{v:?}"), fix));
        }
        Ok(Some(trimmed.to_owned()))
    };
    if let Some(p) = &t.otlp_protocol
        && p.trim() != OTLP_PROTOCOL
    {
        return Err(invalid(
            "rrq.telemetry.otlp_protocol",
            format!("{p:?}"),
            format!("this build exports \"{OTLP_PROTOCOL}\" only; set it so or remove the key"),
        ));
    }
    if let Some(name) = &t.service_name
        && name.trim().is_empty()
    {
        return Err(invalid("rrq.telemetry.service_name", "\"\"", "must not be empty; remove the key for `rrq`"));
    }
    for (table, headers) in [
        ("otlp_headers", &t.otlp_headers),
        ("traces_headers", &t.traces_headers),
        ("metrics_headers", &t.metrics_headers),
        ("logs_headers", &t.logs_headers),
        ("resource_attributes", &t.resource_attributes),
    ] {
        if let Some((k, _)) = headers.iter().find(|(k, _)| k.trim().is_empty() || k.contains(['\r', '\n'])) {
            return Err(invalid(
                format!("rrq.telemetry.{table}"),
                format!("{k:?}"),
                "names must be non-empty, one line",
            ));
        }
        if let Some((k, v)) = headers.iter().find(|(_, v)| v.contains(['\r', '\n'])) {
            return Err(invalid(format!("rrq.telemetry.{table}.{k}"), format!("{v:?}"), "values must be one line"));
        }
    }
    let metric_export_interval = match t.metric_export_interval_seconds {
        None => None,
        Some(v) if (0.1..=MAX_SECONDS).contains(&v) => Some(Duration::from_secs_f64(v)),
        Some(v) => {
            return Err(invalid(
                "rrq.telemetry.metric_export_interval_seconds",
                v,
                "must be a number of seconds >= 0.1 (default 60)",
            ));
        }
    };
    Ok(TelemetrySettings {
        otlp_endpoint: url("otlp_endpoint", t.otlp_endpoint, false)?,
        traces_endpoint: url("traces_endpoint", t.traces_endpoint, true)?,
        metrics_endpoint: url("metrics_endpoint", t.metrics_endpoint, true)?,
        logs_endpoint: url("logs_endpoint", t.logs_endpoint, true)?,
        otlp_headers: t.otlp_headers,
        traces_headers: t.traces_headers,
        metrics_headers: t.metrics_headers,
        logs_headers: t.logs_headers,
        service_name: t.service_name.map(|n| n.trim().to_owned()),
        resource_attributes: t.resource_attributes,
        metric_export_interval,
    })
}

fn validate_runner(
    name: &str,
    r: RawRunner,
    mode: RunnerMode,
    warnings: &mut Vec<Warning>,
) -> Result<RunnerSettings, Error> {
    let key = |k: &str| format!("rrq.runners.{name}.{k}");
    if let Some(kind) = &r.kind
        && kind != "socket"
    {
        return Err(invalid(key("type"), format!("{kind:?}"), "the only runner type is \"socket\""));
    }
    let mut tcp_host = r.tcp_host.unwrap_or_else(|| "127.0.0.1".to_owned());
    let mut tcp_port = r.tcp_port;
    if let Some(socket) = &r.tcp_socket {
        warnings.push(Warning(format!(
            "`{}` is deprecated; write `tcp_host` and `tcp_port` instead (rrq 0.11 producers reject `tcp_socket`)",
            key("tcp_socket")
        )));
        let (host, port) = socket.rsplit_once(':').ok_or_else(|| {
            invalid(key("tcp_socket"), format!("{socket:?}"), "expected \"host:port\", e.g. \"127.0.0.1:9000\"")
        })?;
        let port: u64 =
            port.parse().map_err(|_| invalid(key("tcp_socket"), format!("{socket:?}"), "the port is not a number"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if !is_loopback(host) {
            return Err(invalid(key("tcp_socket"), format!("{socket:?}"), "tcp_socket must be a loopback address"));
        }
        tcp_host = host.to_owned();
        tcp_port = tcp_port.or(Some(port));
    }
    let tcp_port = tcp_port.ok_or_else(|| {
        invalid(
            key("tcp_port"),
            "(missing)",
            format!("runner '{name}' is missing required field 'tcp_port' (e.g., 9000)"),
        )
    })?;
    if tcp_port == 0 || tcp_port > 65_535 {
        return Err(invalid(key("tcp_port"), tcp_port, "must be between 1 and 65535"));
    }
    let pool_size = match r.pool_size {
        Some(0) => {
            return Err(invalid(
                key("pool_size"),
                0,
                format!("runner '{name}' has invalid pool_size: 0 - must be a positive integer"),
            ));
        }
        Some(n) => NonZeroUsize::new(n as usize).unwrap_or(NonZeroUsize::MIN),
        None => cpu_count(),
    };
    if tcp_port + pool_size.get() as u64 - 1 > 65_535 {
        return Err(invalid(
            key("tcp_port"),
            tcp_port,
            format!("runner '{name}' tcp_port range insufficient for pool_size {pool_size}"),
        ));
    }
    let max_in_flight = match r.max_in_flight {
        Some(0) => return Err(invalid(key("max_in_flight"), 0, "must be a positive integer (at most 64)")),
        Some(n) => NonZeroUsize::new(n as usize).unwrap_or(NonZeroUsize::MIN),
        None => NonZeroUsize::MIN,
    };
    let cmd = r.cmd.unwrap_or_default();
    if mode == RunnerMode::Managed && cmd.is_empty() {
        return Err(invalid(
            key("cmd"),
            "(missing)",
            format!(
                "runner '{name}' is missing required field 'cmd' (e.g., [\"rrq-runner\", \"--settings\", \"myapp.settings\"])"
            ),
        ));
    }
    let allowed_hosts = r.allowed_hosts.unwrap_or_default();
    if mode == RunnerMode::External
        && !is_loopback(&tcp_host)
        && !allowed_hosts.iter().any(|h| h.eq_ignore_ascii_case(&tcp_host))
    {
        return Err(invalid(
            key("tcp_host"),
            format!("{tcp_host:?}"),
            format!(
                "runner '{name}' has invalid endpoint '{tcp_host}:{tcp_port}': a non-loopback host must be listed in allowed_hosts"
            ),
        ));
    }
    let response_timeout =
        r.response_timeout_seconds.map(|v| positive_seconds(&key("response_timeout_seconds"), v)).transpose()?;
    Ok(RunnerSettings {
        cmd,
        pool_size,
        max_in_flight,
        env: r.env.unwrap_or_default(),
        cwd: r.cwd.map(PathBuf::from),
        tcp_host,
        tcp_port: tcp_port as u16,
        allowed_hosts,
        response_timeout,
    })
}

fn validate_cron(key: String, mut c: RawCron) -> Result<CronEntry, Error> {
    if let Some(kwargs) = c.kwargs.take() {
        for (k, v) in kwargs {
            c.params.entry(k).or_insert(v);
        }
    }
    if let Some(args) = c.args.take().filter(|a| !a.is_empty()) {
        if c.params.contains_key("args") {
            return Err(invalid(format!("{key}.args"), "[…]", "positional args collide with a param named `args`"));
        }
        c.params.insert("args".to_owned(), Value::Array(args));
    }
    if c.function_name.trim().is_empty() {
        return Err(invalid(format!("{key}.function_name"), "\"\"", "function_name cannot be empty"));
    }
    if c.schedule.trim().is_empty() {
        return Err(invalid(format!("{key}.schedule"), "\"\"", "schedule cannot be empty, e.g. \"0 */5 * * * *\""));
    }
    let name = match c.name.take() {
        None => None,
        Some(n) if n.trim().is_empty() || n.chars().any(char::is_control) => {
            return Err(invalid(
                format!("{key}.name"),
                format!("{n:?}"),
                "a cron entry name must be non-blank text without control characters (or leave `name` out)",
            ));
        }
        Some(n) => Some(n.trim().to_owned()),
    };
    let queue = match &c.queue_name {
        None => None,
        Some(q) => Some(
            QueueName::parse(q)
                .ok_or_else(|| invalid(format!("{key}.queue_name"), "\"\"", "queue name cannot be empty"))?,
        ),
    };
    Ok(CronEntry {
        key,
        name,
        function_name: c.function_name,
        schedule: c.schedule,
        params: c.params,
        queue,
        unique: c.unique,
        timezone: c.timezone,
        catch_up: c.catch_up,
    })
}

/// Names identify entries in logs and `rrq cron list`: two entries may not
/// share one.
fn unique_cron_names(cron: &[CronEntry]) -> Result<(), Error> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for entry in cron {
        let Some(name) = entry.name.as_deref() else { continue };
        if let Some(first) = seen.insert(name, &entry.key) {
            return Err(invalid(
                format!("{}.name", entry.key),
                format!("{name:?}"),
                format!("`{first}` and `{}` are both named {name:?}; cron entry names must be unique", entry.key),
            ));
        }
    }
    Ok(())
}

fn validate_watch(w: RawWatch) -> Result<WatchSettings, Error> {
    let cmds = w.pre_restart_cmds.unwrap_or_default();
    if let Some(i) = cmds.iter().position(Vec::is_empty) {
        return Err(invalid(format!("rrq.watch.pre_restart_cmds[{i}]"), "[]", "a pre-restart command needs a program"));
    }
    Ok(WatchSettings {
        path: PathBuf::from(w.path.unwrap_or_else(|| ".".to_owned())),
        include_patterns: w.include_patterns.unwrap_or_else(default_include_patterns),
        ignore_patterns: w.ignore_patterns.unwrap_or_else(default_ignore_patterns),
        no_gitignore: w.no_gitignore.unwrap_or(false),
        pre_restart_cmds: cmds,
        pre_restart_cwd: w.pre_restart_cwd.map(PathBuf::from),
        pre_restart_timeout: w
            .pre_restart_timeout_seconds
            // As the reference: values <= 0 or non-finite mean no timeout;
            // past 100 years is no timeout either (and would not convert).
            .filter(|v| v.is_finite() && *v > 0.0 && *v <= MAX_SECONDS)
            .map(Duration::from_secs_f64),
    })
}

#[cfg(test)]
mod tests {
    use super::TelemetrySettings;
    use crate::{Error, parse, parse_with_env};

    #[test]
    fn empty_document_gets_reference_defaults() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.redis_dsn, "redis://localhost:6379/0");
        assert_eq!(s.default_queue.as_str(), "rrq:queue:default");
        assert_eq!(s.default_dlq.as_str(), "rrq:dlq:default");
        assert_eq!(s.default_max_retries, 5);
        assert_eq!(s.default_job_timeout_seconds, 300);
        assert_eq!(s.default_result_ttl_seconds, 86_400);
        assert_eq!(s.default_runner_name, "python");
        assert_eq!(s.base_retry_delay.as_secs(), 5);
        assert_eq!(s.max_retry_delay.as_secs(), 3600);
        assert_eq!(s.shutdown_grace.as_secs(), 10);
        assert_eq!(s.health_check_interval.as_secs(), 60);
    }

    #[test]
    fn dashboard_listen_is_a_known_key_and_off_by_default() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.dashboard_listen, None);
        let (s, w) = parse("[rrq]\ndashboard_listen = \"127.0.0.1:8080\"").unwrap();
        assert!(w.is_empty(), "a known key: {w:?}");
        assert_eq!(s.dashboard_listen.as_deref(), Some("127.0.0.1:8080"));
        let (s, _) = parse("[rrq]\ndashboard_listen = \" \"").unwrap();
        assert_eq!(s.dashboard_listen, None, "blank means off");
    }

    #[test]
    fn pickup_keys_default_on_and_sixty_seconds_and_are_validated() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert!(s.keyspace_notifications);
        assert_eq!(s.job_events_ttl.as_secs(), 60);
        let (s, w) = parse("[rrq]\nkeyspace_notifications = false\njob_events_ttl_seconds = 2.5").unwrap();
        assert!(w.is_empty(), "known keys: {w:?}");
        assert!(!s.keyspace_notifications);
        assert_eq!(s.job_events_ttl.as_millis(), 2500);
        for bad in ["0", "-1"] {
            let err = parse(&format!("[rrq]\njob_events_ttl_seconds = {bad}")).unwrap_err();
            assert!(err.to_string().contains("job_events_ttl_seconds"), "{err}");
        }
    }

    #[test]
    fn replica_acknowledgement_is_off_by_default_and_validated() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.min_replicas_acked, 0);
        assert_eq!(s.replica_ack_timeout, std::time::Duration::from_secs(1));
        let (s, w) = parse("[rrq]\nmin_replicas_acked = 2\nreplica_ack_timeout_seconds = 0.25").unwrap();
        assert!(w.is_empty(), "known keys: {w:?}");
        assert_eq!(s.min_replicas_acked, 2);
        assert_eq!(s.replica_ack_timeout, std::time::Duration::from_millis(250));
        for bad in ["-1", "101"] {
            let err = parse(&format!("[rrq]\nmin_replicas_acked = {bad}")).unwrap_err();
            assert!(err.to_string().contains("min_replicas_acked"), "{err}");
        }
        for bad in ["0", "-1", "61", "nan"] {
            let err = parse(&format!("[rrq]\nreplica_ack_timeout_seconds = {bad}")).unwrap_err();
            assert!(err.to_string().contains("replica_ack_timeout_seconds"), "{err}");
        }
    }

    #[test]
    fn telemetry_table_is_read_and_off_by_default() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.telemetry, TelemetrySettings::default());
        let text = r#"
[rrq.telemetry]
otlp_endpoint = "http://collector:4318/"
logs_endpoint = ""
metrics_endpoint = "https://m.example/v1/metrics"
otlp_headers = { authorization = "Bearer t" }
traces_headers = { x-tenant = "a" }
otlp_protocol = "http/protobuf"
service_name = " billing-worker "
resource_attributes = { "deployment.environment" = "prod" }
metric_export_interval_seconds = 5
"#;
        let (s, w) = parse(text).unwrap();
        assert!(w.is_empty(), "known keys: {w:?}");
        let t = s.telemetry;
        assert_eq!(t.otlp_endpoint.as_deref(), Some("http://collector:4318/"));
        assert_eq!(t.logs_endpoint.as_deref(), Some(""), "explicitly empty is kept: it turns logs off");
        assert_eq!(t.traces_endpoint, None);
        assert_eq!(t.metrics_endpoint.as_deref(), Some("https://m.example/v1/metrics"));
        assert_eq!(t.otlp_headers["authorization"], "Bearer t");
        assert_eq!(t.traces_headers["x-tenant"], "a");
        assert_eq!(t.service_name.as_deref(), Some("billing-worker"));
        assert_eq!(t.resource_attributes["deployment.environment"], "prod");
        assert_eq!(t.metric_export_interval, Some(std::time::Duration::from_secs(5)));
    }

    #[test]
    fn bad_telemetry_keys_stop_loading_naming_the_key_and_the_fix() {
        let cases = [
            ("otlp_endpont = \"http://c\"", "rrq.telemetry.otlp_endpont", "did you mean `otlp_endpoint`"),
            ("otlp_endpoint = \"collector:4318\"", "rrq.telemetry.otlp_endpoint", "http://"),
            ("otlp_endpoint = \"\"", "rrq.telemetry.otlp_endpoint", "http://"),
            ("traces_endpoint = \"ftp://x\"", "rrq.telemetry.traces_endpoint", "turn this signal off"),
            ("otlp_protocol = \"grpc\"", "rrq.telemetry.otlp_protocol", "http/protobuf"),
            ("service_name = \" \"", "rrq.telemetry.service_name", "must not be empty"),
            ("metric_export_interval_seconds = 0", "rrq.telemetry.metric_export_interval_seconds", ">= 0.1"),
            ("otlp_headers = { a = \"x\\ny\" }", "rrq.telemetry.otlp_headers.a", "one line"),
        ];
        for (line, key, fix) in cases {
            let msg = parse(&format!("[rrq.telemetry]\n{line}")).unwrap_err().to_string();
            assert!(msg.contains(key) && msg.contains(fix), "{line}: {msg}");
        }
        let msg = parse("[rrq]\ntelemetry = 1").unwrap_err().to_string();
        assert!(msg.contains("rrq.telemetry") && msg.contains("[rrq.telemetry]"), "{msg}");
    }

    #[test]
    fn lease_ttl_defaults_to_15_s_and_is_validated_naming_the_key() {
        let (s, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(s.lease_ttl, std::time::Duration::from_secs(15));
        let (s, w) = parse("[rrq]\nlease_ttl_seconds = 3.0").unwrap();
        assert!(w.is_empty(), "a known key: {w:?}");
        assert_eq!(s.lease_ttl, std::time::Duration::from_secs(3));
        let (s, _) = parse("[rrq]\nlease_ttl_seconds = 2").unwrap();
        assert_eq!(s.lease_ttl, std::time::Duration::from_secs(2), "an integer is accepted");
        for bad in ["0.5", "-1", "nan", "inf"] {
            let msg = parse(&format!("[rrq]\nlease_ttl_seconds = {bad}")).unwrap_err().to_string();
            assert!(msg.contains("rrq.lease_ttl_seconds") && msg.contains(">= 1"), "{bad}: {msg}");
        }
    }

    #[test]
    fn root_level_keys_work_without_an_rrq_table() {
        let (s, _) = parse("redis_dsn = \"redis://h:1/2\"\ndefault_queue_name = \"jobs\"").unwrap();
        assert_eq!(s.redis_dsn, "redis://h:1/2");
        assert_eq!(s.default_queue.as_str(), "rrq:queue:jobs");
    }

    #[test]
    fn env_overrides_dsn_and_capture() {
        let env = |k: &str| match k {
            "RRQ_REDIS_DSN" => Some("redis://env:7/0".to_owned()),
            "RRQ_REDIS_CA_FILE" => Some("/etc/rrq/ca.pem".to_owned()),
            "RRQ_CAPTURE_RUNNER_OUTPUT" => Some("yes".to_owned()),
            _ => None,
        };
        let (s, _) = parse_with_env("[rrq]\nredis_dsn = \"redis://file\"", "t", &env).unwrap();
        assert_eq!(s.redis_dsn, "redis://env:7/0");
        assert_eq!(s.redis_ca_file.as_deref(), Some(std::path::Path::new("/etc/rrq/ca.pem")));
        assert!(s.capture_runner_output);
    }

    #[test]
    fn misspelled_keys_warn_with_a_suggestion() {
        let (_, w) = parse("[rrq]\ndefualt_queue_name = \"x\"").unwrap();
        assert_eq!(w.len(), 1);
        assert!(w[0].0.contains("`rrq.defualt_queue_name`") && w[0].0.contains("`default_queue_name`"), "{}", w[0]);
    }

    #[test]
    fn unknown_runner_keys_are_errors() {
        let err = parse("[rrq.runners.p]\ncmd=[\"x\"]\ntcp_port=9000\nbogus=1").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("rrq.runners.p.bogus"), "{msg}");
    }

    #[test]
    fn integer_keys_reject_floats_with_the_line() {
        let err = parse("[rrq]\n\ndefault_max_retries = 2.5\n").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Syntax { .. }), "{msg}");
        assert!(msg.contains("line 3") && msg.contains("default_max_retries"), "{msg}");
    }

    #[test]
    fn runner_validation_names_the_key() {
        let msg = parse("[rrq.runners.p]\ncmd=[\"x\"]\ntcp_port=9000\npool_size=0").unwrap_err().to_string();
        assert!(msg.contains("invalid pool_size: 0"), "{msg}");
        let msg = parse("[rrq.runners.p]\ncmd=[\"x\"]").unwrap_err().to_string();
        assert!(msg.contains("missing required field 'tcp_port'"), "{msg}");
        let msg = parse("[rrq.runners.p]\ntcp_port=9000").unwrap_err().to_string();
        assert!(msg.contains("missing required field 'cmd'"), "{msg}");
        let msg = parse("[rrq.runners.p]\ncmd=[\"x\"]\ntcp_port=65535\npool_size=2").unwrap_err().to_string();
        assert!(msg.contains("range insufficient"), "{msg}");
        let msg = parse("[rrq]\nrunner_shutdown_term_grace_seconds = -1").unwrap_err().to_string();
        assert!(msg.contains("finite number >= 0"), "{msg}");
    }

    #[test]
    fn seed_spellings_are_honoured_with_warnings() {
        let doc = r#"
[rrq]
heartbeat_interval_seconds = 15
[rrq.runners.rust]
cmd = ["./runner"]
tcp_socket = "127.0.0.1:9100"
[[rrq.cron]]
function_name = "tick"
schedule = "*/5 * * * *"
"#;
        let (s, w) = parse(doc).unwrap();
        assert_eq!(s.health_check_interval.as_secs(), 15);
        assert_eq!(s.runners["rust"].tcp_port, 9100);
        assert_eq!(s.cron.len(), 1);
        assert_eq!(w.len(), 3, "{w:?}");
    }

    #[test]
    fn external_mode_requires_allow_listed_hosts() {
        let doc = "[rrq]\nrunner_management_mode=\"external\"\n[rrq.runners.p]\ntcp_host=\"10.0.0.5\"\ntcp_port=9000";
        let msg = parse(doc).unwrap_err().to_string();
        assert!(msg.contains("invalid endpoint '10.0.0.5:9000'"), "{msg}");
        let ok = format!("{doc}\nallowed_hosts=[\"10.0.0.5\"]");
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn absurd_durations_are_errors_naming_the_key_never_panics() {
        let rrq_keys = [
            "default_poll_delay_seconds",
            "runner_shutdown_term_grace_seconds",
            "worker_health_check_interval_seconds",
            "worker_health_check_ttl_buffer_seconds",
            "base_retry_delay_seconds",
            "max_retry_delay_seconds",
            "worker_shutdown_grace_period_seconds",
        ];
        for key in rrq_keys {
            for value in ["nan", "inf", "-inf", "1e30", "-1"] {
                let doc = format!("[rrq]\n{key} = {value}");
                let outcome = std::panic::catch_unwind(|| parse(&doc).map(|_| ()));
                let result = outcome.unwrap_or_else(|_| panic!("`{key} = {value}` panicked the loader"));
                let msg = result.expect_err(&format!("`{key} = {value}` was accepted")).to_string();
                assert!(msg.contains(key), "`{key} = {value}`: {msg}");
            }
        }
        let runner = "[rrq.runners.p]\ncmd=[\"x\"]\ntcp_port=9000";
        for (key, value) in [("response_timeout_seconds", "1e30"), ("response_timeout_seconds", "nan")] {
            let doc = format!("{runner}\n{key} = {value}");
            let outcome = std::panic::catch_unwind(|| parse(&doc).map(|_| ()));
            let result = outcome.unwrap_or_else(|_| panic!("`{key} = {value}` panicked the loader"));
            let msg = result.expect_err(&format!("`{key} = {value}` was accepted")).to_string();
            assert!(msg.contains(key), "`{key} = {value}`: {msg}");
        }
        for key in ["default_result_ttl_seconds", "default_unique_job_lock_ttl_seconds", "default_job_timeout_seconds"]
        {
            let msg = parse(&format!("[rrq]\n{key} = 9223372036854775807")).unwrap_err().to_string();
            assert!(msg.contains(key), "{msg}");
        }
        // The reference reads a non-finite or non-positive pre-restart
        // timeout as "none"; an absurdly large one means none too.
        for value in ["nan", "inf", "1e30", "-1"] {
            let doc = format!("[rrq.watch]\npre_restart_timeout_seconds = {value}");
            let outcome = std::panic::catch_unwind(|| parse(&doc).map(|(s, _)| s.watch.pre_restart_timeout));
            let result = outcome.unwrap_or_else(|_| panic!("`pre_restart_timeout_seconds = {value}` panicked"));
            assert_eq!(result.expect("accepted as no timeout"), None, "pre_restart_timeout_seconds = {value}");
        }
    }
}

#[cfg(test)]
mod cron_name_tests {
    use crate::parse;

    #[test]
    fn cron_entries_take_an_optional_name() {
        let doc = r#"
[[rrq.cron_jobs]]
name = "daily-cleanup"
function_name = "cleanup"
schedule = "0 3 * * *"

[[rrq.cron_jobs]]
function_name = "report"
schedule = "@hourly"
"#;
        let (s, w) = parse(doc).unwrap();
        assert!(w.is_empty(), "`name` is a known key: {w:?}");
        assert_eq!(s.cron[0].name.as_deref(), Some("daily-cleanup"));
        assert_eq!(s.cron[1].name, None);
    }

    #[test]
    fn duplicate_cron_names_stop_loading_naming_both_entries() {
        let doc = r#"
[[rrq.cron_jobs]]
name = "nightly"
function_name = "a"
schedule = "@daily"

[[rrq.cron_jobs]]
name = "other"
function_name = "b"
schedule = "@daily"

[[rrq.cron]]
name = " nightly "
function_name = "c"
schedule = "@hourly"
"#;
        let msg = parse(doc).unwrap_err().to_string();
        assert!(msg.contains("rrq.cron_jobs[0]") && msg.contains("rrq.cron[0]"), "names both entries: {msg}");
        assert!(msg.contains("\"nightly\"") && msg.contains("unique"), "{msg}");
    }

    #[test]
    fn blank_cron_names_are_refused() {
        let doc = "[[rrq.cron_jobs]]\nname = \"  \"\nfunction_name = \"a\"\nschedule = \"@daily\"";
        let msg = parse(doc).unwrap_err().to_string();
        assert!(msg.contains("rrq.cron_jobs[0].name"), "{msg}");
    }
}
