//! The source rules of ARCHITECTURE.md, checked line by line over the
//! workspace's Rust files. Each rule is stated as an absence; a finding
//! names the file, the line and the rule.
//!
//! A line is code unless it is a comment (`//`, `///`, `//!`). In a `src/`
//! file, everything after a `#[cfg(test)]` (or `#![cfg(test)]`) line is test code, as are the
//! files under a `tests/` directory and `rrq-test-support`.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One rule: its short name (used in findings) and what it forbids.
#[derive(Debug)]
pub(crate) struct Rule {
    pub(crate) name: &'static str,
    pub(crate) what: &'static str,
}

const KEY_LITERAL: Rule =
    Rule { name: "key literal", what: "a Redis key (a string starting with `rrq:`) spelt outside rrq-store" };
const WALL_CLOCK: Rule = Rule {
    name: "wall clock",
    what: "wall time (`Utc::now`, `SystemTime::now`, `Local::now`) read outside a `clock.rs` module",
};
const ENVIRONMENT: Rule = Rule {
    name: "environment",
    what: "the process environment (variables, arguments) read outside rrq-cli, rrq-config and the entry points",
};
const SLEEP: Rule = Rule {
    name: "test sleep",
    what: "a `sleep(` in test code without a `sleep-ok:` marker on its line or in the comment just above",
};

const SPAWN: Rule = Rule {
    name: "process spawn",
    what: "a process started (`Command::new`) outside rrq-pool (runners) and rrq-cli (the conformance kit, watch mode)",
};

const HASH_FIELD: Rule = Rule {
    name: "job field",
    what: "a job-hash field name spelt as a string outside rrq-store: read jobs through the store's typed views (`JobView`)",
};

/// Every source rule, in the order findings are reported.
pub(crate) const RULES: [Rule; 6] = [KEY_LITERAL, HASH_FIELD, WALL_CLOCK, ENVIRONMENT, SPAWN, SLEEP];

/// Fields of the job hash (docs/redis-schema.md) that no other schema of RRQ
/// uses: not a config key, a runner-protocol member or a name the CLI prints.
/// Spelt as a string, one of them can only be reading or writing the hash.
/// (`id`, `status`, `result`, `function_name`, `queue_name`, `worker_id`,
/// `enqueue_time` and `trace_context` are shared with those schemas, so
/// they are not listed.)
const HASH_ONLY_FIELDS: [&str; 14] = [
    "job_params",
    "job_args",
    "job_kwargs",
    "current_retries",
    "max_retries",
    "next_scheduled_run_time",
    "job_timeout_seconds",
    "result_ttl_seconds",
    "start_time",
    "completion_time",
    "last_error",
    "job_unique_key",
    "dlq_name",
    "correlation_context",
];

/// Crates that start processes (test support starts Redis servers).
const SPAWNERS: [&str; 3] = ["rrq-pool", "rrq-cli", "rrq-test-support"];

/// Crates that own Redis keys: the store, and the test support that seeds
/// and inspects Redis behind the store's back.
const KEY_OWNERS: [&str; 2] = ["rrq-store", "rrq-test-support"];

/// The one file outside rrq-store allowed the `rrq:` prefix: queue names go
/// over the runner protocol in their key form (`queue_name` is
/// `rrq:queue:NAME` on the wire), so the protocol's name types know it.
const WIRE_NAMES: &str = "crates/rrq-protocol/src/names.rs";

/// Crates that read the environment: the command line and the config loader
/// (`RRQ_CONFIG`, `RRQ_REDIS_DSN`), and test support (`RRQ_TEST_REDIS_URL`).
const ENV_READERS: [&str; 3] = ["rrq-cli", "rrq-config", "rrq-test-support"];

/// Entry points of other processes, which must read their own arguments or
/// environment: a runner built on the SDK reads `RRQ_RUNNER_TCP_SOCKET` (the
/// runner protocol), and the runner guard reads its argv.
const ENTRY_POINTS: [&str; 2] = ["crates/rrq-runner/src/server.rs", "crates/rrq-pool/src/guard.rs"];

const CLOCK_READS: [&str; 3] = ["Utc::now(", "SystemTime::now(", "Local::now("];
const ENV_READS: [&str; 5] = ["env::var(", "env::var_os(", "env::vars(", "env::args(", "env::args_os("];

/// A broken rule at a line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Finding {
    /// Path relative to the workspace root, with `/` separators.
    pub(crate) path: String,
    /// 1-based line number.
    pub(crate) line: usize,
    pub(crate) rule: &'static str,
    pub(crate) text: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}: {}", self.path, self.line, self.rule, self.text)
    }
}

