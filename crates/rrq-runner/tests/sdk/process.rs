//! The example runner binary as an orchestrator starts it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rrq_protocol::OutcomeStatus;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{Client, PATIENCE, request};

const RUNNER: &str = env!("CARGO_BIN_EXE_rrq-example-runner");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls until something accepts on `addr`.
async fn wait_listening(addr: SocketAddr) {
    let deadline = Instant::now() + PATIENCE;
    let mut delay = Duration::from_millis(5);
    loop {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        assert!(Instant::now() < deadline, "runner never listened on {addr}");
        tokio::time::sleep(delay).await; // sleep-ok: polling with a deadline
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

async fn exit_code(child: &mut Child) -> Option<i32> {
    tokio::time::timeout(PATIENCE, child.wait()).await.expect("runner exits in time").expect("wait").code()
}

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions.
    #[allow(unsafe_code, reason = "sending a signal to a child process in a test")]
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(rc, 0, "kill({pid}, {sig})");
}

/// Whether `pid` is gone or a zombie nobody reaped yet.
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

#[tokio::test]
async fn serves_on_its_tcp_socket_and_exits_cleanly_on_sigterm() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child = Command::new(RUNNER)
        .args(["--tcp-socket", &addr.to_string()])
        .env_remove("RRQ_RUNNER_TCP_SOCKET")
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    wait_listening(addr).await;
    let mut client = Client::connect(addr).await;
    let outcome = client.call(request("j1", "echo", json!({"a": 1}))).await;
    assert_eq!(outcome.result.unwrap()["echo"], json!({"a": 1}));
    signal(child.id().unwrap(), libc::SIGTERM);
    assert_eq!(exit_code(&mut child).await, Some(0));
}

#[tokio::test]
async fn falls_back_to_the_environment_variable() {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut child =
        Command::new(RUNNER).env("RRQ_RUNNER_TCP_SOCKET", addr.to_string()).kill_on_drop(true).spawn().expect("spawn");
    wait_listening(addr).await;
    let mut client = Client::connect(addr).await;
    assert_eq!(client.call(request("j1", "noop", json!({}))).await.status, OutcomeStatus::Success);
    signal(child.id().unwrap(), libc::SIGINT);
    assert_eq!(exit_code(&mut child).await, Some(0));
}

#[tokio::test]
async fn refuses_non_loopback_and_missing_addresses() {
    for args in [vec!["--tcp-socket", "0.0.0.0:9"], vec![]] {
        let out = Command::new(RUNNER)
            .args(&args)
            .env_remove("RRQ_RUNNER_TCP_SOCKET")
            .stderr(Stdio::piped())
            .output()
            .await
            .expect("run");
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("loopback") || stderr.contains("no listen address"), "{stderr}");
    }
}

#[tokio::test]
async fn exits_when_its_parent_dies() {
    let addr = format!("127.0.0.1:{}", free_port());
    // sh starts the runner in the background, reports its pid, then becomes
    // a long sleep: killing it orphans the runner.
    let mut parent = Command::new("sh")
        .args(["-c", r#""$0" --tcp-socket "$1" & echo "$!"; exec sleep 1000"#, RUNNER, &addr])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn sh");
    let mut lines = BufReader::new(parent.stdout.take().unwrap()).lines();
    let runner_pid: u32 = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .expect("pid in time")
        .expect("read")
        .expect("a line")
        .trim()
        .parse()
        .expect("a pid");
    wait_listening(addr.parse().unwrap()).await;
    signal(parent.id().unwrap(), libc::SIGKILL);
    let _ = parent.wait().await;
    let deadline = Instant::now() + PATIENCE;
    while !is_dead(runner_pid) {
        assert!(Instant::now() < deadline, "runner {runner_pid} outlived its parent");
        tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline
    }
}
