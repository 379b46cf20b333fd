//! The pool's error type.

use std::time::Duration;

use crate::config::ConfigError;

/// Why a request produced no outcome. Every variant except `Timeout` is a
/// transport failure: the worker retries the job with backoff.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No outcome within the request's timeout.
    #[error("no outcome within {}s", .0.as_secs_f64())]
    Timeout(Duration),
    /// The connection to the runner broke, or the runner answered with
    /// something that is not a valid outcome for this request.
    #[error("{0}")]
    Transport(String),
    /// No runner process could be started or reached.
    #[error("runner unavailable: {0}")]
    Unavailable(String),
    /// The pool is shutting down and takes no new requests.
    #[error("runner pool is shutting down")]
    ShuttingDown,
    /// The pool configuration is unusable (returned by `ProcessPool::start`).
    #[error("invalid runner pool configuration")]
    Config(#[from] ConfigError),
}

/// Why the requests pending on a connection failed; cloned into one
/// [`PoolError`] per request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// A transport error with this message.
    Transport(String),
    /// The pool is shutting down.
    ShuttingDown,
}

impl Failure {
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Failure::Transport(message.into())
    }

    pub(crate) fn to_error(&self) -> PoolError {
        match self {
            Failure::Transport(m) => PoolError::Transport(m.clone()),
            Failure::ShuttingDown => PoolError::ShuttingDown,
        }
    }
}
