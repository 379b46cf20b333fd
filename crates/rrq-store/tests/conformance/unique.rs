//! The orchestrator unique lock (SEMANTICS §4, REDIS_SCHEMA §5.2), cron tick
//! records, and exactly-once creation of one job id under concurrency (what
//! cron relies on when several workers enqueue the same tick).

use std::time::Duration;

use chrono::{DateTime, Utc};
use fred::prelude::*;
use rrq_store::{EnqueueMode, Enqueued, Fence, StoreError, format_timestamp, keys, parse_timestamp};

use crate::harness::Harness;

conformance!(
    shared:
        a_free_unique_lock_is_taken_by_the_job,
        a_held_unique_lock_defers_the_job_and_only_its_holder_releases_it,
        deferred_times_are_written_like_every_other_time,
        a_taken_id_leaves_the_unique_lock_alone,
        invalid_unique_locks_are_refused,
        cron_tick_records_only_move_forward,
        concurrent_enqueues_of_one_id_create_one_job,
        a_fitted_job_id_is_the_same_everywhere_and_accepted_under_its_key;
    private: ;
    cluster:
        concurrent_enqueues_of_one_id_create_one_job,
        a_fitted_job_id_is_the_same_everywhere_and_accepted_under_its_key;
);

fn unique(h: &Harness, ttl_secs: u64) -> (String, EnqueueMode) {
    let key = h.worker("cron:report");
    (key.clone(), EnqueueMode::UniqueLock { key, ttl: Duration::from_secs(ttl_secs) })
}

async fn a_free_unique_lock_is_taken_by_the_job(h: Harness) {
    let q = h.queue("cron");
    let (key, mode) = unique(&h, 100);
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None);
    let job = h.new_job("a", &q);
    assert_eq!(h.store.enqueue(job.clone(), mode).await.unwrap(), Enqueued::Created(job.id.clone()));

    let left = h.store.unique_lock_ttl(&key).await.unwrap().expect("the job holds the lock");
    assert!(left > Duration::from_secs(95) && left <= Duration::from_secs(100), "{left:?}");
    let stored = h.job(&job.id).await;
    assert_eq!(stored.unique_key.as_deref(), Some(key.as_str()), "job_unique_key names the lock");
    assert_eq!(stored.next_scheduled_run_time, Some(h.now), "a free lock defers nothing");
    assert_eq!(h.claim(&q, &h.worker("w"), 10, h.now).await.jobs.len(), 1, "ready at once");
}

async fn a_held_unique_lock_defers_the_job_and_only_its_holder_releases_it(h: Harness) {
    let q = h.queue("cron");
    let (key, mode) = unique(&h, 100);
    h.store.enqueue(h.new_job("holder", &q), mode.clone()).await.unwrap();
    let deferred = h.new_job("deferred", &q);
    assert_eq!(h.store.enqueue(deferred.clone(), mode.clone()).await.unwrap(), Enqueued::Created(deferred.id.clone()));

    // Still created, but not before the lock expires; the lock stays the holder's.
    let job = h.job(&deferred.id).await;
    assert_eq!(job.unique_key.as_deref(), Some(key.as_str()));
    let at = job.next_scheduled_run_time.unwrap();
    assert!(at > h.at(95.0) && at <= h.at(100.0), "deferred to {at}, enqueued at {}", h.now);
    let entries = h.store.queue_entries(&q, 0, 10).await.unwrap();
    assert_eq!(entries, [(h.id("holder"), h.now), (deferred.id.clone(), at)], "the queue agrees with the hash");
    let fields = h.store.job_fields(&deferred.id).await.unwrap().unwrap();
    assert_eq!(fields["next_scheduled_run_time"], format_timestamp(at));

    // The holder completes: the lock goes, and the next job takes it.
    let batch = h.claim(&q, &h.worker("w"), 10, h.now).await;
    assert_eq!(batch.jobs.len(), 1);
    let holder = &batch.jobs[0].lease;
    let result = serde_json::json!("ok");
    assert_eq!(h.store.complete(holder, &result, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None, "released by its holder");
    let next = h.new_job("next", &q);
    h.store.enqueue(next.clone(), mode).await.unwrap();
    assert_eq!(h.job(&next.id).await.next_scheduled_run_time, Some(h.now), "a released lock defers nothing");
    assert!(h.store.unique_lock_ttl(&key).await.unwrap().is_some());

    // The deferred job completing does not release the lock it never held (D8).
    let batch = h.claim(&q, &h.worker("w"), 10, h.at(101.0)).await;
    let lease = batch.jobs.iter().map(|c| &c.lease).find(|l| l.job_id == deferred.id).expect("deferred job is due");
    assert_eq!(h.store.complete(lease, &result, h.at(101.0)).await.unwrap(), Fence::Applied);
    assert!(h.store.unique_lock_ttl(&key).await.unwrap().is_some(), "the lock is still the next job's");
}

async fn deferred_times_are_written_like_every_other_time(h: Harness) {
    let q = h.queue("cron");
    let (_, mode) = unique(&h, 3600);
    h.store.enqueue(h.new_job("holder", &q), mode.clone()).await.unwrap();
    // The deferral counts from each job's own enqueue time, so these land on
    // awkward dates: leap days, year ends, the far future.
    let enqueued_at = [
        "2028-02-28T23:30:00Z",
        "2028-12-31T23:59:59.5Z",
        "2100-02-28T23:10:00.007Z",
        "2400-02-29T12:00:00Z",
        "1999-12-31T23:00:00Z",
    ];
    for (i, t) in enqueued_at.iter().enumerate() {
        let mut job = h.new_job(&format!("j{i}"), &q);
        job.enqueue_time = parse_timestamp(t).unwrap();
        job.scheduled_time = job.enqueue_time;
        h.store.enqueue(job.clone(), mode.clone()).await.unwrap();
        let fields = h.store.job_fields(&job.id).await.unwrap().unwrap();
        let score = h.store.queue_entries(&q, 0, 100).await.unwrap().into_iter().find(|(id, _)| *id == job.id);
        let (_, at) = score.expect("the job is queued");
        assert_eq!(fields["next_scheduled_run_time"], format_timestamp(at), "enqueued at {t}");
        let pushed = at - job.enqueue_time;
        assert!(pushed.num_seconds() > 3500 && pushed.num_seconds() <= 3600, "enqueued at {t}, pushed {pushed}");
    }
}

async fn a_taken_id_leaves_the_unique_lock_alone(h: Harness) {
    let q = h.queue("cron");
    let (key, mode) = unique(&h, 100);
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    match h.store.enqueue(h.new_job("a", &q), mode).await {
        Err(StoreError::JobIdTaken(id)) => assert_eq!(id, h.id("a")),
        other => panic!("expected JobIdTaken, got {other:?}"),
    }
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None, "no lock taken for a refused job");
    assert_eq!(h.job(&h.id("a")).await.unique_key, None, "the existing job is untouched");
}

