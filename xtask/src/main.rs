//! `cargo xtask`: the project's automation, in Rust so it runs wherever cargo does.
//!
//! * `cargo xtask test`: formatting, lints (warnings denied), dependency
//!   invariants, the TypeScript SDK's `npm ci && npm test`, every test (Redis,
//!   cluster, sentinel, Docker, Python and Node interop included), doc tests.
//!   It first checks the tools the tests need and that a Docker daemon answers.
//! * `cargo xtask demo`: Redis (from `RRQ_REDIS_DSN` or a throwaway
//!   `redis-server`), a worker with the example Rust runner, a few hundred jobs,
//!   progress and a summary.
//! * `cargo xtask chaos [--seed S] [--schedules N] [--minutes M] [--ci] [--cluster]`:
//!   seeded random faults against real orchestrators, runners and Redis, then
//!   the delivery invariants; see `src/chaos/mod.rs`.
//! * `cargo xtask bench [--quick] [SCENARIO...]`: RRQ against the reference
//!   orchestrator (`rrq==0.11.1`), side by side; see `src/bench/mod.rs`.

mod chaos;
mod demo;
mod invariants;

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test") => test(&args[1..]),
        Some("demo") => demo::run(&args[1..]),
        Some("invariants") => invariants::check(),
        Some("bench") => bench(&args[1..]),
        Some("chaos") => chaos::run(&args[1..]),
        _ => {
            eprintln!("usage: cargo xtask <test|demo|invariants|bench|chaos>");
            eprintln!("  test        fmt check, clippy -D warnings, invariants, all tests");
            eprintln!("  demo [N]    run N jobs (default 500) through a worker and the example runner");
            eprintln!("  invariants  check the crate graph rules of ARCHITECTURE.md");
            eprintln!("  bench [--quick] [--reps N] [--check] [SCENARIO...]");
            eprintln!(
                "              RRQ vs the reference rrq 0.11.1 (release builds); table + target/bench-results.json"
            );
            eprintln!("  chaos [--seed S] [--schedules N] [--minutes M] [--ci] [--cluster] [--release]");
            eprintln!("              random faults against real workers, runners and Redis; checks the invariants");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a command, echoing it first; fails if it exits non-zero.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", render(cmd));
    let status = cmd.status().with_context(|| format!("cannot start {}", render(cmd)))?;
    if !status.success() {
        bail!("`{}` failed ({status})", render(cmd));
    }
    Ok(())
}

fn render(cmd: &Command) -> String {
    std::iter::once(cmd.get_program()).chain(cmd.get_args()).map(|s| s.to_string_lossy()).collect::<Vec<_>>().join(" ")
}

pub(crate) fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()))
}

/// Set to `1` to skip the Docker tests on a machine without a daemon.
const NO_DOCKER_ENV: &str = "RRQ_TEST_NO_DOCKER";

/// Whether a Docker daemon answers `docker info`, with the reason if not.
fn docker_daemon() -> Result<(), String> {
    match Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]).output() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err("the `docker` command was not found".to_owned()),
        Err(e) => Err(format!("cannot run `docker`: {e}")),
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!("`docker info` failed: {}", String::from_utf8_lossy(&out.stderr).trim())),
    }
}

/// The Docker tests need a daemon: `Ok(None)` when one answers, a warning
/// to print when none does but the opt-out is set, an error naming the fix
/// otherwise.
fn docker_check(daemon: Result<(), String>, opt_out: Option<&str>) -> Result<Option<String>> {
    let Err(why) = daemon else { return Ok(None) };
    let why = why.trim_end_matches('.');
    if opt_out.map(str::trim) == Some("1") {
        return Ok(Some(format!(
            "WARNING: no Docker daemon ({why}); {NO_DOCKER_ENV}=1, so the Docker tests will be SKIPPED"
        )));
    }
    bail!(
        "the Docker tests need a daemon, but {why}; install Docker (`apt-get install docker.io`) and start it \
         (`dockerd > /tmp/dockerd.log 2>&1 &`; `.ci/run` does both), or set {NO_DOCKER_ENV}=1 to skip them here"
    )
}

