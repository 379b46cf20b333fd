//! What only Redis can show: the exact keys, fields and expiries the
//! reference reads (REDIS_SCHEMA.md), corrupted keys, scripts, reconnects and
//! DSNs.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::Utc;
use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use rrq_store::{
    AttemptCount, ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence, InspectStore, JobParseError, RedisStore,
    StoreError, WorkerHealth, WorkerStore, keys,
};
use rrq_test_support::TestRedis;
use serde_json::json;

use crate::harness::{Harness, LEASE, raw_client};

/// Runs one raw command.
async fn cmd(client: &Client, args: &[&str]) -> Value {
    let command = CustomCommand::new(args[0].to_owned(), ClusterHash::FirstKey, false);
    let rest: Vec<String> = args[1..].iter().map(|a| (*a).to_owned()).collect();
    client.custom(command, rest).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn text(client: &Client, args: &[&str]) -> Option<String> {
    cmd(client, args).await.as_string()
}

async fn int(client: &Client, args: &[&str]) -> i64 {
    cmd(client, args).await.as_i64().unwrap_or_else(|| panic!("{args:?} did not answer an integer"))
}

async fn strings(client: &Client, args: &[&str]) -> Vec<String> {
    match cmd(client, args).await {
        Value::Array(items) => items.iter().map(|v| v.as_string().unwrap()).collect(),
        other => panic!("{args:?} answered {other:?}"),
    }
}

async fn hash(client: &Client, key: &str) -> BTreeMap<String, String> {
    let flat = strings(client, &["HGETALL", key]).await;
    flat.chunks(2).map(|p| (p[0].clone(), p[1].clone())).collect()
}

/// The entries of a stream as (id, [field, value, ...]).
async fn stream(client: &Client, key: &str) -> Vec<(String, Vec<String>)> {
    match cmd(client, &["XRANGE", key, "-", "+"]).await {
        Value::Array(entries) => entries
            .into_iter()
            .map(|e| match e {
                Value::Array(mut parts) => {
                    let fields = parts.pop().unwrap().into_array().iter().map(|v| v.as_string().unwrap()).collect();
                    (parts.pop().unwrap().as_string().unwrap(), fields)
                }
                other => panic!("stream entry {other:?}"),
            })
            .collect(),
        Value::Null => Vec::new(),
        other => panic!("XRANGE answered {other:?}"),
    }
}

/// Enqueues one job and claims it.
async fn claimed(h: &Harness, id: &str) -> rrq_store::Lease {
    let q = h.queue("q");
    h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease
}

#[tokio::test]
async fn an_enqueued_job_has_the_reference_layout() {
    let h = Harness::redis().await;
    let q = h.queue("default");
    let job = h.new_job("a", &q);
    h.store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    let raw = h.raw();
    let key = keys::job(&job.id);
    assert_eq!(text(raw, &["TYPE", &key]).await.as_deref(), Some("hash"));
    assert_eq!(int(raw, &["TTL", &key]).await, -1);
    let expected: BTreeMap<String, String> = job.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(hash(raw, &key).await, expected);
    assert_eq!(expected["status"], "PENDING");
    assert_eq!(expected["result"], "null");
    assert_eq!(expected["queue_name"], q.as_str());
    let score = text(raw, &["ZSCORE", q.as_str(), job.id.as_str()]).await.unwrap();
    assert_eq!(score, h.now.timestamp_millis().to_string(), "the score is the ready time in epoch ms");
}

#[tokio::test]
async fn a_success_writes_the_event_and_the_result_ttl() {
    let h = Harness::redis().await;
    let raw = h.raw();
    for (name, ttl, expect_ttl) in [("keep-day", 86_400, 86_400), ("forever", 0, -1), ("untouched", -1, -1)] {
        let q = h.queue(name);
        let mut job = h.new_job(name, &q);
        job.result_ttl_seconds = ttl;
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
        assert_eq!(h.store.complete(&lease, &json!({"ok": true}), h.now).await.unwrap(), Fence::Applied);
        assert_eq!(h.store.complete(&lease, &json!({"ok": true}), h.now).await.unwrap(), Fence::Applied);

        let (job_key, events) = (keys::job(&lease.job_id), keys::events(&lease.job_id));
        let entries = stream(raw, &events).await;
        assert_eq!(entries.len(), 1, "{name}: one event, even after a re-sent write");
        assert_eq!(entries[0].1, vec!["event", "completed", "job_id", lease.job_id.as_str(), "status", "COMPLETED"]);
        let t = int(raw, &["TTL", &job_key]).await;
        if expect_ttl > 0 {
            assert!((expect_ttl - 5..=expect_ttl).contains(&t), "{name}: TTL of {job_key} is {t}");
        } else {
            assert_eq!(t, expect_ttl, "{name}: TTL of {job_key}");
        }
        // The stream only wakes waiters: it expires after the events TTL
        // (60 s by default), whatever the result's TTL.
        let t = int(raw, &["TTL", &events]).await;
        assert!((55..=60).contains(&t), "{name}: TTL of {events} is {t}");
        assert_eq!(int(raw, &["EXISTS", &keys::lock(&lease.job_id)]).await, 0);
        assert_eq!(int(raw, &["EXISTS", &keys::active(&lease.worker_id)]).await, 0, "the active set empties");
        assert!(text(raw, &["ZSCORE", keys::LEASES, lease.job_id.as_str()]).await.is_none());
    }
}

#[tokio::test]
async fn a_dead_letter_expires_in_seven_days_and_honours_dlq_name() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let lease = claimed(&h, "a").await;
    let custom = h.dlq("custom");
    cmd(raw, &["HSET", &keys::job(&lease.job_id), "dlq_name", custom.bare()]).await;
    assert_eq!(h.store.dead_letter(&lease, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(strings(raw, &["LRANGE", custom.as_str(), "0", "-1"]).await, vec![lease.job_id.as_str()]);
    assert_eq!(int(raw, &["EXISTS", h.defaults().dlq.as_str()]).await, 0);
    for key in [keys::job(&lease.job_id), keys::events(&lease.job_id)] {
        let t = int(raw, &["TTL", &key]).await;
        assert!((604_795..=604_800).contains(&t), "TTL of {key} is {t}");
    }
    let entries = stream(raw, &keys::events(&lease.job_id)).await;
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].1, vec!["event", "failed", "job_id", lease.job_id.as_str(), "status", "FAILED"]);
}

