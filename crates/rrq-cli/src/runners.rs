//! Starting the runner pools the settings describe.

use std::sync::Arc;

use rrq_config::{RunnerMode, Settings};
use rrq_pool::{PoolConfig, ProcessPool, Runner};

/// The pool configuration of runner `name`.
pub(crate) fn pool_config(name: &str, settings: &Settings) -> anyhow::Result<PoolConfig> {
    let r = settings
        .runners
        .get(name)
        .ok_or_else(|| anyhow::anyhow!("runner '{name}' is not configured; add [rrq.runners.{name}]"))?;
    let mut config = match settings.runner_mode {
        RunnerMode::Managed => PoolConfig::managed(name, r.cmd.clone(), r.tcp_port),
        RunnerMode::External => PoolConfig::external(name, r.tcp_host.clone(), r.tcp_port),
    };
    config.pool_size = r.pool_size;
    config.max_in_flight = r.max_in_flight;
    config.env = r.env.clone();
    config.cwd = r.cwd.clone();
    config.allowed_hosts = r.allowed_hosts.clone();
    config.connect_timeout = settings.runner_connect_timeout;
    config.response_timeout = r.response_timeout;
    config.term_grace = settings.runner_term_grace;
    config.capture_output = settings.capture_runner_output;
    config.cancel_hints = settings.runner_cancel_hints;
    Ok(config)
}

/// Starts the pool of runner `name` (its processes are ready when this returns).
pub(crate) async fn start(name: &str, settings: &Settings) -> anyhow::Result<Arc<dyn Runner>> {
    let config = pool_config(name, settings)?;
    let pool = ProcessPool::start(config).await?;
    Ok(Arc::new(pool))
}
