//! Exit codes, documented in the README.

use std::process::ExitCode;

/// How a command ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Success.
    Ok = 0,
    /// Any other failure.
    Failure = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// The configuration is missing or invalid (including TLS trust for Redis).
    Config = 3,
    /// Redis could not be reached.
    Unavailable = 4,
    /// The job, queue or worker asked for does not exist.
    NotFound = 5,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> Self {
        ExitCode::from(e as u8)
    }
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    /// The exit code.
    pub exit: Exit,
    /// The error, with its cause chain.
    pub error: anyhow::Error,
}

impl CliError {
    /// Wraps an error with an exit code.
    pub fn new(exit: Exit, error: impl Into<anyhow::Error>) -> Self {
        Self { exit, error: error.into() }
    }
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        let error: anyhow::Error = e.into();
        let exit = if error.chain().any(|c| {
            matches!(c.downcast_ref::<rrq_store::StoreError>(), Some(rrq_store::StoreError::Unavailable { .. }))
        }) {
            Exit::Unavailable
        } else if error.chain().any(|c| {
            c.downcast_ref::<rrq_config::Error>().is_some()
                || matches!(c.downcast_ref::<rrq_store::StoreError>(), Some(rrq_store::StoreError::Tls { .. }))
        }) {
            Exit::Config
        } else {
            Exit::Failure
        };
        Self { exit, error }
    }
}
