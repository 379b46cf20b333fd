//! `rediss://` against a real TLS Redis whose certificate comes from a
//! throwaway CA ([`TestRedis::private_tls`]): trusted only when that CA is
//! passed, refused clearly otherwise, and never leaking a password.
//!
//! The CA goes through [`ConnectOptions`], not `RRQ_REDIS_CA_FILE`: the
//! environment is shared by every test of the process.
//!
//! Without rrq-store's `tls` feature these tests are absent and
//! `redis_only::unusable_dsns_are_refused_before_connecting` checks that
//! `rediss://` is refused instead.

#![cfg(feature = "tls")]

use std::time::Duration;

use chrono::Utc;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use rrq_store::{
    ClaimRequest, ConnectOptions, EnqueueMode, EnqueueStore, Enqueued, InspectStore, RedisStore, StoreError,
    WorkerStore,
};
use rrq_test_support::TestRedis;

use crate::harness::{Harness, raw_client};

/// Options trusting the test server's CA.
fn trusting(redis: &TestRedis) -> ConnectOptions {
    ConnectOptions::default().with_ca_file(redis.ca_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_is_trusted_when_given_and_jobs_flow_over_tls() {
    let redis = TestRedis::private_tls();
    let store = RedisStore::connect_with(redis.tls_url(), trusting(&redis)).await.expect("connects over TLS");

    let h = Harness::memory().await; // only for names and jobs
    let q = h.queue("q");
    let mut job = h.new_job("a", &q);
    job.scheduled_time = Utc::now();
    let id = job.id.clone();
    assert!(matches!(store.enqueue(job, EnqueueMode::Standard).await.unwrap(), Enqueued::Created(_)));
    let req = ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 1,
        now: Utc::now(),
        lease_ttl: Duration::from_secs(30),
        max_payload_bytes: usize::MAX,
    };
    let batch = store.claim(req).await.expect("claim over TLS");
    assert_eq!(batch.jobs.len(), 1);
    assert_eq!(batch.jobs[0].lease.job_id, id);

    // The dedicated connections (blocking reads, the ready subscription) use
    // the same TLS settings.
    assert_eq!(store.wait_job_event(&id, None, Duration::from_millis(20)).await.unwrap(), None);
    let mut ready = store.subscribe_ready().await.expect("subscription over TLS");
    // The subscription is live once `subscribe_ready` returns.
    let mut next = h.new_job("b", &q);
    next.scheduled_time = Utc::now();
    store.enqueue(next, EnqueueMode::Standard).await.unwrap();
    let signal = tokio::time::timeout(Duration::from_secs(10), ready.recv()).await;
    assert!(matches!(signal, Ok(Some(rrq_store::Signal::Ready(ref queue))) if *queue == q), "{signal:?}");

    // The data really is on this server (read through its plain port).
    let raw = raw_client(redis.url()).await;
    let key = rrq_store::keys::job(&id);
    let status: Option<String> = raw.hget(key, "status").await.unwrap();
    assert_eq!(status.as_deref(), Some("ACTIVE"));
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_server_certificate_is_refused_clearly() {
    let redis = TestRedis::private_tls();
    let err = RedisStore::connect_with(redis.tls_url(), ConnectOptions::default()).await.unwrap_err();
    let shown = chain(&err);
    assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
    assert!(shown.contains("certificate"), "names the certificate: {shown}");
    assert!(shown.contains("RRQ_REDIS_CA_FILE"), "says how to trust a private CA: {shown}");
    assert!(shown.contains(&format!("127.0.0.1:{}", redis.tls_port())), "names the server: {shown}");

    // A CA file that is not the server's CA does not help either.
    let other = TestRedis::private_tls();
    let options = ConnectOptions::default().with_ca_file(other.ca_file());
    let err = RedisStore::connect_with(redis.tls_url(), options).await.unwrap_err();
    assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_file_is_refused_before_connecting() {
    let redis = TestRedis::private_tls();
    let missing = std::env::temp_dir().join(format!("rrq-no-such-ca-{}.pem", uuid::Uuid::new_v4().simple()));
    let dsn = format!("rediss://rrq:s3cret-ca@127.0.0.1:{}", redis.tls_port());
    let err = RedisStore::connect_with(&dsn, ConnectOptions::default().with_ca_file(&missing)).await.unwrap_err();
    let shown = chain(&err);
    assert!(matches!(err, StoreError::Tls { .. }), "{err:?}");
    assert!(shown.contains(&missing.display().to_string()), "names the file: {shown}");
    assert!(!shown.contains("s3cret-ca") && shown.contains("rrq:***@"), "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_passwords_never_appear_in_errors() {
    let redis = TestRedis::private_tls();
    let raw = raw_client(redis.url()).await;
    let setuser = CustomCommand::new("ACL", ClusterHash::FirstKey, false);
    let args = ["SETUSER", "rrq", "on", ">t1s-secret", "~*", "&*", "+@all"];
    let _: Value = raw.custom(setuser, args.iter().map(|a| (*a).to_owned()).collect()).await.unwrap();
    let port = redis.tls_port();

    let good = format!("rediss://rrq:t1s-secret@127.0.0.1:{port}/0");
    let store = RedisStore::connect_with(&good, trusting(&redis)).await.expect("the ACL user connects over TLS");
    assert_eq!(store.queue_len(&rrq_protocol::QueueName::new("q")).await.unwrap(), 0);
    assert!(!format!("{store:?}").contains("t1s-secret"));

    let wrong = format!("rediss://rrq:not-the-secret@127.0.0.1:{port}");
    let err = RedisStore::connect_with(&wrong, trusting(&redis)).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. } | StoreError::Command { .. }), "{err:?}");
    assert!(!chain(&err).contains("not-the-secret"), "{}", chain(&err));

    let untrusted = RedisStore::connect_with(&good, ConnectOptions::default()).await.unwrap_err();
    assert!(!chain(&untrusted).contains("t1s-secret"), "{}", chain(&untrusted));
    assert!(!format!("{untrusted:?}").contains("t1s-secret"), "{untrusted:?}");
}

/// An error and all its sources, as a user would see them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
