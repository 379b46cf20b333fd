//! Instructions the Redis servers of a drain execute, counted by valgrind's
//! callgrind (`cargo xtask bench --instructions cluster`).
//!
//! Redis CPU seconds per job are what an operator pays, but on a small
//! machine shared by the servers, the worker, its runners and the harness
//! they move by 10–20 % between identical runs: three masters and a worker
//! on two cores evict each other's caches and wait for each other. The
//! instructions a server executes for the same commands do not depend on
//! what else runs, so they compare the two key layouts' work per job
//! repeatably (within about 1 %; what else runs can still change how the
//! worker batches its commands). They leave out the kernel's side (socket reads and writes,
//! which the CPU figures keep as system time) and treat every instruction
//! alike, so they complement the CPU figures rather than replace them.
//!
//! Every private `redis-server` the harness starts runs under
//! `valgrind --tool=callgrind --instr-atstart=no` (through a wrapper script
//! handed to [`rrq_test_support::use_server_program`]): uninstrumented, so
//! start-up and the enqueue run at a few times native speed. Before the
//! worker starts, `callgrind_control -i on` turns the count on in each
//! master; after the drain, `callgrind_control -d` writes what it counted.
//! The dump's `summary:` line is the total, and `callgrind_annotate` splits
//! it by function. Under
//! instrumentation a server runs 30–50 times slower, so what Redis does per
//! second rather than per command (`serverCron`, the cluster bus) weighs
//! more per job than at native speed; the per-function table shows it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// What one server executed while counting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Instructions in all.
    pub total: u64,
    /// Instructions per function, each function's own (not its callees').
    pub functions: BTreeMap<String, u64>,
}

/// The wrapper's directory, where the dumps land too.
pub(crate) struct Callgrind {
    dir: PathBuf,
}

