//! rrq-producer
