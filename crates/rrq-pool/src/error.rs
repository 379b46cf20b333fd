//! The pool's error type.

use std::time::Duration;

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
}
