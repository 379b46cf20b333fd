//! What `rrq worker list` and `rrq cron list` show. The rows themselves
//! ([`WorkerRow`], [`CronRow`]) and their building from store views live in
//! [`rrq_core::inspect`], so the dashboard's JSON API serialises the very
//! same structs; this module adds what needs the settings: the cron
//! entries of `rrq.toml`, validated as a worker validates them.

use chrono::{DateTime, Utc};
use rrq_config::Settings;
use rrq_core::{CronEntry, CronError, CronJob};

pub use rrq_core::inspect::{CronRow, WorkerRow, cron_row, cron_rows, next_runs, worker_row, worker_rows};

/// The cron entries of the settings, validated exactly as the worker
/// validates them at start-up (each must still fire after `now`).
pub fn cron_entries(settings: &Settings, now: DateTime<Utc>) -> Result<Vec<CronJob>, CronError> {
    settings.cron.iter().map(|entry| CronJob::new(cron_entry(entry), now)).collect()
}

/// One entry of the settings as the scheduler takes it.
pub fn cron_entry(entry: &rrq_config::CronEntry) -> CronEntry {
    CronEntry {
        key: entry.key.clone(),
        name: entry.name.clone(),
        function_name: entry.function_name.clone(),
        schedule: entry.schedule.clone(),
        params: entry.params.clone(),
        queue: entry.queue.clone(),
        unique: entry.unique,
        timezone: entry.timezone.clone(),
        catch_up: entry.catch_up,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        rrq_store::parse_timestamp(s).unwrap()
    }

    #[test]
    fn entries_are_read_from_the_settings_in_order() {
        let (settings, _) = rrq_config::parse(
            "[[rrq.cron_jobs]]\nfunction_name = \"f\"\nschedule = \"0 0 12 * * * 2099\"\ntimezone = \"Asia/Tokyo\"\n\
             [[rrq.cron_jobs]]\nname = \"once\"\nfunction_name = \"g\"\nschedule = \"0 0 0 31 12 * 2099\"\n",
        )
        .unwrap();
        let jobs = cron_entries(&settings, at("2099-01-01T00:00:00Z")).unwrap();
        assert_eq!((jobs[1].name(), jobs[0].name()), ("once", "f (0 0 12 * * * 2099)"));
        assert_eq!(next_runs(&jobs[0], at("2099-06-01T00:00:00Z"), 1), [at("2099-06-01T03:00:00Z")], "noon in Tokyo");
    }

    #[test]
    fn an_invalid_entry_is_refused_with_its_key() {
        let (settings, _) = rrq_config::parse(
            "[[rrq.cron_jobs]]\nfunction_name = \"f\"\nschedule = \"0 0 * * *\"\ntimezone = \"Nowhere\"",
        )
        .unwrap();
        assert_eq!(cron_entries(&settings, at("2030-01-01T00:00:00Z")).unwrap_err().key, "rrq.cron_jobs[0].timezone");
    }
}
