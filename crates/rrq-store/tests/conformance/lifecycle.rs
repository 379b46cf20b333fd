//! Cancel, DLQ requeue and orphan recovery.

use rrq_store::{AttemptCount, CancelResult, EnqueueMode, Fence, JobStatus, LeaseState, format_timestamp};
use serde_json::json;

use crate::harness::{Harness, LEASE};

conformance!(
    shared:
        cancel_follows_the_job_state,
        a_dlq_requeue_gives_a_fresh_attempt_budget,
        queue_lengths_count_ready_and_scheduled_jobs;
    private:
        recovery_requeues_a_job_whose_lock_expired,
        recovery_dead_letters_a_job_out_of_attempts,
        recovery_leaves_held_leases_alone;
    cluster:
        cancel_follows_the_job_state,
        recovery_requeues_a_job_whose_lock_expired,
        recovery_leaves_held_leases_alone,
);

async fn cancel_follows_the_job_state(h: Harness) {
    let q = h.queue("q");
    for id in ["retrying", "running", "done"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let mut pending = h.new_job("pending", &q);
    pending.scheduled_time = h.at(1.0);
    h.store.enqueue(pending, EnqueueMode::Standard).await.unwrap();
    let batch = h.claim(&q, &h.worker("w"), 3, h.now).await;
    let lease_of = |id| batch.jobs.iter().find(|c| c.lease.job_id == h.id(id)).unwrap().lease.clone();
    assert_eq!(h.store.retry(&lease_of("retrying"), "e", h.at(60.0), h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.complete(&lease_of("done"), &json!(1), h.now).await.unwrap(), Fence::Applied);
    let pending = h.id("pending");
    assert_eq!(h.job(&pending).await.status, Some(JobStatus::Pending), "not due, so not claimed");

    assert_eq!(h.store.cancel(&pending).await.unwrap(), CancelResult::Cancelled);
    assert_eq!(h.job(&pending).await.status, Some(JobStatus::Cancelled));
    assert_eq!(h.store.cancel(&h.id("retrying")).await.unwrap(), CancelResult::Cancelled);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0, "cancelled jobs leave their queue");

    assert_eq!(h.store.cancel(&h.id("running")).await.unwrap(), CancelResult::CancelRequested);
    assert_eq!(h.job(&h.id("running")).await.status, Some(JobStatus::Active), "a running job is only flagged");
    assert_eq!(h.store.cancel(&h.id("done")).await.unwrap(), CancelResult::NotCancellable(Some(JobStatus::Completed)));
    assert_eq!(h.store.cancel(&pending).await.unwrap(), CancelResult::NotCancellable(Some(JobStatus::Cancelled)));
    assert_eq!(h.store.cancel(&h.id("ghost")).await.unwrap(), CancelResult::NotFound);
}

async fn a_dlq_requeue_gives_a_fresh_attempt_budget(h: Harness) {
    let q = h.queue("q");
    let target = h.queue("target");
    let d = h.defaults();
    let mut job = h.new_job("a", &q);
    job.max_retries = 1;
    h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    assert_eq!(h.store.dead_letter(&lease, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), vec![lease.job_id.clone()]);

    assert!(!h.store.dlq_requeue(&h.dlq("elsewhere"), &lease.job_id, &target, h.at(1.0)).await.unwrap());
    assert!(h.store.dlq_requeue(&d.dlq, &lease.job_id, &target, h.at(1.0)).await.unwrap());
    assert!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap().is_empty());
    assert!(!h.store.dlq_requeue(&d.dlq, &lease.job_id, &target, h.at(1.0)).await.unwrap(), "only once");

    let fields = h.store.job_fields(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "PENDING");
    assert_eq!(fields["queue_name"], target.as_str());
    assert_eq!(fields["current_retries"], "0");
    assert_eq!(fields["last_error"], "boom", "the last error stays for inspection");
    assert_eq!(fields["next_scheduled_run_time"], format_timestamp(h.at(1.0)));
    assert!(!fields.contains_key("completion_time"));
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0);
    let again = h.claim(&target, &h.worker("w"), 1, h.at(1.0)).await;
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.jobs[0].job.as_ref().unwrap().attempt(), 1);
}

