//! `rrq health` (alias `check`): the health records workers write.

use rrq_store::WorkerInfo;
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

use rrq_store::{Clock as _, SystemClock};

/// An optional member as display text (`N/A` when absent).
fn text<T: ToString>(member: Option<T>) -> String {
    member.map_or_else(|| "N/A".to_owned(), |m| m.to_string())
}

fn record_json(w: &WorkerInfo) -> Value {
    json!({
        "worker_id": w.worker_id,
        "status": w.status,
        "active_jobs": w.active_jobs,
        "concurrency_limit": w.concurrency_limit,
        "queues": w.queues,
        "last_heartbeat": output::time_json(w.last_heartbeat),
        "ttl_seconds": w.ttl.map(|t| t.as_secs()),
        "health": w.health.clone().unwrap_or(Value::Null),
    })
}

/// Lists the live workers; exits 1 when there is none, so monitors can
/// use the exit code.
pub async fn run(args: HealthArgs) -> Result<Exit, CliError> {
    let Connected { store, .. } = ops::connect(&args.config).await?;
    let workers = store.worker_infos().await?;
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
        let status = if w.health.is_some() { text(w.status.as_ref()) } else { "<health data missing>".to_owned() };
        t.add_row(vec![
            w.worker_id.clone(),
            status,
            text(w.active_jobs),
            text(w.queues.as_ref().map(|q| q.join(", "))),
            output::relative_opt(w.last_heartbeat, now),
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
        assert_eq!(text(Some("idle (no jobs)")), "idle (no jobs)");
        assert_eq!(text(Some(2)), "2");
        assert_eq!(text(Some(["a", "b"].join(", "))), "a, b");
        assert_eq!(text(None::<u64>), "N/A");
    }
}
