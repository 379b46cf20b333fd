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
    /// Fewer replicas than required confirmed the caller's writes in time
    /// ([`EnqueueStore::confirm_replicated`](crate::EnqueueStore::confirm_replicated),
    /// used by producers with `[rrq] min_replicas_acked`). The write is on
    /// the master, but a failover before a replica has it would lose it.
    #[error(
        "only {acked} of the {wanted} replicas required by `[rrq] min_replicas_acked` confirmed the write within \
         {}ms: it is on the master, but would be lost if the master failed before a replica had it",
        .timeout.as_millis()
    )]
    NotReplicated {
        /// The replicas required.
        wanted: u32,
        /// The replicas that confirmed in time.
        acked: u32,
        /// How long the confirmations were awaited.
        timeout: std::time::Duration,
    },
    /// A Redis Cluster whose servers predate what the sharded layout needs
    /// (Redis 7.0: sharded pub/sub carries the wake-ups).
    #[error(
        "this Redis Cluster runs Redis {version}; RRQ on a cluster needs Redis 7.0 or later (its wake-ups use sharded \
         pub/sub, `SPUBLISH`): upgrade the cluster, or use one Redis server (`redis://`) or Sentinel"
    )]
    ClusterTooOld {
        /// The `redis_version` a node reported.
        version: String,
    },
    /// A cluster store's shard count (`[rrq] queue_shards`) differs from the
    /// one recorded in the cluster by the first store that connected: its
    /// keys would name other shards, so it would not see the cluster's jobs.
    #[error(
        "`[rrq] queue_shards` is {configured} here, but this cluster's keys are named with {recorded} shards per \
         queue (recorded in `{record}`): set `queue_shards = {recorded}` in every producer, worker and `rrq` \
         configuration that uses this cluster; to change the count, drain the cluster and delete `{record}` first"
    )]
    ShardCountMismatch {
        /// This store's shard count.
        configured: u16,
        /// What the cluster's record says.
        recorded: String,
        /// The record's key.
        record: String,
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

/// Masks the secrets of a DSN: the password of `scheme://user:password@host`
/// (also when the scheme is missing), and the value of any query parameter
/// whose name ends in `password` (`?password=`, `?sentinelPassword=`).
pub fn mask_dsn(dsn: &str) -> String {
    let (scheme, rest) = match dsn.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, dsn),
    };
    let (body, query) = match rest.split_once('?') {
        Some((body, query)) => (body, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(dsn.len());
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
    }
    match body.rsplit_once('@') {
        Some((auth, host)) => {
            match auth.split_once(':') {
                Some((user, _)) => {
                    out.push_str(user);
                    out.push_str(":***@");
                }
                None => out.push_str("***@"),
            }
            out.push_str(host);
        }
        None => out.push_str(body),
    }
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|part| match part.split_once('=') {
                Some((name, _)) if name.to_ascii_lowercase().ends_with("password") => format!("{name}=***"),
                _ => part.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out
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

    #[test]
    fn passwords_are_masked_without_a_scheme_and_in_query_parameters() {
        assert_eq!(super::mask_dsn("user:pw@host:6379/0"), "user:***@host:6379/0");
        assert_eq!(super::mask_dsn("pw@host"), "***@host");
        assert_eq!(super::mask_dsn("host:6379"), "host:6379");
        assert_eq!(
            super::mask_dsn("redis-sentinel://h:26379/0?sentinelServiceName=m&password=s3cret&x=1"),
            "redis-sentinel://h:26379/0?sentinelServiceName=m&password=***&x=1"
        );
        assert_eq!(super::mask_dsn("redis://u:p@h/0?sentinelPassword=q"), "redis://u:***@h/0?sentinelPassword=***");
    }
}
