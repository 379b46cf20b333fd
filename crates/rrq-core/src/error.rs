//! The worker's error type.

use rrq_store::StoreError;

/// Why a worker stopped with an error. Transient Redis outages are not
/// errors: the worker waits them out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The configuration cannot work (e.g. a route names a runner that is not
    /// configured).
    #[error("invalid worker configuration: {0}")]
    Config(String),
    /// Redis kept rejecting the worker's commands (not an outage: e.g. an ACL
    /// or a read-only replica), so carrying on would only spin.
    #[error("store operation `{op}` keeps failing")]
    Store {
        /// The store verb.
        op: &'static str,
        /// The last error.
        #[source]
        source: StoreError,
    },
}
