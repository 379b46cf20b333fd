//! The store on a Redis Cluster (`redis-cluster://`, the sharded layout):
//! what only a cluster shows. The shared behaviour runs through the
//! `cluster:` lists of the other modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rrq_protocol::{JobId, QueueName};
use rrq_store::keys::{DEFAULT_QUEUE_SHARDS, Layout, Shard};
use rrq_store::{
    AdminStore, ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence, InspectStore, JobStatus, RedisStore,
    StoreError, WorkerStore,
};
use rrq_test_support::cluster::{Role, TestCluster};
use rrq_test_support::resp::{self, Reply};
use serde_json::json;

use crate::harness::{Harness, LEASE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_enqueue_gets_an_id_of_the_keys_shard_and_a_misfit_id_is_refused() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let mode = EnqueueMode::Idempotent { key: h.worker("order-7"), ttl: Duration::from_secs(60) };
    let layout = h.layout();
    let key_shard = layout.idempotency_shard(&h.worker("order-7"));

    let misfit = (0..).map(|n| h.id(&format!("x{n}"))).find(|id| layout.shard_of(id) != key_shard).unwrap();
    let mut job = h.new_job("unused", &q);
    job.id = misfit.clone();
    let err = h.store.enqueue(job.clone(), mode.clone()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::InvalidInput { what: "job id", reason } if reason.contains("leave the id out")),
        "{err:?}"
    );
    assert!(h.store.job(&misfit).await.unwrap().is_none(), "a refused enqueue writes nothing");

    let first = h.store.new_job_id(&mode);
    assert_eq!(layout.shard_of(&first), key_shard);
    job.id = first.clone();
    assert_eq!(h.store.enqueue(job.clone(), mode.clone()).await.unwrap(), Enqueued::Created(first.clone()));
    job.id = h.store.new_job_id(&mode);
    assert_ne!(job.id, first);
    assert_eq!(h.store.enqueue(job, mode).await.unwrap(), Enqueued::Existing(first.clone()));
    let batch = h.claim(&q, &h.worker("w"), 10, h.now).await;
    let ids: Vec<JobId> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(ids, vec![first]);
    // A standard enqueue takes any id.
    assert!(h.store.new_job_id(&EnqueueMode::Standard).as_str().len() >= 32);
}

