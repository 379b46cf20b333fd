//! No runner outlives its orchestrator, even one killed with SIGKILL.
//!
//! The orchestrator here is this very test executable, re-executed with
//! [`HOST_ENV`] set so that [`host_process_entry_point`] starts a pool and
//! waits to be killed.

use std::io::Write;
use std::process::Stdio;

use rrq_pool::{ProcessPool, Runner};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::support::{PATIENCE, Scratch, can_bind, eventually, is_dead, signal, within};

/// Set (to a scratch directory) in the re-executed test binary.
const HOST_ENV: &str = "RRQ_POOL_TEST_HOST_DIR";

/// Marks the host's report on stdout: `POOL-HOST pid... port...`.
const READY_PREFIX: &str = "POOL-HOST";

/// Runs the pool host when re-executed by `runners_die_with_a_sigkilled_host`;
/// in a normal test run it has nothing to do.
#[tokio::test]
async fn host_process_entry_point() {
    let Ok(dir) = std::env::var(HOST_ENV) else { return };
    let script = std::path::Path::new(&dir).join("fake_runner.py");
    let cmd = vec![crate::support::python().to_owned(), script.to_string_lossy().into_owned()];
    let mut config = rrq_pool::PoolConfig::managed("orphaned", cmd, crate::support::free_ports(2));
    config.pool_size = 2.try_into().unwrap();
    let pool = ProcessPool::start(config).await.expect("host pool starts");
    assert_eq!(pool.health().ready, 2);
    let pids: Vec<String> = pool.pids().iter().map(|p| p.unwrap().to_string()).collect();
    let ports: Vec<String> = pool.addresses().iter().map(|a| a.unwrap().port().to_string()).collect();
    let mut out = std::io::stdout().lock();
    writeln!(out, "{READY_PREFIX} {} {}", pids.join(" "), ports.join(" ")).unwrap();
    out.flush().unwrap();
    drop(out);
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn runners_die_with_a_sigkilled_host() {
    let scratch = Scratch::new();
    let exe = std::env::current_exe().expect("test executable");
    let mut host = tokio::process::Command::new(exe)
        .args(["--exact", "host::host_process_entry_point", "--nocapture", "--test-threads=1"])
        .env(HOST_ENV, &scratch.dir)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("re-execute the test binary");
    let mut lines = BufReader::new(host.stdout.take().unwrap()).lines();
    let ready = within("the host's pool", async {
        loop {
            let line = lines.next_line().await.expect("read").expect("the host printed its pool before exiting");
            // The test harness may have printed `test NAME ... ` before it.
            if let Some(at) = line.find(READY_PREFIX) {
                return line[at + READY_PREFIX.len()..]
                    .split_whitespace()
                    .map(|n| n.parse::<u32>().unwrap())
                    .collect::<Vec<_>>();
            }
        }
    })
    .await;
    let (pids, ports) = ready.split_at(2);
    assert!(pids.iter().all(|&p| !is_dead(p)));

    signal(host.id().unwrap(), libc::SIGKILL);
    let status = tokio::time::timeout(PATIENCE, host.wait()).await.unwrap().unwrap();
    assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(libc::SIGKILL));

    for &pid in pids {
        eventually("the orphaned runner to die", || is_dead(pid).then_some(())).await;
    }
    for &port in ports {
        let port = u16::try_from(port).unwrap();
        eventually("the runner's port to be free", || can_bind(port).then_some(())).await;
    }
}

/// Set (to a scratch directory) in the host re-executed by
/// `without_capture_the_runners_stdout_is_inherited_and_its_stderr_passed_through`.
const OUTPUT_HOST_ENV: &str = "RRQ_POOL_TEST_OUTPUT_HOST_DIR";

/// A pool without output capture whose runner prints one line to each
/// stream; then the host exits.
#[tokio::test]
async fn output_host_entry_point() {
    let Ok(dir) = std::env::var(OUTPUT_HOST_ENV) else { return };
    let script = std::path::Path::new(&dir).join("fake_runner.py");
    let cmd = vec![crate::support::python().to_owned(), script.to_string_lossy().into_owned()];
    let mut config = rrq_pool::PoolConfig::managed("loud", cmd, crate::support::free_ports(1));
    config.capture_output = false;
    let pool = ProcessPool::start(config).await.expect("host pool starts");
    let params = serde_json::json!({"stdout": "RUNNER-OUT-LINE", "stderr": "RUNNER-ERR-LINE"});
    pool.execute(crate::support::request("loud", "print", params), PATIENCE).await.expect("printed");
    pool.shutdown(std::time::Duration::from_secs(2)).await;
}

#[tokio::test]
async fn without_capture_the_runners_stdout_is_inherited_and_its_stderr_passed_through() {
    let scratch = Scratch::new();
    let exe = std::env::current_exe().expect("test executable");
    let host = tokio::process::Command::new(exe)
        .args(["--exact", "host::output_host_entry_point", "--nocapture", "--test-threads=1"])
        .env(OUTPUT_HOST_ENV, &scratch.dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("re-execute the test binary");
    let out = within("the output host", host.wait_with_output()).await.expect("host output");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(stdout.contains("RUNNER-OUT-LINE") && !stderr.contains("RUNNER-OUT-LINE"), "stdout:\n{stdout}");
    assert!(stderr.contains("RUNNER-ERR-LINE") && !stdout.contains("RUNNER-ERR-LINE"), "stderr:\n{stderr}");
}
