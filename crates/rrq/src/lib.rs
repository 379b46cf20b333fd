//! RRQ, a Redis job queue orchestrator compatible with rrq 0.11.1: one
//! dependency (`rrq = "0.1"`) for everything an application embeds, and the
//! `rrq` command (`cargo install rrq`).
//!
//! - [`producer`]: enqueue jobs and read their status and results
//!   ([`Producer`], [`EnqueueOptions`]).
//! - [`worker`]: run a worker inside your own process ([`Worker`],
//!   [`WorkerConfig`]), with runner pools or in-process handlers.
//! - [`runner`]: the Rust runner SDK: register async handlers and serve the
//!   runner protocol ([`Registry`], [`JobContext`]).
//! - [`protocol`]: the runner protocol's wire types (version
//!   [`protocol::PROTOCOL_VERSION`]).
//! - [`config`]: load and validate `rrq.toml`; [`store`]: the Redis schema.
//! - [`cli`]: the command line itself ([`cli::main`]).
//!
//! This crate only re-exports: each part lives in its own crate (`rrq-producer`,
//! `rrq-core`, `rrq-runner`, `rrq-protocol`, `rrq-config`, `rrq-store`,
//! `rrq-cli`), which can also be used alone.

pub use rrq_cli as cli;
pub use rrq_config as config;
pub use rrq_core as worker;
pub use rrq_producer as producer;
pub use rrq_protocol as protocol;
pub use rrq_runner as runner;
pub use rrq_store as store;

pub use rrq_core::{Worker, WorkerConfig};
pub use rrq_producer::{EnqueueOptions, JobId, JobStatus, Producer, ProducerConfig};
pub use rrq_runner::{HandlerError, HandlerResult, JobContext, Registry};
