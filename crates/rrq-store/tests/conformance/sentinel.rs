//! Redis behind Sentinel (`redis-sentinel://`): every connection of the store
//! (commands, the blocking reads, the subscription) follows the master
//! through a failover, ACL users connect as with `redis://`, and
//! `confirm_replicated` (`WAIT`) confirms writes on the replica or fails
//! naming `min_replicas_acked`. Each test has a master, a replica and three
//! sentinels of its own (`TestSentinel`); nothing sleeps blindly.

use std::time::{Duration, Instant};

use rrq_protocol::JobId;
use rrq_store::{
    EnqueueMode, EnqueueStore, InspectStore, ReadySignals, RedisStore, Signal, StoreError, WorkerStore, keys,
};
use rrq_test_support::resp::{self, Reply};
use rrq_test_support::sentinel::TestSentinel;
use tokio::sync::mpsc;

use crate::harness::Harness;

/// How long a test waits for the store to find the new master.
const FAILOVER: Duration = Duration::from_secs(30);

/// Kills the master off the async runtime (the fixture waits by polling).
async fn fail_over(setup: TestSentinel) -> (TestSentinel, u16) {
    tokio::task::spawn_blocking(move || {
        let mut setup = setup;
        let promoted = setup.kill_master();
        (setup, promoted)
    })
    .await
    .expect("the failover thread")
}

