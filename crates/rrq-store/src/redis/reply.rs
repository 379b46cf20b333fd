//! Reply decoding: a server reply (RESP2 or RESP3) turned into the store's
//! types, or a [`StoreError::Protocol`] naming the verb and what came back.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_protocol::JobId;

use crate::error::StoreError;
use crate::store::Enqueued;

pub(super) fn protocol(op: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Protocol { op, detail: detail.into() }
}

pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => other.as_string(),
    }
}

pub(super) fn int(op: &'static str, v: &Value) -> Result<i64, StoreError> {
    v.as_i64().ok_or_else(|| protocol(op, format!("expected an integer, got {v:?}")))
}

/// A count that cannot be negative.
pub(super) fn count(op: &'static str, v: &Value) -> Result<u64, StoreError> {
    u64::try_from(int(op, v)?).map_err(|_| protocol(op, "negative count"))
}

pub(super) fn array(op: &'static str, v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(protocol(op, format!("expected an array, got {other:?}"))),
    }
}

/// Text that must round-trip exactly (job ids, key names): an error when
/// it is not UTF-8, never a lossy decoding that names something else.
pub(super) fn strict_text(op: &'static str, v: &Value, what: &str) -> Result<String, StoreError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| protocol(op, format!("{what} is not valid UTF-8 ({:?})", String::from_utf8_lossy(b)))),
        other => other.as_string().ok_or_else(|| protocol(op, format!("{what} is not text: {other:?}"))),
    }
}

/// A job id from a reply (see [`strict_text`]).
pub(super) fn job_id(op: &'static str, v: &Value) -> Result<JobId, StoreError> {
    strict_text(op, v, "job id").map(JobId::new)
}

pub(super) fn ids(op: &'static str, v: Value) -> Result<Vec<JobId>, StoreError> {
    array(op, v)?.iter().map(|i| job_id(op, i)).collect()
}

/// Hash fields from an `HGETALL` reply (a flat array, or a map in RESP3).
pub(super) fn fields(op: &'static str, v: Value) -> Result<HashMap<String, String>, StoreError> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(map) => map.inner().into_iter().map(|(k, v)| (Value::from(k), v)).collect(),
        other => {
            let flat = array(op, other)?;
            if flat.len() % 2 != 0 {
                return Err(protocol(op, "hash reply has an odd number of items"));
            }
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| match (text(&k), text(&v)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(protocol(op, "hash field is not text")),
        })
        .collect()
}

/// `{status, id}` from an enqueue script: the outer error is a broken
/// reply, the inner one a refused job.
pub(super) fn enqueued(op: &'static str, v: Value) -> Result<Result<Enqueued, StoreError>, StoreError> {
    let reply = array(op, v)?;
    let (Some(status), Some(id)) = (reply.first(), reply.get(1)) else {
        return Err(protocol(op, "expected {status, id}"));
    };
    let id = job_id(op, id)?;
    Ok(match int(op, status)? {
        1 => Ok(Enqueued::Created(id)),
        0 => Ok(Enqueued::Existing(id)),
        2 => Ok(Enqueued::RateLimited),
        -1 => Err(StoreError::JobIdTaken(id)),
        n => return Err(protocol(op, format!("unknown enqueue status {n}"))),
    })
}

/// A score reply as a time (scores are epoch milliseconds).
pub(super) fn score_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Double(f) => ms_to_time(*f),
        other => text(other).and_then(|s| s.parse::<f64>().ok()).and_then(ms_to_time),
    }
}

fn ms_to_time(ms: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms.floor() as i64)
}

/// The id of the first entry in an `XREAD` reply.
pub(super) fn first_entry_id(v: Value) -> Option<String> {
    let streams: Vec<Value> = match v {
        Value::Map(map) => map.inner().into_values().collect(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    streams.into_iter().find_map(|entries| match entries {
        Value::Array(entries) => entries.into_iter().find_map(|e| match e {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        }),
        _ => None,
    })
}
