//! Managed mode against the Python fake runner: the spawn contract, start-up
//! failures, crashes, timeouts, cancellation, process groups, restarts.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rrq_pool::{PoolConfig, PoolError, ProcessPool, Runner};
use rrq_protocol::{ExecutionOutcome, OutcomeStatus, error_types};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::{Scratch, eventually, is_dead, request, result_field, within};

type Call = JoinHandle<Result<ExecutionOutcome, PoolError>>;

const LONG: Duration = Duration::from_secs(10);

async fn start(config: PoolConfig) -> Arc<ProcessPool> {
    Arc::new(within("pool start", ProcessPool::start(config)).await.expect("pool starts"))
}

fn call(pool: &Arc<ProcessPool>, job: &str, function: &str, params: Value, timeout: Duration) -> Call {
    let pool = Arc::clone(pool);
    let req = request(job, function, params);
    tokio::spawn(async move { pool.execute(req, timeout).await })
}

async fn run(pool: &Arc<ProcessPool>, job: &str, function: &str, params: Value) -> ExecutionOutcome {
    within("execute", pool.execute(request(job, function, params), LONG)).await.expect("outcome")
}

async fn outcome(call: Call) -> Result<ExecutionOutcome, PoolError> {
    within("the execute call", call).await.expect("execute task")
}

fn pid_of(outcome: &ExecutionOutcome) -> u32 {
    result_field(outcome, "pid").as_u64().expect("a pid") as u32
}

