//! Validation of the sections of `[rrq]` that are tables of their own:
//! runners, cron entries, watch mode and telemetry.

use super::*;

pub(super) fn validate_telemetry(t: RawTelemetry) -> Result<TelemetrySettings, Error> {
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

pub(super) fn validate_runner(
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

pub(super) fn validate_cron(key: String, mut c: RawCron) -> Result<CronEntry, Error> {
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
pub(super) fn unique_cron_names(cron: &[CronEntry]) -> Result<(), Error> {
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

pub(super) fn validate_watch(w: RawWatch) -> Result<WatchSettings, Error> {
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
