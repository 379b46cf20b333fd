//! Enqueue modes (SEMANTICS §3.2–§3.4) and ready signals.

use std::collections::BTreeSet;
use std::time::Duration;

use rrq_protocol::QueueName;
use rrq_store::{EnqueueMode, Enqueued, JobStatus, Signal, StoreError};
use tokio::sync::mpsc;

use crate::harness::Harness;

conformance!(
    shared:
        standard_enqueue_writes_the_reference_fields,
        a_taken_id_is_refused_and_left_alone,
        an_idempotency_key_returns_the_live_job,
        the_rate_limiter_drops_requests_within_its_window,
        a_debounce_updates_the_pending_job,
        a_debounce_to_another_queue_moves_the_job,
        a_debounce_after_the_holder_started_creates_a_new_job,
        invalid_modes_are_refused,
        a_batch_reports_each_job_and_signals_each_queue_once,
        a_large_batch_answers_in_order_across_chunks,
        only_ready_jobs_signal_their_queue;
    private:;
    cluster:
        standard_enqueue_writes_the_reference_fields,
        a_taken_id_is_refused_and_left_alone,
        a_large_batch_answers_in_order_across_chunks,
);

async fn standard_enqueue_writes_the_reference_fields(h: Harness) {
    let q = h.queue("mail");
    let job = h.new_job("a", &q);
    let got = h.store.enqueue(job.clone(), EnqueueMode::Standard).await.unwrap();
    assert_eq!(got, Enqueued::Created(job.id.clone()));

    let mut fields = h.store.job_fields(&job.id).await.unwrap().unwrap();
    if h.is_cluster() {
        // The sharded layout also marks the enqueue call (see docs/cluster.md).
        assert_eq!(fields.remove("enqueue_call").map(|m| m.len()), Some(32));
    }
    let expected: Vec<(String, String)> = job.to_fields().into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    assert_eq!(fields.into_iter().collect::<BTreeSet<_>>(), expected.into_iter().collect::<BTreeSet<_>>());

    let parsed = h.job(&job.id).await;
    assert_eq!(parsed.status, Some(JobStatus::Pending));
    assert_eq!(parsed.queue_name.as_ref(), Some(&q));
    assert_eq!(parsed.params, job.params);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);
    assert!(h.store.job(&h.id("never")).await.unwrap().is_none());
}

async fn a_taken_id_is_refused_and_left_alone(h: Harness) {
    let q = h.queue("q");
    let first = h.new_job("a", &q);
    h.store.enqueue(first.clone(), EnqueueMode::Standard).await.unwrap();
    let mut second = h.new_job("a", &h.queue("other"));
    second.function_name = "other".into();
    match h.store.enqueue(second, EnqueueMode::Standard).await {
        Err(StoreError::JobIdTaken(id)) => assert_eq!(id, first.id),
        other => panic!("expected JobIdTaken, got {other:?}"),
    }
    assert_eq!(h.job(&first.id).await.function_name, "echo");
    assert_eq!(h.store.queue_len(&h.queue("other")).await.unwrap(), 0);
}

async fn an_idempotency_key_returns_the_live_job(h: Harness) {
    let q = h.queue("q");
    let key = h.worker("order");
    let mode = EnqueueMode::Idempotent { key: key.clone(), ttl: Duration::from_secs(600) };
    let first = h.store.enqueue(h.new_job("a", &q), mode.clone()).await.unwrap();
    assert_eq!(first, Enqueued::Created(h.id("a")));
    let second = h.store.enqueue(h.new_job("b", &q), mode).await.unwrap();
    assert_eq!(second, Enqueued::Existing(h.id("a")));
    assert!(h.store.job(&h.id("b")).await.unwrap().is_none(), "a duplicate must write nothing");
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);
}

async fn the_rate_limiter_drops_requests_within_its_window(h: Harness) {
    let q = h.queue("q");
    let mode = EnqueueMode::RateLimited { key: h.worker("user"), window: Duration::from_millis(2500) };
    assert_eq!(h.store.enqueue(h.new_job("a", &q), mode.clone()).await.unwrap(), Enqueued::Created(h.id("a")));
    assert_eq!(h.store.enqueue(h.new_job("b", &q), mode.clone()).await.unwrap(), Enqueued::RateLimited);
    assert!(h.store.job(&h.id("b")).await.unwrap().is_none());
    // Another key is not limited.
    let other = EnqueueMode::RateLimited { key: h.worker("other"), window: Duration::from_secs(1) };
    assert_eq!(h.store.enqueue(h.new_job("c", &q), other).await.unwrap(), Enqueued::Created(h.id("c")));
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 2);
}

