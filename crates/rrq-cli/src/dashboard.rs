//! `rrq dashboard`: the web dashboard (rrq-dashboard) on its own, and the
//! in-process one a worker serves with `dashboard_listen`.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::anyhow;
use metrics_exporter_prometheus::PrometheusHandle;
use rrq_config::Settings;
use rrq_dashboard::{Dashboard, Options, ServeError};
use rrq_store::Store;
use tokio_util::sync::CancellationToken;

use crate::exit::{CliError, Exit};
use crate::ops::{self, Connected};
use crate::{ConfigArgs, worker};

/// `rrq dashboard` options.
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to serve on; a non-loopback one needs --token
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Access token the browser or API client must present
    #[arg(long, env = rrq_dashboard::TOKEN_ENV, hide_env_values = true)]
    token: Option<String>,
    /// Show everything, change nothing: hide and refuse every action
    #[arg(long)]
    read_only: bool,
}

/// Parses a listen address, naming the option or key it came from.
fn listen_addr(value: &str, name: &str) -> Result<SocketAddr, CliError> {
    value.trim().parse().map_err(|_| {
        CliError::new(
            Exit::Config,
            anyhow!("{name} must be an IP address and port such as 127.0.0.1:8080, not {value:?}"),
        )
    })
}

/// Builds and starts a dashboard; refusals of the bind rule exit with the
/// configuration code.
pub(crate) async fn start(
    settings: &Settings,
    store: Arc<dyn Store>,
    options: Options,
    stop: CancellationToken,
) -> Result<SocketAddr, CliError> {
    let dashboard =
        Dashboard::new(settings, store, options).map_err(|e| CliError::new(Exit::Config, anyhow::Error::new(e)))?;
    serve(dashboard, stop).await
}

async fn serve(dashboard: Dashboard, stop: CancellationToken) -> Result<SocketAddr, CliError> {
    dashboard.serve(stop).await.map_err(|e| match e {
        ServeError::Bind(e) => CliError::new(Exit::Config, anyhow::Error::new(e)),
        e => CliError::new(Exit::Failure, anyhow::Error::new(e)),
    })
}

/// Runs `rrq dashboard` until SIGINT or SIGTERM.
pub async fn run(args: DashboardArgs) -> Result<Exit, CliError> {
    let listen = listen_addr(&args.listen, "--listen")?;
    let mut options = Options::new(listen);
    options.token = args.token.filter(|t| !t.is_empty());
    options.read_only = args.read_only;
    // The bind rule first, so a refused address never needs Redis.
    rrq_dashboard::security::check_bind(listen, options.token.as_deref())
        .map_err(|e| CliError::new(Exit::Config, anyhow::Error::new(e)))?;
    let Connected { settings, store } = ops::connect(&args.config).await?;
    let stop = CancellationToken::new();
    let local = start(&settings, store, options, stop.clone()).await?;
    outln!("Dashboard on http://{local}{}", if args.read_only { " (read-only)" } else { "" });
    worker::spawn_signal_handler(stop.clone());
    stop.cancelled().await;
    Ok(Exit::Ok)
}

/// The in-process dashboard of `rrq worker run` (`dashboard_listen`): the
/// token comes from RRQ_DASHBOARD_TOKEN only. The chart reads the
/// workers' heartbeat counts like a standalone dashboard; this worker's own
/// completions (`rrq_jobs_completed_total` of its metrics recorder) serve
/// while no live health record carries counts.
pub(crate) async fn start_in_worker(
    settings: &Settings,
    store: Arc<dyn Store>,
    listen: &str,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) -> Result<SocketAddr, CliError> {
    let mut options = Options::new(listen_addr(listen, "dashboard_listen")?);
    options.token = std::env::var(rrq_dashboard::TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let dashboard =
        Dashboard::new(settings, store, options).map_err(|e| CliError::new(Exit::Config, anyhow::Error::new(e)))?;
    let dashboard = match metrics {
        Some(handle) => dashboard
            .with_completed_counter(Arc::new(move || counter_total(&handle.render(), "rrq_jobs_completed_total"))),
        None => dashboard,
    };
    serve(dashboard, stop).await
}

/// The sum of every series of counter `name` in Prometheus text.
fn counter_total(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.strip_prefix(name).is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' ')))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v.max(0.0) as u64)
        .sum()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_counter_is_summed_over_its_series_only() {
        let text = "# TYPE rrq_jobs_completed_total counter\n\
            rrq_jobs_completed_total{queue=\"a\",function=\"f\"} 3\n\
            rrq_jobs_completed_total{queue=\"b\",function=\"g\"} 4\n\
            rrq_jobs_completed_totally 100\n\
            rrq_jobs_retried_total{queue=\"a\"} 9\n";
        assert_eq!(super::counter_total(text, "rrq_jobs_completed_total"), 7);
        assert_eq!(super::counter_total("", "rrq_jobs_completed_total"), 0);
    }
}
