//! `rrq worker list`: the live workers as a table or JSON (the rows come
//! from [`rrq_core::inspect`]).

use chrono::Utc;
use rrq_protocol::QueueName;

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::inspect::{self, WorkerRow};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use rrq_store::{Clock as _, SystemClock};

/// `rrq worker list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
}

/// Lists the live workers. An empty list is a success, as for the other
/// lists (`rrq health` is the check that fails without workers).
pub async fn run(args: ListArgs) -> Result<Exit, CliError> {
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let now = SystemClock.now();
    let rows = inspect::worker_rows(store.as_ref(), now).await?;
    if args.out.json {
        output::print_json(&serde_json::to_value(&rows)?);
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        outln!("No live workers found");
        return Ok(Exit::Ok);
    }
    outln!("{}", render(&rows, now));
    let in_flight: u64 = rows.iter().filter_map(|r| r.active_jobs).sum();
    outln!();
    let s = if rows.len() == 1 { "" } else { "s" };
    outln!("{} live worker{s}, {in_flight} jobs in flight", rows.len());
    Ok(Exit::Ok)
}

/// The table of `rows`, heartbeat ages measured at `now`.
fn render(rows: &[WorkerRow], now: chrono::DateTime<Utc>) -> String {
    let mut t = output::table(&["Worker ID", "Status", "In Flight", "Limit", "Queues", "Heartbeat", "Expires"]);
    output::align_right(&mut t, &[2, 3, 6]);
    let na = || "N/A".to_owned();
    for r in rows {
        let status =
            if r.readable { r.status.clone().unwrap_or_else(na) } else { "<health data unreadable>".to_owned() };
        let queues: Vec<String> =
            r.queues.iter().map(|q| QueueName::parse(q).map_or_else(|| q.clone(), |q| q.bare().to_owned())).collect();
        t.add_row(vec![
            r.worker_id.clone(),
            status,
            r.active_jobs.map_or_else(na, |n| n.to_string()),
            r.concurrency_limit.map_or_else(na, |n| n.to_string()),
            if queues.is_empty() { na() } else { queues.join(", ") },
            output::relative_opt(r.last_heartbeat, now),
            r.ttl_seconds.map_or_else(|| "never".to_owned(), |s| format!("in {s}s")),
        ]);
    }
    output::render(&t)
}
