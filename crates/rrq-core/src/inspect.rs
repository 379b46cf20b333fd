//! What operators look at, gathered as plain serialisable rows apart from
//! how anything renders them: the live workers and the cron entries.
//! `rrq worker list` and `rrq cron list` print these rows (as tables, or as
//! they serialise with `--json`), and the dashboard's JSON API answers with
//! the very same rows, so the two cannot drift apart.
//!
//! Times serialise as RFC 3339 in UTC (the store's format), `null` when
//! absent. Every function takes `now` rather than reading a clock.

pub mod cron;
pub mod workers;

pub use cron::{CronRow, cron_row, cron_rows, next_runs};
pub use workers::{WorkerRow, worker_row, worker_rows};

use chrono::{DateTime, Utc};
use serde::Serializer;

/// Serialises an optional time as RFC 3339 (UTC), or `null`.
fn rfc3339_opt<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&rrq_store::format_timestamp(*t)),
        None => s.serialize_none(),
    }
}

/// Serialises times as RFC 3339 (UTC) strings.
fn rfc3339_all<S: Serializer>(ts: &[DateTime<Utc>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(ts.iter().map(|t| rrq_store::format_timestamp(*t)))
}
