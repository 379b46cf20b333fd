//! Wire types and frame codec of the RRQ runner protocol, version `"2"`.
//!
//! This crate is the bottom of the RRQ crate graph. It is **sans-IO**: it knows
//! nothing of sockets, tokio, Redis, queues or processes. It holds:
//!
//! * the newtypes shared by every layer ([`JobId`], [`QueueName`]);
//! * the messages exchanged between an orchestrator and a runner
//!   ([`Envelope`], [`ExecutionRequest`], [`ExecutionOutcome`], [`CancelRequest`]);
//! * the frame codec ([`encode_frame`], [`FrameDecoder`]): a 4-byte big-endian
//!   payload length followed by one UTF-8 JSON object.
//!
//! Invariants: every serde representation of a wire message lives here; decoding
//! never panics, whatever the bytes (checked by property tests); encoding emits
//! compact JSON and every optional field explicitly (`null`), which is what the
//! released Python runner expects; decoding accepts both the `null` and the
//! omitted form, and ignores unknown fields.
//!
//! Tests: golden JSON captures in `tests/data/` (taken from real traffic of the
//! reference implementation) and property tests for round trips and arbitrary
//! input.

mod frame;
mod message;
mod names;

pub use frame::{DEFAULT_MAX_FRAME_BYTES, FrameDecoder, FrameError, encode_frame, encode_frame_to_vec};
pub use message::{
    CancelRequest, Envelope, ExecutionContext, ExecutionOutcome, ExecutionRequest, OutcomeError, OutcomeStatus,
    PROTOCOL_VERSION, error_types,
};
pub use names::{DlqName, JobId, QueueName};
