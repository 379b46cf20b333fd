//! The store on a Redis Cluster (`redis-cluster://`, the sharded layout):
//! what only a cluster shows. The shared behaviour runs through the
//! `cluster:` lists of the other modules.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rrq_protocol::{JobId, QueueName};
use rrq_store::keys::{DEFAULT_QUEUE_SHARDS, Layout};
use rrq_store::{
    ClaimRequest, EnqueueMode, EnqueueStore, Enqueued, Fence, InspectStore, JobStatus, RedisStore, StoreError,
    WorkerStore,
};
use rrq_test_support::cluster::TestCluster;
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

/// `EVALSHA` calls served by every master of `cluster` so far.
fn script_calls(cluster: &TestCluster) -> u64 {
    cluster
        .masters()
        .iter()
        .map(|m| match resp::call(m.port, &["INFO", "commandstats"]) {
            Ok(Reply::Bulk(Some(info))) => info
                .lines()
                .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
                .map_or(0, |rest| rest.split(',').next().unwrap().parse::<u64>().unwrap()),
            other => panic!("INFO on {}: {other:?}", m.addr()),
        })
        .sum()
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
async fn keyspace_notifications_are_reported_unused_on_a_cluster() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let store = RedisStore::connect(&cluster.dsn()).await.unwrap();
    let _rx = store.subscribe_ready().await.unwrap();
    match store.ready_signals() {
        rrq_store::ReadySignals::Partial { reason } => assert!(reason.contains("Redis Cluster"), "{reason}"),
        other => panic!("expected Partial, got {other:?}"),
    }
    for master in cluster.masters() {
        match resp::call(master.port, &["CONFIG", "GET", "notify-keyspace-events"]) {
            Ok(Reply::Array(Some(items))) => {
                assert_eq!(items.get(1), Some(&Reply::Bulk(Some(String::new()))), "{}", master.addr())
            }
            other => panic!("CONFIG GET on {}: {other:?}", master.addr()),
        }
    }
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
fn ids_on_shard(h: &Harness, shard: rrq_store::keys::Shard, n: usize) -> Vec<JobId> {
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
