//! Fault injection: real processes, real Redis, faults injected on purpose,
//! and the guarantees of `docs/reliability.md` checked after each.
//!
//! Every test prints what it injected and what it observed (jobs lost,
//! duplicated, recovery time) under `[faults::<test>]`; run with
//! `--nocapture` (or nextest's `--no-capture`) to see the report. Tests wait
//! on events or poll with a deadline; none sleeps blindly.
//!
//! `RRQ_SOAK=1` makes the bursts larger (see `docs/reliability.md`).
//!
//! Linux only: processes are found and checked through `/proc`.

#![cfg(target_os = "linux")]

mod chaos;
mod cluster;
mod docker_cluster;
mod harness;
mod orchestrator;
mod poison;
mod redis;
mod runners;
mod security;
mod sentinel;