impl Callgrind {
    /// Checks that valgrind's tools are installed, writes the wrapper, and
    /// makes every private server started from now on run under it.
    pub(crate) fn install() -> Result<Callgrind> {
        for tool in ["valgrind", "callgrind_control", "callgrind_annotate"] {
            // Found is enough: callgrind_annotate answers `--version` with exit status 255.
            if let Err(e) = Command::new(tool).arg("--version").output() {
                bail!("--instructions needs `{tool}` ({e}): install valgrind (`apt-get install valgrind`)");
            }
        }
        let dir = std::env::temp_dir().join(format!("rrq-bench-callgrind-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        // From here on, dropping it (on an error too) removes the directory.
        let callgrind = Callgrind { dir };
        let real = rrq_test_support::server_program();
        let out = |name: &str| quoted(&callgrind.dir.join(name).display().to_string());
        let script = format!(
            "#!/bin/sh\nexec valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file={} --log-file={} {} \"$@\"\n",
            out("callgrind.%p"),
            out("valgrind.%p.log"),
            quoted(&real),
        );
        let wrapper = callgrind.dir.join("redis-server");
        std::fs::write(&wrapper, script).with_context(|| format!("write {}", wrapper.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
        // Set once per process: `run` installs it once, before any server starts.
        if !rrq_test_support::use_server_program(wrapper.display().to_string()) {
            bail!("the servers' program was already set in this process; --instructions cannot wrap it");
        }
        Ok(callgrind)
    }

    /// Starts counting in each of `pids`.
    pub(crate) fn start(&self, pids: &[u32]) -> Result<()> {
        pids.iter().try_for_each(|pid| control(&["-i", "on", &pid.to_string()]))
    }

    /// Writes what each of `pids` counted since [`Callgrind::start`] and
    /// reads it back, in the order of `pids`.
    pub(crate) fn finish(&self, pids: &[u32]) -> Result<Vec<Counts>> {
        pids.iter()
            .map(|pid| {
                control(&["-d", "drain", &pid.to_string()])?;
                let dump = latest_dump(&self.dir, *pid)?;
                let text = std::fs::read_to_string(&dump).with_context(|| format!("read {}", dump.display()))?;
                // Read once: a later process with the same id cannot pick it up.
                let _remove = RemoveOnDrop(&dump);
                let total =
                    parse_summary(&text).with_context(|| format!("no `summary:` line in {}", dump.display()))?;
                let annotated = Command::new("callgrind_annotate")
                    .args(["--auto=no", "--inclusive=no", "--threshold=100"])
                    .arg(&dump)
                    .output()
                    .context("run callgrind_annotate")?;
                if !annotated.status.success() {
                    bail!(
                        "callgrind_annotate {} failed: {}",
                        dump.display(),
                        String::from_utf8_lossy(&annotated.stderr)
                    );
                }
                Ok(Counts { total, functions: parse_annotate(&String::from_utf8_lossy(&annotated.stdout)) })
            })
            .collect()
    }
}

impl Drop for Callgrind {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes a file when dropped.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// `text` as one word for `sh`, in single quotes.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

fn control(args: &[&str]) -> Result<()> {
    let out = Command::new("callgrind_control").args(args).output().context("run callgrind_control")?;
    // callgrind_control exits 0 even when no process answered; it says so.
    let said = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || said.contains("No active callgrind runs") || said.contains("Error") {
        bail!("callgrind_control {} failed: {}{}", args.join(" "), said.trim(), String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// The newest dump of `pid` in `dir`: `callgrind.PID.N` with the largest N.
fn latest_dump(dir: &Path, pid: u32) -> Result<PathBuf> {
    let prefix = format!("callgrind.{pid}.");
    let mut best: Option<(u64, PathBuf)> = None;
    for entry in std::fs::read_dir(dir).with_context(|| format!("list {}", dir.display()))? {
        let path = entry?.path();
        let n = path.file_name().and_then(|f| f.to_str()?.strip_prefix(&prefix)?.parse::<u64>().ok());
        if let Some(n) = n
            && best.as_ref().is_none_or(|(m, _)| n > *m)
        {
            best = Some((n, path));
        }
    }
    best.map(|(_, p)| p).with_context(|| format!("no callgrind dump of process {pid} in {}", dir.display()))
}

/// The `summary: N` line of a callgrind dump.
pub(crate) fn parse_summary(text: &str) -> Option<u64> {
    text.lines().find_map(|l| l.strip_prefix("summary:")?.trim().parse().ok())
}

/// `callgrind_annotate --auto=no` lines (`1,234 (12.3%)  file:function [object]`)
/// as function → instructions; a function named in several files is summed.
pub(crate) fn parse_annotate(text: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        let Some((count, rest)) = line.split_once(' ') else { continue };
        let Ok(count) = count.replace(',', "").parse::<u64>() else { continue };
        let Some((_, rest)) = rest.trim_start().strip_prefix('(').and_then(|r| r.split_once(')')) else { continue };
        let name = rest.trim();
        if name.is_empty() || name.starts_with("PROGRAM TOTALS") {
            continue;
        }
        let name = name.split(" [").next().unwrap_or(name);
        let function = name.rsplit_once(':').map_or(name, |(_, f)| f);
        *out.entry(function.to_owned()).or_default() += count;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_s_summary_and_the_annotated_functions_parse() {
        let dump = "version: 1\ncreator: callgrind-3.19.0\nevents: Ir\nsummary: 1021877589\n\ntotals: 1021877589\n";
        assert_eq!(parse_summary(dump), Some(1_021_877_589));
        assert_eq!(parse_summary("events: Ir\n"), None);
        let annotated = "\
--------------------------------------------------------------------------------
Ir
--------------------------------------------------------------------------------
1,021,877,589 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
 60,340,112 ( 5.90%)  /src/cluster.c:getNodeByQuery [/usr/bin/redis-server]
 12,000 ( 0.01%)  ???:crc16 [/usr/bin/redis-server]
 3,000 ( 0.00%)  /other/crc16.c:crc16 [/usr/bin/redis-server]
";
        let functions = parse_annotate(annotated);
        assert_eq!(functions.get("getNodeByQuery"), Some(&60_340_112));
        assert_eq!(functions.get("crc16"), Some(&15_000), "the same function in two files is summed");
        assert_eq!(functions.len(), 2, "{functions:?}");
    }

    #[test]
    fn words_are_quoted_for_the_shell() {
        assert_eq!(quoted("/tmp/my dir/redis-server"), "'/tmp/my dir/redis-server'");
        assert_eq!(quoted("it's"), r"'it'\''s'");
    }

    #[test]
    fn the_latest_dump_of_a_process_is_found() {
        let dir = std::env::temp_dir().join(format!("rrq-bench-callgrind-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["callgrind.41.1", "callgrind.41.2", "callgrind.41", "callgrind.410.3", "valgrind.41.log"] {
            std::fs::write(dir.join(name), "").unwrap();
        }
        assert_eq!(latest_dump(&dir, 41).unwrap(), dir.join("callgrind.41.2"));
        assert!(latest_dump(&dir, 7).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