async fn invalid_unique_locks_are_refused(h: Harness) {
    let q = h.queue("cron");
    for mode in [
        EnqueueMode::UniqueLock { key: " ".into(), ttl: Duration::from_secs(1) },
        EnqueueMode::UniqueLock { key: "k".into(), ttl: Duration::ZERO },
    ] {
        let err = h.store.enqueue(h.new_job("a", &q), mode.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{mode:?} gave {err:?}");
    }
    assert!(matches!(h.store.cron_tick(" ").await, Err(StoreError::InvalidInput { .. })));
    assert!(h.store.job(&h.id("a")).await.unwrap().is_none());
}

async fn cron_tick_records_only_move_forward(h: Harness) {
    let entry = h.worker("cron:report:0123abcd");
    let other = h.worker("cron:other:0123abcd");
    let t = |s: &str| -> DateTime<Utc> { parse_timestamp(s).unwrap() };
    assert_eq!(h.store.cron_tick(&entry).await.unwrap(), None);
    h.store.record_cron_tick(&entry, t("2030-01-01T00:00:10Z")).await.unwrap();
    assert_eq!(h.store.cron_tick(&entry).await.unwrap(), Some(t("2030-01-01T00:00:10Z")));
    h.store.record_cron_tick(&entry, t("2030-01-01T00:00:00Z")).await.unwrap();
    assert_eq!(h.store.cron_tick(&entry).await.unwrap(), Some(t("2030-01-01T00:00:10Z")), "never back");
    h.store.record_cron_tick(&entry, t("2030-01-01T00:00:20Z")).await.unwrap();
    assert_eq!(h.store.cron_tick(&entry).await.unwrap(), Some(t("2030-01-01T00:00:20Z")));
    assert_eq!(h.store.cron_tick(&other).await.unwrap(), None, "entries are kept apart");
}

/// Racers derive the id by rule, as cron's workers do, each fitting it to
/// the store (`EnqueueStore::fitted_job_id`: on a cluster, a unique job's
/// id must be on its lock's shard).
async fn concurrent_enqueues_of_one_id_create_one_job(h: Harness) {
    let q = h.queue("cron");
    let (_, unique_mode) = unique(&h, 100);
    for (m, mode) in [EnqueueMode::Standard, unique_mode].into_iter().enumerate() {
        for round in 0..10 {
            let base = h.id(&format!("tick-{m}-{round}"));
            let id = h.store.fitted_job_id(base.clone(), &mode);
            let racers: Vec<_> = (0..4)
                .map(|_| {
                    let (store, mut job, mode) = (h.store.clone(), h.new_job("x", &q), mode.clone());
                    job.id = store.fitted_job_id(base.clone(), &mode);
                    tokio::spawn(async move { store.enqueue(job, mode).await })
                })
                .collect();
            let (mut created, mut taken) = (0, 0);
            for racer in racers {
                match racer.await.unwrap() {
                    Ok(Enqueued::Created(got)) if got == id => created += 1,
                    Err(StoreError::JobIdTaken(got)) if got == id => taken += 1,
                    other => panic!("{id}: unexpected {other:?}"),
                }
            }
            assert_eq!((created, taken), (1, 3), "{id}");
        }
    }
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 20);
}

