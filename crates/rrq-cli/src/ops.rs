//! What every operations command (queue, job, dlq, health) shares: loading
//! the settings, connecting to Redis with errors that say what to fix,
//! confirming destructive steps and showing progress.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;
use std::time::Duration;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rrq_config::Settings;
use rrq_store::{JobDefaults, RedisStore, Store, StoreError, mask_dsn};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};

/// What an operations command works with once connected: the validated
/// settings and the store on the Redis they name.
#[derive(Debug)]
pub(crate) struct Connected {
    /// The validated settings.
    pub settings: Settings,
    /// The store on the configured Redis.
    pub store: Arc<dyn Store>,
}

/// Loads the settings (warnings go to stderr, so stdout stays parseable) and
/// connects to the Redis they name.
pub(crate) async fn connect(args: &ConfigArgs) -> Result<Connected, CliError> {
    crate::logging::init("warn");
    let loaded = rrq_config::load(args.config.as_deref()).map_err(|e| CliError::new(Exit::Config, e))?;
    let path = loaded.source.path().display().to_string();
    for w in &loaded.warnings {
        eprintln!("warning: {w} (in {path})");
    }
    let settings = loaded.settings;
    let dsn = mask_dsn(&settings.redis_dsn);
    let options = rrq_store::ConnectOptions::default()
        .with_ca_file_opt(settings.redis_ca_file.clone())
        .with_queue_shards_opt(settings.queue_shards);
    let store = match RedisStore::connect_with(&settings.redis_dsn, options).await {
        Ok(store) => store,
        Err(e @ StoreError::InvalidDsn { .. }) => {
            let hint = format!(
                "fix redis_dsn in {path} (or RRQ_REDIS_DSN); it must look like redis://host:6379/0 (or rediss://, redis-sentinel://host:26379/0?sentinelServiceName=NAME, or redis-cluster://host:7000?node=host2:7001)"
            );
            return Err(CliError::new(Exit::Config, anyhow::Error::new(e).context(hint)));
        }
        Err(e @ StoreError::ClusterTooOld { .. }) => {
            return Err(CliError::new(Exit::Config, anyhow::Error::new(e)));
        }
        Err(e @ StoreError::ShardCountMismatch { .. }) => {
            let hint = format!("fix queue_shards in {path}: it must match what this cluster's keys use");
            return Err(CliError::new(Exit::Config, anyhow::Error::new(e).context(hint)));
        }
        Err(e @ StoreError::Tls { .. }) => {
            let hint =
                format!("cannot talk TLS to Redis at {dsn}: check the server's certificate and RRQ_REDIS_CA_FILE");
            return Err(CliError::new(Exit::Config, anyhow::Error::new(e).context(hint)));
        }
        Err(e) => {
            let exit = if matches!(e, StoreError::Unavailable { .. }) { Exit::Unavailable } else { Exit::Failure };
            let hint = format!(
                "cannot connect to Redis at {dsn}: start the server, or point redis_dsn in {path} (or RRQ_REDIS_DSN) at a running one"
            );
            return Err(CliError::new(exit, anyhow::Error::new(e).context(hint)));
        }
    };
    let defaults = job_defaults(&settings);
    Ok(Connected { settings, store: Arc::new(store.with_defaults(defaults)) })
}

/// The job defaults the settings name (`default_*`): every store the CLI
/// builds carries them, and a worker reads them from its store.
pub(crate) fn job_defaults(settings: &Settings) -> JobDefaults {
    JobDefaults {
        max_retries: settings.default_max_retries,
        job_timeout_seconds: settings.default_job_timeout_seconds,
        result_ttl_seconds: settings.default_result_ttl_seconds,
        queue: settings.default_queue.clone(),
        dlq: settings.default_dlq.clone(),
    }
}

/// An error that exits with [`Exit::NotFound`].
pub(crate) fn not_found(message: String) -> CliError {
    CliError::new(Exit::NotFound, anyhow!(message))
}

/// An error that exits with [`Exit::Usage`].
pub(crate) fn usage(message: String) -> CliError {
    CliError::new(Exit::Usage, anyhow!(message))
}

/// An error that exits with [`Exit::Failure`].
pub(crate) fn failure(message: String) -> CliError {
    CliError::new(Exit::Failure, anyhow!(message))
}

