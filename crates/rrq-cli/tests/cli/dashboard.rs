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
    let config = env.dir.path("rrq.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrq"))
        .args(["dashboard", "--listen", "127.0.0.1:0", "--read-only", "--config"])
        .arg(&config)
        .env_remove("RRQ_DASHBOARD_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start rrq dashboard");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).expect("the address line");
    let addr = line.trim().strip_prefix("Dashboard on http://").unwrap_or_else(|| panic!("{line}"));
    let addr = addr.trim_end_matches(" (read-only)").to_owned();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_rrq"))
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
