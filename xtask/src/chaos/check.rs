//! The invariant checker: pure functions over what a schedule observed (the
//! execution record, the final job hashes, process deaths, the faults).
//!
//! Rule for overlaps (invariant 2): two executions A and B of one job, A
//! started first, overlap when B starts before A ended. A's end is its end
//! line, or (no end line: the process died mid-execution) the time the
//! harness saw A's process dead, minus [`DEATH_SLACK`] for the polling delay.
//! An overlap is allowed only when A's orchestrator (the `rrq worker run`
//! process that A's runner descends from) was SIGSTOPped or SIGKILLed at some
//! moment between A's start and A's end: a frozen or dead orchestrator cannot
//! stop its runner. Everything else is a violation, including an execution
//! that went on after its own orchestrator gave up on the attempt (a lease
//! lost to a Redis outage, a timed-out handler that ignored its cancel).

use std::collections::BTreeMap;
use std::fmt;

/// How late the harness may see a process dead (its polling period and more).
pub const DEATH_SLACK: f64 = 0.2;
/// A start this close after the harness saw CANCELLED was decided before.
pub const CANCEL_SLACK: f64 = 0.05;
/// How much of its timeout a success must leave to count as "before the deadline".
pub const DEADLINE_MARGIN: f64 = 0.5;

/// One line of the record file, as the handlers write it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    pub start: bool,
    pub job: String,
    pub attempt: u64,
    pub pid: u32,
    pub ppid: u32,
    pub t: f64,
    pub outcome: Option<String>,
}

impl Line {
    /// Parses one JSON line; `None` for anything else (a torn last line).
    pub fn parse(text: &str) -> Option<Line> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        Some(Line {
            start: v.get("ev")?.as_str()? == "start",
            job: v.get("job")?.as_str()?.to_owned(),
            attempt: v.get("attempt")?.as_u64()?,
            pid: u32::try_from(v.get("pid")?.as_u64()?).ok()?,
            ppid: v.get("ppid").and_then(serde_json::Value::as_u64).and_then(|p| u32::try_from(p).ok()).unwrap_or(0),
            t: v.get("t")?.as_f64()?,
            outcome: v.get("outcome").and_then(|o| o.as_str()).map(str::to_owned),
        })
    }
}

/// One execution: a start line and its end line, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct Exec {
    pub job: String,
    pub attempt: u64,
    pub pid: u32,
    pub ppid: u32,
    pub start: f64,
    pub end: Option<f64>,
    pub outcome: Option<String>,
}

/// Pairs start and end lines by (job, attempt, pid), in file order.
pub fn executions(lines: &[Line]) -> Vec<Exec> {
    let mut out: Vec<Exec> = Vec::new();
    for l in lines {
        if l.start {
            out.push(Exec {
                job: l.job.clone(),
                attempt: l.attempt,
                pid: l.pid,
                ppid: l.ppid,
                start: l.t,
                end: None,
                outcome: None,
            });
        } else if let Some(e) =
            out.iter_mut().find(|e| e.end.is_none() && e.job == l.job && e.attempt == l.attempt && e.pid == l.pid)
        {
            e.end = Some(l.t);
            e.outcome.clone_from(&l.outcome);
        }
    }
    out
}

/// A job's state at the end of a schedule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FinalJob {
    /// `None`: the hash is gone.
    pub status: Option<String>,
    pub last_error: Option<String>,
    /// PTTL of the job's lock key (-2: absent, -1: no TTL).
    pub lock_pttl_ms: i64,
    /// The job's per-attempt timeout in seconds.
    pub timeout_seconds: f64,
}

/// A runner process (or a descendant) alive past its deadline.
#[derive(Clone, Debug, PartialEq)]
pub struct Orphan {
    pub pid: u32,
    pub cmd: String,
    /// What it should have died with ("SIGKILL of w1#0 at +2.10s", "the end of the run").
    pub after: String,
}

