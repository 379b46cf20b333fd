//! Shared helpers: temp dirs, free ports, config files, running the worker.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rrq_test_support::TestRedis;

/// The `rrq` command under test.
pub fn rrq_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rrq-e2e-cli")
}

/// The example Rust runner.
pub fn example_runner_bin() -> &'static str {
    env!("CARGO_BIN_EXE_rrq-e2e-runner")
}

/// A fresh directory under the system temp dir (left behind on failure for
/// inspection; removed on success by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("rrq-e2e-{name}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, contents).expect("write temp file");
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A base port with `n` consecutive free ports after it.
pub fn free_ports(n: u16) -> u16 {
    for _ in 0..200 {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let base = probe.local_addr().expect("local addr").port();
        drop(probe);
        if base.checked_add(n).is_none() {
            continue;
        }
        let all_free = (base..base + n).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no {n} consecutive free ports found");
}

/// Runs `rrq` with `args` until it exits, at most `limit`; panics (with its
/// output) if it does not finish in time.
pub fn run_rrq(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let child = Command::new(rrq_bin())
        .args(args)
        .envs(env.iter().copied())
        .env("RUST_LOG_FORMAT", "text")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rrq");
    wait_with_deadline(child, limit)
}

/// Waits for a child with a deadline, killing it (and failing) past it.
pub fn wait_with_deadline(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(o) = stdout.as_mut() {
            let _ = o.read_to_end(&mut s);
        }
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_end(&mut s);
        }
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll child") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let out = out_reader.join().unwrap_or_default();
            let err = err_reader.join().unwrap_or_default();
            panic!(
                "process did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(&err)
            );
        }
        std::thread::sleep(Duration::from_millis(20)); // sleep-ok: polling a child process with a deadline
    };
    Output { status, stdout: out_reader.join().unwrap_or_default(), stderr: err_reader.join().unwrap_or_default() }
}

/// Asserts a process succeeded, showing its output otherwise.
pub fn assert_success(out: &Output) {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An `rrq.toml` with one runner running the example Rust runner.
pub fn rust_runner_config(redis: &TestRedis, extra_rrq: &str, pool_size: u16, max_in_flight: u16) -> String {
    let port = free_ports(pool_size);
    format!(
        r#"[rrq]
redis_dsn = "{dsn}"
default_runner_name = "rust"
default_job_timeout_seconds = 5
base_retry_delay_seconds = 0.01
max_retry_delay_seconds = 0.05
worker_shutdown_grace_period_seconds = 1
runner_shutdown_term_grace_seconds = 0.5
{extra_rrq}

[rrq.runners.rust]
cmd = ["{bin}"]
tcp_port = {port}
pool_size = {pool_size}
max_in_flight = {max_in_flight}
"#,
        dsn = redis.url(),
        bin = example_runner_bin(),
    )
}
