//! What the operator commands show, gathered as plain serialisable rows,
//! apart from how a terminal renders them: `rrq worker list` and
//! `rrq cron list` print these rows as tables or as `--json`, and anything
//! else that shows the same data (a dashboard's JSON API) can call the same
//! functions and serialise the same rows.
//!
//! Times serialise as RFC 3339 in UTC (the store's format), `null` when
//! absent.

pub mod cron;
pub mod workers;

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
