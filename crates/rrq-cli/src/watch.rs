//! `rrq worker watch`: a development worker restarted on file changes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use globset::{Glob, GlobSet, GlobSetBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::EventKind;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use rrq_config::{Settings, WatchSettings};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::exit::{CliError, Exit};
use crate::worker::{apply_runner_mode, build_worker, load_settings, queues, spawn_signal_handler};
use crate::{ConfigArgs, logging};

/// `rrq worker watch` options.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Queue to take jobs from (repeatable). Default: default_queue_name
    #[arg(long = "queue")]
    queues: Vec<String>,
    /// Directory to watch (default: [rrq.watch] path, else .)
    #[arg(long)]
    path: Option<PathBuf>,
    /// Glob a changed path must match (repeatable; replaces include_patterns)
    #[arg(long = "pattern")]
    patterns: Vec<String>,
    /// Glob of paths to ignore (repeatable; replaces ignore_patterns)
    #[arg(long = "ignore-pattern")]
    ignore_patterns: Vec<String>,
    /// Do not apply .gitignore and .git/info/exclude
    #[arg(long)]
    no_gitignore: bool,
    /// Override runner_management_mode
    #[arg(long, value_parser = ["managed", "external"])]
    runner_mode: Option<String>,
}

/// Which changed paths restart the worker.
#[derive(Debug)]
pub(crate) struct ChangeFilter {
    root: PathBuf,
    include: GlobSet,
    ignore: GlobSet,
    gitignore: Option<Gitignore>,
}

fn globs(key: &str, patterns: &[String]) -> Result<GlobSet, CliError> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        let glob = Glob::new(p)
            .map_err(|e| CliError::new(Exit::Config, anyhow::anyhow!("invalid glob {p:?} in {key}: {e}")))?;
        b.add(glob);
    }
    b.build().map_err(|e| CliError::new(Exit::Config, anyhow::anyhow!("invalid globs in {key}: {e}")))
}

impl ChangeFilter {
    pub(crate) fn new(
        root: &Path,
        include: &[String],
        ignore: &[String],
        use_gitignore: bool,
    ) -> Result<Self, CliError> {
        let gitignore = use_gitignore.then(|| {
            let mut b = GitignoreBuilder::new(root);
            for file in [".gitignore", ".git/info/exclude"] {
                let path = root.join(file);
                if path.is_file()
                    && let Some(e) = b.add(&path)
                {
                    warn!(file = %path.display(), error = %e, "ignoring an unreadable ignore file");
                }
            }
            b.build().unwrap_or_else(|_| Gitignore::empty())
        });
        Ok(Self {
            root: root.to_path_buf(),
            include: globs("include patterns", include)?,
            ignore: globs("ignore patterns", ignore)?,
            gitignore,
        })
    }

    /// Whether a change of `path` should restart the worker: it matches an
    /// include glob (by relative path or file name) and no ignore glob or
    /// gitignore rule.
    pub(crate) fn is_relevant(&self, path: &Path) -> bool {
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let name = rel.file_name().map(Path::new).unwrap_or(rel);
        let ignored_by_glob = self.ignore.is_match(rel)
            || self.ignore.is_match(name)
            || rel.ancestors().skip(1).any(|a| !a.as_os_str().is_empty() && self.ignore.is_match(a));
        if ignored_by_glob {
            return false;
        }
        if let Some(g) = &self.gitignore
            && g.matched_path_or_any_parents(rel, path.is_dir()).is_ignore()
        {
            return false;
        }
        self.include.is_match(rel) || self.include.is_match(name)
    }
}

/// Forces the development settings of watch mode: one process per runner, one
/// request at a time, no shutdown grace.
fn development(mut settings: Settings) -> Settings {
    for r in settings.runners.values_mut() {
        r.pool_size = std::num::NonZeroUsize::MIN;
        r.max_in_flight = std::num::NonZeroUsize::MIN;
    }
    settings.shutdown_grace = Duration::ZERO;
    settings
}

async fn pre_restart(watch: &WatchSettings, root: &Path) -> bool {
    for (i, argv) in watch.pre_restart_cmds.iter().enumerate() {
        outln!("Running watch pre-restart command: {}", argv.join(" "));
        let mut cmd = tokio::process::Command::new(&argv[0]);
        cmd.args(&argv[1..]).current_dir(watch.pre_restart_cwd.as_deref().unwrap_or(root)).kill_on_drop(true);
        let run = async {
            match cmd.status().await {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(s.to_string()),
                Err(e) => Err(e.to_string()),
            }
        };
        let status = match watch.pre_restart_timeout {
            Some(limit) => tokio::time::timeout(limit, run)
                .await
                .unwrap_or_else(|_| Err(format!("timed out after {}s", limit.as_secs_f64()))),
            None => run.await,
        };
        if let Err(status) = status {
            eprintln!("watch pre-restart command failed (idx={i}, status={status})");
            eprintln!("watch pre-restart commands failed; worker will remain stopped until next change.");
            return false;
        }
    }
    true
}

