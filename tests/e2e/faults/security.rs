//! Security properties as tests: runners listen on loopback only, are
//! started without a shell, and Redis passwords never reach logs or errors;
//! an ACL user with a password works.

use std::time::Duration;

use rrq_producer::{JobStatus, Producer};
use rrq_test_support::TestRedis;
use serde_json::json;

use super::harness::{Config, Orchestrator, Reply, cmdline, redis, runner_port};
use super::runners::FAKE_RUNNER;
use crate::report;
use crate::support::{TempDir, free_ports, run_rrq};

/// Local addresses of the sockets listening on `port`, from
/// `/proc/net/tcp` and `/proc/net/tcp6` (hex, as the kernel prints them).
fn listeners(port: u16) -> Vec<String> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else { continue };
            let Some((addr, hex_port)) = local.rsplit_once(':') else { continue };
            if *state == "0A" && u16::from_str_radix(hex_port, 16) == Ok(port) {
                out.push(addr.to_owned());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn runner_sockets_listen_on_loopback_only() {
    const T: &str = "security_loopback";
    let redis = TestRedis::private();
    let dir = TempDir::new("sec-loopback");
    let config = Config::rust(redis.url(), 2, 1);
    let path = config.write(&dir, "rrq.toml");
    let worker = Orchestrator::start(&dir, &path, "worker");
    let pids = worker.wait_runners(2, Duration::from_secs(20)).await;
    worker.wait_log("worker started", Duration::from_secs(20)).await;
    for pid in pids {
        let port = runner_port(pid).expect("a runner is told its --tcp-socket");
        let args = cmdline(pid);
        let found = listeners(port);
        report!(T, "observed: runner pid {pid} args {args:?}; listeners on port {port}: {found:?}");
        assert!(args.contains(&format!("127.0.0.1:{port}")), "{args:?}");
        // 0100007F is 127.0.0.1 in /proc/net/tcp's byte order.
        assert_eq!(found, ["0100007F"], "the runner listens on 127.0.0.1 only, never 0.0.0.0 or ::");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn runners_start_without_a_shell_so_metacharacters_stay_text() {
    const T: &str = "security_no_shell";
    let redis = TestRedis::private();
    let dir = TempDir::new("sec-shell");
    let script = dir.write("fake_runner.py", FAKE_RUNNER);
    let markers: Vec<_> = (0..4).map(|i| dir.path().join(format!("pwned-{i}"))).collect();
    let m = |i: usize| markers[i].to_str().unwrap().to_owned();
    let hostile_args =
        vec![format!("; touch {}", m(0)), format!("$(touch {})", m(1)), format!("`touch {}`", m(2)), "| sh".into()];
    let mut config = Config::rust(redis.url(), 1, 1);
    config.cmd = vec!["python3".into(), script.to_str().unwrap().into()];
    config.cmd.extend(hostile_args.iter().cloned());
    let path = config.write(&dir, "rrq.toml");
    let mut worker = Orchestrator::start(&dir, &path, "worker");
    worker.wait_runners(1, Duration::from_secs(20)).await;

    let producer = Producer::new(redis.url()).await.unwrap();
    let param = format!("\"; touch {} #", m(3));
    let id = producer.enqueue("argv", json!({"cmd": param}), Default::default()).await.unwrap();
    let done = producer.wait_for_completion(&id, Duration::from_secs(20)).await.unwrap().expect("the job ends");
    report!(T, "injected: runner args {hostile_args:?} and job param {param:?}; observed result {:?}", done.result);
    assert_eq!(done.status, Some(JobStatus::Completed));
    let result = done.result.expect("a result");
    let argv: Vec<String> = serde_json::from_value(result["argv"].clone()).unwrap();
    assert_eq!(argv[..hostile_args.len()], hostile_args[..], "every argument arrives verbatim");
    assert_eq!(result["params"]["cmd"], json!(param), "the param arrives verbatim");
    for marker in &markers {
        assert!(!marker.exists(), "{} was created: something ran a shell", marker.display());
    }
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_password_never_appears_in_errors_or_logs() {
    const T: &str = "security_dsn";
    let dir = TempDir::new("sec-dsn");
    let closed = free_ports(1);
    let dsn = format!("redis://user:hunter2-secret@127.0.0.1:{closed}/0");
    let mut config = Config::rust(&dsn, 1, 1);
    config.cmd = vec!["/bin/false".into()];
    let path = config.write(&dir, "rrq.toml");
    for args in [vec!["worker", "run"], vec!["queue", "list"], vec!["health"]] {
        let mut argv = args.clone();
        argv.extend(["--config", path.to_str().unwrap()]);
        let out = run_rrq(&argv, &[], Duration::from_secs(30));
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        report!(
            T,
            "observed: `rrq {}` exit {:?}: {}",
            args.join(" "),
            out.status.code(),
            text.trim().replace('\n', " | ")
        );
        assert_eq!(out.status.code(), Some(4), "Redis unreachable: {text}");
        assert!(!text.contains("hunter2"), "the password leaked: {text}");
        assert!(text.contains(&format!("redis://user:***@127.0.0.1:{closed}/0")), "the masked DSN is shown: {text}");
    }
    // The same through RRQ_REDIS_DSN.
    let out = run_rrq(
        &["queue", "list", "--config", path.to_str().unwrap()],
        &[("RRQ_REDIS_DSN", &dsn)],
        Duration::from_secs(30),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("hunter2") && text.contains("***"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acl_user_with_a_password_runs_jobs_and_a_wrong_one_is_refused_unleaked() {
    const T: &str = "security_acl";
    let server = TestRedis::private();
    let port = server.port();
    let setuser = ["ACL", "SETUSER", "rrq-app", "on", ">app-pw-7f3a", "~*", "&*", "+@all"];
    assert_eq!(redis(port, &setuser), Reply::Status("OK".into()));
    // Only authenticated clients from now on.
    assert_eq!(redis(port, &["ACL", "SETUSER", "default", "off"]), Reply::Status("OK".into()));
    assert!(matches!(redis(port, &["PING"]), Reply::Error(e) if e.starts_with("NOAUTH")));
    let dsn = format!("redis://rrq-app:app-pw-7f3a@127.0.0.1:{port}");

    let dir = TempDir::new("sec-acl");
    let path = Config::rust(&dsn, 1, 2).write(&dir, "rrq.toml");
    let mut worker = Orchestrator::start(&dir, &path, "worker");
    let producer = Producer::new(&dsn).await.expect("the ACL user connects");
    let id = producer.enqueue("echo", json!({"via": "acl"}), Default::default()).await.unwrap();
    let done = producer.wait_for_completion(&id, Duration::from_secs(30)).await.unwrap().expect("the job ends");
    report!(T, "injected: ACL user rrq-app (default user off); observed job {:?}", done.status);
    assert_eq!(done.status, Some(JobStatus::Completed));
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
    assert!(!worker.log().contains("app-pw-7f3a"), "{}", worker.log());

    let wrong = format!("redis://rrq-app:wrong-pw-9c1d@127.0.0.1:{port}");
    let path = Config::rust(&wrong, 1, 1).write(&dir, "wrong.toml");
    let out = run_rrq(&["worker", "run", "--config", path.to_str().unwrap()], &[], Duration::from_secs(30));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    report!(
        T,
        "injected: a wrong password; observed exit {:?}: {}",
        out.status.code(),
        text.trim().replace('\n', " | ")
    );
    assert_eq!(out.status.code(), Some(4), "{text}");
    assert!(!text.contains("wrong-pw-9c1d"), "the password leaked: {text}");
    assert!(text.contains("rrq-app:***@"), "{text}");
}
