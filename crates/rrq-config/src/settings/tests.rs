//! Unit tests of the parent module (test code: the source rules skip it).
#![cfg(test)]

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
    for key in ["default_result_ttl_seconds", "default_unique_job_lock_ttl_seconds", "default_job_timeout_seconds"] {
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

#[test]
fn replica_acknowledgement_is_off_by_default_and_validated() {
    let (s, w) = parse("").unwrap();
    assert!(w.is_empty());
    assert_eq!(s.min_replicas_acked, 0);
    assert_eq!(s.queue_shards, None);
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
fn queue_shards_is_a_count_from_1_to_256() {
    let (s, _) = parse("[rrq]\nqueue_shards = 16").unwrap();
    assert_eq!(s.queue_shards, Some(16));
    for bad in ["0", "257", "-1", "70000"] {
        let err = parse(&format!("[rrq]\nqueue_shards = {bad}")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("rrq.queue_shards") && message.contains("from 1 to 256"), "{message}");
    }
}
