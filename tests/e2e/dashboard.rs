//! `dashboard_listen`: a worker serves the dashboard in-process, and its
//! chart counts the worker's own completions.

use std::time::{Duration, Instant};

use rrq_producer::Producer;
use rrq_test_support::TestRedis;
use serde_json::{Value, json};

use crate::support::{TempDir, rust_runner_config};

fn get_json(port: u16, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_serves_the_dashboard_with_its_own_completions() {
    let redis = TestRedis::private();
    let dir = TempDir::new("dashboard");
    let port = crate::support::free_ports(1);
    let config =
        dir.write("rrq.toml", &rust_runner_config(&redis, &format!("dashboard_listen = \"127.0.0.1:{port}\""), 1, 4));
    let worker = std::process::Command::new(crate::support::rrq_bin())
        .args(["worker", "run", "--config", config.to_str().unwrap()])
        .env_remove("RRQ_DASHBOARD_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start worker");
    let producer = Producer::new(redis.url()).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut overview = Value::Null;
    // Keep work flowing until a sample shows completions per second.
    let completed = loop {
        for _ in 0..5 {
            producer.enqueue("echo", json!({"x": 1}), Default::default()).await.unwrap();
        }
        if let Some(o) = get_json(port, "/api/overview") {
            overview = o;
            let points = overview["series"]["points"].as_array().cloned().unwrap_or_default();
            if let Some(rate) = points.iter().filter_map(|p| p["completed"].as_f64()).find(|r| *r > 0.0) {
                break rate;
            }
        }
        assert!(Instant::now() < deadline, "no completion rate on the in-process dashboard: {overview}");
        tokio::time::sleep(Duration::from_millis(200)).await; // sleep-ok: polling the dashboard with a deadline while it samples every 2 s.
    };
    assert!(completed > 0.0);
    assert!(overview["queues"].as_array().unwrap().iter().any(|q| q["name"] == "default"), "{overview}");
    let _ = std::process::Command::new("kill").arg("-TERM").arg(worker.id().to_string()).status();
    let out = crate::support::wait_with_deadline(worker, Duration::from_secs(30));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("Dashboard on http://127.0.0.1:{port}")));
}