/// Asks `question` before a destructive step. `--yes` answers for the user;
/// without it the question needs a terminal on stdin, and a script that did
/// not pass `--yes` is refused rather than left waiting. Returns whether the
/// user agreed.
pub(crate) fn confirm(question: &str, yes: bool) -> Result<bool, CliError> {
    confirm_with(question, yes, "--yes")
}

/// [`confirm`] for a command whose answering flag is `flag`.
pub(crate) fn confirm_with(question: &str, yes: bool, flag: &str) -> Result<bool, CliError> {
    if yes {
        return Ok(true);
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(usage(format!(
            "{question} needs confirmation, but stdin is not a terminal; pass {flag} to confirm"
        )));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    Ok(is_yes(&answer))
}

/// Whether a typed answer means yes.
fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// The progress of a long operation, as a bar on stderr: counted steps
/// (jobs requeued, jobs written) or the seconds of a time-boxed run (a
/// simulation, a stress test). Drawn only when stderr is a terminal and the
/// command does not print `--json`, so pipes, logs and JSON readers see none
/// of it; a hidden bar still counts, so the arithmetic is the same either way.
pub(crate) struct Progress(ProgressBar);

impl Progress {
    /// Progress over `len` steps, advanced by [`Progress::inc`].
    pub(crate) fn counted(len: u64, what: &'static str, json: bool) -> Progress {
        Progress::new(len, "{msg} [{bar:30}] {pos}/{len} ({eta} left)", what, json)
    }

    /// Progress over a run of `duration` (whole seconds), advanced by
    /// [`Progress::elapsed`]; [`Progress::message`] says what happened so far.
    pub(crate) fn timed(duration: Duration, what: &'static str, json: bool) -> Progress {
        Progress::new(duration.as_secs(), "{msg} [{bar:30}] {pos}/{len}s", what, json)
    }

    fn new(len: u64, template: &str, what: &'static str, json: bool) -> Progress {
        let target = if draws(json, std::io::stderr().is_terminal()) {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let bar = ProgressBar::with_draw_target(Some(len), target);
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(what);
        Progress(bar)
    }

    /// Counts `n` more steps done.
    pub(crate) fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    /// Sets the time-boxed progress to `elapsed` (whole seconds, at most the
    /// run's length).
    pub(crate) fn elapsed(&self, elapsed: Duration) {
        let len = self.0.length().unwrap_or(u64::MAX);
        self.0.set_position(elapsed.as_secs().min(len));
    }

    /// Replaces the text before the bar.
    pub(crate) fn message(&self, text: String) {
        self.0.set_message(text);
    }

    /// Removes the bar, leaving the terminal as it was.
    pub(crate) fn finish(&self) {
        self.0.finish_and_clear();
    }
}

/// Whether progress is drawn: never for `--json`, never off a terminal.
fn draws(json: bool, stderr_is_terminal: bool) -> bool {
    !json && stderr_is_terminal
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Progress, draws};

    #[test]
    fn progress_is_drawn_only_on_a_terminal_without_json() {
        assert!(draws(false, true));
        assert!(!draws(true, true), "--json output stays free of progress");
        assert!(!draws(false, false), "pipes and logs stay free of progress");
        assert!(!draws(true, false));
        assert!(Progress::counted(3, "x", true).0.is_hidden());
        assert!(Progress::timed(Duration::from_secs(3), "x", true).0.is_hidden());
    }

    #[test]
    fn counted_progress_counts_steps() {
        let p = Progress::counted(10, "writing", true);
        p.inc(4);
        p.inc(3);
        assert_eq!((p.0.position(), p.0.length()), (7, Some(10)));
    }

    #[test]
    fn timed_progress_counts_whole_seconds_up_to_its_length() {
        let p = Progress::timed(Duration::from_millis(3_900), "simulating", true);
        assert_eq!(p.0.length(), Some(3), "the length is the run in whole seconds");
        p.elapsed(Duration::from_millis(1_999));
        assert_eq!(p.0.position(), 1);
        p.elapsed(Duration::from_secs(60));
        assert_eq!(p.0.position(), 3, "a late wake-up does not run past the end");
        p.message("Stress test: 8 jobs submitted".to_owned());
        assert_eq!(p.0.message(), "Stress test: 8 jobs submitted");
    }

    #[test]
    fn only_an_explicit_yes_confirms() {
        for yes in ["y", "Y", "yes\n", " YES "] {
            assert!(super::is_yes(yes), "{yes:?}");
        }
        for no in ["", "\n", "n", "no", "yep", "sure"] {
            assert!(!super::is_yes(no), "{no:?}");
        }
    }
}
