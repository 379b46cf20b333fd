//! RRQ runner pools: run job requests in runner processes over the runner
//! protocol (version `"2"`), and survive whatever those processes do.
//!
//! Place in the graph: above `rrq-protocol` only. The pool knows nothing of
//! queues, retries, Redis or configuration files: a request goes in, a typed
//! outcome (or a [`PoolError`]) comes out. The worker (`rrq-core`) sees it
//! through the [`Runner`] trait; the CLI builds a [`PoolConfig`] per
//! `[rrq.runners.NAME]` table and calls [`ProcessPool::start`].
//!
//! Main types:
//! * [`Runner`] / [`RunnerHealth`]: the seam the worker uses.
//! * [`ProcessPool`]: the `Runner` of one configured runner. Managed mode
//!   spawns `pool_size` processes as `cmd… --tcp-socket 127.0.0.1:PORT`, each
//!   in its own process group with a parent-death signal, behind a
//!   [`guard`] when the embedding binary installed the hook; external mode
//!   connects to a runner started elsewhere.
//! * [`guard::run_if_requested`]: the hook a binary embedding pools calls
//!   first thing in `main`.
//! * [`PoolConfig`] / [`PoolMode`] / [`ConfigError`]: the typed configuration,
//!   validated with errors that name the field.
//!
//! Invariants:
//! * no runner process outlives the pool: shutdown terminates every process
//!   group (SIGTERM, then SIGKILL after the grace), dropping the pool kills
//!   them, and on Linux the kernel kills the pool's direct child if the
//!   orchestrator dies; with the guard hook installed that child is a guard
//!   that then kills the runner's whole process group (launchers that fork
//!   included). Every runner carries `RRQ_RUNNER_OWNER=PID:STARTTIME` in its
//!   environment, and a managed pool's start kills marked processes whose
//!   orchestrator is gone;
//! * a process is used only once it is ready *and* verified: still alive, and
//!   (Linux) the listener on its port belongs to its process group — a foreign
//!   process on the port is never mistaken for the runner (SEMANTICS D15);
//! * one persistent connection per process carries up to `max_in_flight`
//!   requests; responses are matched by `request_id` and checked against the
//!   `job_id`; a broken connection fails only its own requests, with a
//!   transport error, and is reopened on next use;
//! * `execute` never outlives its timeout; a timed-out request is forgotten
//!   (late answers are dropped), cancelled when the protocol asks for it, and
//!   its process terminated unless it is shared and the cancel got through;
//! * a response already in the socket when a timer fires wins: before a
//!   timeout is declared the connection's reader takes in and dispatches
//!   everything received so far (a frozen orchestrator wakes up with both
//!   ready);
//! * an `execute` future dropped while its request is in flight is treated
//!   like a timed-out one (the runner must not keep working on it unseen);
//! * `terminate` stops the process (managed) or connection (external)
//!   carrying a request and, in managed mode, returns once it has exited;
//! * a crashing process is respawned with exponential backoff and reported as
//!   crash-looping after repeated failures instead of being restarted in a
//!   tight loop.
//!
//! Tests: unit tests beside the code for the pure parts (configuration,
//! backoff and dispatch choice, `/proc` parsing); `tests/pool` drives the pool
//! against in-process fake runners (protocol faults, multiplexing, timeouts)
//! in external mode, and against small Python runners written to a temporary
//! directory in managed mode (spawn contract, crashes, kills, process groups,
//! a SIGKILLed orchestrator).

mod config;
mod connection;
mod error;
pub mod guard;
mod identity;
mod policy;
mod pool;
mod process;
mod runner;
mod slot;

pub use config::{ConfigError, MAX_IN_FLIGHT_LIMIT, PoolConfig, PoolMode};
pub use error::{PoolError, TransportCause};
pub use pool::ProcessPool;
pub use runner::{Runner, RunnerHealth};
