//! `rrq runner check` against the Rust SDK's example runner, started the way
//! a managed pool starts it: every check of the conformance kit passes.

use std::time::Duration;

use crate::support::{assert_success, example_runner_bin, run_rrq};

#[test]
fn runner_check_passes_on_the_rust_example_runner() {
    let out = run_rrq(&["runner", "check", "--json", "--", example_runner_bin()], &[], Duration::from_secs(60));
    assert_success(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["passed"], true);
    let checks = report["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 13);
    for c in checks {
        assert_eq!(c["passed"], true, "{c}");
    }
}
