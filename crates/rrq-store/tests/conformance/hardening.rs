//! Reliability II: job-supplied values never fail a script half-way, and a
//! requested cancel is honoured on every path out of ACTIVE.

use std::collections::BTreeMap;
use std::time::Duration;

use rrq_protocol::QueueName;
use rrq_store::{AttemptCount, CancelResult, EnqueueMode, Fence, Lease, LeaseState, StoreError};
use serde_json::json;

use crate::harness::{Harness, LEASE};

conformance!(
    shared:
        absurd_result_ttls_never_fail_a_completion,
        absurd_numbers_in_a_job_never_fail_an_outcome,
        enqueue_refuses_absurd_durations,
        recovery_ends_a_cancel_requested_job_cancelled,
        a_retry_of_a_cancel_requested_job_ends_it_cancelled,
        a_release_of_a_cancel_requested_job_ends_it_cancelled,
        a_claim_never_starts_a_cancel_requested_job,
        a_requeued_job_loses_a_stale_cancel_request,
        every_cancel_releases_the_unique_lock_and_wakes_waiters,
        an_oversized_payload_is_dead_lettered_at_claim_unrun,
        a_blocked_waiter_wakes_when_the_event_is_appended;
    private:
);

/// Enqueues jobs on a fresh queue, applies `fields` to each, and claims them.
async fn claimed_with(h: &Harness, ids: &[&str], fields: &[(&str, &str)]) -> (QueueName, Vec<Lease>) {
    let q = h.queue("q");
    for id in ids {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
        let f: BTreeMap<String, String> = fields.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        h.store.put_job_fields(&h.id(id), &f).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), ids.len(), h.now).await;
    assert_eq!(batch.jobs.len(), ids.len(), "every job is claimed");
    (q, batch.jobs.into_iter().map(|c| c.lease).collect())
}

/// How many events the job's stream holds (counted by waiting from the start).
async fn events(h: &Harness, lease: &Lease) -> usize {
    let mut n = 0;
    let mut after = "0-0".to_owned();
    while let Some(next) = h.store.wait_job_event(&lease.job_id, Some(after.clone()), Duration::ZERO).await.unwrap() {
        n += 1;
        after = next;
    }
    n
}

/// A result TTL whose milliseconds overflow (what Python's sys.maxsize or a
/// typo writes) must not fail the completion half-way, nor the other
/// completions sent in the same batch.
async fn absurd_result_ttls_never_fail_a_completion(h: Harness) {
    for ttl in ["9223372036854775807", "4611686018427387904", "1e300", "inf", "nan", "-inf", "12abc"] {
        let (_, leases) = claimed_with(&h, &[&format!("big-{ttl}"), &format!("ok-{ttl}")], &[]).await;
        let f = BTreeMap::from([("result_ttl_seconds".to_owned(), ttl.to_owned())]);
        h.store.put_job_fields(&leases[0].job_id, &f).await.unwrap();
        let (one, two) = (json!(1), json!(2));
        let (a, b) = tokio::join!(h.store.complete(&leases[0], &one, h.now), h.store.complete(&leases[1], &two, h.now));
        assert_eq!((a.unwrap(), b.unwrap()), (Fence::Applied, Fence::Applied), "ttl {ttl}");
        for lease in &leases {
            let fields = h.store.job_fields(&lease.job_id).await.unwrap().expect("kept");
            assert_eq!(fields["status"], "COMPLETED", "ttl {ttl}");
            assert_eq!(h.store.renew(std::slice::from_ref(lease), LEASE).await.unwrap(), [LeaseState::Lost]);
            // A re-sent completion is told it applied and appends nothing.
            assert_eq!(h.store.complete(lease, &json!(3), h.now).await.unwrap(), Fence::Applied);
            assert_eq!(events(&h, lease).await, 1, "one completed event (ttl {ttl})");
        }
    }
}

