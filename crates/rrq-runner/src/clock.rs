//! The SDK's one reading of wall time: deadlines arrive as wall-clock
//! timestamps, so the time left of an attempt is measured against this.

use chrono::{DateTime, Utc};

/// The current wall time.
pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}
