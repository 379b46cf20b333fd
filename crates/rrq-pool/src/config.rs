//! The typed configuration of one runner pool.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

use rrq_protocol::DEFAULT_MAX_FRAME_BYTES;

/// The most requests one runner process may have in flight; the reference
/// runners answer `Runner busy` beyond this many per connection.
pub const MAX_IN_FLIGHT_LIMIT: usize = 64;

/// Who starts the runner processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMode {
    /// The pool spawns `pool_size` processes from `cmd` and supervises them.
    Managed,
    /// The runner is started elsewhere; the pool connects to `host:base_port`.
    External,
}

/// Configuration of one runner pool (one `[rrq.runners.NAME]` table after
/// validation by the caller's loader).
///
/// Build one with [`PoolConfig::managed`] or [`PoolConfig::external`], adjust
/// the public fields, and hand it to [`crate::ProcessPool::start`], which
/// calls [`PoolConfig::validate`] first.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolConfig {
    /// The runner's name, used in logs and errors.
    pub name: String,
    /// Managed or external.
    pub mode: PoolMode,
    /// Program and arguments (managed mode); `--tcp-socket 127.0.0.1:PORT` is
    /// appended. Ignored in external mode.
    pub cmd: Vec<String>,
    /// Processes in the pool; forced to 1 in external mode.
    pub pool_size: NonZeroUsize,
    /// Requests in flight per process, at most [`MAX_IN_FLIGHT_LIMIT`].
    pub max_in_flight: NonZeroUsize,
    /// Extra environment for the processes (added to the inherited one).
    pub env: BTreeMap<String, String>,
    /// Inherited environment variables the processes must not see (secrets
    /// of the orchestrator). Applied before `env`, so a variable set there is
    /// passed anyway.
    pub env_remove: Vec<String>,
    /// Working directory of the processes; the orchestrator's when absent.
    pub cwd: Option<PathBuf>,
    /// Host of an external runner; managed runners always use 127.0.0.1.
    pub host: String,
    /// First port: process `i` listens on `base_port + i` (managed), or the
    /// external runner's port.
    pub base_port: u16,
    /// Non-loopback hosts (names or IPs, case-insensitive) an external runner
    /// may live on.
    pub allowed_hosts: Vec<String>,
    /// How long a process may take to accept connections after it was
    /// spawned, and how long to keep retrying an external runner.
    pub connect_timeout: Duration,
    /// Longest wait for one response, counted from the moment the request is
    /// handed to the connection's writer; `None` waits as long as the
    /// request's own timeout allows. Expiry is a transport error
    /// (`runner response timeout`).
    pub response_timeout: Option<Duration>,
    /// Delay between SIGTERM and SIGKILL when a process group is terminated;
    /// zero kills at once.
    pub term_grace: Duration,
    /// Re-emit the processes' stdout/stderr through `tracing` instead of
    /// letting them inherit the orchestrator's.
    pub capture_output: bool,
    /// Send cancel frames for requests abandoned on timeout or shutdown even
    /// when the protocol does not require it.
    pub cancel_hints: bool,
    /// Largest frame payload sent or accepted.
    pub max_frame_bytes: usize,
}

impl PoolConfig {
    /// A managed pool of one process running `cmd`, listening from
    /// `base_port`, with the reference defaults for everything else.
    pub fn managed(name: impl Into<String>, cmd: Vec<String>, base_port: u16) -> Self {
        Self {
            name: name.into(),
            mode: PoolMode::Managed,
            cmd,
            pool_size: NonZeroUsize::MIN,
            max_in_flight: NonZeroUsize::MIN,
            env: BTreeMap::new(),
            env_remove: Vec::new(),
            cwd: None,
            host: Ipv4Addr::LOCALHOST.to_string(),
            base_port,
            allowed_hosts: Vec::new(),
            connect_timeout: Duration::from_secs(15),
            response_timeout: None,
            term_grace: Duration::from_secs(5),
            capture_output: false,
            cancel_hints: false,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
        }
    }

