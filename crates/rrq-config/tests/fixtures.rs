//! Example configurations of the reference documentation load unchanged.

use std::path::Path;

fn load(name: &str) -> rrq_config::Settings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let loaded = rrq_config::load_with_env(Some(&path), &|_| None).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(loaded.warnings.is_empty(), "{name}: unexpected warnings {:?}", loaded.warnings);
    loaded.settings
}

#[test]
fn reference_minimal_example_loads() {
    let s = load("reference_minimal.toml");
    let p = &s.runners["python"];
    assert_eq!(p.cmd, ["rrq-runner", "--settings", "myapp.runner.settings"]);
    assert_eq!((p.tcp_port, p.pool_size.get(), p.max_in_flight.get()), (9000, 2, 4));
    assert_eq!(p.env["PYTHONPATH"], ".");
}

#[test]
fn reference_routing_and_cron_example_loads() {
    let s = load("reference_routing_cron.toml");
    assert_eq!(s.runner_routes[&rrq_protocol::QueueName::new("bulk")], "rust");
    assert_eq!(s.base_retry_delay.as_secs(), 1);
    assert!(s.runner_cancel_hints);
    assert_eq!(s.cron.len(), 1);
    assert_eq!(s.cron[0].function_name, "rust#cleanup");
    assert!(s.cron[0].unique);
    assert_eq!(s.runners["rust"].max_in_flight.get(), 16);
}

#[test]
fn missing_file_names_the_fixes() {
    let err = rrq_config::load_with_env(None, &|_| None);
    // The test runs in the crate directory, which has no rrq.toml.
    let msg = err.unwrap_err().to_string();
    assert_eq!(msg, "RRQ config not found. Provide --config, set RRQ_CONFIG, or add rrq.toml.");
}

#[test]
fn a_complete_legacy_configuration_loads_with_warnings() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/legacy_0_9.toml");
    let loaded = rrq_config::load_with_env(Some(&path), &|_| None).unwrap();
    let s = loaded.settings;
    assert_eq!(s.runners["python"].tcp_port, 9000);
    assert_eq!(s.runners["python"].max_in_flight.get(), 8);
    assert_eq!(s.health_check_interval.as_secs(), 15);
    assert_eq!(s.default_dlq.as_str(), "rrq:dlq:failed");
    assert_eq!(s.cron.len(), 1);
    assert_eq!(
        serde_json::Value::Object(s.cron[0].params.clone()),
        serde_json::json!({"format": "pdf", "args": ["eu"]})
    );
    assert_eq!(s.cron[0].queue.as_ref().unwrap().as_str(), "rrq:queue:reports");
    let warnings: Vec<String> = loaded.warnings.iter().map(|w| w.0.clone()).collect();
    assert_eq!(warnings.len(), 4, "{warnings:?}");
    for needle in ["heartbeat_interval_seconds", "tcp_socket", "[[rrq.cron]]", "args`/`kwargs"] {
        assert!(warnings.iter().any(|w| w.contains(needle)), "no warning about {needle}: {warnings:?}");
    }
}
