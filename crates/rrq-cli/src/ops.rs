//! What every operations command (queue, job, dlq, health) shares: loading
//! the settings, connecting to Redis with errors that say what to fix,
//! confirming destructive steps and showing progress.

use std::io::{BufRead, IsTerminal};
use std::sync::Arc;

use anyhow::anyhow;
use indicatif::{ProgressBar, ProgressStyle};
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
    let store = match RedisStore::connect(&settings.redis_dsn).await {
        Ok(store) => store,
        Err(e @ StoreError::InvalidDsn { .. }) => {
            let hint = format!("fix redis_dsn in {path} (or RRQ_REDIS_DSN); it must look like redis://host:6379/0");
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
    let defaults = JobDefaults {
        max_retries: settings.default_max_retries,
        job_timeout_seconds: settings.default_job_timeout_seconds,
        result_ttl_seconds: settings.default_result_ttl_seconds,
        queue: settings.default_queue.clone(),
        dlq: settings.default_dlq.clone(),
    };
    Ok(Connected { settings, store: Arc::new(store.with_defaults(defaults)) })
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

/// A progress bar for `len` steps, drawn on stderr only when stderr is a
/// terminal (hidden otherwise, so logs and pipes stay clean).
pub(crate) fn progress(len: u64, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

#[cfg(test)]
mod tests {
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