/// Counters and limits of a job are job-supplied too: no outcome or
/// recovery step fails on them.
async fn absurd_numbers_in_a_job_never_fail_an_outcome(h: Harness) {
    let absurd = [
        ("current_retries", "9223372036854775807"),
        ("max_retries", "nan"),
        ("result_ttl_seconds", "inf"),
        ("job_timeout_seconds", "1e309"),
    ];
    let (q, leases) = claimed_with(&h, &["r", "dl", "rel", "rec"], &absurd).await;
    assert_eq!(h.store.retry(&leases[0], "e", h.now, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.dead_letter(&leases[1], "e", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.release(&leases[2], None, h.now).await.unwrap(), Fence::Applied);
    h.expire_lock(&leases[3].job_id).await;
    h.store.recover(h.at(LEASE.as_secs_f64() + 2.0), 100).await.unwrap();
    let fields = h.store.job_fields(&leases[1].job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "FAILED");
    let fields = h.store.job_fields(&leases[0].job_id).await.unwrap().unwrap();
    assert_eq!((fields["status"].as_str(), fields["current_retries"].as_str()), ("RETRYING", "4294967295"));
    // Everything still claimable runs again without a script error.
    let again = h.claim(&q, &h.worker("w2"), 10, h.at(LEASE.as_secs_f64() + 3.0)).await;
    assert!(!again.jobs.is_empty());
}

async fn enqueue_refuses_absurd_durations(h: Harness) {
    let q = h.queue("q");
    type Bend = fn(&mut rrq_store::NewJob);
    let cases: [(&str, Bend); 4] = [
        ("job_timeout_seconds", |j| j.job_timeout_seconds = -1),
        ("job_timeout_seconds", |j| j.job_timeout_seconds = 1 << 62),
        ("result_ttl_seconds", |j| j.result_ttl_seconds = i64::MAX),
        ("result_ttl_seconds", |j| j.result_ttl_seconds = i64::MIN),
    ];
    for (field, bend) in cases {
        let mut job = h.new_job("absurd", &q);
        bend(&mut job);
        let err = h.store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { what, .. } if what == field), "{field}: {err}");
        assert!(err.to_string().contains(field), "{err}");
        let err = h.store.enqueue_batch(vec![job]).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { what, .. } if what == field), "{field}: {err}");
    }
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0, "nothing was written");
    let mut at_max = h.new_job("max", &q);
    at_max.result_ttl_seconds = rrq_store::MAX_DURATION_SECONDS;
    at_max.job_timeout_seconds = rrq_store::MAX_DURATION_SECONDS;
    h.store.enqueue(at_max, EnqueueMode::Standard).await.unwrap();
}

/// A job flagged for cancel while it ran, whose worker then died: recovery
/// ends it CANCELLED instead of running it again.
async fn recovery_ends_a_cancel_requested_job_cancelled(h: Harness) {
    let (q, leases) = claimed_with(&h, &["a"], &[]).await;
    let id = &leases[0].job_id;
    assert_eq!(h.store.cancel(id).await.unwrap(), CancelResult::CancelRequested);
    h.expire_lock(id).await;
    let rec = h.store.recover(h.at(LEASE.as_secs_f64() + 2.0), 100).await.unwrap();
    assert!(rec.requeued.is_empty() && rec.dead_lettered.is_empty(), "{rec:?}");
    assert_eq!(rec.cancelled, vec![id.clone()]);
    assert_cancelled(&h, id, &q).await;
    assert!(h.claim(&q, &h.worker("w2"), 5, h.at(LEASE.as_secs_f64() + 3.0)).await.jobs.is_empty());
}