/// Repeats `attempt` until it succeeds, retrying while the store reports the
/// server unreachable (the connection is moving to the new master).
async fn until_reconnected<T>(what: &str, mut attempt: impl AsyncFnMut() -> Result<T, StoreError>) -> T {
    let deadline = Instant::now() + FAILOVER;
    loop {
        match attempt().await {
            Ok(v) => return v,
            Err(StoreError::Unavailable { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: deadline poll for the reconnect
            }
            Err(e) => panic!("{what} after the failover: {e}"),
        }
    }
}

/// Sends with `send` until `rx` delivers a signal `wanted` accepts: a message
/// published before the subscription has moved to the new master is lost
/// by design (pub/sub is not stored), so the test repeats it.
async fn until_signalled(rx: &mut mpsc::Receiver<Signal>, wanted: &Signal, mut send: impl FnMut()) {
    let deadline = Instant::now() + FAILOVER;
    loop {
        send();
        let round = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(Some(signal)) = tokio::time::timeout_at(round, rx.recv()).await {
            if &signal == wanted {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no {wanted:?} within {FAILOVER:?} after the failover");
    }
}

fn hget(port: u16, id: &JobId, field: &str) -> Option<String> {
    resp::text(port, &["HGET", &keys::job(id), field]).unwrap_or_else(|e| panic!("HGET on {port}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_follows_the_master_through_a_failover() {
    let setup = TestSentinel::start();
    let [master, replica] = setup.data_ports()[..] else { panic!("a master and a replica") };
    let store = RedisStore::connect(&setup.dsn()).await.expect("connects through the sentinels");
    let h = Harness::memory().await; // only for names and jobs
    let (before, after, raw_queue) = (h.queue("before"), h.queue("after"), h.queue("raw"));

    let job = h.new_job("before", &before);
    store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    store.confirm_replicated(1, Duration::from_secs(5)).await.expect("the replica confirms the job");
    assert_eq!(hget(replica, &job.id, "status").as_deref(), Some("PENDING"), "WAIT returned: the replica has it");
    let mut rx = store.subscribe_ready().await.unwrap();
    assert_eq!(store.ready_signals(), ReadySignals::Complete);
    // Opens the blocking connections on the first master.
    assert_eq!(store.wait_job_event(&job.id, None, Duration::from_millis(10)).await.unwrap(), None);

    let (_setup, promoted) = fail_over(setup).await;
    assert_eq!(promoted, replica);

    // Commands and scripts: the job written before the failover is there,
    // and new ones are written to the new master.
    let again = h.new_job("after", &after);
    until_reconnected("an enqueue", async || store.enqueue(again.clone(), EnqueueMode::Standard).await).await;
    assert_eq!(hget(promoted, &again.id, "status").as_deref(), Some("PENDING"));
    assert_eq!(until_reconnected("a read", async || store.queue_len(&before).await).await, 1);
    // The blocking connections answer from the new master too.
    until_reconnected("a blocking read", async || store.wait_job_event(&job.id, None, Duration::from_millis(10)).await)
        .await;
    assert!(resp::call(master, &["PING"]).is_err(), "the old master is gone");

    // The subscription moved: RRQ's ready channel, keyspace notifications
    // (re-enabled on the new master, which never had them) and cancels.
    until_signalled(&mut rx, &Signal::Ready(after.clone()), || {
        let _ = resp::call(promoted, &["PUBLISH", keys::READY_CHANNEL, after.as_str()]);
    })
    .await;
    let mut n = 0;
    until_signalled(&mut rx, &Signal::Ready(raw_queue.clone()), || {
        // What redis-cli or the reference's Python client writes: no PUBLISH.
        n += 1;
        let reply = resp::call(promoted, &["ZADD", raw_queue.as_str(), "1", &format!("raw-{n}")]);
        assert!(matches!(reply, Ok(Reply::Int(1))), "ZADD on the new master: {reply:?}");
    })
    .await;
    let cancelled = h.id("cancel-me");
    until_signalled(&mut rx, &Signal::Cancel(cancelled.clone()), || {
        let _ = resp::call(promoted, &["PUBLISH", keys::CANCEL_CHANNEL, cancelled.as_str()]);
    })
    .await;
    let flags = resp::call(promoted, &["CONFIG", "GET", "notify-keyspace-events"]).unwrap();
    let flags = flags.items().get(1).and_then(Reply::text).unwrap_or_default().to_owned();
    assert!(flags.contains('K') && (flags.contains('z') || flags.contains('A')), "flags on the new master: {flags}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acl_users_connect_through_sentinel_and_passwords_stay_secret() {
    let setup = TestSentinel::start();
    // ACLs are not replicated: the user exists on both data nodes, not on
    // the sentinels (which the DSN's credentials must not be sent to).
    for port in setup.data_ports() {
        let reply = resp::call(port, &["ACL", "SETUSER", "rrq", "on", ">p4ss-word", "~*", "&*", "+@all"]).unwrap();
        assert_eq!(reply, Reply::Status("OK".into()));
    }
    let dsn = setup.dsn().replacen("://", "://rrq:p4ss-word@", 1);
    let store = RedisStore::connect(&dsn).await.expect("the ACL user connects through the sentinels");
    assert!(!format!("{store:?}").contains("p4ss-word"));
    let h = Harness::memory().await;
    let q = h.queue("acl");
    let job = h.new_job("acl", &q);
    store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    assert_eq!(hget(setup.master_port(), &job.id, "status").as_deref(), Some("PENDING"));
    let _ = store.subscribe_ready().await.expect("the subscriber authenticates too");

    let wrong = setup.dsn().replacen("://", "://rrq:not-it@", 1);
    let err = RedisStore::connect(&wrong).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. } | StoreError::Command { .. }), "{err:?}");
    let chain = chain(&err);
    assert!(!chain.contains("not-it") && chain.contains("rrq:***@"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirm_replicated_fails_naming_the_setting_when_too_few_replicas_answer() {
    let setup = TestSentinel::start();
    let store = RedisStore::connect(&setup.dsn()).await.unwrap();
    let h = Harness::memory().await;
    let q = h.queue("waited");
    let job = h.new_job("waited", &q);
    store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    store.confirm_replicated(0, Duration::from_millis(1)).await.expect("0 is off");
    store.confirm_replicated(1, Duration::from_secs(5)).await.expect("the one replica confirms");

    let started = Instant::now();
    let err = store.confirm_replicated(2, Duration::from_millis(300)).await.unwrap_err();
    let took = started.elapsed();
    assert!(
        matches!(err, StoreError::NotReplicated { wanted: 2, acked: 1, timeout } if timeout == Duration::from_millis(300)),
        "{err:?}"
    );
    assert!(took >= Duration::from_millis(300), "WAIT waited its timeout, took {took:?}");
    let message = err.to_string();
    assert!(
        message.contains("only 1 of the 2 replicas") && message.contains("`[rrq] min_replicas_acked`"),
        "{message}"
    );
    // The store carries on after a WAIT that timed out.
    store.enqueue(h.new_job("later", &q), EnqueueMode::Standard).await.unwrap();
}

#[tokio::test]
async fn a_cluster_dsn_with_sentinel_parameters_or_a_bad_shard_count_is_refused_before_connecting() {
    let err = RedisStore::connect("redis-cluster://127.0.0.1:7000?sentinelServiceName=x").await.unwrap_err();
    let StoreError::InvalidDsn { reason, .. } = &err else { panic!("{err:?}") };
    assert!(reason.contains("`sentinelServiceName` is only read with the redis-sentinel://"), "{reason}");
    let options = rrq_store::ConnectOptions::default().with_queue_shards(0);
    let err = RedisStore::connect_with("redis-cluster://127.0.0.1:7000", options).await.unwrap_err();
    assert!(matches!(&err, StoreError::InvalidInput { what: "queue_shards", .. }), "{err:?}");
}

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
