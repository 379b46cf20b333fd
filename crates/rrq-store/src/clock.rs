//! Wall-clock time as a seam, so policy can be tested with a manual clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of wall-clock time. Decisions take `now` from here, never from
/// `Utc::now()` directly.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to; clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    nanos: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        let nanos = start.timestamp_nanos_opt().expect("time within i64 nanoseconds");
        Self { nanos: Arc::new(AtomicI64::new(nanos)) }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: std::time::Duration) {
        let by = i64::try_from(by.as_nanos()).expect("advance fits in i64 nanoseconds");
        self.nanos.fetch_add(by, Ordering::SeqCst);
    }

    /// Sets the clock to `to`.
    pub fn set(&self, to: DateTime<Utc>) {
        self.nanos.store(to.timestamp_nanos_opt().expect("time within i64 nanoseconds"), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH + TimeDelta::nanoseconds(self.nanos.load(Ordering::SeqCst))
    }
}

/// Milliseconds since the Unix epoch (queue scores).
pub fn epoch_ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// Formats a timestamp as the reference stores it in job hashes: RFC 3339, UTC,
/// `+00:00` offset, fractional digits only when non-zero (3, 6 or 9 of them).
pub fn format_timestamp(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false)
}

/// Parses any RFC 3339 timestamp into UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s.trim()).ok().map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_the_reference_encoding() {
        let t = parse_timestamp("2026-11-28T00:03:18.635333299Z").unwrap();
        assert_eq!(format_timestamp(t), "2026-11-28T00:03:18.635333299+00:00");
        let t = parse_timestamp("2030-01-01T00:00:00Z").unwrap();
        assert_eq!(format_timestamp(t), "2030-01-01T00:00:00+00:00");
        let t = parse_timestamp("2026-11-28T01:04:24.171+01:00").unwrap();
        assert_eq!(format_timestamp(t), "2026-11-28T00:04:24.171+00:00");
        assert!(parse_timestamp("yesterday").is_none());
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(parse_timestamp("2026-01-01T00:00:00Z").unwrap());
        let c2 = c.clone();
        c.advance(std::time::Duration::from_millis(1500));
        assert_eq!(format_timestamp(c2.now()), "2026-01-01T00:00:01.500+00:00");
    }
}
