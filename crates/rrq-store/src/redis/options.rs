//! Connection settings that do not fit in a DSN.

use std::path::{Path, PathBuf};

/// The environment variable from which programs built on RRQ (the `rrq`
/// command, `rrq-producer`) take the CA file; named in TLS error hints. The
/// store itself never reads the environment.
pub const CA_FILE_ENV: &str = "RRQ_REDIS_CA_FILE";

/// Settings for [`RedisStore::connect_with`](crate::RedisStore::connect_with)
/// beyond the DSN.
///
/// [`RedisStore::connect`](crate::RedisStore::connect) uses the defaults (the
/// system's roots only); a CA file is passed explicitly:
///
/// ```
/// let options = rrq_store::ConnectOptions::default().with_ca_file("/etc/redis/ca.pem");
/// assert_eq!(options.ca_file().unwrap().to_str(), Some("/etc/redis/ca.pem"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConnectOptions {
    ca_file: Option<PathBuf>,
    queue_shards: Option<u16>,
}

impl ConnectOptions {
    /// [`ConnectOptions::with_ca_file`] when `path` is `Some`.
    #[must_use]
    pub fn with_ca_file_opt(self, path: Option<impl Into<PathBuf>>) -> ConnectOptions {
        match path {
            Some(path) => self.with_ca_file(path),
            None => self,
        }
    }

    /// Trusts the CA certificates in the PEM file at `path` for `rediss://`
    /// connections, in addition to the system's roots: for a server whose
    /// certificate was issued by a private CA. Ignored for `redis://`.
    #[must_use]
    pub fn with_ca_file(mut self, path: impl Into<PathBuf>) -> ConnectOptions {
        self.ca_file = Some(path.into());
        self
    }

    /// Shards per queue on a Redis Cluster (`[rrq] queue_shards`; default
    /// [`DEFAULT_QUEUE_SHARDS`](crate::keys::DEFAULT_QUEUE_SHARDS), 1 to
    /// [`MAX_QUEUE_SHARDS`](crate::keys::MAX_QUEUE_SHARDS)). Every producer
    /// and worker of one cluster must use the same number. Ignored for a
    /// single server and Sentinel, whose layout has no shards.
    #[must_use]
    pub fn with_queue_shards(mut self, shards: u16) -> ConnectOptions {
        self.queue_shards = Some(shards);
        self
    }

    /// [`ConnectOptions::with_queue_shards`] when `shards` is `Some`.
    #[must_use]
    pub fn with_queue_shards_opt(self, shards: Option<u16>) -> ConnectOptions {
        match shards {
            Some(shards) => self.with_queue_shards(shards),
            None => self,
        }
    }

    /// The shards per queue asked for, if any.
    pub fn queue_shards(&self) -> Option<u16> {
        self.queue_shards
    }

    /// The PEM file of extra trusted CA certificates, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }
}
