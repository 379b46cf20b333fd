//! Test helpers for RRQ (not published).
//!
//! * [`TestRedis`]: a Redis for one test — the server named by
//!   `RRQ_TEST_REDIS_URL`, or a private `redis-server` on a free loopback port
//!   that is stopped when the value is dropped.
//! * [`python`]: a virtualenv with the reference `rrq==0.11.1` package from
//!   PyPI, created on first use and shared by every test.
//! * [`node`]: the TypeScript runner SDK of `sdks/typescript`, built with
//!   npm on first use.
//!
//! Use it from `tests/` only: as a dev-dependency of a crate it depends on, it
//! would build that crate twice.

mod redis;
pub use redis::TestRedis;
pub mod node;
pub mod python;
