//! Unit tests of the parent module (test code: the source rules skip it).
#![cfg(test)]

use super::*;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn job(schedule: &str) -> CronJob {
    job_in(schedule, None, false)
}

/// The time the tests' entries are validated at.
fn now() -> DateTime<Utc> {
    at("2026-03-10T10:07:33Z")
}

fn job_in(schedule: &str, tz: Option<&str>, catch_up: bool) -> CronJob {
    let entry = CronEntry {
        timezone: tz.map(str::to_owned),
        catch_up,
        ..CronEntry::new("rrq.cron_jobs[0]", "report", schedule)
    };
    CronJob::new(entry, now()).unwrap()
}

fn err(schedule: &str, tz: Option<&str>) -> CronError {
    let entry = CronEntry { timezone: tz.map(str::to_owned), ..CronEntry::new("rrq.cron_jobs[2]", "report", schedule) };
    CronJob::new(entry, now()).unwrap_err()
}

#[test]
fn five_six_and_seven_fields_are_accepted() {
    let t = at("2026-03-10T10:07:31Z");
    assert_eq!(job("*/15 * * * *").next_after(t), Some(at("2026-03-10T10:15:00Z")));
    assert_eq!(job("*/10 * * * * *").next_after(t), Some(at("2026-03-10T10:07:40Z")));
    assert_eq!(job("0 0 12 * * * 2027").next_after(t), Some(at("2027-01-01T12:00:00Z")));
    assert_eq!(job("0/20 * * * * *").next_after(t), Some(at("2026-03-10T10:07:40Z")), "Quartz-style step");
    assert_eq!(job("@hourly").next_after(t), Some(at("2026-03-10T11:00:00Z")));
    assert_eq!(job("0 9 * * MON").next_after(t), Some(at("2026-03-16T09:00:00Z")));
    assert_eq!(job("0 0 9 ? * 0").next_after(t), Some(at("2026-03-15T09:00:00Z")), "0 = Sunday");
    assert_eq!(job("0 0 9 ? * 7").next_after(t), Some(at("2026-03-15T09:00:00Z")), "7 = Sunday");
}

#[test]
fn next_after_is_strict_and_ignores_fractions() {
    let j = job("*/10 * * * * *");
    assert_eq!(j.next_after(at("2026-01-01T00:00:10Z")), Some(at("2026-01-01T00:00:20Z")));
    assert_eq!(j.next_after(at("2026-01-01T00:00:09.999Z")), Some(at("2026-01-01T00:00:10Z")));
    assert_eq!(j.next_after(at("2026-01-01T00:00:10.001Z")), Some(at("2026-01-01T00:00:20Z")));
    assert_eq!(j.latest_at_or_before(at("2026-01-01T00:00:10Z")), Some(at("2026-01-01T00:00:10Z")));
    assert_eq!(j.latest_at_or_before(at("2026-01-01T00:00:19.9Z")), Some(at("2026-01-01T00:00:10Z")));
}

#[test]
fn errors_name_the_key_the_value_and_the_reason() {
    let e = err("* * *", None);
    assert_eq!(e.key, "rrq.cron_jobs[2].schedule");
    assert_eq!(e.value, "* * *");
    assert!(e.reason.contains("not a cron expression"), "{e}");
    assert!(e.to_string().starts_with("invalid `rrq.cron_jobs[2].schedule` (\"* * *\"): "), "{e}");
    assert_eq!(err("61 * * * *", None).key, "rrq.cron_jobs[2].schedule");

    let never = err("0 0 31 2 *", None);
    assert_eq!(never.key, "rrq.cron_jobs[2].schedule");
    assert!(never.reason.contains("never fires"), "{never}");
    let past = err("0 0 0 1 1 * 2020", None);
    assert!(past.reason.contains("never fires"), "{past}");

    let tz = err("0 * * * *", Some("Mars/Olympus_Mons"));
    assert_eq!((tz.key.as_str(), tz.value.as_str()), ("rrq.cron_jobs[2].timezone", "Mars/Olympus_Mons"));

    let f = CronJob::new(CronEntry::new("rrq.cron[0]", " ", "0 * * * *"), now()).unwrap_err();
    assert_eq!(f.key, "rrq.cron[0].function_name");
}

#[test]
fn ids_are_stable_and_tell_entries_apart() {
    let a = job("*/10 * * * * *");
    assert_eq!(a.id(), job("*/10  *  * * * *").id(), "whitespace does not matter");
    assert!(a.id().starts_with("cron:report:") && a.id().len() == "cron:report:".len() + 8, "{}", a.id());
    assert_eq!(a.job_id(at("2026-11-28T00:00:10Z")).as_str(), format!("{}:1795824010", a.id()));
    assert_eq!(a.id(), job_in("*/10 * * * * *", Some("UTC"), false).id(), "UTC is the default zone");
    assert_ne!(a.id(), job_in("*/10 * * * * *", Some("Europe/Paris"), false).id());
    assert_ne!(a.id(), job("*/20 * * * * *").id());
    let with = |params: Value, queue: Option<QueueName>| {
        let params = params.as_object().unwrap().clone();
        CronJob::new(CronEntry { params, queue, unique: true, ..CronEntry::new("k", "report", "@daily") }, now())
            .unwrap()
    };
    let p1 = with(serde_json::json!({"a": 1, "b": {"y": 2, "x": 1}}), None);
    let p2 = with(serde_json::json!({"b": {"x": 1, "y": 2}, "a": 1}), None);
    let p3 = with(serde_json::json!({"a": 2}), None);
    let q = with(serde_json::json!({}), Some(QueueName::new("low")));
    assert_eq!(p1.id(), p2.id(), "key order does not matter");
    assert_ne!(p1.id(), p3.id());
    assert_ne!(job("@daily").id(), q.id());
    assert_eq!(q.unique_lock_key().as_deref(), Some("cron:report"));
    assert_eq!(job("@daily").unique_lock_key(), None);
}