#[tokio::test]
async fn the_unique_lock_is_released_only_by_its_holder() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let q = h.queue("q");
    let unique = format!("cron:{}", h.worker("f"));
    let lock = keys::unique_lock(&unique);
    for (id, holder, released) in [("a", "someone-else", false), ("b", "", true)] {
        let mut job = h.new_job(id, &q);
        job.unique_key = Some(unique.clone());
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        let holder = if holder.is_empty() { h.id(id).to_string() } else { holder.to_owned() };
        cmd(raw, &["SET", &lock, &holder]).await;
        let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
        assert_eq!(h.store.complete(&lease, &json!(1), h.now).await.unwrap(), Fence::Applied);
        assert_eq!(int(raw, &["EXISTS", &lock]).await == 0, released, "job {id}, lock held by {holder}");
    }
}

#[tokio::test]
async fn a_claim_drops_vanished_and_finished_ids() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let q = h.queue("q");
    h.store.enqueue(h.new_job("live", &q), EnqueueMode::Standard).await.unwrap();
    // A finished job left in a second queue by a reference producer's debounce.
    let done = h.id("done");
    cmd(raw, &["HSET", &keys::job(&done), "status", "COMPLETED", "function_name", "f"]).await;
    let ms = h.now.timestamp_millis().to_string();
    for id in [done.as_str(), h.id("ghost").as_str()] {
        cmd(raw, &["ZADD", q.as_str(), &ms, id]).await;
    }
    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    assert_eq!(batch.jobs.len(), 1);
    assert_eq!(batch.jobs[0].lease.job_id, h.id("live"));
    let mut dropped = batch.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, vec![done.clone(), h.id("ghost")]);
    assert_eq!(int(raw, &["ZCARD", q.as_str()]).await, 0);
    assert_eq!(text(raw, &["HGET", &keys::job(&done), "status"]).await.as_deref(), Some("COMPLETED"));
}

