//! The Rust runner SDK for RRQ: write job handlers as async functions, serve
//! them to an orchestrator over the runner protocol (version `"2"`).
//!
//! Place in the graph: a leaf beside the orchestrator, depending only on
//! `rrq-protocol` for the wire types and the frame codec. It knows nothing of
//! Redis, queues, retries or process pools; it is the *server* side of
//! RUNNER_PROTOCOL, the side the released Python runner implements.
//!
//! Main types:
//! * [`Registry`]: handlers by function name, each taking typed parameters
//!   (`serde::de::DeserializeOwned`) and a [`JobContext`], returning a
//!   [`HandlerResult`] of anything `Serialize`; [`HandlerError`] says how a
//!   handler failed (error with kind/code, retry after a delay, timeout).
//! * [`Server`] / [`serve`] / [`run_from_args`]: listen on a loopback address,
//!   accept any number of connections, run requests concurrently.
//! * [`example`]: the example handlers behind the `rrq-example-runner` binary.
//!
//! Invariants (what an orchestrator may rely on):
//! * every request gets exactly one response on the connection that carried it,
//!   unless that connection closes first (then its requests are cancelled and
//!   their outcomes dropped);
//! * at most [`MAX_IN_FLIGHT_PER_CONNECTION`] requests run per connection; more
//!   are answered at once with `Runner busy: too many in-flight requests`;
//! * a request whose deadline has passed never starts; a running one is
//!   cancelled at its deadline (`timeout`, `Job execution timed out`);
//! * cancel frames (on any connection) stop matching requests, which answer
//!   `error` / `cancelled` / `Job cancelled`;
//! * a protocol error (bad frame, unexpected message type) closes only the
//!   connection it arrived on; empty connections (readiness probes) are fine;
//! * the process listens on loopback only and stops on SIGTERM, SIGINT or when
//!   its parent process goes away.
//!
//! A complete runner:
//!
//! ```no_run
//! use rrq_runner::{HandlerError, HandlerResult, JobContext, Registry};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Resize {
//!     url: String,
//!     width: u32,
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), rrq_runner::ServeError> {
//!     let mut registry = Registry::new();
//!     registry.register("resize", |p: Resize, ctx: JobContext| async move {
//!         if p.width == 0 {
//!             return Err(HandlerError::failed("width must be positive"));
//!         }
//!         HandlerResult::Ok(serde_json::json!({"url": p.url, "width": p.width, "attempt": ctx.attempt}))
//!     });
//!     rrq_runner::run_from_args(registry).await
//! }
//! ```
//!
//! The protocol itself, for runners in other languages:
//! `docs/RUNNER_PROTOCOL.md`; `rrq runner check` checks a runner against it.
//!
//! Tests: unit tests beside the code (parameter and outcome mapping, address
//! parsing); `tests/sdk` serves the example registry in-process on an ephemeral
//! port and talks to it with the protocol codec.

mod address;
mod clock;
mod registry;
mod server;

pub mod example;

pub use address::{TCP_SOCKET_ENV, TCP_SOCKET_FLAG, parse_socket, socket_from_args};
pub use registry::{HandlerError, HandlerResult, JobContext, Registry};
pub use server::{MAX_IN_FLIGHT_PER_CONNECTION, ServeOptions, Server, messages, run_from_args, serve};

use std::net::SocketAddr;

/// Why a runner could not serve.
///
/// ```
/// let e = rrq_runner::socket_from_args(Vec::<String>::new(), None).unwrap_err();
/// assert!(matches!(e, rrq_runner::ServeError::MissingAddress));
/// assert!(e.to_string().starts_with("no listen address"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// Neither `--tcp-socket` nor `RRQ_RUNNER_TCP_SOCKET` was given.
    #[error("no listen address: pass --tcp-socket host:port or set RRQ_RUNNER_TCP_SOCKET")]
    MissingAddress,
    /// The listen address could not be parsed.
    #[error("invalid listen address '{value}': {reason}")]
    InvalidAddress {
        /// The text given.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The listen address is not a loopback address.
    #[error("refusing to listen on {0}: runners accept loopback addresses only")]
    NotLoopback(SocketAddr),
    /// The address could not be bound (typically: already in use).
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The SIGTERM/SIGINT handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signal(#[source] std::io::Error),
}
