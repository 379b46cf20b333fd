//! The worker's error type.

use rrq_store::StoreError;

/// Why a worker stopped with an error. Transient Redis outages are not
/// errors: the worker waits them out.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The configuration cannot work (e.g. a worker with no runner); the
    /// source says what is wrong.
    #[error("invalid worker configuration")]
    Config(#[from] ConfigProblem),
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

/// What makes a worker's configuration unusable (the source of
/// [`CoreError::Config`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// `Worker::run` was given no runner at all.
    #[error("a worker needs at least one runner")]
    NoRunner,
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// Each level's Display, outermost first.
    fn levels(e: &(dyn Error + 'static)) -> Vec<String> {
        let mut levels = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            levels.push(c.to_string());
            cause = c.source();
        }
        levels
    }

    #[test]
    fn each_level_displays_itself_only() {
        let config = CoreError::from(ConfigProblem::NoRunner);
        assert_eq!(levels(&config), ["invalid worker configuration", "a worker needs at least one runner"]);
        let store = CoreError::Store {
            op: "claim",
            source: StoreError::Command { op: "claim", source: "NOSCRIPT no matching script".into() },
        };
        for e in [&config, &store] {
            let levels = levels(e);
            assert!(levels.len() >= 2, "the cause is reachable through source(): {levels:?}");
            for pair in levels.windows(2) {
                assert!(!pair[0].contains(&pair[1]), "a level repeats its cause: {levels:?}");
            }
        }
    }
}