/// Job hashes (`rrq:{TAG}:job:*`) on each master of `cluster`.
fn job_keys_per_master(cluster: &TestCluster) -> Vec<usize> {
    let count = "return #redis.call('KEYS', ARGV[1])";
    cluster
        .masters()
        .iter()
        .map(|m| match resp::call(m.port, &["EVAL", count, "0", "rrq:{*}:job:*"]) {
            Ok(Reply::Int(n)) => usize::try_from(n).unwrap(),
            other => panic!("counting job keys on {}: {other:?}", m.addr()),
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_drained_by_two_stores_complete_exactly_once_spread_over_every_master() {
    const JOBS: usize = 3_000;
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let producer = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let q = QueueName::new("drain");
    let h = Harness::memory().await;
    let now = chrono::Utc::now();
    let jobs: Vec<_> = (0..JOBS)
        .map(|_| {
            let mut job = h.new_job("x", &q);
            job.id = JobId::new(uuid::Uuid::new_v4().to_string());
            (job.enqueue_time, job.scheduled_time) = (now, now);
            job
        })
        .collect();
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
    for result in producer.enqueue_batch(jobs).await.unwrap() {
        assert!(matches!(result, Ok(Enqueued::Created(_))), "{result:?}");
    }
    let per_master = job_keys_per_master(&cluster);
    assert_eq!(per_master.iter().sum::<usize>(), JOBS, "{per_master:?}");
    assert!(per_master.iter().all(|n| n * 5 >= JOBS), "job hashes per master: {per_master:?}");

    let runs: Arc<Mutex<HashMap<JobId, usize>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut workers = Vec::new();
    for w in 0..2 {
        let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
        let (runs, q) = (runs.clone(), q.clone());
        workers.push(tokio::spawn(async move {
            let worker = format!("w{w}");
            loop {
                if runs.lock().unwrap().len() == JOBS {
                    return;
                }
                assert!(Instant::now() < deadline, "the drain did not finish in time");
                let req = ClaimRequest {
                    queue: q.clone(),
                    worker_id: worker.clone(),
                    max: 25,
                    now: chrono::Utc::now(),
                    lease_ttl: LEASE,
                    max_payload_bytes: usize::MAX,
                };
                let batch = store.claim(req).await.unwrap();
                if batch.jobs.is_empty() {
                    tokio::task::yield_now().await;
                    continue;
                }
                let result = json!("ok");
                let done = batch.jobs.iter().map(|c| store.complete(&c.lease, &result, chrono::Utc::now()));
                for (claimed, fence) in batch.jobs.iter().zip(futures::future::join_all(done).await) {
                    assert_eq!(fence.unwrap(), Fence::Applied);
                    *runs.lock().unwrap().entry(claimed.lease.job_id.clone()).or_default() += 1;
                }
            }
        }));
    }
    for worker in workers {
        worker.await.unwrap();
    }
    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), JOBS);
    assert!(runs.values().all(|n| *n == 1), "some job ran twice");
    for id in &ids {
        let job = producer.job(id).await.unwrap().expect("job exists").expect("job parses");
        assert_eq!(job.status, Some(JobStatus::Completed), "{id}");
    }
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    for shard in layout.shards() {
        let remaining: i64 = resp_int(&cluster, &["ZCARD", &layout.queue(&q, shard)]);
        assert_eq!(remaining, 0, "shard {} still holds jobs", shard.index());
    }
}

/// An integer reply of a one-key command, asked of the master of its slot.
fn resp_int(cluster: &TestCluster, args: &[&str]) -> i64 {
    let master = cluster.master_for_slot(cluster.slot_of(args[1]));
    match resp::call(master.port, args) {
        Ok(Reply::Int(n)) => n,
        other => panic!("{args:?}: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_renewal_over_many_shards_answers_each_lease() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    for n in 0..20 {
        h.store.enqueue(h.new_job(&format!("j{n}"), &q), EnqueueMode::Standard).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), 20, h.now).await;
    assert_eq!(batch.jobs.len(), 20);
    let mut leases: Vec<_> = batch.jobs.iter().map(|c| c.lease.clone()).collect();
    let shards: std::collections::BTreeSet<_> = leases.iter().map(|l| h.layout().shard_of(&l.job_id)).collect();
    assert!(shards.len() > 1, "the jobs should span shards");
    // One lease made stale: its answer must be its own.
    leases[7].token = "not-the-token".into();
    let states = h.store.renew(&leases, LEASE).await.unwrap();
    for (i, state) in states.iter().enumerate() {
        let want = if i == 7 { rrq_store::LeaseState::Lost } else { rrq_store::LeaseState::Held };
        assert_eq!(*state, want, "lease {i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_lands_on_the_jobs_shard_of_its_dlq() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    let counted = rrq_store::AttemptCount::Counted;
    assert_eq!(h.store.dead_letter(&lease, "bad", counted, h.now).await.unwrap(), Fence::Applied);
    // A re-sent write is acknowledged and not applied twice.
    assert_eq!(h.store.dead_letter(&lease, "bad", counted, h.now).await.unwrap(), Fence::Applied);
    let job = h.job(&lease.job_id).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    assert_eq!(job.current_retries, 1);
    assert_eq!(job.last_error.as_deref(), Some("bad"));
    let dlq = h.defaults().dlq;
    assert_eq!(h.store.dlq_len(&dlq).await.unwrap(), 1);
    let key = h.layout().dlq(&dlq, h.layout().shard_of(&lease.job_id));
    let listed: Vec<String> = fred::prelude::ListInterface::lrange(h.raw(), key, 0, -1).await.unwrap();
    assert_eq!(listed, vec![lease.job_id.as_str().to_owned()]);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successive_claims_start_at_successive_shards() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let layout = h.layout().clone();
    let shards = usize::from(layout.shard_count());
    // Two jobs on every shard: a claim of one job takes it from the shard
    // it starts at, so a claim that always started at the same shard would
    // take both of that shard's jobs before any other's.
    let mut per_shard = vec![0; shards];
    for n in 0.. {
        let id = h.id(&format!("j{n}"));
        let shard = usize::from(layout.shard_of(&id).index());
        if per_shard[shard] < 2 {
            per_shard[shard] += 1;
            let mut job = h.new_job("x", &q);
            job.id = id;
            h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        }
        if per_shard.iter().all(|n| *n == 2) {
            break;
        }
    }
    let mut taken = std::collections::BTreeSet::new();
    for _ in 0..shards {
        let batch = h.claim(&q, &h.worker("w"), 1, h.now).await;
        assert_eq!(batch.jobs.len(), 1);
        taken.insert(layout.shard_of(&batch.jobs[0].lease.job_id));
    }
    assert_eq!(taken.len(), shards, "one claim per shard, each from another shard");
    assert_eq!(h.store.queue_len(&q).await.unwrap(), u64::try_from(shards).unwrap());
}

/// Calls of `command` (lower case; those scripts make included) served by
/// every master of `cluster` so far.
fn calls(cluster: &TestCluster, command: &str) -> u64 {
    let prefix = format!("cmdstat_{command}:calls=");
    cluster
        .masters()
        .iter()
        .map(|m| match resp::call(m.port, &["INFO", "commandstats"]) {
            Ok(Reply::Bulk(Some(info))) => info
                .lines()
                .find_map(|l| l.strip_prefix(prefix.as_str()))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse::<u64>().unwrap()),
            other => panic!("INFO on {}: {other:?}", m.addr()),
        })
        .sum()
}

/// `EVALSHA` calls served by every master of `cluster` so far.
fn script_calls(cluster: &TestCluster) -> u64 {
    calls(cluster, "evalsha")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_runs_the_claim_script_only_on_shards_with_a_due_job() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap().with_keyspace_notifications(false);
    let h = Harness::memory().await;
    let q = h.queue("q");
    let now = chrono::Utc::now();
    let claim = |max| ClaimRequest {
        queue: q.clone(),
        worker_id: "w".into(),
        max,
        now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let job = |name: &str, at| {
        let mut job = h.new_job(name, &q);
        (job.enqueue_time, job.scheduled_time) = (now, at);
        job
    };
    // Loads the scripts on every master.
    store.enqueue(job("warm", now), EnqueueMode::Standard).await.unwrap();
    assert_eq!(store.claim(claim(10)).await.unwrap().jobs.len(), 1);

    let before = script_calls(&cluster);
    let idle = store.claim(claim(10)).await.unwrap();
    assert!(idle.jobs.is_empty() && idle.next_ready.is_none());
    assert_eq!(script_calls(&cluster) - before, 0, "no script runs for an empty queue");

    let later = now + chrono::TimeDelta::seconds(60);
    store.enqueue(job("due", now), EnqueueMode::Standard).await.unwrap();
    store.enqueue(job("later", later), EnqueueMode::Standard).await.unwrap();
    let before = script_calls(&cluster);
    let batch = store.claim(claim(10)).await.unwrap();
    let claims = script_calls(&cluster) - before;
    assert_eq!(batch.jobs.len(), 1);
    assert_eq!(batch.jobs[0].lease.job_id, h.id("due"));
    assert_eq!(batch.next_ready.map(|t| t.timestamp_millis()), Some(later.timestamp_millis()));
    assert_eq!(claims, 1, "one claim call, on the due job's shard");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_channel_is_subscribed_on_its_master_and_keyspace_notifications_stay_off() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let _rx = store.subscribe_ready().await.unwrap();
    assert_eq!(store.ready_signals(), rrq_store::ReadySignals::Complete);
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let mut subscribed = 0;
    for master in cluster.masters() {
        match resp::call(master.port, &["CONFIG", "GET", "notify-keyspace-events"]) {
            Ok(Reply::Array(Some(items))) => {
                assert_eq!(items.get(1), Some(&Reply::Bulk(Some(String::new()))), "{}", master.addr())
            }
            other => panic!("CONFIG GET on {}: {other:?}", master.addr()),
        }
        match resp::call(master.port, &["PUBSUB", "SHARDCHANNELS", "rrq:{*}:ready"]) {
            Ok(Reply::Array(Some(items))) => subscribed += items.len(),
            other => panic!("PUBSUB SHARDCHANNELS on {}: {other:?}", master.addr()),
        }
    }
    assert_eq!(subscribed, layout.shards().count(), "each shard's channel, on the master of its slot");
}

/// What a woken worker asks of the masters: with the shard channels
/// subscribed, a claim after a job came to one shard runs the claim script
/// on that shard alone, with no head read of the other shards (while the
/// store's picture of the heads is fresh: `FRESH_FOR`, 1 s, `heads.rs`).
/// An empty answer is never the picture's alone: a job added without a
/// message (here a raw `ZADD`; in life, one whose message is still on its
/// way) is found by the empty claim, which reads every head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_woken_for_one_shard_asks_only_that_shard() {
    const FRESH_FOR: Duration = Duration::from_secs(1);
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let mut rx = store.subscribe_ready().await.unwrap();
    let h = Harness::memory().await;
    let q = h.queue("q");
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let claim = || ClaimRequest {
        queue: q.clone(),
        worker_id: "w".into(),
        max: 10,
        now: chrono::Utc::now(),
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let job = |name: &str| {
        let mut job = h.new_job(name, &q);
        (job.enqueue_time, job.scheduled_time) = (chrono::Utc::now(), chrono::Utc::now());
        job
    };
    // Loads the scripts on every master.
    store.enqueue(job("warm"), EnqueueMode::Standard).await.unwrap();
    assert_eq!(store.claim(claim()).await.unwrap().jobs.len(), 1);

    // Timing decides only which claim reads the heads: a try where the
    // steps took longer than FRESH_FOR (a loaded machine) proves nothing
    // and is made again.
    for attempt in 0.. {
        assert!(attempt < 10, "no try finished inside {FRESH_FOR:?}");
        // An empty claim: every head read, the picture fresh from here.
        let began = Instant::now();
        assert!(store.claim(claim()).await.unwrap().jobs.is_empty());

        let name = format!("woken-{attempt}");
        store.enqueue(job(&name), EnqueueMode::Standard).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while rx.recv().await != Some(rrq_store::Signal::Ready(q.clone())) {}
        })
        .await
        .expect("the enqueue is signalled");
        let (reads, scripts) = (calls(&cluster, "zrange"), script_calls(&cluster));
        let batch = store.claim(claim()).await.unwrap();
        let (woken_reads, woken_scripts) = (calls(&cluster, "zrange") - reads, script_calls(&cluster) - scripts);
        assert_eq!(batch.jobs.len(), 1);
        assert_eq!(batch.jobs[0].lease.job_id, h.id(&name));

        // An entry no message announced, on a shard the picture holds empty.
        let silent = h.id(&format!("silent-{attempt}"));
        let key = layout.queue(&q, layout.shard_of(&silent));
        let master = cluster.master_for_slot(cluster.slot_of(&key));
        let zadd = resp::call(master.port, &["ZADD", &key, "1", silent.as_str()]);
        assert_eq!(zadd.unwrap(), Reply::Int(1), "ZADD on {}", master.addr());
        let woken_in_time = began.elapsed() < FRESH_FOR;
        // The entry has no job hash: a claim drops it, which shows it was
        // seen. Empty claims rest on the picture only for a moment after a
        // read of every head (250 ms), then read every head again.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let found = store.claim(claim()).await.unwrap();
            if found.dropped == vec![silent.clone()] {
                break;
            }
            assert!(found.dropped.is_empty() && found.jobs.is_empty(), "{found:?}");
            assert!(Instant::now() < deadline, "no empty claim read every head");
            tokio::time::sleep(Duration::from_millis(20)).await; // sleep-ok: polling with a deadline
        }
        if !woken_in_time {
            continue;
        }
        // The one ZRANGE is the claim script's own look at the shard's new head.
        assert_eq!((woken_scripts, woken_reads), (1, 1), "the woken claim asks the job's shard alone");
        break;
    }
}

