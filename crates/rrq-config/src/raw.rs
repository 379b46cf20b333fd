//! The document as written: serde structs mirroring the TOML, before any
//! validation.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::suggest::closest;
use crate::{Error, Warning};

/// Keys of the `[rrq]` table (reference keys, then RRQ's own).
pub(crate) const RRQ_KEYS: &[&str] = &[
    "redis_dsn",
    "default_queue_name",
    "default_dlq_name",
    "default_max_retries",
    "default_job_timeout_seconds",
    "default_lock_timeout_extension_seconds",
    "default_result_ttl_seconds",
    "default_poll_delay_seconds",
    "runner_connect_timeout_ms",
    "runner_shutdown_term_grace_seconds",
    "runner_enable_inflight_cancel_hints",
    "capture_runner_output",
    "default_unique_job_lock_ttl_seconds",
    "default_runner_name",
    "runner_management_mode",
    "runners",
    "runner_routes",
    "routing",
    "worker_health_check_interval_seconds",
    "worker_health_check_ttl_buffer_seconds",
    "base_retry_delay_seconds",
    "max_retry_delay_seconds",
    "worker_shutdown_grace_period_seconds",
    "cron_jobs",
    "expected_job_ttl",
    "watch",
    "correlation_mappings",
    // Accepted for older files.
    "worker_concurrency",
    "heartbeat_interval_seconds",
    "cron",
    // RRQ extensions (the reference ignores unknown [rrq] keys).
    "metrics_listen",
    "dashboard_listen",
    "max_payload_bytes",
    "keyspace_notifications",
    "job_events_ttl_seconds",
    "lease_ttl_seconds",
    "min_replicas_acked",
    "replica_ack_timeout_seconds",
    "queue_shards",
    "telemetry",
];

/// Keys of `[rrq.telemetry]` (RRQ extension: the OTLP variables as a table).
pub(crate) const TELEMETRY_KEYS: &[&str] = &[
    "otlp_endpoint",
    "traces_endpoint",
    "metrics_endpoint",
    "logs_endpoint",
    "otlp_headers",
    "traces_headers",
    "metrics_headers",
    "logs_headers",
    "otlp_protocol",
    "service_name",
    "resource_attributes",
    "metric_export_interval_seconds",
];

pub(crate) const RUNNER_KEYS: &[&str] = &[
    "type",
    "cmd",
    "pool_size",
    "max_in_flight",
    "env",
    "cwd",
    "tcp_host",
    "tcp_port",
    "allowed_hosts",
    "response_timeout_seconds",
    "tcp_socket",
];

pub(crate) const WATCH_KEYS: &[&str] = &[
    "path",
    "include_patterns",
    "ignore_patterns",
    "no_gitignore",
    "pre_restart_cmds",
    "pre_restart_cwd",
    "pre_restart_timeout_seconds",
];