#[tokio::test]
async fn a_job_key_of_the_wrong_type_is_quarantined() {
    let redis = TestRedis::start();
    let h = Harness::redis().await;
    let store = RedisStore::connect(redis.url()).await.unwrap().with_defaults(h.defaults());
    let raw = raw_client(redis.url()).await;
    let q = h.queue("q");
    let id = h.id("junk");
    let key = keys::job(&id);
    cmd(&raw, &["SET", &key, "not a hash"]).await;
    cmd(&raw, &["ZADD", q.as_str(), &h.now.timestamp_millis().to_string(), id.as_str()]).await;
    assert!(
        matches!(store.job(&id).await.unwrap(), Some(Err(JobParseError::WrongType { found })) if found == "string")
    );

    let req = ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 5,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let batch = store.claim(req).await.unwrap();
    assert!(batch.jobs.is_empty());
    assert_eq!(batch.dropped, vec![id.clone()]);
    let kept = format!("{}{id}", keys::QUARANTINE_PREFIX);
    assert_eq!(text(&raw, &["GET", &kept]).await.as_deref(), Some("not a hash"));
    let fields = hash(&raw, &key).await;
    assert_eq!(fields["status"], "FAILED");
    assert_eq!(fields["last_error"], format!("job key had type string; original preserved at {kept}"));
    assert!(fields.contains_key("completion_time"));
    assert_eq!(strings(&raw, &["LRANGE", h.defaults().dlq.as_str(), "0", "-1"]).await, vec![id.as_str()]);
    assert_eq!(int(&raw, &["ZCARD", q.as_str()]).await, 0);
}

