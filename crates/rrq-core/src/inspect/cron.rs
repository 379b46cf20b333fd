//! The cron entries: their schedule read by the scheduler's own code, their
//! next runs, and the last tick the workers recorded.

use chrono::{DateTime, Utc};
use rrq_protocol::QueueName;
use rrq_store::{Store, StoreError};
use serde::Serialize;

use crate::cron::CronJob;

/// One cron entry of the configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CronRow {
    /// The entry's `name`, or `{function} ({schedule})` when it has none.
    pub name: String,
    /// Whether `name` was given in the file.
    pub named: bool,
    /// Where the entry is written, e.g. `rrq.cron_jobs[0]`.
    pub key: String,
    /// The entry's identity in Redis (`cron:{function}:{hash}`); its jobs'
    /// ids are `{id}:{tick epoch seconds}`.
    pub id: String,
    /// The handler enqueued.
    pub function: String,
    /// The schedule, whitespace normalised.
    pub schedule: String,
    /// The IANA time zone the schedule is read in.
    pub timezone: String,
    /// Whether a tick is skipped while an earlier job holds the unique lock.
    pub unique: bool,
    /// Whether a starting worker enqueues one run for missed ticks.
    pub catch_up: bool,
    /// The queue the jobs go to (full key).
    pub queue: String,
    /// The next ticks after the listing, earliest first (fewer when the
    /// schedule ends).
    #[serde(serialize_with = "super::rfc3339_all")]
    pub next_runs: Vec<DateTime<Utc>>,
    /// The same ticks in the entry's time zone, RFC 3339 with its offset.
    pub next_runs_local: Vec<String>,
    /// The last tick a worker handled (enqueued, or skipped because another
    /// worker or the unique lock had it); `null` when none was recorded.
    #[serde(serialize_with = "super::rfc3339_opt")]
    pub last_tick: Option<DateTime<Utc>>,
    /// The id of the last tick's job (it may have expired since).
    pub last_job_id: Option<String>,
}

/// The first `count` ticks of `job` strictly after `now`.
pub fn next_runs(job: &CronJob, now: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let mut out = Vec::with_capacity(count);
    let mut t = now;
    while out.len() < count {
        match job.next_after(t) {
            Some(next) => {
                out.push(next);
                t = next;
            }
            None => break,
        }
    }
    out
}

/// The row of one entry: its next `count` runs after `now` and the last
/// tick `store` recorded for it (one read).
pub async fn cron_row(
    store: &dyn Store,
    job: &CronJob,
    default_queue: &QueueName,
    now: DateTime<Utc>,
    count: usize,
) -> Result<CronRow, StoreError> {
    let last_tick = store.cron_tick(job.id()).await?;
    let mut row = row_at(job, default_queue, now, count, last_tick);
    // The id the workers enqueued under (fitted to the unique lock's shard
    // on a Redis Cluster; the lock's TTL plays no part in it).
    let mode = job.enqueue_mode(std::time::Duration::ZERO);
    row.last_job_id = last_tick.map(|t| store.fitted_job_id(job.job_id(t), &mode).into_string());
    Ok(row)
}

fn row_at(
    job: &CronJob,
    default_queue: &QueueName,
    now: DateTime<Utc>,
    count: usize,
    last_tick: Option<DateTime<Utc>>,
) -> CronRow {
    let next = next_runs(job, now, count);
    let tz = job.timezone();
    CronRow {
        name: job.name().to_owned(),
        named: job.has_given_name(),
        key: job.key().to_owned(),
        id: job.id().to_owned(),
        function: job.function_name().to_owned(),
        schedule: job.schedule().to_owned(),
        timezone: tz.name().to_owned(),
        unique: job.is_unique(),
        catch_up: job.catches_up(),
        queue: job.queue().unwrap_or(default_queue).as_str().to_owned(),
        next_runs_local: next.iter().map(|t| t.with_timezone(&tz).to_rfc3339()).collect(),
        next_runs: next,
        last_tick,
        last_job_id: last_tick.map(|t| job.job_id(t).into_string()),
    }
}

/// The rows of `jobs`, in their order (one read per entry).
pub async fn cron_rows(
    store: &dyn Store,
    jobs: &[CronJob],
    default_queue: &QueueName,
    now: DateTime<Utc>,
    count: usize,
) -> Result<Vec<CronRow>, StoreError> {
    let mut rows = Vec::with_capacity(jobs.len());
    for job in jobs {
        rows.push(cron_row(store, job, default_queue, now, count).await?);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cron::CronEntry;

    fn at(s: &str) -> DateTime<Utc> {
        rrq_store::parse_timestamp(s).unwrap()
    }

    fn job(entry: CronEntry) -> CronJob {
        CronJob::new(entry, at("2099-01-01T00:00:00Z")).unwrap()
    }

    #[test]
    fn next_runs_follow_the_schedule_and_stop_when_it_ends() {
        let mut tokyo = CronEntry::new("rrq.cron_jobs[0]", "f", "0 0 12 * * * 2099");
        tokyo.timezone = Some("Asia/Tokyo".into());
        let tokyo = job(tokyo);
        let mut once = CronEntry::new("rrq.cron_jobs[1]", "g", "0 0 0 31 12 * 2099");
        once.name = Some("once".into());
        let once = job(once);
        let june = at("2099-06-01T00:00:00Z");
        assert_eq!(
            next_runs(&tokyo, june, 2),
            [at("2099-06-01T03:00:00Z"), at("2099-06-02T03:00:00Z")],
            "noon in Tokyo"
        );
        assert_eq!(next_runs(&once, june, 3), [at("2099-12-31T00:00:00Z")]);
        assert!(next_runs(&once, june, 0).is_empty());

        let row = row_at(&tokyo, &QueueName::new("default"), june, 1, Some(at("2099-05-31T03:00:00Z")));
        assert_eq!(
            (row.name.as_str(), row.named, row.timezone.as_str()),
            ("f (0 0 12 * * * 2099)", false, "Asia/Tokyo")
        );
        assert_eq!(row.queue, "rrq:queue:default", "the default queue when the entry names none");
        assert_eq!(row.next_runs_local, ["2099-06-01T12:00:00+09:00"]);
        assert_eq!(row.last_job_id.as_deref(), Some(tokyo.job_id(at("2099-05-31T03:00:00Z")).as_str()));
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["next_runs"], serde_json::json!(["2099-06-01T03:00:00+00:00"]));
        assert_eq!(v["last_tick"], "2099-05-31T03:00:00+00:00");
    }
}
