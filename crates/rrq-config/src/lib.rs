//! Load and validate `rrq.toml`, the file shared by RRQ workers, the CLI and
//! producers.
//!
//! Place in the graph: above `rrq-protocol` only; used by `rrq-cli` and
//! `rrq-producer`. It turns the TOML document into plain, validated
//! [`Settings`] (durations, non-zero sizes, normalised queue names); each
//! consumer then builds its own typed configuration from them.
//!
//! Invariants: every file the reference rrq 0.11.1 loader accepts loads here
//! with the same values; unknown or misspelled keys never pass silently (a
//! [`Warning`] naming the key and the closest valid one, or an error inside
//! runner tables, as the reference does); an invalid value is an [`Error`]
//! naming the key, the value and the fix. The keys of the 0.9.9-era README
//! (`heartbeat_interval_seconds`, `[[rrq.cron]]`, runner `tcp_socket`) are
//! honoured with a deprecation warning where the reference ignored them.
//!
//! Tests: unit tests below and fixture files in `tests/fixtures`.

mod misplaced;
mod raw;
mod settings;
mod suggest;

use std::path::{Path, PathBuf};

pub use settings::{
    CronEntry, OTLP_PROTOCOL, RunnerMode, RunnerSettings, Settings, TelemetrySettings, WatchSettings,
    default_ignore_patterns, default_include_patterns,
};

/// Where the configuration was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// An explicit path (`--config`).
    Explicit(PathBuf),
    /// The `RRQ_CONFIG` environment variable.
    Env(PathBuf),
    /// `rrq.toml` in the working directory.
    Cwd(PathBuf),
}

impl Source {
    /// The file path.
    pub fn path(&self) -> &Path {
        match self {
            Source::Explicit(p) | Source::Env(p) | Source::Cwd(p) => p,
        }
    }

    /// How the reference CLI describes the source.
    pub fn describe(&self) -> String {
        match self {
            Source::Explicit(p) => format!("--config parameter ({})", p.display()),
            Source::Env(p) => format!("RRQ_CONFIG env var ({})", p.display()),
            Source::Cwd(p) => format!("rrq.toml in cwd ({})", p.display()),
        }
    }
}

/// A problem worth telling the user that does not stop loading.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning(pub String);

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No file was given and none was found.
    #[error("RRQ config not found. Provide --config, set RRQ_CONFIG, or add rrq.toml.")]
    NotFound,
    /// The file could not be read.
    #[error("cannot read RRQ config {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type (the message
    /// carries the line, the key and what was expected).
    #[error("invalid RRQ config {path}: {message}")]
    Syntax {
        /// The path (or `<string>`).
        path: String,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("invalid RRQ config: `{key}` = {value}: {reason}")]
    Invalid {
        /// The full key, e.g. `rrq.runners.python.pool_size`.
        key: String,
        /// The offending value as written.
        value: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
}

/// Loaded settings, where they came from, and what the user should be told.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The validated settings.
    pub settings: Settings,
    /// Where the file was found.
    pub source: Source,
    /// Non-fatal problems (unknown keys, deprecated spellings).
    pub warnings: Vec<Warning>,
}

/// Finds the configuration file: `explicit`, else `$RRQ_CONFIG`, else
/// `./rrq.toml`.
pub fn locate(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Source, Error> {
    if let Some(p) = explicit {
        return Ok(Source::Explicit(p.to_path_buf()));
    }
    if let Some(p) = env("RRQ_CONFIG").filter(|v| !v.trim().is_empty()) {
        return Ok(Source::Env(PathBuf::from(p)));
    }
    let cwd = PathBuf::from("rrq.toml");
    if cwd.is_file() {
        return Ok(Source::Cwd(cwd));
    }
    Err(Error::NotFound)
}

/// The environment variable naming a PEM file of extra CA certificates to
/// trust for `rediss://` connections.
pub const REDIS_CA_FILE_ENV: &str = "RRQ_REDIS_CA_FILE";

/// The CA file `RRQ_REDIS_CA_FILE` names, for programs that connect with a
/// DSN alone (no `rrq.toml`); unset or empty gives `None`.
pub fn redis_ca_file_from_env() -> Option<PathBuf> {
    std::env::var_os(REDIS_CA_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Locates, reads and validates the configuration using the process
/// environment (`RRQ_CONFIG`, `RRQ_REDIS_DSN`, `RRQ_REDIS_CA_FILE`,
/// `RRQ_CAPTURE_RUNNER_OUTPUT`).
pub fn load(explicit: Option<&Path>) -> Result<Loaded, Error> {
    let env = |k: &str| std::env::var(k).ok();
    load_with_env(explicit, &env)
}

/// [`load`] with an explicit environment lookup (for tests).
pub fn load_with_env(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Loaded, Error> {
    let source = locate(explicit, env)?;
    let text = std::fs::read_to_string(source.path())
        .map_err(|e| Error::Read { path: source.path().to_path_buf(), source: e })?;
    let (settings, warnings) = parse_with_env(&text, &source.path().display().to_string(), env)?;
    Ok(Loaded { settings, source, warnings })
}

/// Parses and validates a TOML document (`origin` names it in errors).
pub fn parse_with_env(
    text: &str,
    origin: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Settings, Vec<Warning>), Error> {
    let mut warnings = Vec::new();
    let raw = raw::parse(text, origin, &mut warnings)?;
    let settings = settings::validate(raw, env, &mut warnings)?;
    Ok((settings, warnings))
}

/// Parses a document with no environment overrides.
pub fn parse(text: &str) -> Result<(Settings, Vec<Warning>), Error> {
    parse_with_env(text, "<string>", &|_| None)
}
