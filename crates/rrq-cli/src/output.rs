//! How operations commands print: aligned tables and relative times for
//! people, JSON with RFC 3339 times for machines (`--json`).

use chrono::{DateTime, Local, Utc};
use comfy_table::{CellAlignment, ContentArrangement, Table};
use rrq_store::format_timestamp;
use serde_json::Value;

/// The `--json` switch shared by the operations commands.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct OutputArgs {
    /// Print JSON (times in RFC 3339) instead of a table
    #[arg(long)]
    pub json: bool,
}

/// A borderless table with the given header; columns are separated by two
/// spaces and never wrapped, so full job ids and queue keys stay whole.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for column in t.column_iter_mut() {
        column.set_padding((0, 2));
    }
    t
}

/// Right-aligns the numeric columns `columns` (0-based).
pub(crate) fn align_right(t: &mut Table, columns: &[usize]) {
    for &i in columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The table as text, without trailing blanks.
pub(crate) fn render(t: &Table) -> String {
    t.trim_fmt()
}

/// Prints a value as pretty JSON on stdout.
pub(crate) fn print_json(value: &Value) {
    outln!("{}", serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".to_owned()));
}

/// What a failed write to stdout does: a reader that went away (`| head`)
/// is a normal end, so the process exits 0 without a word (as `head`
/// expects of its writer); any other failure is reported, exit code 1.
pub(crate) fn stdout_failed(e: &std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error: cannot write to stdout: {e}");
    std::process::exit(1);
}

/// A time relative to `now`: `4s ago`, `12m ago`, `3h ago` (or `in 4s` for
/// a future time); beyond a day, the local date and time.
pub(crate) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - t).num_seconds();
    let abs = secs.unsigned_abs();
    let span = if abs < 60 {
        format!("{abs}s")
    } else if abs < 3_600 {
        format!("{}m", abs / 60)
    } else if abs < 86_400 {
        format!("{}h", abs / 3_600)
    } else {
        return t.with_timezone(&Local).format("%Y-%m-%d %H:%M:%S").to_string();
    };
    if secs < 0 { format!("in {span}") } else { format!("{span} ago") }
}

/// [`relative`] of an optional time; `N/A` when absent.
pub(crate) fn relative_opt(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "N/A".to_owned(), |t| relative(t, now))
}

/// A duration in seconds as people read it: `850μs`, `12.5ms`, `4.5s`,
/// `3m 20s`, `2h 5m`.
pub(crate) fn duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "N/A".to_owned();
    }
    if secs < 0.0 {
        return format!("-{}", duration(-secs));
    }
    if secs < 0.001 {
        format!("{:.0}μs", secs * 1e6)
    } else if secs < 1.0 {
        format!("{:.1}ms", secs * 1e3)
    } else if secs < 60.0 {
        format!("{secs:.1}s")
    } else if secs < 3_600.0 {
        let whole = secs as u64;
        format!("{}m {}s", whole / 60, whole % 60)
    } else {
        let whole = secs as u64;
        format!("{}h {}m", whole / 3_600, (whole % 3_600) / 60)
    }
}

/// Seconds from `from` to `to`, with sub-second precision.
pub(crate) fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().map_or_else(|| (to - from).num_seconds() as f64, |us| us as f64 / 1e6)
}

/// `s` cut to at most `max` characters, ending in `...` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let keep = max.saturating_sub(3);
    let mut out: String = s.chars().take(keep).collect();
    out.push_str("...");
    out
}

/// A time as RFC 3339 for JSON output, or `null`.
pub(crate) fn time_json(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(format_timestamp(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        rrq_store::parse_timestamp(s).unwrap()
    }

    #[test]
    fn relative_times_read_naturally_both_ways() {
        let now = at("2030-01-02T00:00:00Z");
        assert_eq!(relative(at("2030-01-01T23:59:56Z"), now), "4s ago");
        assert_eq!(relative(at("2030-01-01T23:48:00Z"), now), "12m ago");
        assert_eq!(relative(at("2030-01-01T21:00:00Z"), now), "3h ago");
        assert_eq!(relative(at("2030-01-02T00:01:30Z"), now), "in 1m");
        assert_eq!(relative(now, now), "0s ago");
        let old = relative(at("2029-12-01T00:00:00Z"), now);
        assert_eq!(old.len(), "2029-12-01 00:00:00".len(), "{old}");
        assert_eq!(relative_opt(None, now), "N/A");
    }

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(duration(0.000_85), "850μs");
        assert_eq!(duration(0.0125), "12.5ms");
        assert_eq!(duration(4.5), "4.5s");
        assert_eq!(duration(200.0), "3m 20s");
        assert_eq!(duration(7_500.0), "2h 5m");
        assert_eq!(duration(-4.5), "-4.5s");
        assert_eq!(duration(f64::NAN), "N/A");
        let t = at("2030-01-01T00:00:00Z");
        assert_eq!(seconds_between(t, at("2030-01-01T00:00:04.5Z")), 4.5);
    }

    #[test]
    fn truncation_marks_the_cut() {
        assert_eq!(truncate("short", 10), "short");
        assert_eq!(truncate("exactly10!", 10), "exactly10!");
        assert_eq!(truncate("a much longer text", 10), "a much ...");
        assert_eq!(truncate("ééééééé", 5), "éé...");
    }

    #[test]
    fn tables_align_without_borders() {
        let mut t = table(&["Name", "Count"]);
        align_right(&mut t, &[1]);
        t.add_row(vec!["a-long-name", "7"]);
        t.add_row(vec!["b", "1234"]);
        assert_eq!(render(&t), "Name         Count\na-long-name      7\nb             1234");
    }
}
