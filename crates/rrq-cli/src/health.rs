//! `rrq health` (alias `check`): the health records workers write.

use rrq_store::WorkerRecord;
use serde_json::{Value, json};

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};

/// `rrq health` options.
#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
}

use crate::inspect::workers::heartbeat_time as heartbeat;
use rrq_store::{Clock as _, SystemClock};

/// A member of a health record as display text (`N/A` when absent).
fn member(health: Option<&Value>, name: &str) -> String {
    match health.and_then(|h| h.get(name)) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => {
            items.iter().map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned)).collect::<Vec<_>>().join(", ")
        }
        Some(Value::Null) | None => "N/A".to_owned(),
        Some(other) => other.to_string(),
    }
}

fn record_json(r: &WorkerRecord) -> Value {
    let h = r.health.as_ref();
    json!({
        "worker_id": r.worker_id,
        "status": h.and_then(|h| h.get("status")).cloned().unwrap_or(Value::Null),
        "active_jobs": h.and_then(|h| h.get("active_jobs")).cloned().unwrap_or(Value::Null),
        "concurrency_limit": h.and_then(|h| h.get("concurrency_limit")).cloned().unwrap_or(Value::Null),
        "queues": h.and_then(|h| h.get("queues")).cloned().unwrap_or(Value::Null),
        "last_heartbeat": output::time_json(h.and_then(heartbeat)),
        "ttl_seconds": r.ttl.map(|t| t.as_secs()),
        "health": h.cloned().unwrap_or(Value::Null),
    })
}

/// Lists the live workers; exits 1 when there is none, so monitors can
/// use the exit code.
pub async fn run(args: HealthArgs) -> Result<Exit, CliError> {
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let workers = store.workers().await?;
    let healthy = !workers.is_empty();
    let exit = if healthy { Exit::Ok } else { Exit::Failure };
    if args.out.json {
        let rows: Vec<Value> = workers.iter().map(record_json).collect();
        output::print_json(&json!({"healthy": healthy, "workers": rows}));
        return Ok(exit);
    }
    if !healthy {
        outln!("Worker Health Check: FAIL (No active workers found)");
        return Ok(exit);
    }
    outln!("Worker Health Check: Found {} active worker(s):", workers.len());
    let now = SystemClock.now();
    let mut t = output::table(&["Worker ID", "Status", "Active Jobs", "Queues", "Last Heartbeat", "TTL"]);
    output::align_right(&mut t, &[2, 5]);
    for w in &workers {
        let h = w.health.as_ref();
        let status = if h.is_some() { member(h, "status") } else { "<health data missing>".to_owned() };
        t.add_row(vec![
            w.worker_id.clone(),
            status,
            member(h, "active_jobs"),
            member(h, "queues"),
            output::relative_opt(h.and_then(heartbeat), now),
            w.ttl.map_or_else(|| "none".to_owned(), |t| format!("{}s", t.as_secs())),
        ]);
    }
    outln!("{}", output::render(&t));
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_are_shown_as_text() {
        let h = json!({"status": "idle (no jobs)", "active_jobs": 2, "queues": ["rrq:queue:a", "rrq:queue:b"]});
        assert_eq!(member(Some(&h), "status"), "idle (no jobs)");
        assert_eq!(member(Some(&h), "active_jobs"), "2");
        assert_eq!(member(Some(&h), "queues"), "rrq:queue:a, rrq:queue:b");
        assert_eq!(member(Some(&h), "missing"), "N/A");
        assert_eq!(member(None, "status"), "N/A");
    }
}