pub(crate) const CRON_KEYS: &[&str] =
    &["name", "function_name", "schedule", "params", "queue_name", "unique", "timezone", "catch_up", "args", "kwargs"];

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawRrq {
    pub redis_dsn: Option<String>,
    pub default_queue_name: Option<String>,
    pub default_dlq_name: Option<String>,
    pub default_max_retries: Option<i64>,
    pub default_job_timeout_seconds: Option<i64>,
    pub default_lock_timeout_extension_seconds: Option<i64>,
    pub default_result_ttl_seconds: Option<i64>,
    pub default_poll_delay_seconds: Option<f64>,
    pub runner_connect_timeout_ms: Option<i64>,
    pub runner_shutdown_term_grace_seconds: Option<f64>,
    pub runner_enable_inflight_cancel_hints: Option<bool>,
    pub capture_runner_output: Option<bool>,
    pub default_unique_job_lock_ttl_seconds: Option<i64>,
    pub default_runner_name: Option<String>,
    pub runner_management_mode: Option<String>,
    #[serde(default)]
    pub runners: BTreeMap<String, RawRunner>,
    #[serde(default, alias = "routing")]
    pub runner_routes: BTreeMap<String, String>,
    #[allow(dead_code, reason = "accepted and ignored, as the reference does")]
    pub worker_concurrency: Option<toml::Value>,
    pub worker_health_check_interval_seconds: Option<f64>,
    pub worker_health_check_ttl_buffer_seconds: Option<f64>,
    pub base_retry_delay_seconds: Option<f64>,
    pub max_retry_delay_seconds: Option<f64>,
    pub worker_shutdown_grace_period_seconds: Option<f64>,
    #[serde(default)]
    pub cron_jobs: Vec<RawCron>,
    #[allow(dead_code, reason = "accepted and ignored, as the reference does")]
    pub expected_job_ttl: Option<i64>,
    pub watch: Option<RawWatch>,
    #[serde(default)]
    pub correlation_mappings: BTreeMap<String, String>,
    pub heartbeat_interval_seconds: Option<f64>,
    #[serde(default)]
    pub cron: Vec<RawCron>,
    pub metrics_listen: Option<String>,
    pub dashboard_listen: Option<String>,
    pub max_payload_bytes: Option<i64>,
    pub keyspace_notifications: Option<bool>,
    pub job_events_ttl_seconds: Option<f64>,
    pub lease_ttl_seconds: Option<f64>,
    pub min_replicas_acked: Option<i64>,
    pub replica_ack_timeout_seconds: Option<f64>,
    pub queue_shards: Option<i64>,
    pub telemetry: Option<RawTelemetry>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub traces_endpoint: Option<String>,
    pub metrics_endpoint: Option<String>,
    pub logs_endpoint: Option<String>,
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub traces_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub metrics_headers: BTreeMap<String, String>,
    #[serde(default)]
    pub logs_headers: BTreeMap<String, String>,
    pub otlp_protocol: Option<String>,
    pub service_name: Option<String>,
    #[serde(default)]
    pub resource_attributes: BTreeMap<String, String>,
    pub metric_export_interval_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRunner {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub cmd: Option<Vec<String>>,
    pub pool_size: Option<u64>,
    pub max_in_flight: Option<u64>,
    pub env: Option<BTreeMap<String, String>>,
    pub cwd: Option<String>,
    pub tcp_host: Option<String>,
    pub tcp_port: Option<u64>,
    pub allowed_hosts: Option<Vec<String>>,
    pub response_timeout_seconds: Option<f64>,
    pub tcp_socket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawWatch {
    pub path: Option<String>,
    pub include_patterns: Option<Vec<String>>,
    pub ignore_patterns: Option<Vec<String>>,
    pub no_gitignore: Option<bool>,
    pub pre_restart_cmds: Option<Vec<Vec<String>>>,
    pub pre_restart_cwd: Option<String>,
    pub pre_restart_timeout_seconds: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct RawCron {
    /// A name for people (logs, `rrq cron list`); RRQ extension.
    pub name: Option<String>,
    pub function_name: String,
    pub schedule: String,
    #[serde(default)]
    pub params: serde_json::Map<String, serde_json::Value>,
    pub queue_name: Option<String>,
    #[serde(default)]
    pub unique: bool,
    pub timezone: Option<String>,
    #[serde(default)]
    pub catch_up: bool,
    /// 0.9.9 spelling: positional arguments (become `params.args`).
    pub args: Option<Vec<serde_json::Value>>,
    /// 0.9.9 spelling: keyword arguments (become the params).
    pub kwargs: Option<serde_json::Map<String, serde_json::Value>>,
}

fn unknown_key_warning(path: &str, key: &str, known: &[&str]) -> Warning {
    match closest(key, known) {
        Some(k) => Warning(format!("unknown key `{path}.{key}` is ignored; did you mean `{k}`?")),
        None => Warning(format!("unknown key `{path}.{key}` is ignored")),
    }
}

fn syntax(origin: &str, e: impl std::fmt::Display) -> Error {
    Error::Syntax { path: origin.to_owned(), message: e.to_string().trim_end().to_owned() }
}

/// Parses the document, warns about unknown keys, and applies the
/// reference's normalisation (`[rrq]` table or root, `routing` alias,
/// `worker_concurrency` removal).
pub(crate) fn parse(text: &str, origin: &str, warnings: &mut Vec<Warning>) -> Result<RawRrq, Error> {
    let doc: toml::Table = toml::from_str(text).map_err(|e| syntax(origin, e))?;
    let (table, path) = match doc.get("rrq") {
        Some(toml::Value::Table(t)) => (t.clone(), "rrq"),
        Some(_) => {
            return Err(Error::Invalid {
                key: "rrq".into(),
                value: "a non-table value".into(),
                reason: "`rrq` must be a table: write `[rrq]` followed by its keys".into(),
            });
        }
        None => (doc, "<root>"),
    };
    for key in table.keys() {
        if !RRQ_KEYS.contains(&key.as_str()) {
            warnings.push(unknown_key_warning(path, key, RRQ_KEYS));
        }
    }
    if table.contains_key("worker_concurrency") {
        warnings.push(Warning(
            "`worker_concurrency` is ignored: concurrency is pool_size × max_in_flight of the runners".into(),
        ));
    }
    if table.contains_key("routing") {
        if table.contains_key("runner_routes") {
            return Err(Error::Invalid {
                key: format!("{path}.routing"),
                value: "a table".into(),
                reason: "both `routing` and `runner_routes` are set; keep only `runner_routes`".into(),
            });
        }
        warnings.push(Warning("`routing` is a legacy spelling; use `[rrq.runner_routes]`".into()));
    }
    crate::misplaced::check(&table, path, warnings)?;
    if let Some(toml::Value::Table(runners)) = table.get("runners") {
        for (name, runner) in runners {
            let toml::Value::Table(runner) = runner else { continue };
            for key in runner.keys() {
                if !RUNNER_KEYS.contains(&key.as_str()) {
                    let hint = closest(key, RUNNER_KEYS).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
                    return Err(Error::Invalid {
                        key: format!("{path}.runners.{name}.{key}"),
                        value: runner[key].to_string(),
                        reason: format!("unknown runner key{hint} (valid keys: {})", RUNNER_KEYS[..10].join(", ")),
                    });
                }
            }
        }
    }
    match table.get("telemetry") {
        Some(toml::Value::Table(telemetry)) => {
            // Telemetry is off when a key is misspelled, which nothing would
            // show: an unknown key stops loading, as in runner tables.
            for key in telemetry.keys() {
                if !TELEMETRY_KEYS.contains(&key.as_str()) {
                    let hint =
                        closest(key, TELEMETRY_KEYS).map(|k| format!("; did you mean `{k}`?")).unwrap_or_default();
                    return Err(Error::Invalid {
                        key: format!("{path}.telemetry.{key}"),
                        value: telemetry[key].to_string(),
                        reason: format!("unknown telemetry key{hint} (valid keys: {})", TELEMETRY_KEYS.join(", ")),
                    });
                }
            }
        }
        Some(other) => {
            return Err(Error::Invalid {
                key: format!("{path}.telemetry"),
                value: other.to_string(),
                reason: "`telemetry` must be a table: write `[rrq.telemetry]` followed by its keys".into(),
            });
        }
        None => {}
    }
    if let Some(toml::Value::Table(watch)) = table.get("watch") {
        for key in watch.keys() {
            if !WATCH_KEYS.contains(&key.as_str()) && !crate::misplaced::is_rrq_key(key) {
                warnings.push(unknown_key_warning(&format!("{path}.watch"), key, WATCH_KEYS));
            }
        }
    }
    for list in ["cron_jobs", "cron"] {
        if let Some(toml::Value::Array(entries)) = table.get(list) {
            for (i, entry) in entries.iter().enumerate() {
                let toml::Value::Table(entry) = entry else { continue };
                for key in entry.keys() {
                    if !CRON_KEYS.contains(&key.as_str()) && !crate::misplaced::is_rrq_key(key) {
                        warnings.push(unknown_key_warning(&format!("{path}.{list}[{i}]"), key, CRON_KEYS));
                    }
                }
            }
        }
    }
    // Deserialise from the text again (not from the table) so type errors
    // carry their line and column.
    #[derive(Deserialize)]
    struct Doc {
        rrq: RawRrq,
    }
    let rrq = if path == "rrq" {
        toml::from_str::<Doc>(text).map_err(|e| syntax(origin, e))?.rrq
    } else {
        toml::from_str::<RawRrq>(text).map_err(|e| syntax(origin, e))?
    };
    Ok(rrq)
}
