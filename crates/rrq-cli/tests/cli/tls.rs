//! `rediss://` out of the box: the `rrq` binary trusts a private CA named by
//! `RRQ_REDIS_CA_FILE`, and without it says what to do.

use rrq_test_support::TestRedis;

use crate::{Scratch, rrq_in};

#[test]
fn rediss_works_with_rrq_redis_ca_file_and_an_untrusted_server_exits_3() {
    let redis = TestRedis::private_tls();
    let port = redis.tls_port();
    let dir = Scratch::create();
    dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"rediss://127.0.0.1:{port}/0\"\n"));
    let ca = redis.ca_file().to_str().expect("utf-8 path");
    let run = rrq_in(dir.root(), &["queue", "list", "--json"], &[("RRQ_REDIS_CA_FILE", ca)]).ok();
    assert_eq!(run.json(), serde_json::json!([]), "{}", run.stderr);

    // Without the CA the server is not trusted; the password stays hidden.
    let dsn = format!("rediss://:cli-s3cret@127.0.0.1:{port}/0");
    let run = rrq_in(dir.root(), &["queue", "list"], &[("RRQ_REDIS_DSN", &dsn)]).code(3);
    assert!(run.stderr.contains("certificate"), "{}", run.stderr);
    assert!(run.stderr.contains("RRQ_REDIS_CA_FILE"), "names the fix: {}", run.stderr);
    assert!(!run.stderr.contains("cli-s3cret"), "{}", run.stderr);
}
