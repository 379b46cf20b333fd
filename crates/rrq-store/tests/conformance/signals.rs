//! Wake-ups: every change that gives a worker something to do reaches
//! `subscribe_ready`'s channel, whoever made it. Each test awaits the signal
//! itself (with a generous deadline), never a sleep.
//!
//! Both stores: a resumed queue, a DLQ requeue and a cancel of a running job.
//! Redis only: a job requeued by recovery after its lock really expired,
//! keyspace notifications (a raw `ZADD` as `redis-cli` or the
//! reference's Python client writes it, a deferred job, a backoff retry), the
//! subscription being live on return, the operator's
//! `notify-keyspace-events` flags being kept, the fallback when `CONFIG` is
//! refused, and the events stream's short life.

use std::time::Duration;

use fred::prelude::*;
use fred::types::{ClusterHash, CustomCommand};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{
    AttemptCount, EnqueueMode, EnqueueStore, Fence, InspectStore, ReadySignals, RedisStore, Signal, WorkerStore, keys,
};
use rrq_test_support::TestRedis;
use serde_json::json;
use tokio::sync::mpsc;

use crate::harness::{Harness, raw_client};

conformance!(
    shared:
        resuming_a_queue_signals_it,
        a_dlq_requeue_signals_the_target_queue,
        a_cancel_of_a_running_job_is_signalled_with_its_id,
        readiness_at_enqueue_follows_the_callers_clock;
    private: ;
    cluster:
        resuming_a_queue_signals_it,
        a_dlq_requeue_signals_the_target_queue,
        a_cancel_of_a_running_job_is_signalled_with_its_id,
        readiness_at_enqueue_follows_the_callers_clock,
);