/// Everything a schedule observed.
#[derive(Clone, Debug, Default)]
pub struct Observations {
    pub lines: Vec<Line>,
    /// Acknowledged jobs and their final state.
    pub jobs: BTreeMap<String, FinalJob>,
    /// Process id → when the harness first saw it dead.
    pub deaths: BTreeMap<u32, f64>,
    /// Process id → orchestrator instance it descends from.
    pub owners: BTreeMap<u32, String>,
    /// Orchestrator instance → (from, to) windows when it was stopped or dead
    /// (`to` = infinity for a kill).
    pub frozen: BTreeMap<String, Vec<(f64, f64)>>,
    /// Job → times the harness put it back (DLQ requeue, `job retry`): the
    /// attempt count starts afresh there.
    pub resets: BTreeMap<String, Vec<f64>>,
    /// Job → when the harness first read CANCELLED.
    pub cancelled_seen: BTreeMap<String, f64>,
    pub orphans: Vec<Orphan>,
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq)]
pub enum Violation {
    /// 1: an acknowledged job that is not COMPLETED, FAILED with an error, or CANCELLED.
    NotTerminal { job: String, status: Option<String>, last_error: Option<String> },
    /// 2: two executions of one job overlapped while the first one's orchestrator ran freely.
    Overlap { job: String, first: Exec, second: Exec, owner: Option<String> },
    /// 3: a handler succeeded in time, the job is FAILED.
    SucceededButFailed { job: String, exec: Exec, last_error: Option<String> },
    /// 4: an execution started with an attempt number not above the previous one's.
    AttemptNotGrowing { job: String, previous: u64, next: u64, at: f64 },
    /// 5: an execution started after the job was seen CANCELLED.
    RanAfterCancel { job: String, seen: f64, started: f64 },
    /// 6: an ACTIVE job without a live lease.
    ActiveWithoutLease { job: String, lock_pttl_ms: i64 },
    /// 7: a runner process outlived its orchestrator.
    RunnerOutlived(Orphan),
}

impl Violation {
    /// The invariant's short name, for the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Violation::NotTerminal { .. } => "1-not-terminal",
            Violation::Overlap { .. } => "2-overlap",
            Violation::SucceededButFailed { .. } => "3-succeeded-but-failed",
            Violation::AttemptNotGrowing { .. } => "4-attempt-not-growing",
            Violation::RanAfterCancel { .. } => "5-ran-after-cancel",
            Violation::ActiveWithoutLease { .. } => "6-active-without-lease",
            Violation::RunnerOutlived(_) => "7-runner-outlived-orchestrator",
        }
    }
}

fn show_exec(e: &Exec, t0: f64) -> String {
    let end = e.end.map_or_else(|| "no end line".to_owned(), |t| format!("{:+.2}s", t - t0));
    format!(
        "attempt {} pid {} {:+.2}s..{end} ({})",
        e.attempt,
        e.pid,
        e.start - t0,
        e.outcome.as_deref().unwrap_or("killed")
    )
}

/// Renders a violation with times relative to `t0` (the schedule's start).
pub struct Shown<'a>(pub &'a Violation, pub f64);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t0 = self.1;
        write!(f, "[{}] ", self.0.kind())?;
        match self.0 {
            Violation::NotTerminal { job, status, last_error } => {
                write!(f, "job {job} ended {status:?} (last_error {last_error:?})")
            }
            Violation::Overlap { job, first, second, owner } => write!(
                f,
                "job {job}: {} overlaps {} (first one's orchestrator {} ran freely)",
                show_exec(second, t0),
                show_exec(first, t0),
                owner.as_deref().unwrap_or("unknown")
            ),
            Violation::SucceededButFailed { job, exec, last_error } => {
                write!(f, "job {job} is FAILED ({last_error:?}) though {} succeeded in time", show_exec(exec, t0))
            }
            Violation::AttemptNotGrowing { job, previous, next, at } => {
                write!(f, "job {job}: attempt {next} started at {:+.2}s after attempt {previous}", at - t0)
            }
            Violation::RanAfterCancel { job, seen, started } => write!(
                f,
                "job {job} seen CANCELLED at {:+.2}s, an execution started at {:+.2}s",
                seen - t0,
                started - t0
            ),
            Violation::ActiveWithoutLease { job, lock_pttl_ms } => {
                write!(f, "job {job} is ACTIVE at the end, lock PTTL {lock_pttl_ms}")
            }
            Violation::RunnerOutlived(o) => write!(f, "pid {} ({}) alive after {}", o.pid, o.cmd, o.after),
        }
    }
}

