//! rrq-test-support