async fn queue_lengths_count_ready_and_scheduled_jobs(h: Harness) {
    let q = h.queue("q");
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0);
    let mut later = h.new_job("later", &q);
    later.scheduled_time = h.at(3600.0);
    h.store.enqueue(later, EnqueueMode::Standard).await.unwrap();
    h.store.enqueue(h.new_job("now", &q), EnqueueMode::Standard).await.unwrap();
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 2);
}

async fn recovery_requeues_a_job_whose_lock_expired(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let mut ready = h.store.subscribe_ready().await.unwrap();
    let lease = h.claim(&q, &h.worker("dead"), 1, h.now).await.jobs.remove(0).lease;
    h.expire_lock(&lease.job_id).await;

    let later = h.now + LEASE + LEASE;
    let rec = h.store.recover(later, 100).await.unwrap();
    assert_eq!(rec.requeued, vec![lease.job_id.clone()]);
    assert!(rec.dead_lettered.is_empty());
    let fields = h.store.job_fields(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "PENDING");
    assert_eq!(fields["current_retries"], "1", "the lost attempt counts");
    assert_eq!(fields["last_error"], "Recovered after lock expiry or worker crash.");
    assert!(!fields.contains_key("start_time") && !fields.contains_key("worker_id"));
    let signal = tokio::time::timeout(std::time::Duration::from_secs(10), ready.recv()).await.unwrap();
    assert_eq!(signal, Some(rrq_store::Signal::Ready(q.clone())));

    // Only once, and the dead worker's late outcome is refused.
    assert_eq!(h.store.recover(later, 100).await.unwrap(), Default::default());
    assert_eq!(h.store.complete(&lease, &json!(1), later).await.unwrap(), Fence::Stale);
    let again = h.claim(&q, &h.worker("alive"), 1, later).await;
    assert_eq!(again.jobs[0].job.as_ref().unwrap().attempt(), 2);
}

async fn recovery_dead_letters_a_job_out_of_attempts(h: Harness) {
    let q = h.queue("q");
    let d = h.defaults();
    let mut job = h.new_job("a", &q);
    job.max_retries = 2;
    h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    for round in 1..=2u32 {
        let now = h.now + (LEASE * 3) * round;
        let lease = h.claim(&q, &h.worker("dead"), 1, now).await.jobs.remove(0).lease;
        h.expire_lock(&lease.job_id).await;
        let rec = h.store.recover(now + LEASE * 2, 100).await.unwrap();
        if round == 1 {
            assert_eq!(rec.requeued, vec![lease.job_id.clone()]);
        } else {
            assert_eq!(rec.dead_lettered, vec![lease.job_id.clone()]);
            assert!(rec.requeued.is_empty());
        }
    }
    let job = h.job(&h.id("a")).await;
    assert_eq!(job.status, Some(JobStatus::Failed));
    assert_eq!(job.current_retries, 2);
    assert_eq!(job.last_error.as_deref(), Some("Worker lost while running the job (attempt 2 of 2); moved to DLQ."));
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), vec![h.id("a")]);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0);
}

async fn recovery_leaves_held_leases_alone(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    // Its index entry says "expired" at this `now`, but the lock is still there.
    let rec = h.store.recover(h.now + LEASE * 2, 100).await.unwrap();
    assert_eq!(rec, Default::default());
    assert_eq!(h.store.renew(std::slice::from_ref(&lease), LEASE).await.unwrap(), vec![LeaseState::Held]);
    assert_eq!(h.job(&lease.job_id).await.status, Some(JobStatus::Active));
    assert_eq!(h.store.recover(h.now, 0).await.unwrap(), Default::default());
}