/// A TCP proxy to Redis that, once armed, swallows the next bytes Redis sends
/// and closes that connection: a network cut just after the server ran a
/// command, before its reply arrived.
struct LossyProxy {
    port: u16,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl LossyProxy {
    fn start(target: u16) -> LossyProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let trigger = armed.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(mut client) = client else { return };
                let Ok(mut server) = std::net::TcpStream::connect(("127.0.0.1", target)) else { return };
                let (mut client_in, mut server_out) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_in, &mut server_out);
                });
                let trigger = trigger.clone();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    while let Ok(n @ 1..) = server.read(&mut buf) {
                        if trigger.swap(false, Ordering::SeqCst) {
                            break;
                        }
                        if client.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    let _ = client.shutdown(std::net::Shutdown::Both);
                    let _ = server.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        LossyProxy { port, armed }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn fired(&self) -> bool {
        !self.armed.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[tokio::test]
async fn a_claim_whose_reply_is_lost_hands_out_the_same_jobs_on_its_repeat() {
    let redis = TestRedis::start();
    let h = Harness::redis().await;
    let proxy = LossyProxy::start(redis.port());
    let store = RedisStore::connect(&format!("redis://127.0.0.1:{}", proxy.port)).await.unwrap();
    let store = store.with_defaults(h.defaults());
    let raw = &raw_client(redis.url()).await;
    let (q, empty) = (h.queue("q"), h.queue("empty"));
    for id in ["a", "b", "c"] {
        store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let worker = h.worker("w");
    let claim = |queue: &rrq_protocol::QueueName, max| ClaimRequest {
        queue: queue.clone(),
        worker_id: worker.clone(),
        max,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    // Load the script first, so the reply lost is the claim's own.
    assert!(store.claim(claim(&empty, 1)).await.unwrap().jobs.is_empty());

    proxy.arm();
    let batch = store.claim(claim(&q, 2)).await.expect("the repeat answers");
    assert!(proxy.fired(), "a reply was dropped");
    let taken: Vec<_> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(taken, vec![h.id("a"), h.id("b")], "the jobs the lost run took, and no more than max");
    for c in &batch.jobs {
        let fields = hash(raw, &keys::job(&c.lease.job_id)).await;
        assert_eq!((fields["status"].as_str(), fields["start_time"].as_str()), ("ACTIVE", c.lease.token.as_str()));
        assert_eq!(text(raw, &["GET", &keys::lock(&c.lease.job_id)]).await.as_deref(), Some(worker.as_str()));
        assert_eq!(c.job.as_ref().unwrap().status, Some(rrq_store::JobStatus::Active));
    }
    assert_eq!(int(raw, &["ZCARD", q.as_str()]).await, 1, "c is still queued");
    // The leases handed out are the real ones.
    let done = store.complete(&batch.jobs[0].lease, &json!(1), h.now).await.unwrap();
    assert_eq!(done, Fence::Applied);

    // The next claim (a new token) takes the rest, never a or b again.
    let rest = store.claim(ClaimRequest { now: h.at(1.0), ..claim(&q, 5) }).await.unwrap();
    assert_eq!(rest.jobs.iter().map(|c| c.lease.job_id.clone()).collect::<Vec<_>>(), vec![h.id("c")]);
}

#[tokio::test]
async fn a_status_nobody_writes_is_quarantined_unrun() {
    let redis = TestRedis::start();
    let h = Harness::redis().await;
    let store = RedisStore::connect(redis.url()).await.unwrap().with_defaults(h.defaults());
    let raw = &raw_client(redis.url()).await;
    let q = h.queue("q");
    let (odd, long, fine) = (h.id("odd"), h.id("long"), h.id("fine"));
    let long_status = "Z".repeat(150);
    for (id, status) in [(&odd, " banana "), (&long, long_status.as_str()), (&fine, "retrying")] {
        cmd(
            raw,
            &["HSET", &keys::job(id), "function_name", "f", "enqueue_time", "2030-01-01T00:00:00Z", "status", status],
        )
        .await;
        cmd(raw, &["ZADD", q.as_str(), &h.now.timestamp_millis().to_string(), id.as_str()]).await;
    }
    let req = ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 5,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let batch = store.claim(req).await.unwrap();
    assert_eq!(batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect::<Vec<_>>(), vec![fine.clone()]);
    let mut dropped = batch.dropped.clone();
    dropped.sort();
    let mut expected = vec![odd.clone(), long.clone()];
    expected.sort();
    assert_eq!(dropped, expected);
    let fields = hash(raw, &keys::job(&odd)).await;
    assert_eq!(fields["status"], "FAILED");
    assert_eq!(fields["last_error"], "job field `status` is invalid (\" banana \"): not a known job status");
    assert!(!fields.contains_key("start_time") && !fields.contains_key("worker_id"), "never claimed: {fields:?}");
    assert_eq!(
        hash(raw, &keys::job(&long)).await["last_error"],
        "job field `status` is invalid (a 150-byte value): not a known job status"
    );
    let mut dlq = strings(raw, &["LRANGE", h.defaults().dlq.as_str(), "0", "-1"]).await;
    dlq.sort();
    assert_eq!(dlq, expected.iter().map(|i| i.as_str().to_owned()).collect::<Vec<_>>());
    assert!(cmd(raw, &["GET", &keys::lock(&odd)]).await.is_null(), "no lock taken");
    assert_eq!(int(raw, &["ZCARD", q.as_str()]).await, 0);
}

#[tokio::test]
async fn an_unparsable_job_is_claimed_as_an_error() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let q = h.queue("q");
    let id = h.id("bad");
    cmd(raw, &["HSET", &keys::job(&id), "function_name", "f", "enqueue_time", "yesterday", "status", "PENDING"]).await;
    cmd(raw, &["ZADD", q.as_str(), &h.now.timestamp_millis().to_string(), id.as_str()]).await;
    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    assert_eq!(batch.jobs.len(), 1);
    let err = batch.jobs[0].job.as_ref().unwrap_err();
    assert!(err.to_string().contains("enqueue_time"), "{err}");
    assert_eq!(text(raw, &["HGET", &keys::job(&id), "status"]).await.as_deref(), Some("ACTIVE"));
    // The worker quarantines it through its lease.
    let lease = &batch.jobs[0].lease;
    let msg = "Failed to parse claimed job definition. Moved to DLQ.";
    assert_eq!(h.store.dead_letter(lease, msg, AttemptCount::NotCounted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(text(raw, &["HGET", &keys::job(&id), "status"]).await.as_deref(), Some("FAILED"));
}

#[tokio::test]
async fn a_heartbeat_writes_sorted_compact_json_with_a_ttl() {
    let h = Harness::redis().await;
    let worker = h.worker("rrq_worker_1");
    let health = WorkerHealth {
        worker_id: worker.clone(),
        timestamp: json!("2026-11-28T00:03:30.262169652+00:00"),
        status: "polling".into(),
        queues: vec!["rrq:queue:default".into()],
        concurrency_limit: 2,
        active_jobs: 0,
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    };
    h.store.heartbeat(&health, Duration::from_secs(70)).await.unwrap();
    let key = keys::health(&worker);
    assert_eq!(
        text(h.raw(), &["GET", &key]).await.unwrap(),
        format!(
            r#"{{"active_jobs":0,"concurrency_limit":2,"queues":["rrq:queue:default"],"status":"polling","timestamp":"2026-11-28T00:03:30.262169652+00:00","worker_id":"{worker}"}}"#
        )
    );
    let ttl = int(h.raw(), &["TTL", &key]).await;
    assert!((65..=70).contains(&ttl), "TTL {ttl}");
}

#[tokio::test]
async fn dedup_keys_have_the_reference_names_and_ttls() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let q = h.queue("q");
    let key = h.worker("order");
    let mode = EnqueueMode::Idempotent { key: key.clone(), ttl: Duration::from_secs(30) };
    let mut deferred = h.new_job("a", &q);
    deferred.scheduled_time = h.at(100.0);
    h.store.enqueue(deferred, mode.clone()).await.unwrap();
    let idem = format!("rrq:idempotency:{key}");
    assert_eq!(text(raw, &["GET", &idem]).await, Some(h.id("a").to_string()));
    let ttl = int(raw, &["TTL", &idem]).await;
    assert!((95..=100).contains(&ttl), "the idempotency TTL covers the deferral: {ttl}");

    // A key whose job is gone is stale: a new job takes it over.
    cmd(raw, &["DEL", &keys::job(&h.id("a"))]).await;
    assert_eq!(h.store.enqueue(h.new_job("b", &q), mode).await.unwrap(), Enqueued::Created(h.id("b")));
    assert_eq!(text(raw, &["GET", &idem]).await, Some(h.id("b").to_string()));

    let limiter = h.worker("user");
    let mode = EnqueueMode::RateLimited { key: limiter.clone(), window: Duration::from_millis(2500) };
    h.store.enqueue(h.new_job("c", &q), mode).await.unwrap();
    let pttl = int(raw, &["PTTL", &format!("rrq:rate_limit:{limiter}")]).await;
    assert!((2000..=3000).contains(&pttl), "ceil(2.5 s) = 3 s: {pttl}");

    let debounce = format!("rrq:debounce:{}", h.worker("doc"));
    let mode = EnqueueMode::Debounced { key: debounce.clone(), window: Duration::from_secs(5) };
    h.store.enqueue(h.new_job("d", &q), mode).await.unwrap();
    assert_eq!(text(raw, &["GET", &debounce]).await, Some(h.id("d").to_string()), "a prefixed key is kept as is");
}

#[tokio::test]
async fn leases_are_indexed_by_lock_expiry_and_renewed() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let lease = claimed(&h, "a").await;
    let score: i64 = text(raw, &["ZSCORE", keys::LEASES, lease.job_id.as_str()]).await.unwrap().parse().unwrap();
    assert_eq!(score, h.now.timestamp_millis() + LEASE.as_millis() as i64);
    assert_eq!(text(raw, &["GET", &keys::lock(&lease.job_id)]).await, Some(lease.worker_id.clone()));
    let active = text(raw, &["ZSCORE", &keys::active(&lease.worker_id), lease.job_id.as_str()]).await.unwrap();
    assert_eq!(active, h.now.timestamp().to_string(), "the active set is scored in epoch seconds");

    let before = Utc::now().timestamp_millis();
    h.store.renew(std::slice::from_ref(&lease), Duration::from_secs(600)).await.unwrap();
    let pttl = int(raw, &["PTTL", &keys::lock(&lease.job_id)]).await;
    assert!(pttl > 590_000, "the lock was extended: {pttl}");
    let score: i64 = text(raw, &["ZSCORE", keys::LEASES, lease.job_id.as_str()]).await.unwrap().parse().unwrap();
    assert!(score >= before + 600_000 - 1000 && score <= Utc::now().timestamp_millis() + 600_000 + 1000);
}

#[tokio::test]
async fn a_lock_that_really_expires_is_recovered() {
    let h = Harness::redis_private().await;
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let req = ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 1,
        now: Utc::now(),
        lease_ttl: Duration::from_millis(50),
        max_payload_bytes: usize::MAX,
    };
    let lease = h.store.claim(req).await.unwrap().jobs.remove(0).lease;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rec = h.store.recover(Utc::now(), 100).await.unwrap();
        if rec.requeued == vec![lease.job_id.clone()] {
            break;
        }
        assert!(rec.requeued.is_empty() && rec.dead_lettered.is_empty(), "{rec:?}");
        assert!(Instant::now() < deadline, "the lock never expired");
        tokio::time::sleep(Duration::from_millis(10)).await; // sleep-ok: deadline poll until the lock expires
    }
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);
}