/// A worker in burst mode stops at its first empty claim: a job this
/// process put back (a retry due now) must be seen by the very next claim,
/// not only once its message has come back from the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn this_process_s_own_retry_is_seen_by_its_next_claim() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    // Each claim at its own instant: a claim's token is its time, and a
    // second claim under the same token hands out what the first took.
    let mut ms = 0;
    let mut at = || {
        ms += 1;
        h.now + chrono::TimeDelta::milliseconds(ms)
    };
    for round in 0..20 {
        h.store.enqueue(h.new_job(&format!("j{round}"), &q), EnqueueMode::Standard).await.unwrap();
        let lease = h.claim(&q, &h.worker("w"), 10, at()).await.jobs.remove(0).lease;
        // The picture is fresh: this claim found the shard empty after it.
        assert!(h.claim(&q, &h.worker("w"), 10, at()).await.jobs.is_empty());
        let now = at();
        assert_eq!(h.store.retry(&lease, "again", now, now).await.unwrap(), Fence::Applied);
        let again = h.claim(&q, &h.worker("w"), 10, at()).await;
        assert_eq!(again.jobs.len(), 1, "round {round}: the retry is claimed at once");
        let done = again.jobs[0].lease.clone();
        assert_eq!(h.store.complete(&done, &json!(null), at()).await.unwrap(), Fence::Applied);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_job_is_signalled_on_a_cluster_so_its_time_is_known_at_once() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let mut rx = store.subscribe_ready().await.unwrap();
    let h = Harness::memory().await;
    let q = h.queue("q");
    let claim = |now| ClaimRequest {
        queue: q.clone(),
        worker_id: "w".into(),
        max: 10,
        now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let now = chrono::Utc::now();
    assert!(store.claim(claim(now)).await.unwrap().next_ready.is_none());
    let later = now + chrono::TimeDelta::seconds(30);
    let mut job = h.new_job("later", &q);
    (job.enqueue_time, job.scheduled_time) = (now, later);
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while rx.recv().await != Some(rrq_store::Signal::Ready(q.clone())) {}
    })
    .await
    .expect("the deferred enqueue is signalled");
    // Whether or not the picture is still fresh, the claim learns the time.
    let batch = store.claim(claim(now)).await.unwrap();
    assert!(batch.jobs.is_empty());
    assert_eq!(batch.next_ready.map(|t| t.timestamp_millis()), Some(later.timestamp_millis()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_wait_covers_every_master_that_took_a_write() {
    let mut cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let h = Harness::memory().await;
    let q = h.queue("q");
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    // One job on a shard of each master: every replica confirms.
    let masters = cluster.masters();
    for (n, master) in masters.iter().enumerate() {
        let mut job = h.new_job("x", &q);
        job.id = (0..)
            .map(|i| JobId::new(format!("m{n}-{i}")))
            .find(|id| master.serves(cluster.slot_of(&layout.job(id))))
            .unwrap();
        store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    store.confirm_replicated(1, Duration::from_secs(5)).await.unwrap();

    // The replica of one master dies; a job written to that master alone
    // cannot be confirmed, whichever master a single `WAIT` would reach.
    let victim = &masters[1];
    let replica = cluster
        .nodes()
        .into_iter()
        .find(|n| matches!(&n.role, rrq_test_support::cluster::Role::Replica { master_id } if *master_id == victim.id))
        .unwrap();
    cluster.kill(replica.port);
    let mut job = h.new_job("y", &q);
    job.id =
        (0..).map(|i| JobId::new(format!("v-{i}"))).find(|id| victim.serves(cluster.slot_of(&layout.job(id)))).unwrap();
    store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    for _ in 0..3 {
        match store.confirm_replicated(1, Duration::from_millis(200)).await {
            Err(StoreError::NotReplicated { wanted: 1, acked: 0, .. }) => {}
            other => panic!("expected NotReplicated with 0 acks, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_taken_from_one_shard_are_returned_when_a_later_shard_fails() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let worker = h.worker("w");
    let layout = h.layout().clone();
    let ids: Vec<JobId> = (0..).map(|n| h.id(&format!("j{n}"))).take(200).collect();
    // The store's first claim visits the shards in order: a job on a low
    // shard, and one on a higher shard whose claim fails (the worker's
    // active set there is a string, so the script's SADD is refused).
    let low = ids.iter().min_by_key(|id| layout.shard_of(id)).unwrap().clone();
    let high = ids.iter().max_by_key(|id| layout.shard_of(id)).unwrap().clone();
    assert!(layout.shard_of(&low) < layout.shard_of(&high));
    for id in [&low, &high] {
        let mut job = h.new_job("x", &q);
        job.id = id.clone();
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    let broken = layout.active(&worker, layout.shard_of(&high));
    let _: () = fred::prelude::KeysInterface::set(h.raw(), broken, "not a set", None, None, false).await.unwrap();

    let batch = h.claim(&q, &worker, 10, h.now).await;
    let taken: Vec<JobId> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(taken, vec![low.clone()]);
    assert_eq!(h.job(&low).await.status, Some(JobStatus::Active));
}

/// Ids of this test on `shard`, `n` of them.
fn ids_on_shard(h: &Harness, shard: Shard, n: usize) -> Vec<JobId> {
    (0..).map(|i| h.id(&format!("s{i}"))).filter(|id| h.layout().shard_of(id) == shard).take(n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueues_and_claims_follow_their_slot_to_another_master() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let probe = h.id("probe");
    let shard = h.layout().shard_of(&probe);
    let ids = ids_on_shard(&h, shard, 4);
    let slot = h.test_cluster().slot_of(&h.layout().job(&probe));
    let source = h.test_cluster().master_for_slot(slot);
    let target = h.test_cluster().masters().into_iter().find(|m| m.port != source.port).unwrap();
    let enqueue = |id: &JobId| {
        let mut job = h.new_job("unused", &q);
        job.id = id.clone();
        h.store.enqueue(job, EnqueueMode::Standard)
    };
    // The shard's queue exists on the source before the migration starts.
    assert_eq!(enqueue(&ids[0]).await.unwrap(), Enqueued::Created(ids[0].clone()));

    // The slot moves to another master after the store learnt the layout.
    tokio::task::block_in_place(|| h.test_cluster().migrate_slots(slot..=slot, target.port));
    assert_eq!(enqueue(&ids[1]).await.unwrap(), Enqueued::Created(ids[1].clone()), "an enqueue after a move");
    assert_eq!(h.test_cluster().master_for_slot(slot).port, target.port);

    // Moved back while the store still routes the slot to the target:
    // enqueues (one alone, one in a batch) and a claim follow `MOVED`.
    tokio::task::block_in_place(|| h.test_cluster().migrate_slots(slot..=slot, source.port));
    assert_eq!(enqueue(&ids[2]).await.unwrap(), Enqueued::Created(ids[2].clone()));
    tokio::task::block_in_place(|| h.test_cluster().migrate_slots(slot..=slot, target.port));
    let mut job = h.new_job("unused", &q);
    job.id = ids[3].clone();
    let batch = h.store.enqueue_batch(vec![job]).await.unwrap();
    assert_eq!(batch.len(), 1);
    assert_eq!(batch.into_iter().next().unwrap().unwrap(), Enqueued::Created(ids[3].clone()));
    tokio::task::block_in_place(|| h.test_cluster().migrate_slots(slot..=slot, source.port));
    let claimed = h.claim(&q, &h.worker("w"), 10, h.now).await;
    let mut got: Vec<JobId> = claimed.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every job enqueued around the migrations is claimed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_marks_its_call_and_another_call_under_its_id_is_refused() {
    // What makes a client's second send of an enqueue (after a redirection
    // or a lost reply) safe: the script knows the mark of its own call;
    // a new call, even identical in every field, has another mark.
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let job = h.new_job("twice", &q);
    assert_eq!(h.store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap(), Enqueued::Created(job.id.clone()));
    let fields = h.store.job_fields(&job.id).await.unwrap().unwrap();
    let mark = fields.get("enqueue_call").cloned().expect("a cluster enqueue marks its call");
    assert_eq!(mark.len(), 32, "{mark}");
    // (A second run of the same call, with this mark, answers "created":
    // `redis::scripts::resend` in the crate's unit tests.)
    // Another call under the same id (identical in every other field) is refused.
    assert!(h.store.enqueue(job.clone(), EnqueueMode::Standard).await.is_err(), "another enqueue under a taken id");
    let batch = h.store.enqueue_batch(vec![job.clone()]).await.unwrap();
    assert!(batch.into_iter().next().unwrap().is_err(), "another enqueue under a taken id, in a batch");
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);
}

/// Keys matching `pattern` on each master of `cluster`.
fn keys_per_master(cluster: &TestCluster, pattern: &str) -> Vec<usize> {
    let count = "return #redis.call('KEYS', ARGV[1])";
    cluster
        .masters()
        .iter()
        .map(|m| match resp::call(m.port, &["EVAL", count, "0", pattern]) {
            Ok(Reply::Int(n)) => usize::try_from(n).unwrap(),
            other => panic!("counting {pattern} on {}: {other:?}", m.addr()),
        })
        .collect()
}

/// Inspection and administration see every shard on every master: jobs on
/// all 64 shards (so on all three masters) are listed once per queue, paged
/// in one order without gaps or repeats, purged from the DLQ and deleted by
/// pattern, each call staying within one slot per script or `DEL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspection_and_administration_see_every_shard_on_every_master() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap().with_keyspace_notifications(false);
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let shards = usize::from(layout.shard_count());
    let h = Harness::memory().await;
    let (wide, narrow, doomed) = (QueueName::new("wide"), QueueName::new("narrow"), QueueName::new("doomed"));
    let now = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap();
    let job = |id: &JobId, q: &QueueName, at| {
        let mut job = h.new_job("x", q);
        (job.id, job.enqueue_time, job.scheduled_time) = (id.clone(), now, at);
        job
    };

    // Three jobs of `wide` and two of `doomed` on every shard; `wide`'s
    // ready times repeat (ties across shards), and some are in the future.
    let (mut wide_ids, mut doomed_ids) = (Vec::new(), Vec::new());
    let (mut on_wide, mut on_doomed) = (vec![0; shards], vec![0; shards]);
    for n in 0.. {
        let id = JobId::new(format!("job-{n}"));
        let shard = usize::from(layout.shard_of(&id).index());
        if on_wide[shard] < 3 {
            on_wide[shard] += 1;
            let at = now + chrono::TimeDelta::seconds(n % 50 - 10);
            store.enqueue(job(&id, &wide, at), EnqueueMode::Standard).await.unwrap();
            wide_ids.push((id, at));
        } else if on_doomed[shard] < 2 {
            on_doomed[shard] += 1;
            store.enqueue(job(&id, &doomed, now), EnqueueMode::Standard).await.unwrap();
            doomed_ids.push(id);
        }
        if on_wide.iter().all(|n| *n == 3) && on_doomed.iter().all(|n| *n == 2) {
            break;
        }
    }
    let lone = JobId::new("lone");
    store.enqueue(job(&lone, &narrow, now), EnqueueMode::Standard).await.unwrap();
    let total = wide_ids.len() + doomed_ids.len() + 1;
    let per_master = keys_per_master(&cluster, "rrq:{*}:job:*");
    assert_eq!(per_master.iter().sum::<usize>(), total);
    assert!(per_master.iter().all(|n| *n > 0), "every master holds jobs: {per_master:?}");

    // Every job of `doomed` dead-lettered.
    let req = ClaimRequest {
        queue: doomed.clone(),
        worker_id: "w".into(),
        max: doomed_ids.len() + 10,
        now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    };
    let batch = store.claim(req).await.unwrap();
    assert_eq!(batch.jobs.len(), doomed_ids.len());
    for claimed in &batch.jobs {
        let counted = rrq_store::AttemptCount::Counted;
        assert_eq!(store.dead_letter(&claimed.lease, "boom", counted, now).await.unwrap(), Fence::Applied);
    }

    // One row per logical queue, its length and span over every shard.
    let queues = store.queues().await.unwrap();
    let names: Vec<&str> = queues.iter().map(|i| i.queue.as_str()).collect();
    assert_eq!(names, ["rrq:queue:narrow", "rrq:queue:wide"], "sorted, each once, the emptied one left out");
    let (earliest, latest) = (wide_ids.iter().map(|j| j.1).min(), wide_ids.iter().map(|j| j.1).max());
    assert_eq!((queues[1].len, queues[1].oldest, queues[1].newest), (wide_ids.len() as u64, earliest, latest));
    assert_eq!((queues[0].len, queues[0].oldest, queues[0].newest), (1, Some(now), Some(now)));

    // Entries by ready time, ties by id, whatever shard they are on; pages
    // add up to the whole.
    let mut expected = wide_ids.clone();
    expected.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.as_str().cmp(b.0.as_str())));
    assert_eq!(store.queue_entries(&wide, 0, usize::MAX).await.unwrap(), expected);
    let mut paged = Vec::new();
    for page in 0.. {
        let entries = store.queue_entries(&wide, page * 25, 25).await.unwrap();
        if entries.is_empty() {
            break;
        }
        paged.extend(entries);
    }
    assert_eq!(paged, expected, "pages of 25 add up to the whole, in order");
    assert_eq!(store.queue_entries(&wide, expected.len() - 3, 10).await.unwrap(), expected[expected.len() - 3..]);

    // Job ids from every master.
    let mut ids = store.job_ids(0).await.unwrap();
    ids.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    let mut all: Vec<JobId> = wide_ids.iter().map(|j| j.0.clone()).chain(doomed_ids.clone()).collect();
    all.push(lone.clone());
    all.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(ids, all);
    assert_eq!(store.job_ids(7).await.unwrap().len(), 7);

    // The DLQ: shard after shard, newest first within a shard; pages add up.
    let dlq = rrq_store::JobDefaults::default().dlq;
    assert_eq!(store.dlq_len(&dlq).await.unwrap(), doomed_ids.len() as u64);
    let listed = store.dlq_ids(&dlq, 0, usize::MAX).await.unwrap();
    let mut sorted = listed.clone();
    sorted.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    sorted.dedup();
    let mut want = doomed_ids.clone();
    want.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(sorted, want, "every dead-lettered id once");
    assert!(listed.windows(2).all(|w| layout.shard_of(&w[0]) <= layout.shard_of(&w[1])), "shard after shard");
    let mut paged = Vec::new();
    for page in 0.. {
        let ids = store.dlq_ids(&dlq, page * 9, 9).await.unwrap();
        if ids.is_empty() {
            break;
        }
        paged.extend(ids);
    }
    assert_eq!(paged, listed, "pages of 9 add up to the listing");
    assert_eq!(store.dlq_ids(&dlq, listed.len() - 1, 5).await.unwrap(), [listed[listed.len() - 1].clone()]);

    // Worker health records, wherever `{global}` lives.
    for name in ["w-a", "w-b", "w-c"] {
        let health = rrq_store::WorkerHealth {
            active_jobs: 0,
            concurrency_limit: 1,
            queues: vec![wide.to_string()],
            status: "polling".into(),
            timestamp: json!(1_795_824_000),
            worker_id: name.into(),
            completed_jobs: None,
            failed_jobs: None,
            active_by_queue: None,
        };
        store.heartbeat(&health, Duration::from_secs(60)).await.unwrap();
    }
    let workers: Vec<String> = store.workers().await.unwrap().into_iter().map(|w| w.worker_id).collect();
    assert_eq!(workers, ["w-a", "w-b", "w-c"]);

    // A purge given ids of every shard, interleaved (not in listing order).
    let mut interleaved = listed.clone();
    interleaved.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    assert_eq!(store.dlq_purge(&dlq, &interleaved).await.unwrap(), listed.len() as u64);
    assert_eq!(store.dlq_len(&dlq).await.unwrap(), 0);
    assert!(store.job_fields_batch(&listed).await.unwrap().iter().all(Option::is_none), "the failed jobs are gone");

    // Delete by pattern: the keys of every master, many slots per call.
    let everything: usize = keys_per_master(&cluster, "*").iter().sum();
    assert_eq!(store.delete_matching("*", true).await.unwrap(), everything as u64, "a dry run counts every master");
    let hashes = store.delete_matching("rrq:*:job:*", true).await.unwrap();
    assert!(hashes >= (total - listed.len()) as u64);
    assert_eq!(store.delete_matching("rrq:*:job:*", false).await.unwrap(), hashes);
    assert_eq!(keys_per_master(&cluster, "rrq:*:job:*"), [0, 0, 0]);
    assert!(store.job_ids(0).await.unwrap().is_empty());
    assert_eq!(store.queue_len(&wide).await.unwrap(), wide_ids.len() as u64, "the ready sets did not match");
}

/// The shard count the cluster's keys are named with is recorded by the
/// first store; a store with another count is refused, naming both counts
/// and the fix, and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_with_another_shard_count_is_refused_naming_both_counts() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let record = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap().shard_count_record().unwrap();
    assert_eq!(record, "rrq:{global}:layout");
    let first = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let recorded = |cluster: &TestCluster| {
        let master = cluster.master_for_slot(cluster.slot_of(&record));
        resp::call(master.port, &["GET", &record]).unwrap()
    };
    assert_eq!(recorded(&cluster), Reply::Bulk(Some("64".into())));
    RedisStore::connect(&cluster.dsn()).await.expect("the same count connects again");

    let with = |n| rrq_store::ConnectOptions::default().with_queue_shards(n);
    let err = RedisStore::connect_with(&cluster.dsn(), with(32)).await.unwrap_err();
    match &err {
        StoreError::ShardCountMismatch { configured: 32, recorded, .. } => assert_eq!(recorded, "64"),
        other => panic!("expected ShardCountMismatch, got {other:?}"),
    }
    let text = err.to_string();
    for part in ["`[rrq] queue_shards` is 32", "64 shards per queue", "set `queue_shards = 64`", "rrq:{global}:layout"]
    {
        assert!(text.contains(part), "{part:?} missing from: {text}");
    }
    assert_eq!(recorded(&cluster), Reply::Bulk(Some("64".into())), "the refused store changed nothing");
    drop(first);

    // Once the record is gone (an emptied cluster), the next store's count
    // is the one recorded, and the default is refused in turn.
    let master = cluster.master_for_slot(cluster.slot_of(&record));
    assert_eq!(resp::call(master.port, &["DEL", &record]).unwrap(), Reply::Int(1));
    RedisStore::connect_with(&cluster.dsn(), with(32)).await.expect("the first store records its count");
    match RedisStore::connect(&cluster.dsn()).await {
        Err(StoreError::ShardCountMismatch { configured: 64, recorded, .. }) => assert_eq!(recorded, "32"),
        other => panic!("expected ShardCountMismatch, got {other:?}"),
    }
}

/// A user refused writes (a read-only inspection account) compares its
/// count with the record without writing one, and is refused on a mismatch
/// all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_compares_the_shard_count_without_recording_it() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    for port in cluster.ports() {
        let acl = ["ACL", "SETUSER", "reader", "on", ">s3cret", "~*", "&*", "+@read", "+@connection", "+cluster"];
        assert_eq!(resp::call(port, &acl).unwrap(), Reply::Status("OK".into()), "ACL on {port}");
    }
    let reader = cluster.dsn().replacen("redis-cluster://", "redis-cluster://reader:s3cret@", 1);
    let record = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap().shard_count_record().unwrap();
    let recorded = || {
        let master = cluster.master_for_slot(cluster.slot_of(&record));
        resp::call(master.port, &["GET", &record]).unwrap()
    };
    let store = RedisStore::connect(&reader).await.expect("a reader connects without a record");
    assert_eq!(recorded(), Reply::Bulk(None), "and records nothing");
    let h = Harness::memory().await;
    let err = store.enqueue(h.new_job("a", &h.queue("q")), EnqueueMode::Standard).await.unwrap_err();
    assert!(format!("{err:?}").contains("NOPERM"), "the reader may not write: {err:?}");

    RedisStore::connect(&cluster.dsn()).await.expect("a writer records 64");
    assert_eq!(recorded(), Reply::Bulk(Some("64".into())));
    RedisStore::connect(&reader).await.expect("the same count reads the record");
    let with = rrq_store::ConnectOptions::default().with_queue_shards(16);
    match RedisStore::connect_with(&reader, with).await {
        Err(StoreError::ShardCountMismatch { configured: 16, recorded, .. }) => assert_eq!(recorded, "64"),
        other => panic!("expected ShardCountMismatch, got {other:?}"),
    }
}

/// Listings while a slot is migrating: a shard's slot half-way to another
/// master (`MIGRATING` on its master, `IMPORTING` on the target, no key
/// moved yet; reads of keys the master lacks are redirected with `-ASK`).
/// Every job is still listed once, the counts add up, and a delete by
/// pattern reaches every key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_add_up_while_a_slot_is_migrating() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap().with_keyspace_notifications(false);
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let h = Harness::memory().await;
    let q = QueueName::new("moving");
    let now = chrono::DateTime::from_timestamp_millis(chrono::Utc::now().timestamp_millis()).unwrap();
    let mut ids = Vec::new();
    for n in 0..200 {
        let mut job = h.new_job("x", &q);
        (job.id, job.enqueue_time, job.scheduled_time) = (JobId::new(format!("m-{n}")), now, now);
        ids.push(job.id.clone());
        store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    // The slot of a shard holding jobs starts moving to another master.
    let moving = cluster.slot_of(layout.tag(layout.shard_of(&ids[0])).unwrap());
    let home = cluster.master_for_slot(moving);
    let target = cluster.masters().into_iter().find(|m| m.port != home.port).unwrap();
    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.begin_slot_migration(moving, target.port);
        cluster
    })
    .await
    .unwrap();

    let queues = store.queues().await.unwrap();
    assert_eq!(queues.len(), 1, "{:?}", queues.iter().map(|i| i.queue.to_string()).collect::<Vec<_>>());
    assert_eq!(queues[0].len, 200);
    assert_eq!(store.queue_len(&q).await.unwrap(), 200);
    let entries = store.queue_entries(&q, 0, 1000).await.unwrap();
    let mut listed: Vec<String> = entries.into_iter().map(|e| e.0.to_string()).collect();
    listed.sort();
    let mut want: Vec<String> = ids.iter().map(ToString::to_string).collect();
    want.sort();
    assert_eq!(listed, want);
    let mut found: Vec<String> = store.job_ids(0).await.unwrap().into_iter().map(|id| id.to_string()).collect();
    found.sort();
    assert_eq!(found, want, "every job hash once, moved or not");
    assert_eq!(store.delete_matching("rrq:*:job:m-*", true).await.unwrap(), 200);
    assert_eq!(store.delete_matching("rrq:*:job:m-*", false).await.unwrap(), 200, "DEL follows the moves");
    assert!(store.job_ids(0).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_go_on_from_the_other_masters_while_one_hangs() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    // A job on every shard, so every master holds some.
    let layout = h.layout().clone();
    let mut ids = Vec::new();
    for shard in layout.shards() {
        let id = ids_on_shard(&h, shard, 1).remove(0);
        let mut job = h.new_job("unused", &q);
        job.id = id.clone();
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
        ids.push(id);
    }
    let cluster = h.test_cluster();
    let frozen = cluster.masters()[0].clone();
    let on_frozen: Vec<&JobId> = ids.iter().filter(|id| frozen.serves(cluster.slot_of(&layout.job(id)))).collect();
    assert!(!on_frozen.is_empty() && on_frozen.len() < ids.len());

    cluster.freeze(frozen.port);
    let started = Instant::now();
    let first = h.claim(&q, &h.worker("w"), ids.len(), h.now).await;
    let took = started.elapsed();
    let got: Vec<&JobId> = first.jobs.iter().map(|c| &c.lease.job_id).collect();
    assert_eq!(got.len(), ids.len() - on_frozen.len(), "every job of the masters that answer: {got:?}");
    assert!(got.iter().all(|id| !on_frozen.contains(id)));
    assert!(took < Duration::from_secs(5), "the claim waited {took:?} for the frozen master");
    // The silent shards are left out for a while: the next claim does not
    // wait for them again.
    let started = Instant::now();
    let second = h.claim(&q, &h.worker("w"), ids.len(), h.now).await;
    assert!(second.jobs.is_empty());
    assert!(started.elapsed() < Duration::from_millis(900), "waited {:?}", started.elapsed());

    // Back (its replica may have taken over meanwhile): its jobs are claimed.
    cluster.thaw(frozen.port);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rest = Vec::new();
    while rest.len() < on_frozen.len() {
        assert!(
            Instant::now() < deadline,
            "the frozen master's jobs after it came back: {} of {}",
            rest.len(),
            on_frozen.len()
        );
        if let Ok(batch) = h.store.claim(claim_request(&h, &q)).await {
            rest.extend(batch.jobs.into_iter().map(|c| c.lease.job_id));
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: polling with a deadline
    }
    rest.sort();
    let mut want: Vec<JobId> = on_frozen.into_iter().cloned().collect();
    want.sort();
    assert_eq!(rest, want);
}

fn claim_request(h: &Harness, q: &QueueName) -> ClaimRequest {
    ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 1000,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: usize::MAX,
    }
}

/// The role a node reports (`master` or `slave`), `None` while it does not
/// answer.
fn role(port: u16) -> Option<String> {
    resp::info_field(port, &["INFO", "replication"], "role")
}

/// Polls `role` of the node on `port` until it is `want`.
async fn wait_for_role(port: u16, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = tokio::task::spawn_blocking(move || role(port)).await.unwrap();
        if now.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "the node on port {port} is still {now:?}, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: polling with a deadline
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_follows_a_frozen_masters_replica_that_took_over() {
    // A master that stops answering but keeps its connections (frozen with
    // SIGSTOP, as a host cut off the network), and its replica promoted at
    // once (`CLUSTER FAILOVER TAKEOVER`, instead of waiting for the node
    // timeout): the calls waiting on the frozen master, and every later one
    // for its slots, go to the replica within a few seconds, well inside
    // the store's 10 s command timeout.
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let layout = h.layout().clone();
    let cluster = h.test_cluster();
    let nodes = cluster.nodes();
    let frozen = cluster.masters()[0].clone();
    let replica = nodes
        .iter()
        .find(|n| matches!(&n.role, Role::Replica { master_id } if *master_id == frozen.id))
        .expect("the master has a replica")
        .clone();
    let on_frozen: Vec<JobId> = (0..)
        .map(|i| h.id(&format!("f{i}")))
        .filter(|id| frozen.serves(rrq_store::keys::key_slot(layout.job(id).as_bytes())))
        .take(4)
        .collect();
    let enqueue = |id: &JobId| {
        let mut job = h.new_job("unused", &q);
        job.id = id.clone();
        h.store.enqueue(job, EnqueueMode::Standard)
    };
    // One job claimed before the freeze: its lease is renewed and its
    // success recorded afterwards.
    enqueue(&on_frozen[0]).await.unwrap();
    let claimed = h.claim(&q, &h.worker("w"), 10, h.now).await;
    assert_eq!(claimed.jobs.len(), 1);
    let lease = claimed.jobs[0].lease.clone();

    cluster.freeze(frozen.port);
    let store = h.store.clone();
    let mut job = h.new_job("unused", &q);
    job.id = on_frozen[1].clone();
    let waiting = tokio::spawn(async move { store.enqueue(job, EnqueueMode::Standard).await });
    let port = replica.port;
    let took_over = tokio::task::spawn_blocking(move || resp::call(port, &["CLUSTER", "FAILOVER", "TAKEOVER"]));
    assert!(matches!(took_over.await.unwrap(), Ok(Reply::Status(ref s)) if s == "OK"));
    wait_for_role(replica.port, "master").await;
    let promoted = Instant::now();

    let answer = waiting.await.unwrap();
    let followed = promoted.elapsed();
    assert!(matches!(answer, Ok(Enqueued::Created(_))), "the enqueue waiting on the frozen master: {answer:?}");
    assert!(followed < Duration::from_secs(7), "it waited {followed:?} after the takeover");
    let started = Instant::now();
    let states = h.store.renew(std::slice::from_ref(&lease), LEASE).await.unwrap();
    assert_eq!(states, vec![rrq_store::LeaseState::Held]);
    assert_eq!(h.store.complete(&lease, &json!("done"), h.now).await.unwrap(), Fence::Applied);
    assert!(matches!(enqueue(&on_frozen[2]).await, Ok(Enqueued::Created(_))));
    assert!(started.elapsed() < Duration::from_secs(3), "calls after the sync took {:?}", started.elapsed());
    // The promoted master has no replica while the old one is frozen: WAIT
    // is asked of the current masters only, and says so.
    let refused = h.store.confirm_replicated(1, Duration::from_millis(300)).await;
    assert!(matches!(refused, Err(StoreError::NotReplicated { acked: 0, .. })), "{refused:?}");
    let taken = h.claim(&q, &h.worker("w"), 10, h.now).await;
    let mut got: Vec<JobId> = taken.jobs.into_iter().map(|c| c.lease.job_id).collect();
    got.sort();
    let mut want = on_frozen[1..3].to_vec();
    want.sort();
    assert_eq!(got, want, "the jobs enqueued on the promoted master are claimed");

    // Thawed, the old master rejoins as the new one's replica, and WAIT
    // confirms again (never asked of the old master, now a replica).
    cluster.thaw(frozen.port);
    wait_for_role(frozen.port, "slave").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match h.store.confirm_replicated(1, Duration::from_millis(500)).await {
            Ok(()) => break,
            Err(StoreError::NotReplicated { .. }) if Instant::now() < deadline => {}
            other => panic!("WAIT after the old master rejoined: {other:?}"),
        }
    }
}

/// A success of a job on a master that does not answer must not hold up the
/// successes of the other masters' jobs behind it (the batching task sends
/// one batch at a time): the next batch goes after a short wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn successes_of_the_other_masters_are_recorded_while_one_hangs() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let layout = h.layout().clone();
    let cluster = h.test_cluster();
    let frozen = cluster.masters()[0].clone();
    let on = |id: &JobId| frozen.serves(cluster.slot_of(&layout.job(id)));
    let stuck_id = (0..).map(|i| h.id(&format!("stuck{i}"))).find(|id| on(id)).unwrap();
    let free_id = (0..).map(|i| h.id(&format!("free{i}"))).find(|id| !on(id)).unwrap();
    for id in [&stuck_id, &free_id] {
        let mut job = h.new_job("unused", &q);
        job.id = id.clone();
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), 10, h.now).await;
    assert_eq!(batch.jobs.len(), 2);
    let lease = |id: &JobId| batch.jobs.iter().find(|c| &c.lease.job_id == id).unwrap().lease.clone();
    let (stuck, free) = (lease(&stuck_id), lease(&free_id));

    cluster.freeze(frozen.port);
    let store = h.store.clone();
    let pending = tokio::spawn(async move { store.complete(&stuck, &json!("a"), chrono::Utc::now()).await });
    // The stuck success is in flight (its call sent) before the other one.
    tokio::task::yield_now().await;
    let started = Instant::now();
    let recorded = tokio::time::timeout(Duration::from_secs(8), h.store.complete(&free, &json!("b"), h.now)).await;
    let took = started.elapsed();
    cluster.thaw(frozen.port);
    assert_eq!(recorded.expect("the free master's success is not held up").unwrap(), Fence::Applied);
    assert!(took < Duration::from_secs(5), "waited {took:?} behind the silent master");
    // The stuck call ends by itself once its master is back (or times out).
    tokio::time::timeout(Duration::from_secs(30), pending).await.expect("the stuck call ends").unwrap().ok();
}

