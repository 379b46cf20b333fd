//! `rrq dashboard`: refuses a public address without a token, and serves
//! its API on loopback.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use crate::{Env, Scratch, rrq_in};

#[test]
fn a_public_address_without_a_token_exits_3_naming_the_option() {
    let dir = Scratch::create();
    dir.write("rrq.toml", "[rrq]\nredis_dsn = \"redis://127.0.0.1:1/0\"\n");
    let run = rrq_in(dir.root(), &["dashboard", "--listen", "0.0.0.0:0"], &[]).code(3);
    assert!(run.stderr.contains("--token") && run.stderr.contains("RRQ_DASHBOARD_TOKEN"), "{}", run.stderr);
    let run = rrq_in(dir.root(), &["dashboard", "--listen", "not-an-address"], &[]).code(3);
    assert!(run.stderr.contains("--listen"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_serves_its_api_on_loopback() {
    let env = Env::new().await;
    let (mut child, addr) = start_read_only_dashboard(&env);
    let mut stream = TcpStream::connect(&addr).expect("connect");
    write!(stream, "GET /api/session HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""read_only":true"#), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_address_with_the_token_variable_serves_only_with_the_token() {
    let env = Env::new().await;
    let config = env.dir.path("rrq.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrq-cli"))
        .args(["dashboard", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .env("RRQ_DASHBOARD_TOKEN", "t0ken-from-env")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rrq dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).unwrap_or_else(|| panic!("{line}"));
    let ask = |auth: &str| {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(stream, "GET /api/session HTTP/1.1\r\nhost: example.org\r\n{auth}connection: close\r\n\r\n").unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let without = ask("");
    let wrong = ask("authorization: Bearer nope\r\n");
    let with = ask("authorization: Bearer t0ken-from-env\r\n");
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("Dashboard on http://0.0.0.0:"), "{line}");
    assert!(without.starts_with("HTTP/1.1 401"), "{without}");
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    assert!(with.starts_with("HTTP/1.1 200"), "{with}");
}

/// `GET path` from a dashboard at `addr`: the JSON body.
fn api_json(addr: &str, path: &str) -> serde_json::Value {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(stream, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    let (_, body) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("{answer}"));
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// The issue's promise: the API answers with the shapes of the CLI's
/// `--json`. Both are asked about the same Redis and configuration; the
/// rows must have the same members and, but for the ages measured at each
/// call, the same values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_serves_the_rows_of_worker_list_and_cron_list_json() {
    use std::time::Duration;

    use rrq_store::{WorkerHealth, WorkerStore};
    use serde_json::json;

    let env = Env::new().await;
    env.dir.write(
        "rrq.toml",
        &format!(
            "[rrq]\nredis_dsn = \"{}\"\n\n[[rrq.cron_jobs]]\nname = \"nightly\"\nfunction_name = \"report\"\n\
             schedule = \"0 30 9 * * * 2099\"\ntimezone = \"Europe/Paris\"\n\n[[rrq.cron_jobs]]\n\
             function_name = \"cleanup\"\nschedule = \"0 0 0 1 1 * 2099\"\nqueue_name = \"low\"\n",
            env.redis.url()
        ),
    );
    let now = chrono::Utc::now();
    let counted = WorkerHealth {
        active_jobs: 2,
        concurrency_limit: 8,
        queues: vec!["rrq:queue:default".into(), "rrq:queue:low".into()],
        status: "running".into(),
        timestamp: json!(rrq_store::format_timestamp(now)),
        worker_id: "worker-counted".into(),
        completed_jobs: Some(41),
        failed_jobs: Some(2),
        active_by_queue: Some([("rrq:queue:low".to_owned(), 2)].into()),
    };
    // As the reference writes it: no counts, an epoch-seconds timestamp.
    let foreign = WorkerHealth {
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
        timestamp: json!(now.timestamp()),
        worker_id: "worker-foreign".into(),
        ..counted.clone()
    };
    env.store.heartbeat(&counted, Duration::from_secs(600)).await.unwrap();
    env.store.heartbeat(&foreign, Duration::from_secs(600)).await.unwrap();
    let cli_cron = env.rrq(&["cron", "list", "--json"]).ok().json();
    let id = cli_cron[0]["id"].as_str().expect("an entry id").to_owned();
    env.store.record_cron_tick(&id, "2030-05-04T07:30:00Z".parse().unwrap()).await.unwrap();
    let cli_cron = env.rrq(&["cron", "list", "--json"]).ok().json();
    let cli_workers = env.rrq(&["worker", "list", "--json"]).ok().json();

    let (mut child, addr) = start_read_only_dashboard(&env);
    // The workers come from the dashboard's background discovery, which
    // starts with it: wait for its first pass.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let api_workers = loop {
        let w = api_json(&addr, "/api/workers");
        if !w["discovered_at"].is_null() {
            break w;
        }
        assert!(std::time::Instant::now() < deadline, "no discovery: {w}");
        std::thread::sleep(Duration::from_millis(50)); // sleep-ok: polling the API with a deadline for the first discovery.
    };
    let api_cron = api_json(&addr, "/api/cron");
    let _ = child.kill();
    let _ = child.wait();

    assert_eq!(api_cron["entries"], cli_cron, "the cron rows are the CLI's, value for value");
    assert_eq!(api_cron["entries"][0]["last_tick"], "2030-05-04T07:30:00+00:00");
    let (api_rows, cli_rows) = (api_workers["workers"].as_array().unwrap(), cli_workers.as_array().unwrap());
    assert_eq!(api_rows.len(), 2, "{api_workers}");
    assert_eq!(api_rows.len(), cli_rows.len());
    for (api, cli) in api_rows.iter().zip(cli_rows) {
        let (api, cli) = (api.as_object().unwrap(), cli.as_object().unwrap());
        assert_eq!(api.keys().collect::<Vec<_>>(), cli.keys().collect::<Vec<_>>(), "the same members");
        for (key, value) in cli {
            if key != "heartbeat_age_seconds" && key != "ttl_seconds" {
                assert_eq!(&api[key], value, "{key} of {}", cli["worker_id"]);
            }
        }
    }
    assert_eq!(cli_rows[0]["completed_jobs"], 41);
    assert_eq!(cli_rows[1]["completed_jobs"], serde_json::Value::Null, "the reference writes no counts");
}

/// Starts `rrq dashboard --read-only` on a free loopback port over the
/// environment's config; returns the process and the address it printed.
fn start_read_only_dashboard(env: &Env) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrq-cli"))
        .args(["dashboard", "--listen", "127.0.0.1:0", "--read-only", "--config"])
        .arg(env.dir.path("rrq.toml"))
        .env_remove("RRQ_DASHBOARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rrq dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
    let addr = line.trim().strip_prefix("Dashboard on http://").unwrap_or_else(|| panic!("{line}"));
    (child, addr.trim_end_matches(" (read-only)").to_owned())
}
