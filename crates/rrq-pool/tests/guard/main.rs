//! Runner guards: with the hook installed (`rrq_pool::guard::run_if_requested`
//! first thing in `main`, as the `rrq` binary does), no runner descendant
//! outlives a SIGKILLed orchestrator, even behind a launcher that forks.
//!
//! This target has its own `main` (no libtest) because the hook must run
//! before anything else. It is also the orchestrator: re-executed with
//! [`HOST_ENV`] set, it starts a pool and waits to be killed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rrq_pool::{PoolConfig, PoolError, ProcessPool, Runner};
use rrq_protocol::{ExecutionContext, ExecutionRequest, PROTOCOL_VERSION};
use serde_json::{Value, json};

/// Set (to a scratch directory) in the re-executed orchestrator.
const HOST_ENV: &str = "RRQ_POOL_GUARD_TEST_HOST_DIR";
const READY_PREFIX: &str = "GUARD-HOST";
const PATIENCE: Duration = Duration::from_secs(10);

/// One test: a name and a function run on the shared runtime.
type Test = fn(&tokio::runtime::Runtime);

fn main() {
    rrq_pool::guard::run_if_requested();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    if let Ok(dir) = std::env::var(HOST_ENV) {
        runtime.block_on(host(PathBuf::from(dir)));
        return;
    }
    let tests: [(&str, Test); 3] = [
        ("a_forking_launchers_runner_dies_with_a_sigkilled_orchestrator", forking_launcher_dies_with_orchestrator),
        ("a_guarded_runner_reports_its_exit_status_and_stderr", guarded_exit_status),
        ("a_guarded_runner_is_terminated_with_its_group", guarded_terminate),
    ];
    if std::env::args().any(|a| a == "--list") {
        // None of these is ignored: nextest asks with `--ignored` too.
        if std::env::args().any(|a| a == "--ignored") {
            return;
        }
        for (name, _) in tests {
            println!("{name}: test");
        }
        return;
    }
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let mut ran = 0;
    for (name, test) in tests {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        print!("test {name} ... ");
        std::io::stdout().flush().unwrap();
        test(&runtime);
        println!("ok");
        ran += 1;
    }
    println!("\ntest result: ok. {ran} passed");
}

/// A managed configuration running the fake runner from `dir` behind `sh`,
/// which forks python (it does not exec it) and waits for it.
fn launcher_config(dir: &Path, name: &str) -> PoolConfig {
    let script = dir.join("fake_runner.py").to_string_lossy().into_owned();
    let python = python();
    let cmd = vec!["sh".into(), "-c".into(), format!("'{python}' '{script}' \"$@\"; exit $?"), "sh".into()];
    let mut config = PoolConfig::managed(name, cmd, free_port());
    config.connect_timeout = Duration::from_secs(5);
    config.term_grace = Duration::from_millis(300);
    config
}

/// The orchestrator: starts a pool behind the launcher, reports the pids
/// (the pool's direct child, and the runner itself) and its port, waits.
async fn host(dir: PathBuf) {
    let pool = ProcessPool::start(launcher_config(&dir, "orphaned")).await.expect("host pool starts");
    let leader = pool.pids()[0].expect("ready");
    let port = pool.addresses()[0].expect("ready").port();
    let info = pool.execute(request("info", "info", json!({})), PATIENCE).await.expect("info");
    let runner = info.result.as_ref().and_then(|r| r["pid"].as_u64()).expect("the runner's pid");
    println!("{READY_PREFIX} {leader} {runner} {port}");
    std::io::stdout().flush().unwrap();
    std::future::pending::<()>().await;
}