#[test]
fn names_default_to_function_and_schedule_and_never_change_the_identity() {
    let plain = job("*/10  * * * * *");
    assert_eq!(plain.name(), "report (*/10 * * * * *)", "derived from the function and the normalised schedule");
    assert!(!plain.has_given_name());
    let named = job("*/10 * * * * *").with_name(Some("ten-seconds".to_owned()));
    assert_eq!(named.name(), "ten-seconds");
    assert!(named.has_given_name());
    assert_eq!(named.id(), plain.id(), "naming an entry keeps its ticks and catch-up record");
    assert_eq!(job("@daily").with_name(None).name(), "report (@daily)");
}

#[test]
fn numeric_weekdays_are_flagged_only_where_the_numbering_differs() {
    assert!(job("0 0 9 * * 1-5").has_numeric_weekdays());
    assert!(job("0 0 9 ? * 2 2030").has_numeric_weekdays());
    assert!(!job("0 0 9 * * MON-FRI").has_numeric_weekdays());
    assert!(!job("0 0 9 * * MON#2").has_numeric_weekdays());
    assert!(!job("0 9 * * 1-5").has_numeric_weekdays(), "crontab numbering is the classic one");
    assert!(!job("*/10 * * * * *").has_numeric_weekdays());
}

#[test]
fn the_window_fires_only_its_latest_tick() {
    let j = job("*/10 * * * * *");
    let t0 = at("2026-01-01T00:00:00Z");
    assert_eq!(j.due_tick(t0, at("2026-01-01T00:00:09Z")), None);
    assert_eq!(j.due_tick(t0, at("2026-01-01T00:00:10Z")), Some(at("2026-01-01T00:00:10Z")));
    // An hour-long stall: one run, for the latest tick, not 360.
    assert_eq!(j.due_tick(t0, at("2026-01-01T01:00:05Z")), Some(at("2026-01-01T01:00:00Z")));
    // The window is open at its start.
    assert_eq!(j.due_tick(at("2026-01-01T00:00:10Z"), at("2026-01-01T00:00:15Z")), None);
}

#[test]
fn catch_up_needs_the_flag_a_record_and_a_missed_tick() {
    let start = at("2026-01-01T10:42:00Z");
    let hourly = job_in("0 * * * *", None, true);
    let recorded = Some(at("2026-01-01T07:00:00Z"));
    assert_eq!(hourly.catch_up_tick(recorded, start), Some(at("2026-01-01T10:00:00Z")), "one run for 08, 09, 10");
    assert_eq!(hourly.catch_up_tick(Some(at("2026-01-01T10:00:00Z")), start), None, "nothing missed");
    assert_eq!(hourly.catch_up_tick(None, start), None, "never ran: nothing to catch up");
    assert_eq!(job("0 * * * *").catch_up_tick(recorded, start), None, "catch_up is off");
    assert_eq!(hourly.catch_up_tick(recorded, at("2026-01-01T10:00:00Z")), Some(at("2026-01-01T10:00:00Z")));
}

#[test]
fn the_scheduler_wakes_at_the_earliest_tick_and_fires_each_entry_once() {
    let fast = job("*/10 * * * * *");
    let slow = job("0 * * * * *");
    let start = at("2026-01-01T00:00:05Z");
    let mut s = CronScheduler::new(vec![fast.clone(), slow.clone()], start);
    assert_eq!(s.next_wakeup(), Some(at("2026-01-01T00:00:10Z")));
    assert!(s.due(at("2026-01-01T00:00:09.5Z")).is_empty());
    let due = s.due(at("2026-01-01T00:00:10Z"));
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].0.id(), due[0].1), (fast.id(), at("2026-01-01T00:00:10Z")));
    assert!(s.due(at("2026-01-01T00:00:10Z")).is_empty(), "a tick fires once");
    assert_eq!(s.next_wakeup(), Some(at("2026-01-01T00:00:20Z")));

    // Woken late (a stall of 75 s): each entry once, for its latest tick.
    let due: Vec<(String, DateTime<Utc>)> =
        s.due(at("2026-01-01T00:01:25Z")).into_iter().map(|(j, t)| (j.id().to_owned(), t)).collect();
    assert_eq!(
        due,
        [(fast.id().to_owned(), at("2026-01-01T00:01:20Z")), (slow.id().to_owned(), at("2026-01-01T00:01:00Z"))]
    );
    assert_eq!(s.next_wakeup(), Some(at("2026-01-01T00:01:30Z")));
    assert_eq!(s.last_checked(), at("2026-01-01T00:01:25Z"));

    // The wall clock steps back: nothing fires twice.
    assert!(s.due(at("2026-01-01T00:00:50Z")).is_empty());
    assert_eq!(s.last_checked(), at("2026-01-01T00:01:25Z"));
    assert_eq!(s.due(at("2026-01-01T00:01:30Z")).len(), 1);
}