async fn a_retry_of_a_cancel_requested_job_ends_it_cancelled(h: Harness) {
    let (q, leases) = claimed_with(&h, &["a"], &[]).await;
    let id = &leases[0].job_id;
    assert_eq!(h.store.cancel(id).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.store.retry(&leases[0], "boom", h.now, h.now).await.unwrap(), Fence::Applied);
    assert_cancelled(&h, id, &q).await;
    // A re-sent retry after a lost reply is told it applied.
    assert_eq!(h.store.retry(&leases[0], "boom", h.now, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(events(&h, &leases[0]).await, 1);
}

async fn a_release_of_a_cancel_requested_job_ends_it_cancelled(h: Harness) {
    let (q, leases) = claimed_with(&h, &["a"], &[]).await;
    let id = &leases[0].job_id;
    assert_eq!(h.store.cancel(id).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.store.release(&leases[0], Some("shutdown"), h.now).await.unwrap(), Fence::Applied);
    assert_cancelled(&h, id, &q).await;
}

/// A queued job that carries a cancel request (set while it ran, by a
/// store that did not honour it) is ended CANCELLED by the claim, unrun.
async fn a_claim_never_starts_a_cancel_requested_job(h: Harness) {
    let q = h.queue("q");
    for id in ["flagged", "fine"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let flag = BTreeMap::from([("cancel_requested".to_owned(), "1".to_owned())]);
    h.store.put_job_fields(&h.id("flagged"), &flag).await.unwrap();
    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    let ran: Vec<_> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(ran, vec![h.id("fine")]);
    assert_eq!(batch.dropped, vec![h.id("flagged")]);
    assert_cancelled(&h, &h.id("flagged"), &q).await;
    assert_eq!(h.job(&h.id("flagged")).await.start_time, None, "never started");
}

async fn a_requeued_job_loses_a_stale_cancel_request(h: Harness) {
    let d = h.defaults();
    let (q, leases) = claimed_with(&h, &["a"], &[]).await;
    let id = &leases[0].job_id;
    assert_eq!(h.store.cancel(id).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.store.dead_letter(&leases[0], "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert!(h.store.dlq_requeue(&d.dlq, id, &q, h.at(1.0)).await.unwrap());
    assert!(!h.store.job_fields(id).await.unwrap().unwrap().contains_key("cancel_requested"));
    let mut batch = h.claim(&q, &h.worker("w2"), 5, h.at(1.0)).await;
    assert_eq!(batch.jobs.len(), 1, "the requeued job runs");
    let lease = batch.jobs.remove(0).lease;
    assert_eq!(h.store.renew(&[lease], LEASE).await.unwrap(), [LeaseState::Held]);
}

/// Every path that ends a job CANCELLED releases its unique lock (only if
/// the job holds it) and appends a terminal event a waiter wakes on.
async fn every_cancel_releases_the_unique_lock_and_wakes_waiters(h: Harness) {
    let q = h.queue("q");
    let key = format!("cron:f-{}", h.worker("k"));
    let unique = EnqueueMode::UniqueLock { key: key.clone(), ttl: Duration::from_secs(600) };
    // Pending cancel.
    h.store.enqueue(h.new_job("pending", &q), unique.clone()).await.unwrap();
    assert!(h.store.unique_lock_ttl(&key).await.unwrap().is_some());
    assert_eq!(h.store.cancel(&h.id("pending")).await.unwrap(), CancelResult::Cancelled);
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None, "a pending cancel frees the lock");
    let waited = h.store.wait_job_event(&h.id("pending"), Some("0-0".into()), Duration::ZERO).await.unwrap();
    assert!(waited.is_some(), "the cancel appended an event");
    // Running cancel.
    h.store.enqueue(h.new_job("running", &q), unique.clone()).await.unwrap();
    let mut batch = h.claim(&q, &h.worker("w"), 1, h.now).await;
    let lease = batch.jobs.remove(0).lease;
    assert_eq!(h.store.cancel(&lease.job_id).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.store.finish_cancelled(&lease).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.unique_lock_ttl(&key).await.unwrap(), None, "a finished cancel frees the lock");
    assert_cancelled(&h, &lease.job_id, &q).await;
    // A lock held by another job is left alone.
    h.store.enqueue(h.new_job("holder", &q), unique.clone()).await.unwrap();
    h.store.enqueue(h.new_job("deferred", &q), unique).await.unwrap();
    assert_eq!(h.store.cancel(&h.id("deferred")).await.unwrap(), CancelResult::Cancelled);
    assert!(h.store.unique_lock_ttl(&key).await.unwrap().is_some(), "the holder keeps its lock");
}

/// CANCELLED, out of its queue, flag cleared, lock and lease gone, one
/// terminal event.
async fn assert_cancelled(h: &Harness, id: &rrq_protocol::JobId, q: &QueueName) {
    let fields = h.store.job_fields(id).await.unwrap().expect("the job is kept");
    assert_eq!(fields["status"], "CANCELLED", "{fields:?}");
    assert!(!fields.contains_key("cancel_requested"), "the flag is cleared: {fields:?}");
    assert!(h.store.queue_entries(q, 0, 100).await.unwrap().iter().all(|(i, _)| i != id), "not queued");
    let waited = h.store.wait_job_event(id, Some("0-0".into()), Duration::ZERO).await.unwrap();
    assert!(waited.is_some(), "a terminal event was appended");
}

/// Runs one raw command on the test Redis.
async fn raw(h: &Harness, args: &[&str]) -> fred::types::Value {
    use fred::interfaces::ClientLike as _;
    let command = fred::types::CustomCommand::new(args[0].to_owned(), fred::types::ClusterHash::FirstKey, false);
    let rest: Vec<String> = args[1..].iter().map(|a| (*a).to_owned()).collect();
    h.raw().custom(command, rest).await.unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

#[tokio::test]
async fn an_absurd_result_ttl_is_clamped_to_the_documented_maximum() {
    let h = Harness::redis().await;
    let (_, leases) = claimed_with(&h, &["big"], &[("result_ttl_seconds", "9223372036854775807")]).await;
    assert_eq!(h.store.complete(&leases[0], &json!(1), h.now).await.unwrap(), Fence::Applied);
    let key = rrq_store::keys::job(&leases[0].job_id);
    let ttl = raw(&h, &["TTL", &key]).await.as_i64().unwrap();
    assert!((rrq_store::MAX_DURATION_SECONDS - 5..=rrq_store::MAX_DURATION_SECONDS).contains(&ttl), "{ttl}");
}

/// A job's `dlq_name` or `queue_name` may name a key that holds something
/// else: the step goes to the default DLQ / queue instead of failing after
/// its first write, and enqueues into such a queue are refused unwritten.
#[tokio::test]
async fn targets_of_another_type_never_fail_a_step_half_way() {
    let h = Harness::redis().await;
    let d = h.defaults();
    let odd_dlq = h.dlq("odd");
    let odd_queue = h.queue("odd");
    raw(&h, &["SET", odd_dlq.as_str(), "x"]).await;
    raw(&h, &["SET", odd_queue.as_str(), "x"]).await;
    let (_, leases) = claimed_with(&h, &["dl", "r", "rec"], &[]).await;
    let f = BTreeMap::from([("dlq_name".to_owned(), odd_dlq.as_str().to_owned())]);
    h.store.put_job_fields(&leases[0].job_id, &f).await.unwrap();
    let f = BTreeMap::from([("queue_name".to_owned(), odd_queue.as_str().to_owned())]);
    h.store.put_job_fields(&leases[1].job_id, &f).await.unwrap();
    h.store.put_job_fields(&leases[2].job_id, &f).await.unwrap();

    assert_eq!(h.store.dead_letter(&leases[0], "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), vec![leases[0].job_id.clone()]);
    assert_eq!(h.store.retry(&leases[1], "e", h.now, h.now).await.unwrap(), Fence::Applied);
    h.expire_lock(&leases[2].job_id).await;
    let rec = h.store.recover(h.at(LEASE.as_secs_f64() + 2.0), 1000).await.unwrap();
    assert!(rec.requeued.contains(&leases[2].job_id), "{rec:?}");
    let queued: Vec<_> = h.store.queue_entries(&d.queue, 0, 10).await.unwrap().into_iter().map(|(i, _)| i).collect();
    assert_eq!(queued.len(), 2, "both went to the default queue: {queued:?}");
    assert_eq!(raw(&h, &["GET", odd_queue.as_str()]).await.as_string().as_deref(), Some("x"), "left alone");

    let err = h.store.enqueue(h.new_job("into-odd", &odd_queue), EnqueueMode::Standard).await.unwrap_err();
    assert!(matches!(err, StoreError::Command { .. }), "{err}");
    assert!(h.store.job_fields(&h.id("into-odd")).await.unwrap().is_none(), "nothing was written");
    let err = h.store.enqueue_batch(vec![h.new_job("b1", &h.queue("fine")), h.new_job("b2", &odd_queue)]).await;
    assert!(err.is_err());
    assert!(h.store.job_fields(&h.id("b1")).await.unwrap().is_none(), "nothing of the batch was written");
}

/// The payload limit is checked by the claim itself, before the hash is
/// read whole: an oversized job goes to its DLQ unrun, as the worker would
/// have moved it, and is listed as dropped.
async fn an_oversized_payload_is_dead_lettered_at_claim_unrun(h: Harness) {
    let q = h.queue("q");
    let dlq = h.dlq("big");
    let mut big = h.new_job("big", &q);
    big.params = json!({"blob": "x".repeat(2000)}).as_object().unwrap().clone();
    let stored = serde_json::Value::Object(big.params.clone()).to_string().len();
    h.store.enqueue(big, EnqueueMode::Standard).await.unwrap();
    h.store.enqueue(h.new_job("fine", &q), EnqueueMode::Standard).await.unwrap();
    let f = BTreeMap::from([("dlq_name".to_owned(), dlq.as_str().to_owned())]);
    h.store.put_job_fields(&h.id("big"), &f).await.unwrap();
    let req = rrq_store::ClaimRequest {
        queue: q.clone(),
        worker_id: h.worker("w"),
        max: 5,
        now: h.now,
        lease_ttl: LEASE,
        max_payload_bytes: 1000,
    };
    let batch = h.store.claim(req).await.unwrap();
    let ran: Vec<_> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(ran, vec![h.id("fine")]);
    assert_eq!(batch.dropped, vec![h.id("big")]);
    let fields = h.store.job_fields(&h.id("big")).await.unwrap().unwrap();
    assert_eq!(fields["status"], "FAILED");
    assert_eq!(
        fields["last_error"],
        format!("Job payload is {stored} bytes, over max_payload_bytes (1000). Moved to DLQ.")
    );
    assert_eq!(fields["current_retries"], "0", "not an attempt");
    assert!(!fields.contains_key("start_time") && !fields.contains_key("worker_id"), "never started");
    assert_eq!(h.store.dlq_ids(&dlq, 0, 10).await.unwrap(), vec![h.id("big")], "in its own DLQ");
    assert!(h.store.wait_job_event(&h.id("big"), Some("0-0".into()), Duration::ZERO).await.unwrap().is_some());
}

/// Runs one raw command whose arguments are bytes.
async fn raw_bytes(h: &Harness, name: &str, args: Vec<Vec<u8>>) -> fred::types::Value {
    use fred::interfaces::ClientLike as _;
    let command = fred::types::CustomCommand::new(name.to_owned(), fred::types::ClusterHash::FirstKey, false);
    let args: Vec<fred::types::Value> = args.into_iter().map(|a| fred::types::Value::Bytes(a.into())).collect();
    h.raw().custom(command, args).await.unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A job id that is not UTF-8 (written by a foreign producer) cannot be
/// named by a `JobId`: the claim takes it off the queue and keeps its hash
/// under the quarantine prefix with the reason, instead of handing out a
/// lossy id whose lease would point at another key.
#[tokio::test]
async fn a_job_id_that_is_not_utf8_is_quarantined_not_decoded_lossily() {
    let h = Harness::redis().await;
    let q = h.queue("q");
    h.store.enqueue(h.new_job("good", &q), EnqueueMode::Standard).await.unwrap();
    h.store.enqueue(h.new_job("ünï-日本-😀", &q), EnqueueMode::Standard).await.unwrap();
    // An overlong encoding of '/', also not UTF-8.
    let mut overlong = h.id("overlong").as_str().as_bytes().to_vec();
    overlong.extend([0xC0, 0xAF]);
    raw_bytes(&h, "ZADD", vec![q.as_str().as_bytes().to_vec(), b"0".to_vec(), overlong]).await;
    let mut bad = h.id("bad").as_str().as_bytes().to_vec();
    bad.push(0xFF);
    let job_key = [rrq_store::keys::JOB_PREFIX.as_bytes(), &bad].concat();
    let fields: Vec<&[u8]> =
        vec![b"function_name", b"echo", b"job_params", b"{}", b"status", b"PENDING", b"enqueue_time"];
    let mut args = vec![job_key.clone()];
    args.extend(fields.into_iter().map(<[u8]>::to_vec));
    args.push(rrq_store::format_timestamp(h.now).into_bytes());
    raw_bytes(&h, "HSET", args).await;
    let score = (h.now.timestamp_millis() - 1).to_string().into_bytes();
    raw_bytes(&h, "ZADD", vec![q.as_str().as_bytes().to_vec(), score, bad.clone()]).await;

    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    let ran: Vec<_> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(ran, vec![h.id("good"), h.id("ünï-日本-😀")], "only the good jobs run");
    assert!(batch.dropped.iter().all(|id| !id.as_str().contains('\u{FFFD}')), "{:?}", batch.dropped);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0, "the bad id left the queue");
    let exists = raw_bytes(&h, "EXISTS", vec![job_key]).await;
    assert_eq!(exists.as_i64(), Some(0), "the job key moved");
    let kept = [rrq_store::keys::QUARANTINE_PREFIX.as_bytes(), &bad].concat();
    let reason = raw_bytes(&h, "HGET", vec![kept.clone(), b"quarantine_reason".to_vec()]).await;
    let reason = reason.as_bytes().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    assert!(reason.contains("not valid UTF-8"), "{reason:?}");
    let params = raw_bytes(&h, "HGET", vec![kept, b"job_params".to_vec()]).await;
    assert_eq!(params.as_bytes(), Some(&b"{}"[..]), "the hash is preserved");

    // Readers that turn stored ids into JobIds refuse such an id rather
    // than decode it lossily.
    let dlq = h.dlq("d");
    raw_bytes(&h, "LPUSH", vec![dlq.as_str().as_bytes().to_vec(), bad.clone()]).await;
    let err = h.store.dlq_ids(&dlq, 0, 10).await.unwrap_err();
    assert!(err.to_string().contains("dlq_ids"), "{err}");
    let q2 = h.queue("q2");
    raw_bytes(&h, "ZADD", vec![q2.as_str().as_bytes().to_vec(), b"1".to_vec(), bad]).await;
    assert!(h.store.queue_entries(&q2, 0, 10).await.is_err());
}

/// A waiter already blocked when the terminal event is appended wakes at
/// once, on either store (not at its timeout).
async fn a_blocked_waiter_wakes_when_the_event_is_appended(h: Harness) {
    let (_, leases) = claimed_with(&h, &["a"], &[]).await;
    let lease = leases[0].clone();
    let store = h.store.clone();
    let id = lease.job_id.clone();
    let started = std::time::Instant::now();
    let waiter = tokio::spawn(async move { store.wait_job_event(&id, None, Duration::from_secs(10)).await });
    // Let the waiter block first: a few turns of this runtime on the memory
    // store; on Redis, until the server reports the blocked XREAD (a waiter
    // reading from `$` after the event would rightly see nothing).
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    if h.is_redis() {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let info: String = match raw(&h, &["INFO", "clients"]).await {
                fred::types::Value::String(s) => s.to_string(),
                fred::types::Value::Bytes(b) => String::from_utf8_lossy(&b).into_owned(),
                other => format!("{other:?}"),
            };
            let blocked = info
                .lines()
                .find_map(|l| l.strip_prefix("blocked_clients:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
                .unwrap_or(0);
            if blocked > 0 {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the waiter never blocked: {info}");
            tokio::time::sleep(Duration::from_millis(5)).await; // sleep-ok: polling with a deadline
        }
    }
    assert_eq!(h.store.cancel(&lease.job_id).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.store.finish_cancelled(&lease).await.unwrap(), Fence::Applied);
    let seen = waiter.await.unwrap().unwrap();
    assert!(seen.is_some(), "the waiter saw the event");
    assert!(started.elapsed() < Duration::from_secs(5), "woken, not timed out: {:?}", started.elapsed());
}

/// Every script in src/redis/scripts runs over a job whose fields are absurd
/// (huge, NaN or infinite numbers as text, a DLQ name holding a string)
/// without a script error. The list below must name every script file, so
/// a new script cannot skip this test.
#[tokio::test]
async fn every_script_survives_absurd_job_fields() {
    let h = Harness::redis().await;
    let d = h.defaults();
    let odd = h.dlq("odd");
    raw(&h, &["SET", odd.as_str(), "a string"]).await;
    let absurd = [
        ("current_retries", "9223372036854775807"),
        ("max_retries", "nan"),
        ("job_timeout_seconds", "-inf"),
        ("result_ttl_seconds", "1e309"),
        ("dlq_name", odd.as_str()),
        ("job_unique_key", "k\u{0}\u{7f}"),
        ("cancel_requested", "maybe"),
    ];
    let mut ran = std::collections::BTreeSet::new();
    let ids = ["c", "r", "dl", "rel", "fc", "rec"];
    let (q, leases) = claimed_with(&h, &ids, &absurd).await;
    ran.insert("claim");
    let lease = |id: &str| leases.iter().find(|l| l.job_id == h.id(id)).unwrap().clone();
    h.store.renew(&leases, LEASE).await.unwrap();
    ran.insert("renew");
    assert_eq!(h.store.complete(&lease("c"), &json!(1), h.now).await.unwrap(), Fence::Applied);
    ran.insert("complete");
    assert_eq!(h.store.retry(&lease("r"), "e", h.now, h.now).await.unwrap(), Fence::Applied);
    ran.insert("retry");
    assert_eq!(h.store.dead_letter(&lease("dl"), "e", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    ran.insert("dead_letter");
    assert_eq!(h.store.release(&lease("rel"), Some("shutdown"), h.now).await.unwrap(), Fence::Applied);
    ran.insert("release");
    h.store.cancel(&h.id("fc")).await.unwrap();
    ran.insert("cancel");
    assert_eq!(h.store.finish_cancelled(&lease("fc")).await.unwrap(), Fence::Applied);
    ran.insert("finish_cancelled");
    h.expire_lock(&h.id("rec")).await;
    h.store.recover(h.at(LEASE.as_secs_f64() + 2.0), 1000).await.unwrap();
    ran.insert("recover");
    assert!(h.store.dlq_requeue(&d.dlq, &h.id("dl"), &q, h.now).await.unwrap(), "dl went to the default DLQ");
    ran.insert("dlq_requeue");
    let again = h.claim(&q, &h.worker("w2"), 10, h.at(LEASE.as_secs_f64() + 3.0)).await;
    for c in &again.jobs {
        assert_eq!(
            h.store.dead_letter(&c.lease, "again", AttemptCount::NotCounted, h.now).await.unwrap(),
            Fence::Applied
        );
    }
    let listed = h.store.dlq_ids(&d.dlq, 0, 100).await.unwrap();
    h.store.dlq_purge(&d.dlq, &listed).await.unwrap();
    ran.insert("dlq_purge");

    // Enqueues whose dedup keys name jobs with absurd fields.
    let absurd_map: BTreeMap<String, String> = absurd.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    let q2 = h.queue("q2");
    let idem = EnqueueMode::Idempotent { key: h.worker("idem"), ttl: Duration::MAX };
    h.store.enqueue(h.new_job("i1", &q2), idem.clone()).await.unwrap();
    h.store.put_job_fields(&h.id("i1"), &absurd_map).await.unwrap();
    h.store.enqueue(h.new_job("i2", &q2), idem).await.unwrap();
    ran.insert("enqueue");
    h.store.enqueue_batch(vec![h.new_job("b1", &q2), h.new_job("b2", &q2)]).await.unwrap();
    ran.insert("enqueue_batch");
    let limited = EnqueueMode::RateLimited { key: h.worker("rl"), window: Duration::MAX };
    h.store.enqueue(h.new_job("rl", &q2), limited).await.unwrap();
    ran.insert("enqueue_rate_limited");
    let debounced = EnqueueMode::Debounced { key: h.worker("db"), window: Duration::MAX };
    h.store.enqueue(h.new_job("db1", &q2), debounced.clone()).await.unwrap();
    h.store.put_job_fields(&h.id("db1"), &absurd_map).await.unwrap();
    h.store.enqueue(h.new_job("db2", &q2), debounced).await.unwrap();
    ran.insert("enqueue_debounced");
    let unique = EnqueueMode::UniqueLock { key: h.worker("u"), ttl: Duration::MAX };
    h.store.enqueue(h.new_job("u1", &q2), unique.clone()).await.unwrap();
    h.store.enqueue(h.new_job("u2", &q2), unique).await.unwrap();
    ran.insert("enqueue_unique");

    // Readers and the cron record.
    let all: Vec<_> = ids.iter().chain(&["i1", "db1", "u1"]).map(|i| h.id(i)).collect();
    h.store.job_fields_batch(&all).await.unwrap();
    ran.insert("inspect_jobs");
    h.store.queues().await.unwrap();
    ran.insert("inspect_queues");
    let health = rrq_store::WorkerHealth {
        active_jobs: u64::MAX,
        concurrency_limit: 0,
        queues: vec![],
        status: "\u{0}".into(),
        timestamp: json!(f64::MAX),
        worker_id: h.worker("w"),
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    };
    h.store.heartbeat(&health, Duration::MAX).await.unwrap();
    h.store.workers().await.unwrap();
    ran.insert("inspect_workers");
    h.store.record_cron_tick(&h.worker("cron"), h.now).await.unwrap();
    h.store.record_cron_tick(&h.worker("cron"), chrono::DateTime::<chrono::Utc>::MIN_UTC).await.unwrap();
    ran.insert("cron_tick");

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/redis/scripts");
    let scripts: std::collections::BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.unwrap().file_name().to_string_lossy().strip_suffix(".lua").map(str::to_owned))
        .filter(|name| name != "common")
        .collect();
    let ran: std::collections::BTreeSet<String> = ran.into_iter().map(str::to_owned).collect();
    assert_eq!(ran, scripts, "every script is exercised here");
}

/// `delete_matching` (`rrq debug clear`) deletes a key whose name is not
/// UTF-8 by its exact bytes, rather than a lossily decoded name.
#[tokio::test]
async fn delete_matching_deletes_keys_that_are_not_utf8() {
    let h = Harness::redis().await;
    let prefix = format!("clear-{}:", h.worker("k"));
    let mut odd = prefix.as_bytes().to_vec();
    odd.push(0xFF);
    raw_bytes(&h, "SET", vec![odd.clone(), b"v".to_vec()]).await;
    raw(&h, &["SET", &format!("{prefix}plain"), "v"]).await;
    let pattern = format!("{prefix}*");
    assert_eq!(h.store.delete_matching(&pattern, true).await.unwrap(), 2);
    assert_eq!(h.store.delete_matching(&pattern, false).await.unwrap(), 2);
    assert_eq!(raw_bytes(&h, "EXISTS", vec![odd]).await.as_i64(), Some(0), "the odd key is gone");
}
