//! Cron entries and the scheduler that decides which of their ticks are due.
//! Pure: no I/O, no clock; every function takes the time it reasons about.
//!
//! # Schedule syntax
//!
//! Schedules are parsed by [croner](https://docs.rs/croner/4):
//!
//! * **5 fields** — `minute hour day-of-month month day-of-week` (classic
//!   crontab; the second is 0);
//! * **6 fields** — `second minute hour day-of-month month day-of-week` (the
//!   reference's format);
//! * **7 fields** — the 6 above followed by `year`.
//!
//! Each field takes `*`, numbers, lists (`1,15`), ranges (`1-5`), steps
//! (`*/10`, `5-59/5`, and the Quartz spelling `0/10`), and `?` as `*` in the
//! two day fields. Months and weekdays may be named (`JAN`–`DEC`,
//! `SUN`–`SAT`, any case). The day fields also take `L` (last day / last
//! given weekday of the month), `W` (nearest weekday, `15W`) and `#` (nth
//! weekday, `MON#2`). Shorthands: `@yearly`, `@annually`, `@monthly`,
//! `@weekly`, `@daily`, `@midnight`, `@hourly`.
//!
//! **Weekday numbers are 0–7 with 0 and 7 = Sunday** (crontab's numbering).
//! The reference's cron parser numbered them 1–7 with 1 = Sunday, so a
//! reference schedule such as `0 0 9 * * 2` means Tuesday here, not Monday;
//! names (`MON`) mean the same in both. [`CronJob::has_numeric_weekdays`]
//! flags 6- and 7-field schedules that use numbers, so the worker can warn.
//! When both day-of-month and day-of-week are restricted, a day matching
//! **either** fires (crontab's rule); prefix the weekday field with `+` to
//! require both.
//!
//! Ticks are whole seconds in the entry's time zone (an IANA name, UTC by
//! default). Around daylight-saving changes: a wall-clock time skipped by a
//! spring-forward fires at the first instant after the gap (`30 2 * * *` in
//! New York fires at 03:00 EDT that day), and a fixed time repeated by a
//! fall-back fires once, at its first occurrence.
//!
//! # Which ticks fire
//!
//! * **Window rule.** A [`CronScheduler`] remembers the time it last checked.
//!   At each check at `now`, every entry contributes at most one tick: the
//!   latest tick `t` with `last_checked < t <= now`. A worker normally wakes
//!   at each tick, so the window holds exactly one; after a stall (a
//!   suspended host, a blocked loop) earlier ticks in the window are
//!   coalesced into the latest one instead of firing in a burst. This holds
//!   with and without `catch_up`.
//! * **Start.** A scheduler starts with `last_checked` = the worker's start
//!   time, so ticks at or before the start never fire through the window
//!   rule.
//! * **Catch-up.** For an entry with `catch_up = true`, the worker keeps the
//!   last tick it handled in the store. At start it reads that record: when
//!   the entry's latest tick at or before the start is later than the
//!   record, ticks were missed while no worker ran, and one run is enqueued
//!   for that latest tick ([`CronJob::catch_up_tick`]). With no record (the
//!   entry never ran, or its schedule, time zone, queue or params changed,
//!   which makes it a new entry, see [`CronJob::id`]) nothing is caught up.
//!
//! Exactly once across workers: the job of a tick has a deterministic id
//! ([`CronJob::job_id`]), so when several workers enqueue the same tick the
//! store creates one job and refuses the others.

use std::fmt::Write as _;
use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, Timelike as _, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::CronParser;
use rrq_protocol::{JobId, QueueName};
use rrq_store::EnqueueMode;
use serde_json::{Map, Value};

mod scheduler;

pub use scheduler::CronScheduler;

