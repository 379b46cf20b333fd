//! Connection settings that do not fit in a DSN.

use std::path::{Path, PathBuf};

/// The environment variable [`ConnectOptions::from_env`] reads the CA file from.
pub const CA_FILE_ENV: &str = "RRQ_REDIS_CA_FILE";

/// Settings for [`RedisStore::connect_with`](crate::RedisStore::connect_with)
/// beyond the DSN.
///
/// [`RedisStore::connect`](crate::RedisStore::connect) uses
/// [`ConnectOptions::from_env`]; tests and embedders that must not depend on
/// the process environment build their own:
///
/// ```
/// let options = rrq_store::ConnectOptions::default().with_ca_file("/etc/redis/ca.pem");
/// assert_eq!(options.ca_file().unwrap().to_str(), Some("/etc/redis/ca.pem"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    ca_file: Option<PathBuf>,
}

impl ConnectOptions {
    /// The options named by the environment: `RRQ_REDIS_CA_FILE` (a PEM file
    /// of extra trusted CA certificates; unset or empty for none).
    pub fn from_env() -> ConnectOptions {
        let ca_file = std::env::var_os(CA_FILE_ENV).filter(|v| !v.is_empty()).map(PathBuf::from);
        ConnectOptions { ca_file }
    }

    /// Trusts the CA certificates in the PEM file at `path` for `rediss://`
    /// connections, in addition to the system's roots: for a server whose
    /// certificate was issued by a private CA. Ignored for `redis://`.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> ConnectOptions {
        self.ca_file = Some(path.into());
        self
    }

    /// The PEM file of extra trusted CA certificates, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}