/// A fitted id is the id itself wherever the store takes it (one server,
/// any standard enqueue, an id already on the key's shard), else the id
/// with the smallest `~N` suffix on the key's shard; asking again gives the
/// same answer, and the store accepts it.
async fn a_fitted_job_id_is_the_same_everywhere_and_accepted_under_its_key(h: Harness) {
    let q = h.queue("cron");
    let mut suffixed = 0;
    for n in 0..20 {
        let key = h.worker(&format!("cron:fn{n}"));
        let mode = EnqueueMode::UniqueLock { key: key.clone(), ttl: Duration::from_secs(100) };
        let base = h.id(&format!("cron:fn{n}:1795824000"));
        assert_eq!(h.store.fitted_job_id(base.clone(), &EnqueueMode::Standard), base, "a standard job keeps its id");
        let fitted = h.store.fitted_job_id(base.clone(), &mode);
        assert_eq!(h.store.fitted_job_id(base.clone(), &mode), fitted, "the same id every time");
        if h.is_cluster() {
            let layout = h.layout();
            let shard = layout.unique_lock_shard(&key);
            assert_eq!(layout.shard_of(&fitted), shard, "{fitted} is on the lock's shard");
            if layout.shard_of(&base) == shard {
                assert_eq!(fitted, base, "an id that fits is kept");
            } else {
                suffixed += 1;
                let salt: u32 = fitted.as_str().strip_prefix(&format!("{base}~")).expect("base~N").parse().unwrap();
                let smaller = (0..salt).map(|s| rrq_protocol::JobId::new(format!("{base}~{s}")));
                assert!(smaller.into_iter().all(|id| layout.shard_of(&id) != shard), "the smallest salt");
            }
        } else {
            assert_eq!(fitted, base, "outside a cluster every id fits");
        }
        let mut job = h.new_job("x", &q);
        job.id = fitted.clone();
        assert_eq!(h.store.enqueue(job, mode).await.unwrap(), Enqueued::Created(fitted));
    }
    if h.is_cluster() {
        assert!(suffixed > 10, "most of 20 ids are on another shard than their key: {suffixed}");
    }
}

/// The lock's key, value and expiry as the reference reads them.
#[tokio::test]
async fn the_unique_lock_has_the_reference_layout() {
    let h = Harness::redis().await;
    let q = h.queue("cron");
    let (key, mode) = unique(&h, 21_600);
    h.store.enqueue(h.new_job("a", &q), mode).await.unwrap();
    let lock = keys::unique_lock(&key);
    assert_eq!(lock, format!("rrq:lock:unique:{key}"));
    let value: Option<String> = h.raw().get(&lock).await.unwrap();
    assert_eq!(value, Some(h.id("a").as_str().to_owned()));
    let ttl: i64 = h.raw().ttl(&lock).await.unwrap();
    assert!((21_590..=21_600).contains(&ttl), "TTL {ttl}");
    let field: Option<String> = h.raw().hget(keys::job(&h.id("a")), "job_unique_key").await.unwrap();
    assert_eq!(field, Some(key));
}

/// A lock without expiry is not "held" in the reference's reading: the job
/// neither waits for it nor takes it.
#[tokio::test]
async fn a_unique_lock_without_expiry_neither_defers_nor_is_taken() {
    let h = Harness::redis().await;
    let q = h.queue("cron");
    let (key, mode) = unique(&h, 100);
    let lock = keys::unique_lock(&key);
    let _: () = h.raw().set(&lock, "someone-else", None, None, false).await.unwrap();
    h.store.enqueue(h.new_job("a", &q), mode).await.unwrap();
    assert_eq!(h.job(&h.id("a")).await.next_scheduled_run_time, Some(h.now));
    let value: Option<String> = h.raw().get(&lock).await.unwrap();
    assert_eq!(value.as_deref(), Some("someone-else"));
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None);
}

/// The cron tick record is one sorted set, scored in epoch seconds.
#[tokio::test]
async fn cron_ticks_are_one_sorted_set_in_epoch_seconds() {
    let h = Harness::redis().await;
    let entry = h.worker("cron:report:0123abcd");
    h.store.record_cron_tick(&entry, parse_timestamp("2030-01-01T00:00:10Z").unwrap()).await.unwrap();
    let score: Option<f64> = h.raw().zscore(keys::CRON_TICKS, &entry).await.unwrap();
    assert_eq!(score, Some(1_893_456_010.0));
    assert_eq!(keys::CRON_TICKS, "rrq:cron:ticks");
}
