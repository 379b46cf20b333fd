//! `rrq cron list`: the cron entries of `rrq.toml` as a table or JSON (the
//! rows come from [`rrq_core::inspect`]).

use chrono::{DateTime, Utc};
use rrq_protocol::QueueName;

use crate::ConfigArgs;
use crate::exit::{CliError, Exit};
use crate::inspect::{self, CronRow};
use crate::ops::{self, Connected};
use crate::output::{self, OutputArgs};
use rrq_store::{Clock as _, SystemClock};

/// Cron commands.
#[derive(Debug, clap::Subcommand)]
pub enum CronCommand {
    /// List the configured cron entries with their next runs and last recorded tick
    List(ListArgs),
}

/// `rrq cron list` options.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    config: ConfigArgs,
    #[command(flatten)]
    out: OutputArgs,
    /// Show this many upcoming runs per entry
    #[arg(long = "next", default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=100))]
    next: u16,
}

/// Runs a cron command.
pub async fn run(cmd: CronCommand) -> Result<Exit, CliError> {
    match cmd {
        CronCommand::List(args) => list(args).await,
    }
}

async fn list(args: ListArgs) -> Result<Exit, CliError> {
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let now = SystemClock.now();
    let jobs = inspect::cron_entries(&settings, now).map_err(|e| CliError::new(Exit::Config, e))?;
    let rows = inspect::cron_rows(store.as_ref(), &jobs, &settings.default_queue, now, usize::from(args.next)).await?;
    if args.out.json {
        output::print_json(&serde_json::to_value(&rows)?);
        return Ok(Exit::Ok);
    }
    if rows.is_empty() {
        let path = args.config.config.as_ref().map_or_else(|| "rrq.toml".to_owned(), |p| p.display().to_string());
        outln!("No cron entries configured in {path} (add [[rrq.cron_jobs]] tables)");
        return Ok(Exit::Ok);
    }
    outln!("{}", render(&rows, &jobs, now));
    Ok(Exit::Ok)
}

/// The table of `rows`; next runs in each entry's own time zone.
fn render(rows: &[CronRow], jobs: &[rrq_core::CronJob], now: DateTime<Utc>) -> String {
    let mut t =
        output::table(&["Name", "Function", "Schedule", "Time Zone", "Unique", "Queue", "Next Runs", "Last Tick"]);
    for (r, job) in rows.iter().zip(jobs) {
        let tz = job.timezone();
        let next: Vec<String> =
            r.next_runs.iter().map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z").to_string()).collect();
        let queue = QueueName::parse(&r.queue).map_or_else(|| r.queue.clone(), |q| q.bare().to_owned());
        t.add_row(vec![
            r.name.clone(),
            r.function.clone(),
            r.schedule.clone(),
            r.timezone.clone(),
            if r.unique { "yes" } else { "no" }.to_owned(),
            queue,
            if next.is_empty() { "none".to_owned() } else { next.join(", ") },
            r.last_tick.map_or_else(|| "never".to_owned(), |t| output::relative(t, now)),
        ]);
    }
    output::render(&t)
}