/// Why a cron entry was refused: the configuration key, its value and what
/// is wrong with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid `{key}` ({value:?}): {reason}")]
#[non_exhaustive]
pub struct CronError {
    /// The full configuration key, e.g. `rrq.cron_jobs[2].schedule`.
    pub key: String,
    /// The value as written.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// One validated cron entry: what to enqueue, where, and when.
#[derive(Clone, Debug)]
pub struct CronJob {
    key: String,
    /// The given name, or `{function_name} ({schedule})`.
    name: String,
    given_name: bool,
    function_name: String,
    schedule: String,
    cron: Cron,
    timezone: Tz,
    params: Map<String, Value>,
    queue: Option<QueueName>,
    unique: bool,
    catch_up: bool,
    id: String,
    numeric_weekdays: bool,
}

/// One cron entry as configured (`[[rrq.cron_jobs]]`), before
/// [`CronJob::new`] validates it. Start from [`CronEntry::new`] and set the
/// optional fields by name.
#[derive(Clone, Debug)]
pub struct CronEntry {
    /// Names the entry in the configuration (e.g. `rrq.cron_jobs[2]`);
    /// errors name the offending field under it.
    pub key: String,
    /// A name for people (logs, listings); `None` derives one.
    pub name: Option<String>,
    /// The handler to enqueue (may be `runner#handler`).
    pub function_name: String,
    /// The cron expression (5, 6 or 7 fields, or a nickname like `@daily`).
    pub schedule: String,
    /// The job's parameters.
    pub params: Map<String, Value>,
    /// The queue; `None` means the worker's default queue.
    pub queue: Option<QueueName>,
    /// Enqueue nothing while the previous tick's job is pending or running.
    pub unique: bool,
    /// An IANA time zone; `None` means UTC.
    pub timezone: Option<String>,
    /// Enqueue the latest tick missed while no worker ran.
    pub catch_up: bool,
}

impl CronEntry {
    /// An entry with no name, no parameters, the default queue, UTC, not
    /// unique and no catch-up.
    pub fn new(key: impl Into<String>, function_name: impl Into<String>, schedule: impl Into<String>) -> CronEntry {
        CronEntry {
            key: key.into(),
            name: None,
            function_name: function_name.into(),
            schedule: schedule.into(),
            params: Map::new(),
            queue: None,
            unique: false,
            timezone: None,
            catch_up: false,
        }
    }
}

impl CronJob {
    /// Validates one cron entry; `now` is the time after which the schedule
    /// must still fire.
    ///
    /// # Errors
    ///
    /// A [`CronError`] for an empty function name, a schedule that does not
    /// parse, a schedule that parses but has no tick after `now` (e.g.
    /// `0 0 31 2 *`, or a year in the past), or an unknown time zone.
    pub fn new(entry: CronEntry, now: DateTime<Utc>) -> Result<CronJob, CronError> {
        let CronEntry { key, name, function_name, schedule, params, queue, unique, timezone, catch_up } = entry;
        let (key, function_name, schedule, timezone) = (&*key, &*function_name, &*schedule, timezone.as_deref());
        let error = |field: &str, value: &str, reason: String| CronError {
            key: format!("{key}.{field}"),
            value: value.to_owned(),
            reason,
        };
        if function_name.trim().is_empty() {
            return Err(error("function_name", function_name, "must not be empty".to_owned()));
        }
        let timezone = match timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name.trim()).map_err(|_| {
                error("timezone", name, "not a known IANA time zone (e.g. \"UTC\" or \"Europe/Paris\")".to_owned())
            })?,
        };
        let cron = CronParser::builder()
            .sloppy_ranges(true)
            .build()
            .parse(schedule)
            .map_err(|e| error("schedule", schedule, format!("not a cron expression: {e}")))?;
        let now = whole_second(now).with_timezone(&timezone);
        if let Err(e) = cron.find_next_occurrence(&now, false) {
            return Err(error("schedule", schedule, format!("the schedule never fires after {now} ({e})")));
        }
        let schedule = schedule.split_whitespace().collect::<Vec<_>>().join(" ");
        let id = entry_id(function_name, &schedule, timezone, queue.as_ref(), &params);
        let numeric_weekdays = weekday_field_has_numbers(&schedule);
        let job = CronJob {
            key: key.to_owned(),
            name: format!("{function_name} ({schedule})"),
            given_name: false,
            function_name: function_name.to_owned(),
            schedule,
            cron,
            timezone,
            params,
            queue,
            unique,
            catch_up,
            id,
            numeric_weekdays,
        };
        Ok(job.with_name(name))
    }

    /// The configuration key of the entry (e.g. `rrq.cron_jobs[2]`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The entry named `name` (the configuration's `name`); `None` keeps
    /// the derived name. A name is for people only: it does not enter
    /// [`CronJob::id`], so naming an entry keeps its ticks and catch-up
    /// record.
    #[must_use]
    pub fn with_name(mut self, name: Option<String>) -> CronJob {
        if let Some(name) = name {
            self.name = name;
            self.given_name = true;
        }
        self
    }

    /// The entry's name for logs and listings: the given one, else
    /// `{function_name} ({schedule})`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether [`CronJob::name`] was given rather than derived.
    pub fn has_given_name(&self) -> bool {
        self.given_name
    }

    /// The handler to enqueue (may be `runner#handler`).
    pub fn function_name(&self) -> &str {
        &self.function_name
    }

    /// The schedule, with its whitespace normalised to single spaces.
    pub fn schedule(&self) -> &str {
        &self.schedule
    }

    /// The time zone the schedule is read in.
    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    /// The params of every enqueued job.
    pub fn params(&self) -> &Map<String, Value> {
        &self.params
    }

    /// The target queue; `None` means the worker's default queue.
    pub fn queue(&self) -> Option<&QueueName> {
        self.queue.as_ref()
    }

    /// Whether ticks are skipped while an earlier job of this function holds
    /// the orchestrator unique lock.
    pub fn is_unique(&self) -> bool {
        self.unique
    }

    /// Whether a worker starting after missed ticks enqueues one run for them.
    pub fn catches_up(&self) -> bool {
        self.catch_up
    }

    /// Whether a 6- or 7-field schedule names weekdays by number, whose
    /// meaning differs from the reference's (see the module docs).
    pub fn has_numeric_weekdays(&self) -> bool {
        self.numeric_weekdays
    }

    /// The entry's identity: `cron:{function_name}:{hash}`, where the hash
    /// (8 hex digits) covers the schedule, time zone, queue and params, so
    /// two entries of one function never share ticks, and identical entries
    /// on different workers always do.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The deterministic id of the job of `tick`: `{id}:{tick epoch seconds}`.
    /// On a Redis Cluster a `unique` entry's job is enqueued under the id
    /// the store fits to its lock's shard
    /// ([`EnqueueStore::fitted_job_id`](rrq_store::EnqueueStore::fitted_job_id)),
    /// which every worker derives alike.
    pub fn job_id(&self, tick: DateTime<Utc>) -> JobId {
        JobId::new(format!("{}:{}", self.id, tick.timestamp()))
    }

    /// The orchestrator unique-lock key of a `unique` entry,
    /// `cron:{function_name}` (the reference's key), else `None`.
    pub fn unique_lock_key(&self) -> Option<String> {
        self.unique.then(|| format!("cron:{}", self.function_name))
    }

    /// How the job of a tick is enqueued: under the unique lock for
    /// `lock_ttl` when the entry is `unique`, else as a standard job.
    pub fn enqueue_mode(&self, lock_ttl: Duration) -> EnqueueMode {
        match self.unique_lock_key() {
            Some(key) => EnqueueMode::UniqueLock { key, ttl: lock_ttl },
            None => EnqueueMode::Standard,
        }
    }

    /// The first tick strictly after `t`; `None` when the schedule has no
    /// more ticks (a last year has passed).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = whole_second(t).with_timezone(&self.timezone);
        self.cron.find_next_occurrence(&local, false).ok().map(|n| n.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`, if the schedule has one.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = whole_second(t).with_timezone(&self.timezone);
        self.cron.find_previous_occurrence(&local, true).ok().map(|p| p.with_timezone(&Utc))
    }

    /// The tick to fire for a check at `now` after one at `last` (the window
    /// rule): the latest tick in `(last, now]`, or `None` when there is none.
    pub fn due_tick(&self, last: DateTime<Utc>, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let first = self.next_after(last).filter(|t| *t <= now)?;
        Some(self.latest_in(first, now))
    }

    /// The one catch-up run of a worker starting at `start`, given the last
    /// tick recorded for this entry: the latest tick at or before `start`
    /// when it is later than `recorded`. `None` without `catch_up`, without a
    /// record, or when nothing was missed.
    pub fn catch_up_tick(&self, recorded: Option<DateTime<Utc>>, start: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if !self.catch_up {
            return None;
        }
        let recorded = recorded?;
        self.latest_at_or_before(start).filter(|t| *t > recorded)
    }

    /// The latest tick in `[first, now]`, where `first` is a tick known to be
    /// in that range.
    fn latest_in(&self, first: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        // A backward search can disagree with a forward one around a DST
        // change; never return less than the tick found going forward.
        self.latest_at_or_before(now).filter(|t| *t >= first && *t <= now).unwrap_or(first)
    }
}

fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    t.with_nanosecond(0).unwrap_or(t)
}

/// `cron:{function}:{8 hex digits}`: a hash that is the same in every
/// process and Rust version (FNV-1a over a canonical text of the entry).
fn entry_id(
    function_name: &str,
    schedule: &str,
    timezone: Tz,
    queue: Option<&QueueName>,
    params: &Map<String, Value>,
) -> String {
    let mut text = String::new();
    for part in [function_name, schedule, timezone.name(), queue.map_or("", QueueName::as_str)] {
        text.push_str(part);
        text.push('\u{1f}');
    }
    canonical_json(&Value::Object(params.clone()), &mut text);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let folded = (hash ^ (hash >> 32)) as u32;
    format!("cron:{function_name}:{folded:08x}")
}

/// JSON with object keys sorted at every level, whatever map type the JSON
/// crate was built with.
fn canonical_json(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, "{}:", Value::String(k.clone()));
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        scalar => {
            let _ = write!(out, "{scalar}");
        }
    }
}

/// Whether the weekday field of a 6- or 7-field schedule holds a weekday
/// number (digits after `#` count the week, not the day, and are ignored).
fn weekday_field_has_numbers(schedule: &str) -> bool {
    let fields: Vec<&str> = schedule.split_whitespace().collect();
    if fields.len() < 6 {
        return false;
    }
    fields[5].split(',').any(|part| {
        let day = part.split('#').next().unwrap_or("");
        let day = day.split('/').next().unwrap_or("");
        day.chars().any(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests;