fn has_nextest() -> bool {
    cargo().args(["nextest", "--version"]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn bench(args: &[String]) -> Result<()> {
    // The harness, the `rrq` CLI and the example runner, all in release mode.
    run(cargo().args(["build", "--release", "--quiet", "-p", "xtask", "-p", "rrq", "-p", "rrq-runner", "--bins"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    run(Command::new(target.join("release/rrq-bench")).args(args))
}

fn test(extra: &[String]) -> Result<()> {
    let redis = std::process::Command::new("redis-server").arg("--version").output();
    if redis.map(|o| !o.status.success()).unwrap_or(true) && std::env::var_os("RRQ_TEST_REDIS_URL").is_none() {
        bail!(
            "redis-server is not installed; install it with `apt-get install redis-server` (or set RRQ_TEST_REDIS_URL)"
        );
    }
    let node = ["node", "npm"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false));
    if !node {
        bail!("node and npm are needed for sdks/typescript; install them with `apt-get install nodejs npm` (Node 20)");
    }
    // The cluster fixtures run `redis-cli --cluster create`.
    if !Command::new("redis-cli").arg("--version").output().map(|o| o.status.success()).unwrap_or(false) {
        bail!("redis-cli is not installed; install it with `apt-get install redis-tools`");
    }
    // The dashboard's browser tests (crates/rrq-dashboard) fail without them.
    let browser = ["chromium", "chromedriver"]
        .iter()
        .all(|tool| Command::new(tool).arg("--version").output().map(|o| o.status.success()).unwrap_or(false));
    if !browser {
        bail!(
            "chromium and chromedriver are needed for the dashboard's browser tests; install them with `apt-get install chromium chromium-driver`"
        );
    }
    let opt_out = std::env::var(NO_DOCKER_ENV).ok();
    if let Some(warning) = docker_check(docker_daemon(), opt_out.as_deref())? {
        eprintln!("{warning}");
    }
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    // The TypeScript runner SDK: a clean install from package-lock.json, its
    // build and its own tests (node --test).
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sdks/typescript");
    run(Command::new("npm").args(["ci", "--no-audit", "--no-fund"]).current_dir(&sdk))?;
    run(Command::new("npm").arg("test").current_dir(&sdk))?;
    run(cargo().args(["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"]))?;
    invariants::check()?;
    deny()?;
    // The fixed chaos seeds, on one server and on a cluster (real processes,
    // about three minutes), before the test runners so the run ends with the
    // test runner's own summary.
    chaos::run(&["--ci".to_owned()])?;
    // Doc tests first, so the run ends with the test runner's own summary.
    run(cargo().args(["test", "--workspace", "--doc"]))?;
    if has_nextest() {
        run(cargo()
            .args(["nextest", "run", "--workspace", "--no-fail-fast", "--failure-output", "final"])
            .args(extra))?;
    } else {
        run(cargo().args(["test", "--workspace", "--no-fail-fast"]).args(extra))?;
    }
    Ok(())
}

/// The cargo-deny release `cargo xtask test` installs where none is.
const CARGO_DENY: &str = "0.20.2";

/// deny.toml's license allow-list, crate bans and allowed sources. (Its
/// advisories check needs the RustSec database from GitHub; run `cargo deny
/// check advisories` where that is reachable.)
fn deny() -> Result<()> {
    let installed = cargo().args(["deny", "--version"]).output().is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!(
            "cargo-deny is not installed: installing {CARGO_DENY} once for this machine (a few minutes): \
             `cargo install cargo-deny --locked --version {CARGO_DENY}`"
        );
        run(cargo().args(["install", "cargo-deny", "--locked", "--version", CARGO_DENY]))?;
    }
    run(cargo().args(["deny", "--log-level", "error", "check", "bans", "licenses", "sources"]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_docker_check_names_the_fix_and_honours_only_an_explicit_opt_out() {
        let gone = || Err("`docker info` failed: Cannot connect to the Docker daemon.".to_owned());
        let why = docker_check(gone(), None).unwrap_err().to_string();
        assert!(why.contains("dockerd") && why.contains("apt-get install docker.io"), "{why}");
        assert!(why.contains("RRQ_TEST_NO_DOCKER=1"), "{why}");
        assert!(docker_check(gone(), Some("yes")).is_err(), "only 1 opts out");
        let warning = docker_check(gone(), Some("1")).unwrap().expect("a warning");
        assert!(warning.contains("SKIPPED"), "{warning}");
        assert_eq!(docker_check(Ok(()), Some("1")).unwrap(), None);
        assert_eq!(docker_check(Ok(()), None).unwrap(), None);
    }
}