    /// A pool connecting to an external runner at `host:port`.
    pub fn external(name: impl Into<String>, host: impl Into<String>, port: u16) -> Self {
        Self { mode: PoolMode::External, cmd: Vec::new(), host: host.into(), ..Self::managed(name, Vec::new(), port) }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |field: &'static str, reason: String| ConfigError { runner: self.name.clone(), field, reason };
        if self.name.trim().is_empty() {
            return Err(fail("name", "must not be empty".into()));
        }
        if self.max_in_flight.get() > MAX_IN_FLIGHT_LIMIT {
            return Err(fail("max_in_flight", format!("must be <= {MAX_IN_FLIGHT_LIMIT}, got {}", self.max_in_flight)));
        }
        if self.base_port == 0 {
            return Err(fail("tcp_port", "must be between 1 and 65535".into()));
        }
        if self.connect_timeout.is_zero() {
            return Err(fail("connect_timeout", "must be positive".into()));
        }
        if self.response_timeout.is_some_and(|t| t.is_zero()) {
            return Err(fail("response_timeout", "must be positive when set".into()));
        }
        if self.max_frame_bytes == 0 || u32::try_from(self.max_frame_bytes).is_err() {
            return Err(fail("max_frame_bytes", format!("must be between 1 and {}", u32::MAX)));
        }
        match self.mode {
            PoolMode::Managed => {
                let Some(program) = self.cmd.first() else {
                    return Err(fail("cmd", "must not be empty in managed mode".into()));
                };
                if program.trim().is_empty() {
                    return Err(fail("cmd", "the program name must not be empty".into()));
                }
                let last = u32::from(self.base_port) + (self.pool_size.get() as u32).saturating_sub(1);
                if self.pool_size.get() > usize::from(u16::MAX) || last > u32::from(u16::MAX) {
                    return Err(fail(
                        "tcp_port",
                        format!("port {} + pool_size {} would exceed 65535", self.base_port, self.pool_size),
                    ));
                }
            }
            PoolMode::External => {
                let host = self.host.trim();
                if host.is_empty() {
                    return Err(fail("tcp_host", "must not be empty in external mode".into()));
                }
                if !is_loopback_host(host) && !self.allowed_hosts.iter().any(|h| h.trim().eq_ignore_ascii_case(host)) {
                    return Err(fail(
                        "tcp_host",
                        format!("'{host}' is not a loopback address and is not listed in allowed_hosts"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Processes the pool actually runs (1 in external mode).
    pub fn effective_pool_size(&self) -> usize {
        match self.mode {
            PoolMode::Managed => self.pool_size.get(),
            PoolMode::External => 1,
        }
    }
}

/// `localhost` or a loopback IP (brackets around IPv6 allowed).
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim();
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    bare.eq_ignore_ascii_case("localhost") || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// A [`PoolConfig`] field with an unusable value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("runner '{runner}' has an invalid {field}: {reason}")]
pub struct ConfigError {
    /// The runner's name.
    pub runner: String,
    /// The offending field, named as in `rrq.toml` where one exists.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn managed() -> PoolConfig {
        PoolConfig::managed("p", vec!["runner".into()], 9000)
    }

    fn field(c: &PoolConfig) -> Option<&'static str> {
        c.validate().err().map(|e| e.field)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(field(&managed()), None);
        assert_eq!(field(&PoolConfig::external("p", "127.0.0.1", 9000)), None);
        assert_eq!(field(&PoolConfig::external("p", "localhost", 9000)), None);
        assert_eq!(field(&PoolConfig::external("p", "[::1]", 9000)), None);
    }

    #[test]
    fn errors_name_the_field() {
        let mut c = managed();
        c.max_in_flight = NonZeroUsize::new(65).unwrap();
        assert_eq!(field(&c), Some("max_in_flight"));
        let c = PoolConfig { cmd: vec![], ..managed() };
        assert_eq!(field(&c), Some("cmd"));
        let c = PoolConfig { base_port: 65535, pool_size: NonZeroUsize::new(2).unwrap(), ..managed() };
        let err = c.validate().unwrap_err();
        assert_eq!(err.field, "tcp_port");
        assert_eq!(err.to_string(), "runner 'p' has an invalid tcp_port: port 65535 + pool_size 2 would exceed 65535");
        assert_eq!(field(&PoolConfig { base_port: 0, ..managed() }), Some("tcp_port"));
        assert_eq!(field(&PoolConfig { connect_timeout: Duration::ZERO, ..managed() }), Some("connect_timeout"));
        assert_eq!(
            field(&PoolConfig { response_timeout: Some(Duration::ZERO), ..managed() }),
            Some("response_timeout")
        );
        assert_eq!(field(&PoolConfig { max_frame_bytes: 0, ..managed() }), Some("max_frame_bytes"));
        assert_eq!(field(&PoolConfig { name: " ".into(), ..managed() }), Some("name"));
    }

    #[test]
    fn external_hosts_must_be_loopback_or_allowed() {
        let c = PoolConfig::external("p", "10.0.0.5", 9000);
        assert_eq!(field(&c), Some("tcp_host"));
        let c = PoolConfig { allowed_hosts: vec!["10.0.0.5".into()], ..c };
        assert_eq!(field(&c), None);
        let c = PoolConfig {
            allowed_hosts: vec!["RUNNER.internal".into()],
            ..PoolConfig::external("p", "runner.INTERNAL", 1)
        };
        assert_eq!(field(&c), None, "allowed_hosts match case-insensitively");
        assert_eq!(field(&PoolConfig::external("p", "", 1)), Some("tcp_host"));
        // Managed mode ignores the host, as the reference does.
        assert_eq!(field(&PoolConfig { host: "10.0.0.5".into(), ..managed() }), None);
    }

    #[test]
    fn external_pools_have_one_process() {
        let c = PoolConfig { pool_size: NonZeroUsize::new(4).unwrap(), ..PoolConfig::external("p", "::1", 1) };
        assert_eq!(c.effective_pool_size(), 1);
        assert_eq!(PoolConfig { pool_size: NonZeroUsize::new(4).unwrap(), ..managed() }.effective_pool_size(), 4);
    }
}