async fn a_debounce_updates_the_pending_job(h: Harness) {
    let q = h.queue("q");
    let mode = EnqueueMode::Debounced { key: h.worker("doc"), window: Duration::from_secs(5) };
    let mut first = h.new_job("a", &q);
    first.scheduled_time = h.at(5.0);
    first.correlation_context = [("tenant".to_owned(), "t1".to_owned())].into();
    assert_eq!(h.store.enqueue(first.clone(), mode.clone()).await.unwrap(), Enqueued::Created(first.id.clone()));

    let mut second = h.new_job("b", &q);
    second.function_name = "render".into();
    second.params = serde_json::json!({"v": 2}).as_object().unwrap().clone();
    second.enqueue_time = h.at(1.0);
    second.scheduled_time = h.at(6.0);
    second.trace_context.clear();
    assert_eq!(h.store.enqueue(second, mode).await.unwrap(), Enqueued::Existing(first.id.clone()));

    assert!(h.store.job(&h.id("b")).await.unwrap().is_none());
    let job = h.job(&first.id).await;
    assert_eq!(job.function_name, "render");
    assert_eq!(job.params["v"], 2);
    assert_eq!(job.enqueue_time, h.now, "the enqueue time is not touched by an update");
    assert_eq!(job.next_scheduled_run_time, Some(h.at(6.0)));
    assert_eq!(job.trace_context, Some(first.trace_context.clone()), "a missing trace context keeps the old one");
    assert_eq!(job.correlation_context, None, "a missing correlation context removes the old one");
    // Rescheduled: not ready at 5 s any more, ready at 6 s.
    assert!(h.claim(&q, &h.worker("w"), 10, h.at(5.5)).await.jobs.is_empty());
    assert_eq!(h.claim(&q, &h.worker("w"), 10, h.at(6.0)).await.jobs.len(), 1);
}

async fn a_debounce_to_another_queue_moves_the_job(h: Harness) {
    let (q1, q2) = (h.queue("one"), h.queue("two"));
    let mode = EnqueueMode::Debounced { key: h.worker("doc"), window: Duration::from_secs(5) };
    h.store.enqueue(h.new_job("a", &q1), mode.clone()).await.unwrap();
    let got = h.store.enqueue(h.new_job("b", &q2), mode).await.unwrap();
    assert_eq!(got, Enqueued::Existing(h.id("a")));
    assert_eq!(h.store.queue_len(&q1).await.unwrap(), 0, "the job must leave its old queue (D1)");
    assert_eq!(h.store.queue_len(&q2).await.unwrap(), 1);
    assert_eq!(h.job(&h.id("a")).await.queue_name, Some(q2));
}

async fn a_debounce_after_the_holder_started_creates_a_new_job(h: Harness) {
    let q = h.queue("q");
    let mode = EnqueueMode::Debounced { key: h.worker("doc"), window: Duration::from_secs(5) };
    h.store.enqueue(h.new_job("a", &q), mode.clone()).await.unwrap();
    assert_eq!(h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.len(), 1);
    let got = h.store.enqueue(h.new_job("b", &q), mode).await.unwrap();
    assert_eq!(got, Enqueued::Created(h.id("b")), "a running holder no longer absorbs requests");
    assert_eq!(h.job(&h.id("a")).await.status, Some(JobStatus::Active));
}

async fn invalid_modes_are_refused(h: Harness) {
    let q = h.queue("q");
    for mode in [
        EnqueueMode::RateLimited { key: "k".into(), window: Duration::ZERO },
        EnqueueMode::Debounced { key: "k".into(), window: Duration::ZERO },
        EnqueueMode::Idempotent { key: "  ".into(), ttl: Duration::from_secs(1) },
    ] {
        let err = h.store.enqueue(h.new_job("a", &q), mode.clone()).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput { .. }), "{mode:?} gave {err:?}");
    }
    assert!(h.store.job(&h.id("a")).await.unwrap().is_none());
}

