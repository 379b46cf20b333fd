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
    // The orchestrator's Redis DSN (password included) is none of the
    // runner's business, unless its own table passes it on purpose.
    if !r.env.contains_key(REDIS_DSN_ENV) {
        config.env_remove.push(REDIS_DSN_ENV.to_owned());
    }
    Ok(config)
}

/// The environment variable carrying the orchestrator's Redis URL.
const REDIS_DSN_ENV: &str = "RRQ_REDIS_DSN";

/// Starts the pool of runner `name` (its processes are ready when this returns).
pub(crate) async fn start(name: &str, settings: &Settings) -> anyhow::Result<Arc<dyn Runner>> {
    let config = pool_config(name, settings)?;
    let pool = ProcessPool::start(config).await?;
    Ok(Arc::new(pool))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(runner_table: &str) -> PoolConfig {
        let doc = format!("[rrq.runners.py]\ncmd = [\"runner\"]\ntcp_port = 9000\n{runner_table}");
        let (settings, _) = rrq_config::parse(&doc).expect("valid settings");
        pool_config("py", &settings).expect("pool config")
    }

    #[test]
    fn runners_get_15_s_to_get_ready_and_5_s_of_term_grace_unless_configured() {
        let defaults = config("");
        assert_eq!((defaults.connect_timeout, defaults.term_grace), (Duration::from_secs(15), Duration::from_secs(5)));
        let doc = "[rrq]\nrunner_connect_timeout_ms = 250\nrunner_shutdown_term_grace_seconds = 0\n\n\
                   [rrq.runners.py]\ncmd = [\"runner\"]\ntcp_port = 9000\n";
        let (settings, _) = rrq_config::parse(doc).expect("valid settings");
        let set = pool_config("py", &settings).expect("pool config");
        assert_eq!((set.connect_timeout, set.term_grace), (Duration::from_millis(250), Duration::ZERO));
    }

    #[test]
    fn runners_do_not_inherit_the_redis_dsn_unless_their_env_sets_it() {
        assert_eq!(config("").env_remove, vec!["RRQ_REDIS_DSN".to_owned()]);
        let passed = config("env = { RRQ_REDIS_DSN = \"redis://runner:6379/1\" }");
        assert!(passed.env_remove.is_empty());
        assert_eq!(passed.env.get("RRQ_REDIS_DSN").map(String::as_str), Some("redis://runner:6379/1"));
    }
}
