//! End-to-end tests: the real `rrq` binary, real runner processes (the
//! example Rust runner and the reference Python runner), the reference Python
//! client, and a real Redis (from `RRQ_TEST_REDIS_URL` or a private
//! `redis-server`).

mod dashboard;
mod faults;
mod interop;
mod mixed_runners;
mod operator;
mod otlp;
mod runner_check;
mod support;
mod worker;
mod worker_redis;