async fn a_batch_reports_each_job_and_signals_each_queue_once(h: Harness) {
    let (q1, q2, sentinel) = (h.queue("one"), h.queue("two"), h.queue("sentinel"));
    h.store.enqueue(h.new_job("taken", &q1), EnqueueMode::Standard).await.unwrap();
    let mut ready = h.store.subscribe_ready().await.unwrap();

    let mut jobs = vec![h.new_job("a", &q1), h.new_job("taken", &q1), h.new_job("b", &q2), h.new_job("c", &q1)];
    let mut later = h.new_job("later", &q2);
    later.scheduled_time = h.at(3600.0);
    jobs.push(later);
    let results = h.store.enqueue_batch(jobs).await.unwrap();
    assert_eq!(results.len(), 5);
    assert!(matches!(&results[0], Ok(Enqueued::Created(id)) if *id == h.id("a")));
    assert!(matches!(&results[1], Err(StoreError::JobIdTaken(id)) if *id == h.id("taken")));
    assert!(matches!(&results[2], Ok(Enqueued::Created(id)) if *id == h.id("b")));
    assert!(matches!(&results[3], Ok(Enqueued::Created(id)) if *id == h.id("c")));
    assert!(matches!(&results[4], Ok(Enqueued::Created(id)) if *id == h.id("later")));
    assert_eq!(h.store.queue_len(&q1).await.unwrap(), 3);
    assert_eq!(h.store.queue_len(&q2).await.unwrap(), 2);

    // Signals arrive in order: everything the batch sent comes before the sentinel's.
    h.store.enqueue(h.new_job("s", &sentinel), EnqueueMode::Standard).await.unwrap();
    let seen = signals_until(&mut ready, &sentinel, &[&q1, &q2]).await;
    assert_eq!(seen.iter().filter(|q| **q == q1).count(), 1, "one signal per queue: {seen:?}");
    assert_eq!(seen.iter().filter(|q| **q == q2).count(), 1, "one signal per queue: {seen:?}");
}

/// Big enough to span several script calls in flight at once: every
/// answer still lines up with its job, and a taken id fails only its job.
async fn a_large_batch_answers_in_order_across_chunks(h: Harness) {
    let q = h.queue("large");
    let taken = [0usize, 99, 100, 501, 1_049];
    for i in taken {
        h.store.enqueue(h.new_job(&format!("j{i}"), &q), EnqueueMode::Standard).await.unwrap();
    }
    let jobs = (0..1_050).map(|i| h.new_job(&format!("j{i}"), &q)).collect();
    let results = h.store.enqueue_batch(jobs).await.unwrap();
    assert_eq!(results.len(), 1_050);
    for (i, r) in results.iter().enumerate() {
        let id = h.id(&format!("j{i}"));
        if taken.contains(&i) {
            assert!(matches!(r, Err(StoreError::JobIdTaken(t)) if *t == id), "job {i}: {r:?}");
        } else {
            assert!(matches!(r, Ok(Enqueued::Created(c)) if *c == id), "job {i}: {r:?}");
        }
    }
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1_050);
    assert_eq!(h.job(&h.id("j777")).await.status, Some(JobStatus::Pending));
}

async fn only_ready_jobs_signal_their_queue(h: Harness) {
    let (deferred, now) = (h.queue("deferred"), h.queue("now"));
    let mut ready = h.store.subscribe_ready().await.unwrap();
    let mut job = h.new_job("a", &deferred);
    job.scheduled_time = h.at(3600.0);
    h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    h.store.enqueue(h.new_job("b", &now), EnqueueMode::Standard).await.unwrap();
    let seen = signals_until(&mut ready, &now, &[&deferred]).await;
    assert!(seen.is_empty(), "a deferred job must not signal: {seen:?}");

    // A retry that is due now signals the job's own queue.
    let batch = h.claim(&now, &h.worker("w"), 1, h.now).await;
    let lease = &batch.jobs[0].lease;
    assert_eq!(h.store.retry(lease, "again", h.now, h.now).await.unwrap(), rrq_store::Fence::Applied);
    signals_until(&mut ready, &now, &[]).await;
}

/// Collects the signals for `watched` queues until `until` is signalled;
/// signals of other tests' queues are ignored.
pub(crate) async fn signals_until(
    rx: &mut mpsc::Receiver<Signal>,
    until: &QueueName,
    watched: &[&QueueName],
) -> Vec<QueueName> {
    let mut seen = Vec::new();
    let wait = async {
        while let Some(signal) = rx.recv().await {
            let Signal::Ready(q) = signal else { continue };
            if q == *until {
                return;
            }
            if watched.contains(&&q) {
                seen.push(q);
            }
        }
        panic!("the ready channel closed");
    };
    tokio::time::timeout(Duration::from_secs(10), wait).await.expect("the ready signal arrives");
    seen
}
