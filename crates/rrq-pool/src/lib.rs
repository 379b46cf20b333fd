//! RRQ runner pools: processes that execute requests over the runner protocol.
//!
//! Place in the graph: above `rrq-protocol` only. It knows nothing of queues,
//! retries or Redis: a request goes in, a typed outcome comes out.
//!
//! Main types: [`Runner`] (the seam the worker uses), [`PoolError`],
//! [`RunnerHealth`].

mod error;
mod runner;

pub use error::PoolError;
pub use runner::{Runner, RunnerHealth};
