//! Test helpers for RRQ (not published).
//!
//! * [`TestRedis`]: a Redis for one test — the server named by
//!   `RRQ_TEST_REDIS_URL`, or a private `redis-server` on a free loopback port
//!   that is stopped when the value is dropped.
//! * [`cluster::TestCluster`]: a Redis Cluster of private `redis-server`
//!   processes (three masters, one replica each), with helpers to kill a
//!   master and wait for its replica's promotion, and to migrate slots.
//! * [`sentinel::TestSentinel`]: a master, a replica and three sentinels,
//!   with a helper to kill the master and wait for the failover.
//! * [`docker`]: Redis nodes in Docker containers on a private network, for
//!   tests that cut a node off (`docker network disconnect`), and
//!   [`docker::DockerCluster`], a Redis Cluster of such containers.
//! * [`resp`]: a tiny blocking RESP2 client to look at servers directly.
//! * [`python`]: a virtualenv with the reference `rrq==0.11.1` package from
//!   PyPI, created on first use and shared by every test.
//! * [`node`]: the TypeScript runner SDK of `sdks/typescript`, built with
//!   npm on first use.
//!
//! Use it from `tests/` only: as a dev-dependency of a crate it depends on, it
//! would build that crate twice.

mod redis;
pub use redis::{TestRedis, server_program, use_server_program};
pub mod cluster;
pub mod docker;
pub mod node;
pub mod python;
pub mod resp;
pub mod sentinel;
mod wait;
