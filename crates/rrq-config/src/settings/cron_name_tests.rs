//! Unit tests of the parent module (test code: the source rules skip it).
#![cfg(test)]

use crate::parse;

#[test]
fn cron_entries_take_an_optional_name() {
    let doc = r#"
[[rrq.cron_jobs]]
name = "daily-cleanup"
function_name = "cleanup"
schedule = "0 3 * * *"

[[rrq.cron_jobs]]
function_name = "report"
schedule = "@hourly"
"#;
    let (s, w) = parse(doc).unwrap();
    assert!(w.is_empty(), "`name` is a known key: {w:?}");
    assert_eq!(s.cron[0].name.as_deref(), Some("daily-cleanup"));
    assert_eq!(s.cron[1].name, None);
}

#[test]
fn duplicate_cron_names_stop_loading_naming_both_entries() {
    let doc = r#"
[[rrq.cron_jobs]]
name = "nightly"
function_name = "a"
schedule = "@daily"

[[rrq.cron_jobs]]
name = "other"
function_name = "b"
schedule = "@daily"

[[rrq.cron]]
name = " nightly "
function_name = "c"
schedule = "@hourly"
"#;
    let msg = parse(doc).unwrap_err().to_string();
    assert!(msg.contains("rrq.cron_jobs[0]") && msg.contains("rrq.cron[0]"), "names both entries: {msg}");
    assert!(msg.contains("\"nightly\"") && msg.contains("unique"), "{msg}");
}

#[test]
fn blank_cron_names_are_refused() {
    let doc = "[[rrq.cron_jobs]]\nname = \"  \"\nfunction_name = \"a\"\nschedule = \"@daily\"";
    let msg = parse(doc).unwrap_err().to_string();
    assert!(msg.contains("rrq.cron_jobs[0].name"), "{msg}");
}