impl Observations {
    /// The orchestrator instance an execution's process descends from.
    fn owner(&self, e: &Exec) -> Option<&String> {
        self.owners.get(&e.pid).or_else(|| self.owners.get(&e.ppid))
    }

    /// The end bound of an execution (see the module documentation).
    fn end_of(&self, e: &Exec) -> f64 {
        match e.end {
            Some(t) => t,
            None => self.deaths.get(&e.pid).map_or(f64::INFINITY, |t| t - DEATH_SLACK),
        }
    }

    /// Whether `e`'s orchestrator was stopped or dead at some moment of `e`.
    fn excused(&self, e: &Exec) -> bool {
        let Some(owner) = self.owner(e) else { return false };
        let end = self.end_of(e).max(e.start) + DEATH_SLACK;
        self.frozen.get(owner).is_some_and(|w| w.iter().any(|(from, to)| *from < end && *to > e.start))
    }

    /// Every violation, in invariant order.
    pub fn check(&self) -> Vec<Violation> {
        let execs = executions(&self.lines);
        let mut by_job: BTreeMap<&str, Vec<&Exec>> = BTreeMap::new();
        for e in &execs {
            by_job.entry(e.job.as_str()).or_default().push(e);
        }
        for list in by_job.values_mut() {
            list.sort_by(|a, b| a.start.total_cmp(&b.start));
        }
        let mut out = Vec::new();

        // 1. Terminal.
        for (job, f) in &self.jobs {
            let ok = match f.status.as_deref() {
                Some("COMPLETED" | "CANCELLED") => true,
                Some("FAILED") => f.last_error.as_deref().is_some_and(|e| !e.trim().is_empty()),
                _ => false,
            };
            if !ok {
                out.push(Violation::NotTerminal {
                    job: job.clone(),
                    status: f.status.clone(),
                    last_error: f.last_error.clone(),
                });
            }
        }

        // 2. Overlaps.
        for (job, list) in &by_job {
            for (i, b) in list.iter().enumerate() {
                // The latest-ending earlier execution that B overlaps, unexcused.
                if let Some(a) = list[..i].iter().find(|a| b.start < self.end_of(a) && !self.excused(a)) {
                    out.push(Violation::Overlap {
                        job: (*job).to_owned(),
                        first: (*a).clone(),
                        second: (*b).clone(),
                        owner: self.owner(a).cloned(),
                    });
                }
            }
        }

        // 3. Succeeded in time, yet FAILED.
        for (job, f) in &self.jobs {
            if f.status.as_deref() != Some("FAILED") {
                continue;
            }
            let in_time = by_job.get(job.as_str()).and_then(|list| {
                list.iter().find(|e| {
                    e.outcome.as_deref() == Some("ok")
                        && e.end.is_some_and(|end| end - e.start < f.timeout_seconds - DEADLINE_MARGIN)
                })
            });
            if let Some(e) = in_time {
                out.push(Violation::SucceededButFailed {
                    job: job.clone(),
                    exec: (*e).clone(),
                    last_error: f.last_error.clone(),
                });
            }
        }

        // 4. Attempts grow, except across a requeue or retry by the harness.
        for (job, list) in &by_job {
            let resets = self.resets.get(*job).map(Vec::as_slice).unwrap_or_default();
            for pair in list.windows(2) {
                let (a, b) = (pair[0], pair[1]);
                let reset = resets.iter().any(|t| *t > a.start && *t < b.start);
                if b.attempt <= a.attempt && !reset {
                    out.push(Violation::AttemptNotGrowing {
                        job: (*job).to_owned(),
                        previous: a.attempt,
                        next: b.attempt,
                        at: b.start,
                    });
                }
            }
        }

        // 5. Nothing starts after CANCELLED was seen.
        for (job, seen) in &self.cancelled_seen {
            if let Some(e) = by_job.get(job.as_str()).and_then(|l| l.iter().find(|e| e.start > seen + CANCEL_SLACK)) {
                out.push(Violation::RanAfterCancel { job: job.clone(), seen: *seen, started: e.start });
            }
        }

        // 6. ACTIVE only with a live lease.
        for (job, f) in &self.jobs {
            if f.status.as_deref() == Some("ACTIVE") && f.lock_pttl_ms <= 0 {
                out.push(Violation::ActiveWithoutLease { job: job.clone(), lock_pttl_ms: f.lock_pttl_ms });
            }
        }

        // 7. Runners die with their orchestrator.
        out.extend(self.orphans.iter().cloned().map(Violation::RunnerOutlived));
        out
    }
}