fn forking_launcher_dies_with_orchestrator(_runtime: &tokio::runtime::Runtime) {
    let scratch = Scratch::new();
    let mut host = Command::new(std::env::current_exe().unwrap())
        .env(HOST_ENV, &scratch.0)
        .stdout(Stdio::piped())
        .spawn()
        .expect("re-execute the test binary");
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let report = loop {
        let line = lines.next().expect("the host reported its pool before exiting").expect("read");
        if let Some(rest) = line.strip_prefix(READY_PREFIX) {
            break rest.split_whitespace().map(|n| n.parse::<u32>().unwrap()).collect::<Vec<_>>();
        }
    };
    let (leader, runner, port) = (report[0], report[1], report[2]);
    assert_ne!(leader, runner, "the runner is not the pool's direct child");
    assert!(!is_dead(runner));
    kill(host.id(), libc::SIGKILL);
    host.wait().unwrap();
    eventually("the runner behind the launcher to die", || is_dead(runner));
    eventually("the pool's direct child to die", || is_dead(leader));
    let port = u16::try_from(port).unwrap();
    eventually("the runner's port to be free", || std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

fn guarded_exit_status(runtime: &tokio::runtime::Runtime) {
    let scratch = Scratch::new();
    let mut config = launcher_config(&scratch.0, "broken");
    config.env.insert("FAKE_FAIL_AT_START".into(), "cannot import settings".into());
    match runtime.block_on(ProcessPool::start(config)) {
        Err(PoolError::Unavailable(message)) => {
            assert!(message.contains("exit status: 3"), "{message}");
            assert!(message.contains("fatal: cannot import settings"), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

fn guarded_terminate(runtime: &tokio::runtime::Runtime) {
    let scratch = Scratch::new();
    let mut config = launcher_config(&scratch.0, "stubborn");
    config.env.insert("FAKE_IGNORE_TERM".into(), "1".into());
    let log = scratch.0.join("events.jsonl");
    config.env.insert("FAKE_LOG".into(), log.to_string_lossy().into_owned());
    runtime.block_on(async {
        let pool = std::sync::Arc::new(ProcessPool::start(config).await.expect("pool starts"));
        let leader = pool.pids()[0].unwrap();
        let pending = {
            let pool = std::sync::Arc::clone(&pool);
            tokio::spawn(async move { pool.execute(request("job", "stubborn", json!({})), PATIENCE).await })
        };
        let started = loop {
            if let Some(e) = events(&log).into_iter().find(|e| e["event"] == "stubborn") {
                break e;
            }
            tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline (PATIENCE below)
        };
        let runner = started["pid"].as_u64().unwrap() as u32;
        let grandchild = started["child"].as_u64().unwrap() as u32;
        let status = std::fs::read_to_string(format!("/proc/{runner}/status")).unwrap();
        let blocked = status.lines().find_map(|l| l.strip_prefix("SigBlk:")).unwrap().trim().to_owned();
        assert_eq!(u64::from_str_radix(&blocked, 16), Ok(0), "the runner starts with no signal blocked");
        tokio::time::timeout(PATIENCE, pool.terminate("job", "job-r")).await.expect("terminate returns");
        assert!(is_dead(leader), "terminate returns once the pool's child has exited");
        assert!(matches!(pending.await.unwrap(), Err(PoolError::Transport { .. })));
        let deadline = Instant::now() + PATIENCE;
        while !(is_dead(runner) && is_dead(grandchild)) {
            assert!(Instant::now() < deadline, "the runner's group outlived terminate");
            tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline
        }
        pool.shutdown(Duration::ZERO).await;
    });
}

fn request(job: &str, function: &str, params: Value) -> ExecutionRequest {
    ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: format!("{job}-r"),
        job_id: job.to_owned(),
        function_name: function.to_owned(),
        params: params.as_object().cloned().unwrap_or_default(),
        context: ExecutionContext {
            job_id: job.to_owned(),
            attempt: 1,
            enqueue_time: "2026-11-28T00:04:17.240701402Z".to_owned(),
            queue_name: "rrq:queue:default".to_owned(),
            deadline: None,
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_worker_test".to_owned()),
        },
    }
}

fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// A private directory holding the fake runner; removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("rrq-guard-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("fake_runner.py"), include_str!("../pool/fake_runner.py")).unwrap();
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn python() -> String {
    let out = Command::new("python3").args(["-c", "import sys; print(sys.executable)"]).output().expect("python3");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A free port below the ephemeral range, per process.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 30000 + (std::process::id() % 200) as u16 * 10;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 10;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

fn kill(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes plain integers.
    #[allow(unsafe_code, reason = "signalling a test process")]
    let rc = unsafe { libc::kill(libc::pid_t::try_from(pid).unwrap(), sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Polls `check` until true, failing after `PATIENCE`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(20)); // sleep-ok: polling with a deadline
    }
}