/// A claim of a large batch creates the shard's active set and lease index
/// as skiplists (a listpack makes each insert of the batch scan the whole
/// list), and the seed member that does it is gone when the script ends,
/// without taking a job with it: one job of the batch has an id that looks
/// like a seed (160 `~`, the seed of an earlier version, which the claim's
/// removal of the seed took out of the sets).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_claim_creates_its_shard_sets_as_skiplists_and_leaves_no_seed() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let tilde = JobId::new("~".repeat(160));
    let shard = h.layout().shard_of(&tilde);
    let mut job = h.new_job("unused", &q);
    job.id = tilde.clone();
    h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    enqueue_on_shard(&h, &q, shard, 39).await;
    let worker = h.worker("w");
    assert_eq!(h.claim(&q, &worker, 40, h.now).await.jobs.len(), 40);
    assert_shard_sets(&h, &worker, shard, "skiplist", 40);
    let cluster = h.test_cluster();
    for key in [h.layout().active(&worker, shard), h.layout().leases(shard)] {
        let master = cluster.master_for_slot(cluster.slot_of(&key));
        let score = resp::call(master.port, &["ZSCORE", &key, tilde.as_str()]).unwrap();
        assert!(matches!(score, Reply::Bulk(Some(_))), "{key} lost the job {tilde}: {score:?}");
    }
}