#[cfg(test)]
#[allow(clippy::field_reassign_with_default, reason = "each test fills in an empty observation step by step")]
mod tests {
    use super::*;

    fn start(job: &str, attempt: u64, pid: u32, t: f64) -> Line {
        Line { start: true, job: job.into(), attempt, pid, ppid: 1, t, outcome: None }
    }

    fn end(job: &str, attempt: u64, pid: u32, t: f64, outcome: &str) -> Line {
        Line { start: false, job: job.into(), attempt, pid, ppid: 1, t, outcome: Some(outcome.into()) }
    }

    fn done(status: &str) -> FinalJob {
        FinalJob {
            status: Some(status.into()),
            last_error: (status == "FAILED").then(|| "boom".into()),
            lock_pttl_ms: -2,
            timeout_seconds: 5.0,
        }
    }

    fn kinds(o: &Observations) -> Vec<&'static str> {
        o.check().iter().map(Violation::kind).collect()
    }

    #[test]
    fn lines_parse_and_pair_up() {
        let s = Line::parse(r#"{"ev":"start","job":"j","attempt":1,"pid":7,"ppid":3,"t":1.5}"#).unwrap();
        let e = Line::parse(r#"{"ev":"end","job":"j","attempt":1,"pid":7,"ppid":3,"t":2.0,"outcome":"ok"}"#).unwrap();
        assert!(Line::parse("{\"ev\":\"sta").is_none());
        let execs = executions(&[s, e, start("j", 2, 8, 3.0)]);
        assert_eq!(execs.len(), 2);
        assert_eq!((execs[0].end, execs[0].outcome.as_deref(), execs[0].ppid), (Some(2.0), Some("ok"), 3));
        assert_eq!(execs[1].end, None);
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let mut o = Observations::default();
        o.lines = vec![end("a", 1, 7, 1.0, "retry"), start("a", 2, 7, 1.1), end("a", 2, 7, 1.2, "ok")];
        o.lines.insert(0, start("a", 1, 7, 0.5));
        o.jobs.insert("a".into(), done("COMPLETED"));
        o.jobs.insert("b".into(), done("FAILED"));
        o.jobs.insert("c".into(), done("CANCELLED"));
        assert_eq!(kinds(&o), Vec::<&str>::new());
    }

    #[test]
    fn invariant_1_flags_non_terminal_missing_and_errorless_failures() {
        let mut o = Observations::default();
        o.jobs.insert("p".into(), done("PENDING"));
        o.jobs.insert("gone".into(), FinalJob::default());
        o.jobs.insert("f".into(), FinalJob { last_error: Some(" ".into()), ..done("FAILED") });
        assert_eq!(kinds(&o), ["1-not-terminal"; 3]);
    }

    #[test]
    fn invariant_2_flags_an_overlap_unless_the_first_orchestrator_was_frozen() {
        let mut o = Observations::default();
        o.lines =
            vec![start("a", 1, 7, 1.0), start("a", 2, 8, 2.0), end("a", 1, 7, 3.0, "ok"), end("a", 2, 8, 3.5, "ok")];
        o.jobs.insert("a".into(), done("COMPLETED"));
        o.owners.insert(7, "w0#0".into());
        assert_eq!(kinds(&o), ["2-overlap"]);
        // A freeze of another orchestrator does not excuse it.
        o.frozen.insert("w1#0".into(), vec![(1.5, 2.5)]);
        assert_eq!(kinds(&o), ["2-overlap"]);
        // A SIGSTOP of its own orchestrator during the first execution does.
        o.frozen.insert("w0#0".into(), vec![(1.5, 2.5)]);
        assert_eq!(kinds(&o), Vec::<&str>::new());
    }

    #[test]
    fn invariant_2_bounds_a_killed_execution_by_its_process_death() {
        let mut o = Observations::default();
        // No end line: pid 7 was seen dead at 2.0; the re-run starts at 2.5.
        o.lines = vec![start("a", 1, 7, 1.0), start("a", 2, 8, 2.5), end("a", 2, 8, 3.0, "ok")];
        o.jobs.insert("a".into(), done("COMPLETED"));
        o.deaths.insert(7, 2.0);
        assert_eq!(kinds(&o), Vec::<&str>::new());
        // Seen dead only at 3.0: the re-run began while it still ran.
        o.deaths.insert(7, 3.0);
        assert_eq!(kinds(&o), ["2-overlap"]);
        // Never seen dead: it overlaps everything after it.
        o.deaths.clear();
        assert_eq!(kinds(&o), ["2-overlap"]);
    }

    #[test]
    fn invariant_3_flags_a_failed_job_whose_handler_succeeded_in_time() {
        let mut o = Observations::default();
        o.lines = vec![start("a", 1, 7, 1.0), end("a", 1, 7, 1.5, "ok")];
        o.jobs.insert("a".into(), done("FAILED"));
        assert_eq!(kinds(&o), ["3-succeeded-but-failed"]);
        // A success past the deadline may be failed as a timeout.
        o.lines[1].t = 6.0;
        assert_eq!(kinds(&o), Vec::<&str>::new());
    }

    #[test]
    fn invariant_4_flags_an_attempt_that_does_not_grow_unless_the_job_was_requeued() {
        let mut o = Observations::default();
        o.lines = vec![
            start("a", 2, 7, 1.0),
            end("a", 2, 7, 1.1, "fail"),
            start("a", 2, 7, 2.0),
            end("a", 2, 7, 2.1, "fail"),
        ];
        o.jobs.insert("a".into(), done("FAILED"));
        assert_eq!(kinds(&o), ["4-attempt-not-growing"]);
        o.resets.insert("a".into(), vec![1.5]);
        assert_eq!(kinds(&o), Vec::<&str>::new());
    }

    #[test]
    fn invariant_5_flags_a_start_after_cancelled_was_seen() {
        let mut o = Observations::default();
        o.lines = vec![start("a", 1, 7, 1.0), end("a", 1, 7, 1.1, "dropped"), start("a", 2, 7, 3.0)];
        o.lines.push(end("a", 2, 7, 3.1, "ok"));
        o.jobs.insert("a".into(), done("CANCELLED"));
        o.cancelled_seen.insert("a".into(), 2.0);
        assert_eq!(kinds(&o), ["5-ran-after-cancel"]);
        o.cancelled_seen.insert("a".into(), 3.5);
        assert_eq!(kinds(&o), Vec::<&str>::new());
    }

    #[test]
    fn invariant_6_flags_an_active_job_without_a_lock_ttl() {
        let mut o = Observations::default();
        o.jobs.insert("a".into(), FinalJob { lock_pttl_ms: -1, ..done("ACTIVE") });
        o.jobs.insert("b".into(), FinalJob { lock_pttl_ms: 1500, ..done("ACTIVE") });
        // Both are not terminal (1); only `a` lacks a lease (6).
        let v = o.check();
        assert_eq!(
            v.iter().map(Violation::kind).collect::<Vec<_>>(),
            ["1-not-terminal", "1-not-terminal", "6-active-without-lease"]
        );
        assert!(matches!(&v[2], Violation::ActiveWithoutLease { job, .. } if job == "a"));
    }

    #[test]
    fn invariant_7_reports_orphans() {
        let mut o = Observations::default();
        o.orphans.push(Orphan { pid: 9, cmd: "rrq-example-runner".into(), after: "SIGKILL of w0#0".into() });
        let v = o.check();
        assert_eq!(v.iter().map(Violation::kind).collect::<Vec<_>>(), ["7-runner-outlived-orchestrator"]);
        assert!(Shown(&v[0], 0.0).to_string().contains("pid 9 (rrq-example-runner) alive after SIGKILL of w0#0"));
    }
}
