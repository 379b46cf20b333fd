//! The runner SDK seen from an orchestrator: the example registry served
//! in-process on an ephemeral port, driven with the protocol codec; and the
//! example binary as a real process.

mod process;
mod protocol;
mod support;
