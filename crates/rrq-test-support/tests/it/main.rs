//! The fixtures of rrq-test-support, started for real: one test binary with a
//! module per fixture.

mod cluster;
mod docker;
mod redis;
mod sentinel;