#[test]
fn a_start_on_a_tick_does_not_fire_it() {
    let mut s = CronScheduler::new(vec![job("*/10 * * * * *")], at("2026-01-01T00:00:10Z"));
    assert!(s.due(at("2026-01-01T00:00:10Z")).is_empty());
    assert_eq!(s.next_wakeup(), Some(at("2026-01-01T00:00:20Z")));
}

#[test]
fn no_entries_means_no_wakeup() {
    let mut s = CronScheduler::new(Vec::new(), at("2026-01-01T00:00:00Z"));
    assert_eq!(s.next_wakeup(), None);
    assert!(s.due(at("2030-01-01T00:00:00Z")).is_empty());
}

#[test]
fn an_entry_with_a_last_year_stops_waking_the_worker() {
    let j = job("0 0 0 1 1 * 2027");
    let after_it = at("2200-01-01T00:00:00Z");
    assert_eq!(j.next_after(after_it), None);
    let s = CronScheduler::new(vec![j], after_it);
    assert_eq!(s.next_wakeup(), None);
}

#[test]
fn time_zones_shift_ticks() {
    let paris = job_in("0 9 * * *", Some("Europe/Paris"), false);
    // Winter: UTC+1; summer: UTC+2.
    assert_eq!(paris.next_after(at("2026-01-15T00:00:00Z")), Some(at("2026-01-15T08:00:00Z")));
    assert_eq!(paris.next_after(at("2026-07-15T00:00:00Z")), Some(at("2026-07-15T07:00:00Z")));
}

#[test]
fn spring_forward_runs_a_skipped_time_once_after_the_gap() {
    // 2026-03-08 in New York: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    let j = job_in("30 2 * * *", Some("America/New_York"), false);
    let before = at("2026-03-08T06:00:00Z"); // 01:00 EST
    assert_eq!(j.next_after(before), Some(at("2026-03-08T07:00:00Z")), "03:00 EDT");
    assert_eq!(j.next_after(at("2026-03-08T07:00:00Z")), Some(at("2026-03-09T06:30:00Z")), "02:30 EDT next day");
    let mut s = CronScheduler::new(vec![j], before);
    assert_eq!(s.next_wakeup(), Some(at("2026-03-08T07:00:00Z")));
    let due = s.due(at("2026-03-08T07:00:00Z"));
    assert_eq!(due.iter().map(|d| d.1).collect::<Vec<_>>(), [at("2026-03-08T07:00:00Z")]);
    assert!(s.due(at("2026-03-08T12:00:00Z")).is_empty());
}

#[test]
fn fall_back_runs_a_repeated_time_once() {
    // 2026-11-01 in New York: 02:00 EDT falls back to 01:00 EST, so
    // 01:30 happens at 05:30 UTC (EDT) and again at 06:30 UTC (EST).
    let j = job_in("30 1 * * *", Some("America/New_York"), false);
    let start = at("2026-11-01T04:00:00Z"); // 00:00 EDT
    let mut s = CronScheduler::new(vec![j.clone()], start);
    assert_eq!(s.next_wakeup(), Some(at("2026-11-01T05:30:00Z")));
    assert_eq!(s.due(at("2026-11-01T05:30:00Z")).len(), 1);
    assert_eq!(s.next_wakeup(), Some(at("2026-11-02T06:30:00Z")), "next day, 01:30 EST");
    assert!(s.due(at("2026-11-01T06:30:00Z")).is_empty(), "the repeated 01:30 does not fire");
    // A check spanning the whole night still fires once.
    assert_eq!(j.due_tick(start, at("2026-11-01T08:00:00Z")), Some(at("2026-11-01T05:30:00Z")));
}

#[test]
fn interval_schedules_keep_real_time_spacing_across_fall_back() {
    // Every 30 minutes: the repeated hour has its own ticks, spaced by
    // real time, with no tick fired twice.
    let j = job_in("*/30 * * * *", Some("America/New_York"), false);
    let mut t = at("2026-11-01T04:45:00Z");
    let mut ticks = Vec::new();
    for _ in 0..5 {
        t = j.next_after(t).unwrap();
        ticks.push(t);
    }
    assert_eq!(
        ticks,
        [
            at("2026-11-01T05:00:00Z"),
            at("2026-11-01T05:30:00Z"),
            at("2026-11-01T06:00:00Z"),
            at("2026-11-01T06:30:00Z"),
            at("2026-11-01T07:00:00Z"),
        ]
    );
}