fn unavailable(result: Result<ProcessPool, PoolError>) -> String {
    match result {
        Err(PoolError::Unavailable(message)) => message,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn processes_get_the_documented_argv_env_cwd_stdin_and_group() {
    let scratch = Scratch::new();
    let mut config = scratch.config("contract", 2);
    config.cmd.extend(["--extra-arg".to_owned(), "x".to_owned()]);
    config.env.insert("FAKE_EXTRA".into(), "yes".into());
    config.cwd = Some(scratch.dir.clone());
    let base = config.base_port;
    let pool = start(config).await;
    let health = pool.health();
    assert_eq!((health.ready, health.configured, pool.capacity()), (2, 2, 2));
    let pids: Vec<u32> = pool.pids().into_iter().map(|p| p.expect("ready")).collect();
    assert_ne!(pids[0], pids[1]);

    let mut seen_ports = vec![];
    for job in ["a", "b"] {
        let info = run(&pool, job, "info", json!({})).await;
        let port = result_field(&info, "argv")[3].as_str().unwrap().rsplit_once(':').unwrap().1.parse::<u16>().unwrap();
        let socket = format!("127.0.0.1:{port}");
        assert_eq!(result_field(&info, "argv"), json!(["--extra-arg", "x", "--tcp-socket", socket]));
        // The owner marker names this process (the orchestrator) by pid and
        // start time, so a later orchestrator can sweep leftovers.
        let me = std::process::id();
        let owner = format!("{me}:{}", start_time(me));
        assert_eq!(
            result_field(&info, "env"),
            json!({"RRQ_RUNNER_TCP_SOCKET": socket, "RRQ_RUNNER_OWNER": owner, "FAKE_EXTRA": "yes"})
        );
        let cwd = std::path::PathBuf::from(result_field(&info, "cwd").as_str().unwrap());
        assert_eq!(cwd.canonicalize().unwrap(), scratch.dir.canonicalize().unwrap());
        assert_eq!(result_field(&info, "pgid"), result_field(&info, "pid"), "each runner leads its own group");
        assert_eq!(result_field(&info, "stdin"), json!("/dev/null"));
        seen_ports.push(port);
    }
    seen_ports.sort_unstable();
    assert_eq!(seen_ports, [base, base + 1], "one port per process, from tcp_port up");

    // Readiness was probed with a connection that sent nothing.
    for pid in pids {
        let conns: Vec<Value> =
            scratch.events().into_iter().filter(|e| e["pid"] == pid && e["event"] != "boot").take(2).collect();
        assert_eq!(conns[0]["event"], "start");
        assert_eq!((conns[1]["event"].as_str(), conns[1]["conn"].as_u64()), (Some("connect"), Some(1)));
    }
    let probes: Vec<Value> = scratch.events_of("close").into_iter().filter(|e| e["conn"] == 1).collect();
    assert_eq!(probes.len(), 2, "each probe connection was closed: {probes:?}");
    for probe in probes {
        assert_eq!((probe["frames"].as_u64(), probe["partial"].as_u64()), (Some(0), Some(0)), "a probe writes nothing");
    }
    pool.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_runner_exiting_during_start_up_reports_status_and_stderr() {
    let scratch = Scratch::new();
    let mut config = scratch.config("broken", 1);
    config.env.insert("FAKE_FAIL_AT_START".into(), "cannot import settings".into());
    let message = unavailable(ProcessPool::start(config).await);
    assert!(message.contains("exited before it was ready"), "{message}");
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("fatal: cannot import settings"), "{message}");
}

#[tokio::test]
async fn a_runner_that_never_listens_fails_start_up_after_the_connect_timeout() {
    let scratch = Scratch::new();
    let mut config = scratch.config("silent", 1);
    config.env.insert("FAKE_NO_LISTEN".into(), "1".into());
    config.connect_timeout = Duration::from_millis(700);
    let started = Instant::now();
    let message = unavailable(within("pool start", ProcessPool::start(config)).await);
    assert!(started.elapsed() >= Duration::from_millis(700), "gave up after {:?}", started.elapsed());
    assert!(message.contains("did not accept connections") && message.contains("within 0.7s"), "{message}");
    let pid = scratch.events_of("boot")[0]["pid"].as_u64().unwrap() as u32;
    eventually("the silent runner to be stopped", || is_dead(pid).then_some(())).await;
}

#[test]
fn the_pool_defaults_are_15_s_to_get_ready_and_5_s_of_term_grace() {
    let config = PoolConfig::managed("defaults", vec!["runner".into()], 9000);
    assert_eq!((config.connect_timeout, config.term_grace), (Duration::from_secs(15), Duration::from_secs(5)));
}

#[tokio::test]
async fn a_term_grace_of_zero_kills_at_once() {
    let scratch = Scratch::new();
    let mut config = scratch.config("impatient", 1);
    config.env.insert("FAKE_IGNORE_TERM".into(), "1".into());
    config.term_grace = Duration::ZERO;
    let pool = start(config).await;
    let runner = pool.pids()[0].unwrap();
    let started = Instant::now();
    within("shutdown", pool.shutdown(Duration::ZERO)).await;
    // The 5 s default (or any wait for the ignored SIGTERM) would be far longer.
    assert!(started.elapsed() < Duration::from_secs(2), "shutdown took {:?}", started.elapsed());
    assert!(is_dead(runner), "the runner ignoring SIGTERM was killed");
}

#[tokio::test]
async fn a_missing_program_is_reported() {
    let scratch = Scratch::new();
    let mut config = scratch.config("missing", 1);
    config.cmd = vec![scratch.path("no-such-runner").to_string_lossy().into_owned()];
    let message = unavailable(ProcessPool::start(config).await);
    assert!(message.contains("cannot start runner 'missing'") && message.contains("no-such-runner"), "{message}");
}

#[tokio::test]
async fn a_busy_port_moves_the_process_to_a_free_one() {
    let scratch = Scratch::new();
    let config = scratch.config("moved", 1);
    let base = config.base_port;
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", base)).unwrap();
    let pool = start(config).await;
    let port = pool.addresses()[0].expect("ready").port();
    assert_ne!(port, base);
    let info = run(&pool, "a", "info", json!({})).await;
    assert_eq!(result_field(&info, "env")["RRQ_RUNNER_TCP_SOCKET"], json!(format!("127.0.0.1:{port}")));
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn without_cwd_the_runner_starts_in_the_orchestrators_working_directory() {
    let scratch = Scratch::new();
    let config = scratch.config("here", 1);
    assert!(config.cwd.is_none());
    let pool = start(config).await;
    let info = run(&pool, "a", "info", json!({})).await;
    let cwd = std::path::PathBuf::from(result_field(&info, "cwd").as_str().unwrap());
    assert_eq!(cwd.canonicalize().unwrap(), std::env::current_dir().unwrap().canonicalize().unwrap());
    assert_ne!(cwd.canonicalize().unwrap(), scratch.dir.canonicalize().unwrap());
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_respawned_process_moves_off_a_port_taken_meanwhile() {
    let scratch = Scratch::new();
    let pool = start(scratch.config("respawn-port", 1)).await;
    let first = pool.pids()[0].unwrap();
    let port = pool.addresses()[0].expect("ready").port();
    let crashed = outcome(call(&pool, "boom", "crash", json!({}), LONG)).await;
    assert!(crashed.is_err(), "{crashed:?}");
    // The respawn waits at least 100 ms after the crash: take the port now.
    let _squatter = std::net::TcpListener::bind(("127.0.0.1", port)).expect("the crashed runner's port is free");
    let second = eventually("a new process", || pool.pids()[0].filter(|p| *p != first)).await;
    let moved = eventually("the new process to be ready", || pool.addresses()[0]).await.port();
    assert_ne!(moved, port, "the taken port was abandoned");
    let info = run(&pool, "a", "info", json!({})).await;
    assert_eq!(pid_of(&info), second);
    assert_eq!(result_field(&info, "env")["RRQ_RUNNER_TCP_SOCKET"], json!(format!("127.0.0.1:{moved}")));
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_foreign_listener_on_the_port_is_not_mistaken_for_the_runner() {
    let scratch = Scratch::new();
    let mut config = scratch.config("d15", 1);
    let base = config.base_port;
    let pidfile = scratch.path("foreign.pid");
    config.env.insert("FAKE_FOREIGN".into(), pidfile.to_string_lossy().into_owned());
    let pool = start(config).await;
    let foreign: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    let port = pool.addresses()[0].expect("ready").port();
    assert_ne!(port, base, "the port held by the foreign process was abandoned");
    let info = run(&pool, "a", "info", json!({})).await;
    assert_eq!(result_field(&info, "env")["RRQ_RUNNER_TCP_SOCKET"], json!(format!("127.0.0.1:{port}")));
    assert_eq!(scratch.events_of("boot").len(), 2, "the first runner was replaced");
    pool.shutdown(Duration::ZERO).await;
    crate::support::signal(foreign, libc::SIGKILL);
}

#[tokio::test]
async fn a_crash_fails_its_requests_as_transport_errors_and_the_process_is_respawned() {
    let scratch = Scratch::new();
    let pool = start(scratch.config("crashy", 1)).await;
    let first = pool.pids()[0].unwrap();
    match within("crash", pool.execute(request("boom", "crash", json!({})), LONG)).await {
        Err(PoolError::Transport { message, .. }) => {
            assert!(message.contains("closed") || message.contains("exited"), "{message}")
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
    let second = eventually("a new process", || pool.pids()[0].filter(|p| *p != first)).await;
    assert!(pool.health().restarts >= 1);
    let after = run(&pool, "after", "sleep", json!({"seconds": 0})).await;
    assert_eq!(pid_of(&after), second);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_crash_looping_process_backs_off_and_is_reported() {
    let scratch = Scratch::new();
    let marker = scratch.path("crash-loop");
    let mut config = scratch.config("looping", 1);
    config.env.insert("FAKE_CRASH_LOOP".into(), marker.to_string_lossy().into_owned());
    let pool = start(config).await;
    std::fs::write(&marker, "").unwrap();
    let _ = within("crash", pool.execute(request("boom", "crash", json!({})), LONG)).await;
    eventually("crash-looping to be reported", || (pool.health().crash_looping == 1).then_some(())).await;
    // Requests fail fast instead of waiting for a process that keeps dying.
    match within("execute", pool.execute(request("x", "sleep", json!({})), LONG)).await {
        Err(PoolError::Unavailable(message)) => assert!(message.contains("crash-looping"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Once the cause is gone the process comes back.
    std::fs::remove_file(&marker).unwrap();
    eventually("recovery", || (pool.health().ready == 1).then_some(())).await;
    assert_eq!(pool.health().crash_looping, 0);
    // Boots: the first, then after the crash at least 100 ms, 200 ms, 400 ms…
    // apart (plus start-up time): no tight loop.
    let boots: Vec<f64> = scratch.events_of("boot").iter().map(|e| e["t"].as_f64().unwrap()).collect();
    assert!(boots.len() >= 4, "{boots:?}");
    for i in 1..boots.len() - 1 {
        let floor = 0.09 * f64::from(1_u32 << i);
        assert!(boots[i + 1] - boots[i] >= floor, "respawn {i} came too soon: {boots:?}");
    }
    assert_eq!(run(&pool, "ok", "sleep", json!({})).await.status, OutcomeStatus::Success);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_hung_request_times_out_and_its_process_group_is_killed_and_replaced() {
    let scratch = Scratch::new();
    let mut config = scratch.config("hung", 1);
    config.env.insert("FAKE_IGNORE_TERM".into(), "1".into());
    config.term_grace = Duration::from_millis(200);
    let pool = start(config).await;
    let first = pool.pids()[0].unwrap();
    let started = Instant::now();
    let result = within("timeout", pool.execute(request("stuck", "hang", json!({})), Duration::from_millis(300))).await;
    assert!(matches!(result, Err(PoolError::Timeout(t)) if t == Duration::from_millis(300)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(2), "execute returns at its timeout");
    eventually("the hung process to die", || is_dead(first).then_some(())).await;
    let terms = scratch.events_of("term");
    assert!(terms.iter().any(|e| e["pid"] == first), "SIGTERM first, SIGKILL after the grace");
    assert!(scratch.events_of("cancel").is_empty(), "no cancel for an unshared process without hints");
    let second = eventually("a replacement", || pool.pids()[0].filter(|p| *p != first)).await;
    assert_eq!(pid_of(&run(&pool, "next", "sleep", json!({})).await), second);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_timeout_on_a_shared_process_cancels_on_a_fresh_connection_and_keeps_it() {
    let scratch = Scratch::new();
    let mut config = scratch.config("shared", 1);
    config.max_in_flight = NonZeroUsize::new(2).unwrap();
    let pool = start(config).await;
    let pid = pool.pids()[0].unwrap();
    let other = call(&pool, "other", "sleep", json!({"seconds": 1.0}), LONG);
    eventually("the first request", || (scratch.events_of("request").len() == 1).then_some(())).await;
    let stuck = call(&pool, "stuck", "hang", json!({}), Duration::from_millis(300));
    assert!(matches!(outcome(stuck).await, Err(PoolError::Timeout(_))));
    let cancel = eventually("the cancel frame", || scratch.events_of("cancel").into_iter().next()).await;
    assert_eq!(cancel["request_id"], "stuck-r");
    let request_conn = scratch.events_of("request")[0]["conn"].clone();
    assert_ne!(cancel["conn"], request_conn, "cancels travel on a fresh connection");
    assert_eq!(pid_of(&outcome(other).await.unwrap()), pid, "the shared process was kept");
    assert_eq!(pool.pids()[0], Some(pid));
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn cancel_stops_a_request_in_the_runner() {
    let scratch = Scratch::new();
    let pool = start(scratch.config("cancel", 1)).await;
    let pending = call(&pool, "job", "hang", json!({}), LONG);
    eventually("the request", || (scratch.events_of("request").len() == 1).then_some(())).await;
    pool.cancel("job", "job-r").await;
    let got = outcome(pending).await.expect("the runner's answer");
    assert_eq!((got.status, got.error_kind()), (OutcomeStatus::Error, Some(error_types::CANCELLED)));
    assert_eq!(scratch.events_of("cancel")[0]["request_id"], "job-r");
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_broken_connection_leaves_the_other_processes_alone() {
    let scratch = Scratch::new();
    let pool = start(scratch.config("apart", 2)).await;
    let steady = call(&pool, "steady", "sleep", json!({"seconds": 1.0}), LONG);
    eventually("the steady request", || (scratch.events_of("request").len() == 1).then_some(())).await;
    // The least loaded process takes the next request: the other one.
    let broken = outcome(call(&pool, "broken", "drop_connection", json!({}), LONG)).await;
    assert!(broken.is_err(), "{broken:?}");
    let dropped = scratch.events_of("dropping")[0]["pid"].as_u64().unwrap() as u32;
    let steady = outcome(steady).await.expect("the other process answers");
    assert_eq!(steady.status, OutcomeStatus::Success);
    assert_ne!(pid_of(&steady), dropped, "the two requests ran in different processes");
    assert!(!is_dead(pid_of(&steady)), "the other process is kept");
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn the_least_loaded_process_takes_the_next_request() {
    let scratch = Scratch::new();
    let mut config = scratch.config("balance", 2);
    config.max_in_flight = NonZeroUsize::new(2).unwrap();
    let pool = start(config).await;
    let busy = call(&pool, "busy", "sleep", json!({"seconds": 0.5}), LONG);
    eventually("the busy request", || (scratch.events_of("request").len() == 1).then_some(())).await;
    // Round robin would now send two requests to alternate processes; the
    // least-loaded rule sends both to the idle one.
    let a = pid_of(&run(&pool, "a", "sleep", json!({})).await);
    let b = pid_of(&run(&pool, "b", "sleep", json!({})).await);
    let busy_pid = pid_of(&outcome(busy).await.unwrap());
    assert_eq!(a, b);
    assert_ne!(a, busy_pid);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn shutdown_terminates_whole_process_groups_escalating_to_sigkill() {
    let scratch = Scratch::new();
    let mut config = scratch.config("groups", 1);
    config.env.insert("FAKE_IGNORE_TERM".into(), "1".into());
    config.term_grace = Duration::from_millis(300);
    let pool = start(config).await;
    let spawned = run(&pool, "spawn", "spawn_child", json!({})).await;
    let (runner, child) = (pid_of(&spawned), result_field(&spawned, "child").as_u64().unwrap() as u32);
    assert!(!is_dead(child));
    let started = Instant::now();
    within("shutdown", pool.shutdown(Duration::ZERO)).await;
    assert!(started.elapsed() >= Duration::from_millis(300), "SIGKILL waits for the grace");
    assert!(is_dead(runner), "the runner ignoring SIGTERM was killed");
    eventually("the runner's child to die", || is_dead(child).then_some(())).await;
    assert!(scratch.events_of("term").iter().any(|e| e["pid"] == runner));
    assert_eq!(pool.health().ready, 0);
    assert!(matches!(pool.execute(request("late", "sleep", json!({})), LONG).await, Err(PoolError::ShuttingDown)));
}

#[tokio::test]
async fn restart_all_replaces_processes_without_losing_requests() {
    let scratch = Scratch::new();
    let mut config = scratch.config("restart", 1);
    config.max_in_flight = NonZeroUsize::new(2).unwrap();
    let pool = start(config).await;
    let old = pool.pids()[0].unwrap();
    let quick = call(&pool, "quick", "sleep", json!({"seconds": 0.2}), LONG);
    let stuck = call(&pool, "stuck", "hang", json!({}), LONG);
    eventually("both requests", || (scratch.events_of("request").len() == 2).then_some(())).await;
    within("restart", pool.restart_all(Duration::from_millis(600))).await.expect("restarted");
    assert_eq!(pid_of(&outcome(quick).await.unwrap()), old, "finished within the grace");
    match outcome(stuck).await {
        Err(PoolError::Transport { message, .. }) => assert!(message.contains("restarted"), "{message}"),
        other => panic!("the request outliving the grace fails as a transport error, got {other:?}"),
    }
    let new = pool.pids()[0].unwrap();
    assert_ne!(new, old);
    assert!(is_dead(old));
    assert_eq!(pid_of(&run(&pool, "after", "sleep", json!({})).await), new);
    pool.shutdown(Duration::ZERO).await;
}

#[test]
fn captured_output_is_re_emitted_through_tracing() {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);
    // A current-thread runtime keeps every task on this thread, under the
    // subscriber set above.
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let scratch = Scratch::new();
        let mut config = scratch.config("chatty", 1);
        config.capture_output = true;
        let pool = start(config).await;
        run(&pool, "p", "print", json!({"stdout": "hello-out", "stderr": "hello-err"})).await;
        let text = || String::from_utf8_lossy(&sink.0.lock().unwrap()).into_owned();
        let line = |needle: &str| text().lines().find(|l| l.contains(needle)).map(str::to_owned);
        let out = eventually("the stdout line", || line("hello-out")).await;
        let err = eventually("the stderr line", || line("hello-err")).await;
        assert!(out.contains("INFO") && out.contains("runner=chatty") && out.contains("stream=\"stdout\""), "{out}");
        assert!(err.contains("WARN") && err.contains("runner=chatty") && err.contains("stream=\"stderr\""), "{err}");
        pool.shutdown(Duration::ZERO).await;
    });
}

#[tokio::test]
async fn terminate_kills_a_process_that_ignores_cancel_and_the_slot_serves_on() {
    let scratch = Scratch::new();
    let mut config = scratch.config("terminate", 1);
    config.env.insert("FAKE_IGNORE_TERM".into(), "1".into());
    config.term_grace = Duration::from_millis(300);
    let pool = start(config).await;
    let first = pool.pids()[0].unwrap();
    let pending = call(&pool, "job", "stubborn", json!({}), LONG);
    let stubborn = eventually("the handler to start", || scratch.events_of("stubborn").into_iter().next()).await;
    let grandchild = stubborn["child"].as_u64().unwrap() as u32;
    pool.cancel("job", "job-r").await;
    eventually("the cancel to be ignored", || scratch.events_of("cancel_ignored").into_iter().next()).await;

    within("terminate", pool.terminate("job", "job-r")).await;
    assert!(is_dead(first), "terminate returns only once the process has exited");
    eventually("the process group to be gone", || is_dead(grandchild).then_some(())).await;
    match outcome(pending).await {
        Err(PoolError::Transport { message, .. }) => assert!(message.contains("terminated"), "{message}"),
        other => panic!("the terminated request fails as a transport error, got {other:?}"),
    }
    within("terminate again", pool.terminate("job", "job-r")).await; // idempotent
    let second = eventually("a replacement", || pool.pids()[0].filter(|p| *p != first)).await;
    assert_eq!(pid_of(&run(&pool, "next", "sleep", json!({})).await), second);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_transport_error_is_reported_only_once_the_process_that_held_the_request_is_gone() {
    let scratch = Scratch::new();
    let mut config = scratch.config("dropped", 1);
    config.term_grace = Duration::from_millis(300);
    let pool = start(config).await;
    let first = pool.pids()[0].unwrap();
    match outcome(call(&pool, "job", "drop_connection", json!({}), LONG)).await {
        Err(PoolError::Transport { .. }) => {}
        other => panic!("a dropped connection is a transport error, got {other:?}"),
    }
    // The handler was still running in that process: a retry of the job
    // must not start beside it.
    assert!(is_dead(first), "the process that held the request is gone when the error is reported");
    let second = eventually("a replacement", || pool.pids()[0].filter(|p| *p != first)).await;
    assert_eq!(pid_of(&run(&pool, "next", "sleep", json!({})).await), second);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn terminate_leaves_a_process_alone_once_the_request_was_answered() {
    let scratch = Scratch::new();
    let pool = start(scratch.config("answered", 1)).await;
    let pid = pool.pids()[0].unwrap();
    run(&pool, "done", "sleep", json!({})).await;
    within("terminate", pool.terminate("done", "done-r")).await;
    assert_eq!(pool.pids()[0], Some(pid));
    assert_eq!(pid_of(&run(&pool, "next", "sleep", json!({})).await), pid);
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn env_remove_hides_inherited_variables_but_not_explicit_ones() {
    let scratch = Scratch::new();
    let mut config = scratch.config("secretless", 1);
    // PATH is inherited by every process; the runner is started by absolute path.
    assert!(std::env::var_os("PATH").is_some());
    config.env_remove = vec!["PATH".into(), "FAKE_EXTRA".into()];
    config.env.insert("FAKE_EXTRA".into(), "explicit".into());
    let pool = start(config).await;
    let path = run(&pool, "path", "env", json!({"name": "PATH"})).await;
    assert_eq!(result_field(&path, "present"), json!(false), "{path:?}");
    let extra = run(&pool, "extra", "env", json!({"name": "FAKE_EXTRA"})).await;
    assert_eq!(result_field(&extra, "value"), json!("explicit"), "an explicit env entry is passed anyway");
    pool.shutdown(Duration::ZERO).await;
}

/// `/proc/PID/stat`'s start time of `pid`.
fn start_time(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')').unwrap().1.split_whitespace().nth(19).unwrap().parse().unwrap()
}

/// A child process killed and reaped when dropped, even by a failing test.
struct Reaped(std::process::Child);

impl Reaped {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_managed_pool_start_kills_runners_left_behind_by_a_dead_orchestrator() {
    let sleeper = |owner: Option<String>| {
        let mut command = std::process::Command::new("sleep");
        command.arg("1000").stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        if let Some(owner) = owner {
            command.env("RRQ_RUNNER_OWNER", owner);
        }
        Reaped(command.spawn().unwrap())
    };
    // A dead orchestrator: a pid that exited (and, if it is reused by now, a
    // start time that cannot match).
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let me = std::process::id();
    let leftover = sleeper(Some(format!("{gone_pid}:1")));
    let ours = sleeper(Some(format!("{me}:{}", start_time(me))));
    let unmarked = sleeper(None);
    let recycled = sleeper(Some(format!("{me}:{}", start_time(me) + 1)));

    let scratch = Scratch::new();
    let pool = start(scratch.config("sweeper", 1)).await;
    eventually("the leftover to be killed", || is_dead(leftover.id()).then_some(())).await;
    eventually("the one whose owner pid was recycled to be killed", || is_dead(recycled.id()).then_some(())).await;
    assert!(!is_dead(ours.id()), "a live orchestrator's runner is kept");
    assert!(!is_dead(unmarked.id()), "a process without the marker is never touched");
    assert!(!is_dead(pool.pids()[0].unwrap()), "the pool's own runner is kept");
    pool.shutdown(Duration::ZERO).await;
}