#[tokio::test]
async fn scripts_are_reloaded_after_a_script_flush() {
    let h = Harness::redis_private().await;
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    cmd(h.raw(), &["SCRIPT", "FLUSH"]).await;
    h.store.enqueue(h.new_job("b", &q), EnqueueMode::Standard).await.unwrap();
    assert_eq!(h.claim(&q, &h.worker("w"), 5, h.now).await.jobs.len(), 2);
}

#[tokio::test]
async fn the_store_recovers_after_a_server_restart() {
    let mut redis = TestRedis::private_with_aof();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let h = Harness::memory().await; // only for names and jobs
    let q = h.queue("q");
    let mut job = h.new_job("a", &q);
    job.scheduled_time = Utc::now();
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    redis.stop();
    redis.start_again();
    let deadline = Instant::now() + Duration::from_secs(20);
    let len = loop {
        match store.queue_len(&q).await {
            Ok(n) => break n,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: deadline poll for the reconnect
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    };
    assert_eq!(len, 1, "the job survived in the append-only file");
    let mut job = h.new_job("b", &q);
    job.scheduled_time = Utc::now();
    assert!(store.enqueue(job, EnqueueMode::Standard).await.is_ok(), "scripts are reloaded on the new server");
}

#[tokio::test]
async fn connecting_to_nothing_fails_fast_and_clearly() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://u:s3cret@127.0.0.1:{port}")).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(!chain(&err).contains("s3cret"), "{}", chain(&err));
    assert!(chain(&err).contains("u:***@"), "{}", chain(&err));
}

