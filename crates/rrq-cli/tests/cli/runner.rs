//! `rrq runner check`, the runner conformance kit, against real runners:
//! the reference Python runner (`rrq==0.11.1` from PyPI), the TypeScript
//! runner of `sdks/typescript`, and a deliberately broken runner that
//! breaks one rule at a time. (The Rust example runner is checked in
//! tests/e2e/runner_check.rs, which builds it.)

use std::path::Path;

use serde_json::Value;

use crate::{Run, Scratch, rrq_in};

const HANDLERS_PY: &str = include_str!("runner_check/rrq_check_handlers.py");
const BROKEN_PY: &str = include_str!("runner_check/broken_runner.py");

/// Every check of the kit, in the order it reports them.
const CHECKS: [&str; 13] = [
    "starts",
    "echo",
    "context",
    "error",
    "retry",
    "handler_not_found",
    "protocol_version",
    "concurrent",
    "cancel",
    "deadline",
    "deadline_passed",
    "malformed_frame",
    "shutdown",
];

fn failed(run: &Run) -> Vec<String> {
    let report = run.json();
    let checks = report["checks"].as_array().expect("checks array");
    let names: Vec<&str> = checks.iter().map(|c| c["check"].as_str().expect("check name")).collect();
    assert_eq!(names, CHECKS, "every check is reported, in order\n{}", run.stdout);
    checks
        .iter()
        .filter(|c| c["passed"] != Value::Bool(true))
        .map(|c| c["check"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn runner_check_passes_on_the_reference_python_runner_from_the_config() {
    let venv = rrq_test_support::python::venv();
    let dir = Scratch::create();
    dir.write("rrq_check_handlers.py", HANDLERS_PY);
    // The runner table's cmd and env are used as a worker would use them.
    dir.write(
        "rrq.toml",
        &format!(
            "[rrq]\n\n[rrq.runners.py]\ncmd = [\"{bin}\", \"--settings\", \"rrq_check_handlers.settings\"]\n\
             tcp_port = 1\nenv = {{ PYTHONPATH = \"{dir}\" }}\n",
            bin = venv.runner().display(),
            dir = dir.root().display(),
        ),
    );
    let config = dir.path("rrq.toml");
    let run = rrq_in(dir.root(), &["runner", "check", "--runner", "py", "--json", "--config", path(&config)], &[]);
    assert_eq!(failed(&run), Vec::<String>::new(), "stderr:\n{}", run.stderr);
    let run = run.ok();
    assert_eq!(run.json()["passed"], Value::Bool(true));
}

#[test]
fn runner_check_prints_a_table_and_names_each_broken_rule() {
    let dir = Scratch::create();
    dir.write("broken_runner.py", BROKEN_PY);
    let script = dir.path("broken_runner.py");
    // (rule broken by the runner, the checks that must fail); `none` shows
    // the broken runner passes everything else.
    let cases: [(&str, &[&str]); 7] = [
        ("none", &[]),
        ("cancel", &["cancel"]),
        ("cancel_message", &["cancel"]),
        ("deadline", &["deadline", "deadline_passed"]),
        ("timeout_type", &["deadline", "deadline_passed"]),
        ("late_deadline", &["deadline_passed"]),
        ("not_found", &["handler_not_found"]),
    ];
    std::thread::scope(|s| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(rule, checks)| {
                let (dir, script) = (dir.root(), &script);
                s.spawn(move || {
                    let args = ["runner", "check", "--json", "--", "python3", path(script), "--break", rule];
                    let run = rrq_in(dir, &args, &[]);
                    assert_eq!(
                        failed(&run),
                        *checks,
                        "breaking {rule}\nstderr:\n{}\nstdout:\n{}",
                        run.stderr,
                        run.stdout
                    );
                    if checks.is_empty() {
                        run.ok();
                    } else {
                        let run = run.code(1);
                        let named = format!("runner check failed: {}", checks.join(", "));
                        assert!(run.stderr.contains(&named), "{}", run.stderr);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("case thread");
        }
    });
    // The table form states the expectation beside the verdict.
    let run = rrq_in(dir.root(), &["runner", "check", "--", "python3", path(&script), "--break", "not_found"], &[]);
    let run = run.code(1);
    let row = run.line("handler_not_found");
    assert!(row.contains("FAIL") && row.contains("error.type handler_not_found"), "{row}");
    assert!(run.line("echo").contains("pass"), "{}", run.stdout);
    assert!(run.stdout.contains("12 of 13 checks passed"), "{}", run.stdout);
}

#[test]
fn runner_check_cancels_a_request_the_runner_takes_up_late() {
    // A starved runner may read a request well after it was sent. A cancel
    // that overtakes it names no running request and is ignored (protocol
    // section 5.4), so a conforming runner must still pass the cancel check.
    let dir = Scratch::create();
    dir.write("broken_runner.py", BROKEN_PY);
    let script = dir.path("broken_runner.py");
    let args = ["runner", "check", "--json", "--", "python3", path(&script), "--late", "1.5"];
    let run = rrq_in(dir.root(), &args, &[]);
    assert_eq!(failed(&run), Vec::<String>::new(), "stderr:\n{}\nstdout:\n{}", run.stderr, run.stdout);
    run.ok();
}

#[test]
fn runner_check_without_a_runner_is_a_usage_error() {
    let dir = Scratch::create();
    let run = rrq_in(dir.root(), &["runner", "check"], &[]).code(2);
    assert!(run.stderr.contains("--runner NAME"), "{}", run.stderr);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn runner_check_passes_on_the_typescript_runner() {
    let cmd = rrq_test_support::node::typescript_runner();
    let dir = Scratch::create();
    let mut args = vec!["runner", "check", "--json", "--"];
    args.extend(cmd.iter().map(String::as_str));
    let run = rrq_in(dir.root(), &args, &[]);
    assert_eq!(failed(&run), Vec::<String>::new(), "stderr:\n{}", run.stderr);
    run.ok();
}

#[test]
fn runner_check_fails_starts_for_a_runner_that_dies_on_the_empty_probe() {
    let dir = Scratch::create();
    dir.write("broken_runner.py", BROKEN_PY);
    let script = dir.path("broken_runner.py");
    let args = ["runner", "check", "--json", "--", "python3", path(&script), "--break", "probe"];
    let run = rrq_in(dir.root(), &args, &[]).code(1);
    let report = run.json();
    let checks = report["checks"].as_array().expect("checks array");
    // Nothing else can be checked on a runner that is gone.
    assert_eq!(checks.len(), 1, "{}", run.stdout);
    assert_eq!((checks[0]["check"].as_str(), checks[0]["passed"].as_bool()), (Some("starts"), Some(false)));
    let detail = checks[0]["detail"].as_str().unwrap();
    assert!(detail.contains("empty probe"), "{detail}");
    assert!(run.stderr.contains("runner check failed: starts"), "{}", run.stderr);
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port()
}

#[test]
fn runner_check_starts_the_runner_as_a_managed_pool_does() {
    let dir = Scratch::create();
    dir.write("broken_runner.py", BROKEN_PY);
    let work = dir.path("work");
    std::fs::create_dir(&work).unwrap();
    let (script, record) = (dir.path("broken_runner.py"), dir.path("record.json"));
    dir.write(
        "rrq.toml",
        &format!(
            "[rrq]\n\n[rrq.runners.rec]\ncmd = [\"python3\", \"{script}\", \"--record\", \"{record}\"]\n\
             tcp_port = 1\ncwd = \"{work}\"\nenv = {{ CHECK_EXTRA = \"yes\" }}\n",
            script = script.display(),
            record = record.display(),
            work = work.display(),
        ),
    );
    let port = free_port().to_string();
    let config = dir.path("rrq.toml");
    let args = ["runner", "check", "--runner", "rec", "--json", "--port", &port, "--config", path(&config)];
    // The orchestrator's Redis DSN is not the runner's business.
    let run = rrq_in(dir.root(), &args, &[("RRQ_REDIS_DSN", "redis://secret@127.0.0.1:1/0")]);
    assert_eq!(failed(&run), Vec::<String>::new(), "stderr:\n{}", run.stderr);
    let run = run.ok();
    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&record).unwrap()).unwrap();
    let socket = format!("127.0.0.1:{port}");
    assert_eq!(seen["argv"], serde_json::json!(["--record", path(&record), "--tcp-socket", socket]));
    assert_eq!(
        seen["env"],
        serde_json::json!({"RRQ_RUNNER_TCP_SOCKET": socket, "RRQ_REDIS_DSN": null, "CHECK_EXTRA": "yes"})
    );
    let cwd = std::path::PathBuf::from(seen["cwd"].as_str().unwrap());
    assert_eq!(cwd.canonicalize().unwrap(), work.canonicalize().unwrap());
    assert_eq!(seen["stdin"], "/dev/null");
    assert_eq!(seen["leads_its_group"], true);
    // The runner's output goes to stderr; stdout holds the report alone.
    for stream in ["stdout", "stderr"] {
        let line = format!("broken runner: hello on {stream}");
        assert!(run.stderr.contains(&line) && !run.stdout.contains(&line), "{line}\nstdout:\n{}", run.stdout);
    }
}
