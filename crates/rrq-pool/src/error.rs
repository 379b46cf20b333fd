//! The pool's error type.

use std::error::Error as StdError;
use std::sync::Arc;
use std::time::Duration;

use crate::config::ConfigError;

/// The cause of a transport failure: an I/O error, a frame the codec
/// rejected, a failed task. Boxed so no foreign type appears in the API.
pub type TransportCause = Box<dyn StdError + Send + Sync + 'static>;

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
    #[error("{message}")]
    Transport {
        /// What failed, without the cause (e.g. "runner connection read failed").
        message: String,
        /// The underlying error, when there is one.
        #[source]
        source: Option<TransportCause>,
    },
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

impl PoolError {
    /// A transport failure with no underlying error (e.g. a protocol violation).
    pub fn transport(message: impl Into<String>) -> Self {
        PoolError::Transport { message: message.into(), source: None }
    }

    /// A transport failure caused by `source`; `message` says what failed and
    /// does not repeat the cause.
    pub fn transport_caused_by(message: impl Into<String>, source: impl Into<TransportCause>) -> Self {
        PoolError::Transport { message: message.into(), source: Some(source.into()) }
    }
}

/// Why the requests pending on a connection failed; cloned into one
/// [`PoolError`] per request.
#[derive(Clone, Debug)]
pub(crate) enum Failure {
    /// A transport error with this message and, perhaps, this cause.
    Transport { message: String, source: Option<Arc<dyn StdError + Send + Sync + 'static>> },
    /// The pool is shutting down.
    ShuttingDown,
}

impl Failure {
    pub(crate) fn transport(message: impl Into<String>) -> Self {
        Failure::Transport { message: message.into(), source: None }
    }

    pub(crate) fn transport_caused_by(
        message: impl Into<String>,
        source: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Failure::Transport { message: message.into(), source: Some(Arc::new(source)) }
    }

    pub(crate) fn to_error(&self) -> PoolError {
        match self {
            Failure::Transport { message, source } => PoolError::Transport {
                message: message.clone(),
                source: source.as_ref().map(|s| Box::new(Arc::clone(s)) as TransportCause),
            },
            Failure::ShuttingDown => PoolError::ShuttingDown,
        }
    }
}

/// `error` and its causes, joined by ": " (for a log line or a reason).
pub(crate) fn with_causes(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each level's Display, outermost first.
    fn levels(e: &(dyn StdError + 'static)) -> Vec<String> {
        let mut levels = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            levels.push(c.to_string());
            cause = c.source();
        }
        levels
    }

    fn assert_no_repetition(e: &(dyn StdError + 'static)) {
        let levels = levels(e);
        for pair in levels.windows(2) {
            assert!(!pair[0].contains(&pair[1]), "a level repeats its cause: {levels:?}");
        }
    }

    #[test]
    fn transport_cause_is_the_source_not_part_of_the_message() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "connection reset by peer");
        let failure = Failure::transport_caused_by("runner connection read failed", io);
        let errors = [
            failure.to_error(),
            failure.to_error(),
            PoolError::transport_caused_by("request cannot be sent", "frame too large"),
        ];
        for e in &errors {
            assert_no_repetition(e);
        }
        assert_eq!(levels(&errors[0]), ["runner connection read failed", "connection reset by peer"]);
        assert_eq!(levels(&errors[1]), levels(&errors[0]), "each pending request gets the same chain");
        assert_eq!(levels(&errors[2]), ["request cannot be sent", "frame too large"]);
    }

    #[test]
    fn every_variant_displays_its_own_level_only() {
        let config = crate::config::PoolConfig::external("r", "", 1).validate().expect_err("an empty host is invalid");
        let errors = [
            PoolError::Timeout(Duration::from_secs(2)),
            PoolError::transport("runner connection closed"),
            PoolError::Unavailable("no process".into()),
            PoolError::ShuttingDown,
            PoolError::Config(config),
        ];
        for e in &errors {
            assert_no_repetition(e);
        }
        assert!(PoolError::transport("x").source().is_none());
    }
}
