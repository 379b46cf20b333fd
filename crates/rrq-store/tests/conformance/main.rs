//! One behaviour, two stores: every test here is written once against
//! `Arc<dyn Store>` and run on [`rrq_store::MemoryStore`] and on
//! [`rrq_store::RedisStore`] (a test Redis from `rrq-test-support`).
//!
//! `redis_only` holds what only Redis can show: the exact keys and fields the
//! reference reads, expiries, corrupted keys, reconnects and DSNs.
//!
//! Tests on a shared Redis (`RRQ_TEST_REDIS_URL`) stay apart by using queue
//! names, job ids, worker ids and DLQ names unique to the test; tests that
//! read keyspace-wide state (orphan recovery) get a server of their own.

/// Instantiates each named generic test for both stores.
///
/// `shared: a, b;` tests run on the (possibly shared) test Redis;
/// `private: c;` tests get a Redis server of their own; the tests named in
/// an optional `cluster: d;` also run on a Redis Cluster of their own (the
/// sharded layout), each test at most once per list.
macro_rules! conformance {
    (
        shared: $($shared:ident),* $(,)? ;
        private: $($private:ident),* $(,)? ;
        cluster: $($cluster:ident),* $(,)? $(;)?
    ) => {
        conformance!(shared: $($shared),* ; private: $($private),* ;);
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $cluster() {
                    super::$cluster(crate::harness::Harness::cluster().await).await;
                }
            )*
        }
    };
    (shared: $($shared:ident),* $(,)? ; private: $($private:ident),* $(,)? $(;)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $shared() {
                    super::$shared(crate::harness::Harness::memory().await).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $private() {
                    super::$private(crate::harness::Harness::memory().await).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    super::$shared(crate::harness::Harness::redis().await).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $private() {
                    super::$private(crate::harness::Harness::redis_private().await).await;
                }
            )*
        }
    };
}

mod claim;
mod cluster;
mod enqueue;
mod hardening;
mod harness;
mod inspect;
mod layout;
mod lifecycle;
mod outcomes;
mod redis_only;
mod sentinel;
mod signals;
mod tls;
mod unique;
