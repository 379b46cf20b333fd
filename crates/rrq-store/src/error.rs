//! The store's error type.

use rrq_protocol::JobId;

/// A boxed foreign cause (the Redis client's error stays out of signatures).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a store operation failed. A job that merely failed is not an error:
/// errors mean the store itself could not do what was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// Redis could not be reached, or the connection broke mid-command. The
    /// operation may or may not have been applied; every script is written so
    /// that re-running it is safe.
    #[error("redis is unreachable ({dsn})")]
    Unavailable {
        /// The DSN with any password masked.
        dsn: String,
        /// The client's error.
        #[source]
        source: BoxError,
    },
    /// Redis answered with an error for the named operation.
    #[error("redis rejected `{op}`")]
    Command {
        /// The store verb that failed.
        op: &'static str,
        /// The server's or client's error.
        #[source]
        source: BoxError,
    },
    /// The DSN could not be parsed.
    #[error("invalid redis DSN `{dsn}`: {reason}")]
    InvalidDsn {
        /// The DSN with any password masked.
        dsn: String,
        /// What is wrong with it.
        reason: String,
    },
    /// TLS could not be set up for a `rediss://` DSN (an unreadable CA file,
    /// no trusted roots), or the server's certificate was not trusted.
    #[error("TLS to redis failed ({dsn}): {reason}")]
    Tls {
        /// The DSN with any password masked.
        dsn: String,
        /// What went wrong, and what to do about it.
        reason: String,
    },
    /// An enqueue named a job id that already exists.
    #[error("job_id already exists: {0}")]
    JobIdTaken(JobId),
    /// A caller passed a value the store cannot represent.
    #[error("invalid {what}: {reason}")]
    InvalidInput {
        /// The argument.
        what: &'static str,
        /// Why it was refused.
        reason: String,
    },
    /// A script returned something it never returns (a bug or a foreign
    /// script with the same SHA).
    #[error("unexpected reply to `{op}`: {detail}")]
    Protocol {
        /// The store verb.
        op: &'static str,
        /// What came back.
        detail: String,
    },
}

/// Masks the password of a `redis://user:password@host` DSN.
pub fn mask_dsn(dsn: &str) -> String {
    let Some((scheme, rest)) = dsn.split_once("://") else { return dsn.to_owned() };
    let Some((auth, host)) = rest.rsplit_once('@') else { return dsn.to_owned() };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => format!("{scheme}://***@{host}"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_masked() {
        assert_eq!(super::mask_dsn("redis://u:s3cret@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(super::mask_dsn("rediss://:p@h"), "rediss://:***@h");
        assert_eq!(super::mask_dsn("redis://s3cret@h"), "redis://***@h");
        assert_eq!(super::mask_dsn("redis://h:6379"), "redis://h:6379");
    }
}
