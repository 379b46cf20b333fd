//! rrq-core
