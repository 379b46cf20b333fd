//! End-to-end tests of RRQ live in `e2e/`; this package only builds the
//! binaries they run.