/// The next signal that `wanted` accepts (other tests' signals are skipped).
async fn next_signal(rx: &mut mpsc::Receiver<Signal>, wanted: impl Fn(&Signal) -> bool) -> Signal {
    let wait = async {
        while let Some(signal) = rx.recv().await {
            if wanted(&signal) {
                return signal;
            }
        }
        panic!("the signal channel closed");
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the signal arrives")
}

async fn ready_for(rx: &mut mpsc::Receiver<Signal>, q: &QueueName) {
    next_signal(rx, |s| *s == Signal::Ready(q.clone())).await;
}

/// "Ready now" at enqueue is the enqueuing caller's decision, made with its
/// own clock (the job's `enqueue_time`), never the store reading a wall
/// clock of its own: a producer on a clock a year ahead enqueues a job that
/// is ready by that clock, singly and in a batch, and workers are woken.
async fn readiness_at_enqueue_follows_the_callers_clock(h: Harness) {
    let ahead = h.at(365.0 * 86_400.0);
    let mut rx = h.store.subscribe_ready().await.unwrap();
    let (q, batch) = (h.queue("ahead"), h.queue("ahead-batch"));
    let mut job = h.new_job("a", &q);
    (job.enqueue_time, job.scheduled_time) = (ahead, ahead);
    h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    ready_for(&mut rx, &q).await;
    let mut job = h.new_job("b", &batch);
    (job.enqueue_time, job.scheduled_time) = (ahead, ahead);
    h.store.enqueue_batch(vec![job]).await.unwrap().remove(0).unwrap();
    ready_for(&mut rx, &batch).await;
}

async fn resuming_a_queue_signals_it(h: Harness) {
    let q = h.queue("paused");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    assert!(h.store.pause(&q).await.unwrap());
    let mut rx = h.store.subscribe_ready().await.unwrap();
    // Resuming changes no queue: only an explicit signal wakes the workers.
    assert!(h.store.resume(&q).await.unwrap());
    ready_for(&mut rx, &q).await;
}

async fn a_dlq_requeue_signals_the_target_queue(h: Harness) {
    let (q, target) = (h.queue("q"), h.queue("target"));
    let d = h.defaults();
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    assert_eq!(h.store.dead_letter(&lease, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    let mut rx = h.store.subscribe_ready().await.unwrap();
    assert!(h.store.dlq_requeue(&d.dlq, &lease.job_id, &target, h.now).await.unwrap());
    ready_for(&mut rx, &target).await;
}

async fn a_cancel_of_a_running_job_is_signalled_with_its_id(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("running", &q), EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    let mut rx = h.store.subscribe_ready().await.unwrap();
    assert_eq!(h.store.cancel(&lease.job_id).await.unwrap(), rrq_store::CancelResult::CancelRequested);
    next_signal(&mut rx, |s| *s == Signal::Cancel(lease.job_id.clone())).await;
}

// ---- Redis only --------------------------------------------------------

async fn cmd(client: &Client, args: &[&str]) -> Value {
    let command = CustomCommand::new(args[0].to_owned(), ClusterHash::FirstKey, false);
    let rest: Vec<String> = args[1..].iter().map(|a| (*a).to_owned()).collect();
    client.custom(command, rest).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

async fn notify_flags(client: &Client) -> String {
    match cmd(client, &["CONFIG", "GET", "notify-keyspace-events"]).await {
        Value::Array(items) => items[1].as_string().unwrap(),
        Value::Map(map) => map.inner().into_values().next().unwrap().as_string().unwrap(),
        other => panic!("CONFIG GET answered {other:?}"),
    }
}

/// A store with keyspace notifications (the default) on `redis`.
async fn notified(redis: &TestRedis) -> RedisStore {
    RedisStore::connect(redis.url()).await.expect("connect")
}

fn unique(name: &str) -> String {
    format!("{name}-{}", uuid::Uuid::new_v4().simple())
}

/// A job written the way `redis-cli` (or the reference's Python client)
/// writes one: the hash and a `ZADD`, no `PUBLISH`.
async fn raw_enqueue(client: &Client, id: &str, queue: &QueueName, score_ms: i64) {
    cmd(client, &["HSET", &format!("{}{id}", keys::JOB_PREFIX), "id", id, "function_name", "f", "status", "PENDING"])
        .await;
    cmd(client, &["ZADD", queue.as_str(), &score_ms.to_string(), id]).await;
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raw_zadd_a_deferred_job_and_a_backoff_retry_each_wake_the_subscriber() {
    let redis = TestRedis::start();
    let store = notified(&redis).await;
    let raw = raw_client(redis.url()).await;
    let mut rx = store.subscribe_ready().await.unwrap();
    assert_eq!(store.ready_signals(), ReadySignals::Complete);

    // redis-cli style: nobody publishes, the keyspace event wakes the worker.
    let q = QueueName::new(&unique("raw"));
    raw_enqueue(&raw, &unique("j"), &q, now_ms()).await;
    ready_for(&mut rx, &q).await;

    // A deferred job signals too: the worker's claim then learns its due
    // time from the queue head and arms a timer.
    let deferred = QueueName::new(&unique("deferred"));
    raw_enqueue(&raw, &unique("later"), &deferred, now_ms() + 3_600_000).await;
    ready_for(&mut rx, &deferred).await;

    // A backoff retry (scheduled later, so the script publishes nothing).
    let h = Harness::memory().await; // names and jobs only
    let retried = h.queue("retried");
    let now = chrono::Utc::now();
    let mut job = h.new_job("r", &retried);
    (job.enqueue_time, job.scheduled_time) = (now, now);
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    let req = rrq_store::ClaimRequest {
        queue: retried.clone(),
        worker_id: h.worker("w"),
        max: 1,
        now,
        lease_ttl: Duration::from_secs(30),
        max_payload_bytes: usize::MAX,
    };
    let lease = store.claim(req).await.unwrap().jobs.remove(0).lease;
    ready_for(&mut rx, &retried).await; // the enqueue's
    let later = now + chrono::TimeDelta::seconds(60);
    assert_eq!(store.retry(&lease, "again", later, now).await.unwrap(), Fence::Applied);
    ready_for(&mut rx, &retried).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_requeued_by_recovery_wakes_the_subscriber() {
    let h = Harness::redis_private().await;
    let mut rx = h.store.subscribe_ready().await.unwrap();
    let q = h.queue("recovered");
    h.store.enqueue(h.new_job("orphan", &q), EnqueueMode::Standard).await.unwrap();
    let req = rrq_store::ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("dead"),
        max: 1,
        now: chrono::Utc::now(),
        lease_ttl: Duration::from_millis(50),
        max_payload_bytes: usize::MAX,
    };
    let lease = h.store.claim(req).await.unwrap().jobs.remove(0).lease;
    // A fence: signals arrive in server order on one connection, so once a
    // later queue's signal is read, every earlier signal of `q` (the
    // enqueue's, the claim's) has been read and skipped.
    let fence = h.queue("fence");
    h.store.enqueue(h.new_job("fence", &fence), EnqueueMode::Standard).await.unwrap();
    ready_for(&mut rx, &fence).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rec = h.store.recover(chrono::Utc::now(), 100).await.unwrap();
        if rec.requeued == vec![lease.job_id.clone()] {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the lock never expired");
        tokio::time::sleep(Duration::from_millis(10)).await; // sleep-ok: deadline poll until the lock expires
    }
    // A worker idling on the signal learns of the requeued job at once.
    ready_for(&mut rx, &q).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_subscription_is_live_when_subscribe_ready_returns() {
    let redis = TestRedis::private();
    let raw = raw_client(redis.url()).await;
    for n in 1..=10i64 {
        let store = notified(&redis).await;
        let rx = store.subscribe_ready().await.unwrap();
        // Counted by the server right after the call: no signal can be lost.
        let subs = cmd(&raw, &["PUBSUB", "NUMSUB", keys::READY_CHANNEL, keys::CANCEL_CHANNEL]).await;
        let counts: Vec<i64> = match subs {
            Value::Array(items) => items.iter().skip(1).step_by(2).map(|v| v.as_i64().unwrap()).collect(),
            Value::Map(map) => map.inner().into_values().map(|v| v.as_i64().unwrap()).collect(),
            other => panic!("PUBSUB NUMSUB answered {other:?}"),
        };
        assert_eq!(counts, [n, n], "store {n}: subscriptions counted by the server");
        // NUMPAT counts distinct patterns, not subscribers.
        assert_eq!(cmd(&raw, &["PUBSUB", "NUMPAT"]).await.as_i64(), Some(1));
        std::mem::forget(rx); // keep every subscription open for the count
        std::mem::forget(store);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_notification_flags_are_kept() {
    let redis = TestRedis::private();
    let raw = raw_client(redis.url()).await;
    cmd(&raw, &["CONFIG", "SET", "notify-keyspace-events", "Ex"]).await;
    let store = notified(&redis).await;
    let _rx = store.subscribe_ready().await.unwrap();
    let flags = notify_flags(&raw).await;
    for flag in ['E', 'x', 'K', 'z'] {
        assert!(flags.contains(flag), "{flag} missing from {flags:?}");
    }
    assert_eq!(store.ready_signals(), ReadySignals::Complete);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turned_off_notifications_leave_the_server_config_alone() {
    let redis = TestRedis::private();
    let raw = raw_client(redis.url()).await;
    let store = notified(&redis).await.with_keyspace_notifications(false);
    assert_eq!(store.ready_signals(), ReadySignals::NotSubscribed);
    let _rx = store.subscribe_ready().await.unwrap();
    assert_eq!(notify_flags(&raw).await, "");
    assert_eq!(cmd(&raw, &["PUBSUB", "NUMPAT"]).await.as_i64(), Some(0));
    assert!(
        matches!(store.ready_signals(), ReadySignals::Partial { ref reason } if reason.contains("keyspace_notifications = false")),
        "{:?}",
        store.ready_signals()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_config_the_store_reports_the_polling_fallback_and_still_signals_its_own_writes() {
    // A managed Redis that hides CONFIG.
    let redis = TestRedis::private_with_args(&["--rename-command", "CONFIG", "\"\""]);
    let store = notified(&redis).await;
    let mut rx = store.subscribe_ready().await.expect("the subscription opens without CONFIG");
    match store.ready_signals() {
        ReadySignals::Partial { reason } => {
            assert!(reason.contains("notify-keyspace-events"), "{reason}");
            assert!(reason.contains("keyspace_notifications"), "names the config key: {reason}");
            assert!(reason.contains("poll"), "names the fallback: {reason}");
        }
        other => panic!("expected the polling fallback, got {other:?}"),
    }
    let h = Harness::memory().await; // names and jobs only
    let q = h.queue("q");
    let mut job = h.new_job("a", &q);
    job.scheduled_time = chrono::Utc::now();
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    ready_for(&mut rx, &q).await;
}

/// MEMORY USAGE of a key (0 when it does not exist).
async fn memory(client: &Client, key: &str) -> i64 {
    cmd(client, &["MEMORY", "USAGE", key]).await.as_i64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_job_keeps_its_events_stream_only_briefly() {
    let redis = TestRedis::start();
    let raw = raw_client(redis.url()).await;
    let h = Harness::memory().await; // names and jobs only
    let q = h.queue("q");
    for (name, store, max_ttl_ms) in [
        ("default", notified(&redis).await, 60_000),
        ("short", notified(&redis).await.with_events_ttl(Duration::from_millis(300)), 300),
    ] {
        let now = chrono::Utc::now();
        let mut job = h.new_job(name, &q);
        (job.enqueue_time, job.scheduled_time) = (now, now);
        store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        let req = rrq_store::ClaimRequest {
            queue: q.clone(),
            worker_id: h.worker("w"),
            max: 1,
            now,
            lease_ttl: Duration::from_secs(30),
            max_payload_bytes: usize::MAX,
        };
        let lease = store.claim(req).await.unwrap().jobs.remove(0).lease;
        assert_eq!(store.complete(&lease, &json!({"ok": true}), now).await.unwrap(), Fence::Applied);
        let (job_key, events) = (keys::job(&lease.job_id), keys::events(&lease.job_id));
        let stream_ttl = cmd(&raw, &["PTTL", &events]).await.as_i64().unwrap();
        assert!(0 < stream_ttl && stream_ttl <= max_ttl_ms, "{name}: stream PTTL {stream_ttl}");
        let job_ttl = cmd(&raw, &["TTL", &job_key]).await.as_i64().unwrap();
        assert!(job_ttl > 86_000, "{name}: the result keeps its own TTL ({job_ttl})");
        if name == "short" {
            let stream_bytes = memory(&raw, &events).await;
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while memory(&raw, &events).await > 0 {
                assert!(std::time::Instant::now() < deadline, "the events stream never expired");
                tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline for a key expiry
            }
            let retained = memory(&raw, &job_key).await;
            println!("retained completed job: {retained} bytes (events stream was {stream_bytes} bytes)");
            assert!(retained <= 1024, "a retained completed job costs {retained} bytes");
            assert!(store.job(&JobId::new(lease.job_id.as_str())).await.unwrap().is_some());
        }
    }
}
