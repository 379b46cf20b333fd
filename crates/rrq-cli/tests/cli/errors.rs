//! What a user sees when something is wrong: the message names the problem
//! and the fix, and the exit code tells scripts which kind of problem it is.

use std::net::TcpListener;

use crate::{Env, Scratch, rrq_in};

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

#[test]
fn a_missing_config_exits_3_and_says_where_it_looked() {
    let dir = Scratch::create();
    let run = rrq_in(dir.root(), &["queue", "list"], &[]).code(3);
    assert!(
        run.stderr.contains("RRQ config not found. Provide --config, set RRQ_CONFIG, or add rrq.toml."),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());

    let run = rrq_in(dir.root(), &["job", "show", "x", "--config", "nowhere.toml"], &[]).code(3);
    assert!(run.stderr.contains("cannot read RRQ config nowhere.toml"), "{}", run.stderr);
}

#[test]
fn bad_toml_exits_3_with_its_line_number() {
    let dir = Scratch::create();
    dir.write("rrq.toml", "[rrq]\nredis_dsn = \"redis://127.0.0.1:6379/0\"\ndefault_max_retries = = 3\n");
    let run = rrq_in(dir.root(), &["dlq", "list"], &[]).code(3);
    assert!(run.stderr.contains("invalid RRQ config"), "{}", run.stderr);
    assert!(run.stderr.contains("line 3"), "the line is named: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_key_warns_with_the_closest_valid_one() {
    let env = Env::new().await;
    env.dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"{}\"\ndefualt_queue_name = \"mail\"\n", env.redis.url()));
    let run = env.rrq(&["queue", "list", "--json"]).ok();
    assert!(
        run.stderr.contains("unknown key `rrq.defualt_queue_name` is ignored; did you mean `default_queue_name`?"),
        "{}",
        run.stderr
    );
    assert_eq!(run.json(), serde_json::json!([]), "warnings stay off stdout");
}

#[test]
fn an_unreachable_redis_exits_4_and_names_the_fix() {
    let dir = Scratch::create();
    let port = closed_port();
    dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"redis://127.0.0.1:{port}/0\"\n"));
    let run = rrq_in(dir.root(), &["queue", "list"], &[]).code(4);
    assert!(run.stderr.contains(&format!("cannot connect to Redis at redis://127.0.0.1:{port}/0")), "{}", run.stderr);
    assert!(run.stderr.contains("RRQ_REDIS_DSN"), "{}", run.stderr);
    assert!(run.stderr.contains("Caused by: redis is unreachable"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rrq_redis_dsn_overrides_the_file_and_rrq_config_finds_it() {
    let env = Env::new().await;
    let dir = Scratch::create();
    dir.write("elsewhere.toml", &format!("[rrq]\nredis_dsn = \"redis://127.0.0.1:{}/0\"\n", closed_port()));
    let config = dir.path("elsewhere.toml");
    let env_vars = [("RRQ_CONFIG", config.to_str().unwrap()), ("RRQ_REDIS_DSN", env.redis.url())];
    let run = rrq_in(dir.root(), &["queue", "list"], &env_vars).ok();
    assert_eq!(run.stdout.trim(), "No active queues found");
}

#[test]
fn an_unusable_dsn_is_a_config_error() {
    let dir = Scratch::create();
    dir.write("rrq.toml", "[rrq]\nredis_dsn = \"http://127.0.0.1:6379\"\n");
    let run = rrq_in(dir.root(), &["health"], &[]).code(3);
    assert!(run.stderr.contains("fix redis_dsn in rrq.toml"), "{}", run.stderr);
}

#[test]
fn usage_errors_exit_2() {
    let dir = Scratch::create();
    let run = rrq_in(dir.root(), &["queue", "frobnicate"], &[]).code(2);
    assert!(run.stderr.contains("unrecognized subcommand 'frobnicate'"), "{}", run.stderr);
    rrq_in(dir.root(), &["job", "show"], &[]).code(2);
    rrq_in(dir.root(), &["queue", "inspect", "q", "--limit", "many"], &[]).code(2);
}

#[test]
fn an_absurd_duration_exits_3_naming_the_key_instead_of_panicking() {
    let dir = Scratch::create();
    for (key, value) in [("default_poll_delay_seconds", "inf"), ("worker_health_check_interval_seconds", "nan")] {
        dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"redis://127.0.0.1:1/0\"\n{key} = {value}\n"));
        let run = rrq_in(dir.root(), &["worker", "run", "--burst"], &[]).code(3);
        assert!(run.stderr.contains(&format!("rrq.{key}")), "{}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }
}
