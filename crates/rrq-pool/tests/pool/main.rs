//! Integration tests of `ProcessPool`: external mode against in-process fake
//! runners, managed mode against small Python runners, and a pool host
//! killed with SIGKILL.

mod external;
mod frozen;
mod host;
mod managed;
mod support;