/// Waits for the next relevant change, then for a quiet period so a burst of
/// writes restarts the worker once. Returns the changed paths.
async fn next_change(rx: &mut mpsc::UnboundedReceiver<Vec<PathBuf>>, filter: &ChangeFilter) -> Option<Vec<PathBuf>> {
    let quiet = Duration::from_millis(200);
    loop {
        let mut paths: Vec<PathBuf> = rx.recv().await?.into_iter().filter(|p| filter.is_relevant(p)).collect();
        if paths.is_empty() {
            continue;
        }
        while let Ok(Some(more)) = tokio::time::timeout(quiet, rx.recv()).await {
            paths.extend(more.into_iter().filter(|p| filter.is_relevant(p)));
        }
        paths.sort();
        paths.dedup();
        return Some(paths);
    }
}

/// Runs watch mode until SIGINT/SIGTERM.
pub async fn run(args: WatchArgs) -> Result<Exit, CliError> {
    let settings = load_settings(&args.config)?;
    logging::init_exporting("info", &settings.telemetry);
    logging::install_metrics(None)?;
    let root = args.path.clone().unwrap_or_else(|| settings.watch.path.clone());
    let root = std::fs::canonicalize(&root).map_err(|e| {
        CliError::new(Exit::Config, anyhow::anyhow!("cannot watch {}: {e}; pass an existing --path", root.display()))
    })?;
    let include =
        if args.patterns.is_empty() { settings.watch.include_patterns.clone() } else { args.patterns.clone() };
    let ignore = if args.ignore_patterns.is_empty() {
        settings.watch.ignore_patterns.clone()
    } else {
        args.ignore_patterns.clone()
    };
    let filter = ChangeFilter::new(&root, &include, &ignore, !(args.no_gitignore || settings.watch.no_gitignore))?;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut debouncer = new_debouncer(Duration::from_millis(200), None, move |res: DebounceEventResult| match res {
        Ok(events) => {
            for e in events {
                if !matches!(e.kind, EventKind::Access(_)) {
                    let _ = tx.send(e.paths.clone());
                }
            }
        }
        Err(errors) => {
            for e in errors {
                eprintln!("watch error: {e}");
            }
        }
    })
    .map_err(|e| CliError::new(Exit::Failure, anyhow::anyhow!("cannot start the file watcher: {e}")))?;
    debouncer
        .watch(&root, notify::RecursiveMode::Recursive)
        .map_err(|e| CliError::new(Exit::Failure, anyhow::anyhow!("cannot watch {}: {e}", root.display())))?;
    outln!("Watching {} for changes...", root.display());

    let stop = CancellationToken::new();
    spawn_signal_handler(stop.clone());
    let mut settings = Some(settings);
    loop {
        let current = match settings.take() {
            Some(s) => s,
            None => match rrq_config::load(args.config.config.as_deref()) {
                Ok(loaded) => {
                    outln!("Loading RRQ settings from {}.", loaded.source.describe());
                    loaded.settings
                }
                Err(e) => {
                    eprintln!("Error: {e}; waiting for the next change");
                    tokio::select! {
                        _ = next_change(&mut rx, &filter) => continue,
                        () = stop.cancelled() => return Ok(Exit::Ok),
                    }
                }
            },
        };
        let mut current = development(current);
        apply_runner_mode(&mut current, args.runner_mode.as_deref());

        let worker_token = CancellationToken::new();
        let mut worker_task = None;
        if pre_restart(&current.watch, &root).await {
            let queues = queues(&current, &args.queues)?;
            match build_worker(&current, queues, false).await {
                Ok(built) => worker_task = Some(tokio::spawn(built.worker.run(worker_token.clone()))),
                Err(e) => eprintln!("Error: {}; waiting for the next change", e.error),
            }
        }
        let restart = tokio::select! {
            change = next_change(&mut rx, &filter) => {
                let paths: Vec<String> = change.unwrap_or_default().iter().map(|p| p.display().to_string()).collect();
                outln!("Change detected (paths=[{}]).", paths.join(", "));
                true
            }
            () = stop.cancelled() => false,
        };
        worker_token.cancel();
        if let Some(task) = worker_task {
            match tokio::time::timeout(Duration::from_secs(10), task).await {
                Ok(Ok(Ok(stats))) => info!(?stats, "worker stopped"),
                Ok(Ok(Err(e))) => eprintln!("Error: worker stopped: {e}"),
                Ok(Err(e)) => eprintln!("Error: worker task failed: {e}"),
                Err(_) => eprintln!("worker shutdown timed out; restarting..."),
            }
        }
        if !restart {
            return Ok(Exit::Ok);
        }
        outln!("Restarting worker...");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_patterns_select_sources_and_skip_build_output() {
        let root = Path::new("/project");
        let f = ChangeFilter::new(
            root,
            &rrq_config::default_include_patterns(),
            &rrq_config::default_ignore_patterns(),
            false,
        )
        .unwrap();
        assert!(f.is_relevant(Path::new("/project/app/tasks.py")));
        assert!(f.is_relevant(Path::new("/project/rrq.toml")));
        assert!(!f.is_relevant(Path::new("/project/README.md")));
        assert!(!f.is_relevant(Path::new("/project/app/__pycache__/tasks.cpython-311.pyc")));
        assert!(!f.is_relevant(Path::new("/project/.venv/lib/site.py")));
        assert!(!f.is_relevant(Path::new("/project/target/debug/x.toml")));
    }

    #[test]
    fn bad_globs_name_the_pattern() {
        let err = ChangeFilter::new(Path::new("/p"), &["a[".into()], &[], false).unwrap_err();
        assert!(err.error.to_string().contains("\"a[\""), "{}", err.error);
    }
}
