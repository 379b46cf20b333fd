//! rrq-pool