/// Claims that each take a few jobs but together grow a shard's sets past a
/// few dozen members make them skiplists too: a set that already exists as
/// a small listpack is converted once the next batch would take it to 32.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_that_grow_a_shard_set_past_a_few_dozen_members_make_it_a_skiplist() {
    let h = Harness::cluster().await;
    let q = h.queue("q");
    let shard = h.layout().shard_of(&h.id("s0"));
    enqueue_on_shard(&h, &q, shard, 40).await;
    let worker = h.worker("w");
    assert_eq!(h.claim(&q, &worker, 20, h.now).await.jobs.len(), 20);
    assert_shard_sets(&h, &worker, shard, "listpack", 20);
    // A later claim (the same instant would be a replay of the first).
    let later = h.now + chrono::TimeDelta::seconds(1);
    assert_eq!(h.claim(&q, &worker, 20, later).await.jobs.len(), 20);
    assert_shard_sets(&h, &worker, shard, "skiplist", 40);
}

/// Enqueues `n` jobs whose ids map to `shard`.
async fn enqueue_on_shard(h: &Harness, q: &QueueName, shard: Shard, n: usize) {
    for id in ids_on_shard(h, shard, n) {
        let mut job = h.new_job("unused", q);
        job.id = id;
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
}

/// The worker's active set and the lease index of `shard` have `encoding`
/// and hold `members` (no seed left behind).
fn assert_shard_sets(h: &Harness, worker: &str, shard: Shard, encoding: &str, members: i64) {
    let cluster = h.test_cluster();
    for key in [h.layout().active(worker, shard), h.layout().leases(shard)] {
        let master = cluster.master_for_slot(cluster.slot_of(&key));
        let found = resp::call(master.port, &["OBJECT", "ENCODING", &key]).unwrap();
        assert_eq!(found, Reply::Bulk(Some(encoding.into())), "{key}");
        assert_eq!(resp::call(master.port, &["ZCARD", &key]).unwrap(), Reply::Int(members), "{key}: no seed left");
    }
}