/// Scans every Rust file of the workspace's crates and end-to-end tests.
pub(crate) fn check(root: &Path) -> Result<Vec<Finding>> {
    let mut files = Vec::new();
    for dir in [root.join("crates"), root.join("tests")] {
        collect(&dir, &mut files)?;
    }
    files.sort();
    let mut found = Vec::new();
    for file in files {
        let rel = file.strip_prefix(root).unwrap_or(&file).to_string_lossy().replace('\\', "/");
        let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
        found.extend(scan(&rel, &text));
    }
    Ok(found)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if path.is_dir() {
            if !matches!(name, "target" | "node_modules" | "data") && !name.starts_with('.') {
                collect(&path, out)?;
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The crate a workspace-relative path belongs to (`tests/...` is rrq-e2e).
fn crate_of(path: &str) -> &str {
    match path.strip_prefix("crates/") {
        Some(rest) => rest.split('/').next().unwrap_or_default(),
        None => "rrq-e2e",
    }
}

/// Whether the file is a program of its own (an example or a benchmark,
/// with its own `main`), which the rules do not bind.
fn is_program(path: &str) -> bool {
    matches!(path.split('/').nth(2), Some("examples" | "benches"))
}

/// Whether the whole file is test code.
fn is_test_file(path: &str) -> bool {
    crate_of(path) == "rrq-test-support" || path.starts_with("tests/") || path.split('/').nth(2) == Some("tests")
}

/// Findings of one file's text.
pub(crate) fn scan(path: &str, text: &str) -> Vec<Finding> {
    if is_program(path) {
        return Vec::new();
    }
    let krate = crate_of(path);
    let file_name = path.rsplit('/').next().unwrap_or_default();
    let mut in_test = is_test_file(path);
    // A `sleep-ok` marker in the comment lines right above the current line.
    let mut marked_above = false;
    let mut found = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        // `#![cfg(test)]` opens a test module in a file of its own; a
        // `#[cfg(test)]` on a module declared in another file (`mod x;`)
        // opens nothing here.
        let declares_file = lines.get(i + 1).is_some_and(|next| {
            let next = next.trim();
            next.starts_with("mod ") && next.ends_with(';')
        });
        if (code.starts_with("#[cfg(test)]") && !declares_file) || code.starts_with("#![cfg(test)]") {
            in_test = true;
        }
        let mut hit = |rule: &Rule| {
            found.push(Finding { path: path.to_owned(), line: i + 1, rule: rule.name, text: line.trim().to_owned() })
        };
        if !code.starts_with("//") {
            if !in_test {
                if code.contains("\"rrq:") && !KEY_OWNERS.contains(&krate) && path != WIRE_NAMES {
                    hit(&KEY_LITERAL);
                }
                if !KEY_OWNERS.contains(&krate) && HASH_ONLY_FIELDS.iter().any(|f| code.contains(&format!("\"{f}\""))) {
                    hit(&HASH_FIELD);
                }
                if CLOCK_READS.iter().any(|c| code.contains(c)) && file_name != "clock.rs" {
                    hit(&WALL_CLOCK);
                }
                if ENV_READS.iter().any(|e| code.contains(e))
                    && !ENV_READERS.contains(&krate)
                    && !ENTRY_POINTS.contains(&path)
                {
                    hit(&ENVIRONMENT);
                }
                if code.contains("Command::new(") && !SPAWNERS.contains(&krate) {
                    hit(&SPAWN);
                }
            } else if code.contains("sleep(") && !line.contains("sleep-ok") && !marked_above {
                hit(&SLEEP);
            }
        }
        marked_above = code.starts_with("//") && (marked_above || code.contains("sleep-ok"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(path: &str, text: &str) -> Vec<(usize, &'static str)> {
        scan(path, text).into_iter().map(|f| (f.line, f.rule)).collect()
    }

    #[test]
    fn a_key_literal_outside_the_store_is_named_with_its_line() {
        let text = "fn f() {\n    let k = \"rrq:queue:default\";\n}\n";
        assert_eq!(rules("crates/rrq-cli/src/debug.rs", text), [(2, "key literal")]);
        assert!(rules("crates/rrq-store/src/keys.rs", text).is_empty());
        assert!(rules(WIRE_NAMES, text).is_empty());
        let f = &scan("crates/rrq-cli/src/debug.rs", text)[0];
        assert_eq!(f.to_string(), "crates/rrq-cli/src/debug.rs:2: key literal: let k = \"rrq:queue:default\";");
    }

    #[test]
    fn a_job_field_read_by_name_outside_the_store_is_named() {
        let text = "let e = fields.get(\"last_error\");\nlet n = \"last_error_count\";\nlet s = f[\"status\"];\n";
        assert_eq!(
            rules("crates/rrq-cli/src/dlq.rs", text),
            [(1, "job field")],
            "exact names only, shared ones allowed"
        );
        assert!(rules("crates/rrq-store/src/view.rs", text).is_empty(), "the store owns the schema");
        let json = "json!({\"job_params\": p, \"current_retries\": 0})";
        assert_eq!(rules("crates/rrq-dashboard/src/data.rs", json), [(1, "job field")]);
        let test = format!("fn f() {{}}\n#[cfg(test)]\nmod tests {{\n{text}}}\n");
        assert!(rules("crates/rrq-cli/src/dlq.rs", &test).is_empty(), "tests may plant hashes");
    }

    #[test]
    fn comments_and_test_modules_are_not_code() {
        let text = "/// `\"rrq:job:x\"` in a doc\n// Utc::now() in a comment\n#[cfg(test)]\nmod tests {\n    const K: &str = \"rrq:job:1\";\n    fn t() { let _ = Utc::now(); }\n}\n";
        assert!(rules("crates/rrq-core/src/worker.rs", text).is_empty());
        let file = "//! Tests of the parent module.\n#![cfg(test)]\nconst K: &str = \"rrq:job:1\";\n";
        assert!(
            rules("crates/rrq-config/src/settings/tests.rs", file).is_empty(),
            "a test module in a file of its own"
        );
    }

    #[test]
    fn wall_time_is_read_only_in_a_clock_module() {
        let text = "let now = Utc::now();\nlet t = SystemTime::now();\n";
        assert_eq!(rules("crates/rrq-core/src/cron.rs", text), [(1, "wall clock"), (2, "wall clock")]);
        assert!(rules("crates/rrq-store/src/clock.rs", text).is_empty());
    }

    #[test]
    fn the_environment_is_read_only_by_the_cli_the_config_and_entry_points() {
        let text = "let v = std::env::var_os(\"RRQ_REDIS_CA_FILE\");\n";
        assert_eq!(rules("crates/rrq-store/src/redis/options.rs", text), [(1, "environment")]);
        assert!(rules("crates/rrq-cli/src/main.rs", text).is_empty());
        assert!(rules("crates/rrq-config/src/lib.rs", text).is_empty());
        assert!(rules("crates/rrq-runner/src/server.rs", text).is_empty());
    }

    #[test]
    fn only_the_pool_and_the_cli_start_processes() {
        let text = "let child = tokio::process::Command::new(program).spawn()?;\n";
        assert_eq!(rules("crates/rrq-core/src/worker.rs", text), [(1, "process spawn")]);
        assert!(rules("crates/rrq-pool/src/process.rs", text).is_empty());
        assert!(rules("crates/rrq-cli/src/runner_check.rs", text).is_empty());
    }

    #[test]
    fn a_test_sleep_needs_a_marker_on_its_line_or_the_one_above() {
        let text = "tokio::time::sleep(d).await;\n// sleep-ok: the handler's run time\ntokio::time::sleep(d).await;\nsleep(d); // sleep-ok: paused clock\n";
        assert_eq!(rules("crates/rrq-pool/tests/pool/main.rs", text), [(1, "test sleep")]);
        let block = "// sleep-ok: the two timers must be\n// staggered by hand.\nsleep(d);\nsleep(d);\n";
        assert_eq!(rules("crates/rrq-pool/tests/pool/main.rs", block), [(4, "test sleep")], "a marker covers one line");
        assert_eq!(rules("tests/e2e/main.rs", text), [(1, "test sleep")]);
        let src = format!("fn f() {{ sleep(d); }}\n#[cfg(test)]\nmod tests {{\n{text}}}\n");
        assert_eq!(rules("crates/rrq-core/src/worker.rs", &src), [(4, "test sleep")]);
        // A test module declared in a file of its own leaves the code after
        // it as it is: a backoff there is no test sleep.
        let declared = "#[cfg(test)]\nmod lint;\nasync fn wait() { tokio::time::sleep(d).await; }\n";
        assert!(rules("crates/rrq-store/src/redis/scripts/mod.rs", declared).is_empty());
        assert_eq!(
            rules("crates/rrq-store/src/redis/scripts/mod.rs", "#[cfg(test)]\nmod t {\nsleep(d);\n}\n"),
            [(3, "test sleep")]
        );
    }

    #[test]
    fn every_rule_is_listed() {
        assert!(RULES.iter().all(|r| !r.name.is_empty() && !r.what.is_empty()));
        assert_eq!(crate_of("tests/e2e/main.rs"), "rrq-e2e");
        assert!(is_test_file("crates/rrq-store/tests/conformance/main.rs"));
        assert!(!is_test_file("crates/rrq-store/src/tests.rs"));
        assert!(scan("crates/rrq-core/examples/embedded.rs", "let d = std::env::var(\"X\");").is_empty());
    }
}