#[tokio::test]
async fn a_server_that_never_answers_is_given_up_on() {
    // Accepts connections (the kernel's backlog does) but never replies.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = Instant::now();
    let err = RedisStore::connect(&format!("redis://127.0.0.1:{port}")).await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    assert!(took >= Duration::from_secs(4) && took < Duration::from_secs(9), "gave up after {took:?}");
    drop(silent);
}

#[tokio::test]
async fn acl_users_connect_and_wrong_passwords_stay_secret() {
    let redis = TestRedis::private();
    let raw = raw_client(redis.url()).await;
    cmd(&raw, &["ACL", "SETUSER", "rrq", "on", ">p4ss-word", "~*", "&*", "+@all"]).await;
    let url = format!("redis://rrq:p4ss-word@127.0.0.1:{}/0", redis.port());
    let store = RedisStore::connect(&url).await.expect("the ACL user connects");
    assert_eq!(store.queue_len(&rrq_protocol::QueueName::new("q")).await.unwrap(), 0);
    assert!(!format!("{store:?}").contains("p4ss-word"));

    let wrong = format!("redis://rrq:not-it@127.0.0.1:{}", redis.port());
    let err = RedisStore::connect(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. } | StoreError::Command { .. }), "{err:?}");
    assert!(!chain(&err).contains("not-it"), "{}", chain(&err));
}

