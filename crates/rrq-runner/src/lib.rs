//! rrq-runner
