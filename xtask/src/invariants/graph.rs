//! The crate-graph rules of ARCHITECTURE.md, checked with `cargo tree`.

use anyhow::{Result, bail};

use crate::cargo;

/// How many graph rules `check` applies (for the summary line).
pub(crate) const RULES: usize = 4 + BANNED.len();

/// `(crate, dependency)`: the crate's normal tree must not contain it.
const BANNED: [(&str, &str); 7] = [
    ("rrq-protocol", "tokio"),
    ("rrq-protocol", "fred"),
    ("rrq-pool", "rrq-store"),
    ("rrq-pool", "fred"),
    ("rrq-producer", "rrq-core"),
    ("rrq-producer", "rrq-pool"),
    ("rrq-runner", "fred"),
];

/// Direct dependents of `krate` among the workspace's own packages (normal edges).
fn dependents(krate: &str) -> Result<Vec<String>> {
    let out = cargo()
        .args(["tree", "--workspace", "-e", "normal", "-i", krate, "--depth", "1", "--prefix", "none"])
        .args(["--format", "{p}"])
        .output()?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        // Not in the graph at all: no dependents.
        if err.contains("did not match any packages") || err.contains("nothing to print") {
            return Ok(Vec::new());
        }
        bail!("cargo tree -i {krate} failed: {err}");
    }
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .filter(|n| n != krate)
        // Only our own crates are bound by the rules; a third-party crate may
        // build on another (clap_complete on clap).
        .filter(|n| n.starts_with("rrq-") || n == "xtask")
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

/// Whether `krate`'s normal dependency tree contains `dep`.
fn depends_on(krate: &str, dep: &str) -> Result<bool> {
    let out = cargo().args(["tree", "-p", krate, "-e", "normal", "--prefix", "none", "--format", "{p}"]).output()?;
    if !out.status.success() {
        bail!("cargo tree -p {krate} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).lines().any(|l| l.split_whitespace().next() == Some(dep)))
}

/// Every broken crate-graph rule, as a sentence.
pub(crate) fn check() -> Result<Vec<String>> {
    let mut broken = Vec::new();
    let only = |krate: &str, allowed: &[&str], broken: &mut Vec<String>| -> Result<()> {
        for d in dependents(krate)? {
            if !allowed.contains(&d.as_str()) {
                broken.push(format!("Cargo.toml: crate graph: {d} depends on {krate} (only {allowed:?} may)"));
            }
        }
        Ok(())
    };
    only("fred", &["rrq-store"], &mut broken)?;
    only("testcontainers", &["rrq-test-support"], &mut broken)?;
    only("clap", &["rrq-cli", "xtask"], &mut broken)?;
    only("opentelemetry_sdk", &["rrq-cli"], &mut broken)?;
    for (krate, banned) in BANNED {
        if depends_on(krate, banned)? {
            broken.push(format!("Cargo.toml: crate graph: {krate} must not depend on {banned}"));
        }
    }
    Ok(broken)
}