/// The claim's conversion of a growing sorted set to a skiplist asks
/// `OBJECT ENCODING` and `ZCARD`: a Redis user allowed neither still
/// claims (the conversion is skipped, the claim is not refused).
#[tokio::test]
async fn a_user_not_allowed_object_or_zcard_still_claims() {
    let redis = TestRedis::private();
    let h = Harness::redis().await;
    let raw = raw_client(redis.url()).await;
    cmd(&raw, &["ACL", "SETUSER", "rrq", "on", ">p4ss-word", "~*", "&*", "+@all", "-object", "-zcard"]).await;
    let url = format!("redis://rrq:p4ss-word@127.0.0.1:{}/0", redis.port());
    let store = RedisStore::connect(&url).await.unwrap().with_defaults(h.defaults());
    let q = h.queue("q");
    for i in 0..40 {
        store.enqueue(h.new_job(&format!("j{i}"), &q), EnqueueMode::Standard).await.unwrap();
    }
    let worker = h.worker("w");
    let req = ClaimRequest {
        queue: q.clone(),
        worker_id: worker.clone(),
        max: 20,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    assert_eq!(store.claim(req.clone()).await.expect("a claim creating the sets").jobs.len(), 20);
    let later = ClaimRequest { now: h.now + chrono::TimeDelta::seconds(1), ..req };
    assert_eq!(store.claim(later).await.expect("a claim growing the sets").jobs.len(), 20);
    let active = keys::active(&worker);
    assert_eq!(text(&raw, &["OBJECT", "ENCODING", &active]).await.as_deref(), Some("listpack"), "not converted");
}

#[tokio::test]
async fn unusable_dsns_are_refused_before_connecting() {
    let mut dsns = vec!["redis-cluster://h:1?sentinelServiceName=s", "http://h", "no scheme"];
    if !cfg!(feature = "tls") {
        dsns.push("rediss://user:s3cret@h:6380");
    }
    for dsn in dsns {
        match RedisStore::connect(dsn).await {
            Err(StoreError::InvalidDsn { dsn: shown, reason }) => {
                assert!(!shown.contains("s3cret") && !reason.contains("s3cret"), "{shown} {reason}");
            }
            other => panic!("{dsn}: expected InvalidDsn, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_dangling_dlq_entry_is_cleaned_up_on_requeue() {
    let h = Harness::redis().await;
    let dlq = h.dlq("d");
    let ghost = h.id("ghost");
    cmd(h.raw(), &["LPUSH", dlq.as_str(), ghost.as_str()]).await;
    assert_eq!(h.store.dlq_ids(&dlq, 0, 10).await.unwrap(), vec![ghost.clone()]);
    assert!(!h.store.dlq_requeue(&dlq, &ghost, &h.queue("t"), h.now).await.unwrap());
    assert!(h.store.dlq_ids(&dlq, 0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_dlq_purge_keeps_a_job_that_is_no_longer_failed() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let dlq = h.dlq("d");
    let q = h.queue("q");
    // A pending job whose id also sits in the DLQ (re-enqueued under the same
    // id), and a dangling id whose hash is gone.
    let job = h.new_job("alive", &q);
    h.store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    cmd(raw, &["LPUSH", dlq.as_str(), job.id.as_str(), h.id("ghost").as_str()]).await;
    let ids = h.store.dlq_ids(&dlq, 0, 10).await.unwrap();
    assert_eq!(h.store.dlq_purge(&dlq, &ids).await.unwrap(), 2);
    assert_eq!(int(raw, &["EXISTS", dlq.as_str()]).await, 0);
    assert_eq!(hash(raw, &keys::job(&job.id)).await["status"], "PENDING", "the pending job is kept");
}

/// A purge of more ids than one script call removes them all, and a DLQ key
/// of another type is refused before anything is written.
#[tokio::test]
async fn a_large_dlq_purge_goes_in_chunks() {
    let h = Harness::redis().await;
    let raw = h.raw();
    let dlq = h.dlq("many");
    let ids: Vec<_> = (0..250).map(|i| h.id(&format!("m{i}"))).collect();
    for id in &ids {
        cmd(raw, &["HSET", &keys::job(id), "status", "FAILED"]).await;
        cmd(raw, &["LPUSH", dlq.as_str(), id.as_str()]).await;
    }
    let listed = h.store.dlq_ids(&dlq, 0, 1000).await.unwrap();
    assert_eq!(h.store.dlq_purge(&dlq, &listed).await.unwrap(), 250);
    assert_eq!(int(raw, &["EXISTS", dlq.as_str()]).await, 0);
    assert!(h.store.job_fields(&ids[0]).await.unwrap().is_none());
    let odd = h.dlq("odd");
    cmd(raw, &["SET", odd.as_str(), "x"]).await;
    assert!(h.store.dlq_purge(&odd, &listed[..1]).await.is_err());
}

/// A success that cannot be recorded (the server is gone) fails with an
/// error whose source is the client's cause, not the same message again: the
/// batched completion path keeps the cause chain.
#[tokio::test]
async fn a_failed_completion_keeps_the_cause_chain() {
    let mut redis = TestRedis::private();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    let h = Harness::memory().await; // only for names and jobs
    let q = h.queue("q");
    let mut job = h.new_job("a", &q);
    job.scheduled_time = Utc::now();
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    let req = ClaimRequest {
        queue: q,
        worker_id: h.worker("w"),
        max: 1,
        now: Utc::now(),
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let lease = store.claim(req).await.unwrap().jobs.remove(0).lease;
    redis.kill();
    let err = store.complete(&lease, &json!(1), Utc::now()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err:?}");
    let top = err.to_string();
    assert!(top.starts_with("redis is unreachable ("), "{top}");
    let source = std::error::Error::source(&err).expect("the cause is kept as the source");
    assert!(!source.to_string().contains("redis is unreachable"), "the source repeats the error: {}", chain(&err));
    assert!(!source.to_string().is_empty(), "{}", chain(&err));
}

/// An error and all its sources, for checking what a user would see.
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
