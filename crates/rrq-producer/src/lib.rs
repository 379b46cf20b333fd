//! Enqueue RRQ jobs from Rust and read their status and results.
//!
//! Place in the graph: above `rrq-store` and `rrq-config`; it never depends on
//! the worker (`rrq-core`) or the runner pools (`rrq-pool`). Jobs written here
//! are read by any rrq 0.11.1-compatible worker, and jobs written by the
//! reference Python client are read back here.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rrq_producer::ProducerError> {
//! use rrq_producer::{EnqueueOptions, Producer};
//! let producer = Producer::new("redis://127.0.0.1:6379/0").await?;
//! let id = producer
//!     .enqueue("send_email", serde_json::json!({"to": "a@example.com"}), EnqueueOptions::default())
//!     .await?;
//! let done = producer.wait_for_completion(&id, std::time::Duration::from_secs(30)).await?;
//! println!("{:?}", done.map(|j| j.status));
//! # Ok(()) }
//! ```
//!
//! Main types: [`Producer`], [`EnqueueOptions`], [`ProducerConfig`],
//! [`JobResult`]. Invariants: an enqueue either returns the id that now
//! represents the request or a typed error naming the job or key; nothing is
//! dropped silently (a rate-limited call says so).
//!
//! Tests: unit tests for option handling and correlation; store-level tests
//! in `rrq-store`; interop with the reference Python client in `tests/`.

mod correlation;
mod producer;

pub use correlation::correlation_context;
pub use producer::{EnqueueOptions, JobResult, Limit, Producer, ProducerConfig, ProducerError};
pub use rrq_protocol::JobId;
pub use rrq_store::{Enqueued, JobStatus};
