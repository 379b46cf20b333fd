//! Outcome writes (SEMANTICS §10) and their fence.

use std::time::Duration;

use rrq_protocol::QueueName;
use rrq_store::{AttemptCount, CancelResult, EnqueueMode, Fence, JobStatus, Lease, LeaseState, format_timestamp};
use serde_json::json;

use crate::harness::{Harness, LEASE};

conformance!(
    shared:
        a_success_is_recorded_once_and_ends_the_lease,
        a_stale_lease_writes_nothing,
        concurrent_successes_keep_their_own_fences,
        a_retry_counts_the_attempt_and_reschedules_on_the_jobs_queue,
        a_dead_letter_moves_the_job_to_its_dlq,
        a_quarantine_does_not_count_the_attempt,
        a_release_puts_the_job_back_without_counting,
        renewals_report_held_lost_and_cancel_requested,
        a_waiter_wakes_on_the_terminal_event;
    private:;
    cluster:
        a_success_is_recorded_once_and_ends_the_lease,
        a_stale_lease_writes_nothing,
        concurrent_successes_keep_their_own_fences,
        a_retry_counts_the_attempt_and_reschedules_on_the_jobs_queue,
        a_release_puts_the_job_back_without_counting,
        renewals_report_held_lost_and_cancel_requested,
        a_waiter_wakes_on_the_terminal_event,
);

/// Enqueues one job on a fresh queue and claims it.
async fn claimed(h: &Harness, id: &str) -> (QueueName, Lease) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    let mut batch = h.claim(&q, &h.worker("w"), 1, h.now).await;
    (q, batch.jobs.remove(0).lease)
}

async fn a_success_is_recorded_once_and_ends_the_lease(h: Harness) {
    let (_, lease) = claimed(&h, "a").await;
    let done = h.at(1.5);
    let result = json!({"b": [1, 2], "a": "x"});
    assert_eq!(h.store.complete(&lease, &result, done).await.unwrap(), Fence::Applied);

    let fields = h.store.job_fields(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "COMPLETED");
    assert_eq!(fields["result"], r#"{"a":"x","b":[1,2]}"#, "compact JSON, keys sorted");
    assert_eq!(fields["completion_time"], format_timestamp(done));
    assert_eq!(fields["start_time"], lease.token, "start_time stays after completion");
    assert_eq!(h.job(&lease.job_id).await.result, Some(result.clone()));
    assert_eq!(h.store.renew(std::slice::from_ref(&lease), LEASE).await.unwrap(), vec![LeaseState::Lost]);

    // A caller re-sending the same write after a lost reply is told it applied.
    assert_eq!(h.store.complete(&lease, &json!("other"), h.at(2.0)).await.unwrap(), Fence::Applied);
    assert_eq!(h.job(&lease.job_id).await.result, Some(result), "the re-sent write changed nothing");
    // Other outcomes for the finished attempt are stale.
    assert_eq!(h.store.retry(&lease, "e", h.now, h.now).await.unwrap(), Fence::Stale);
    assert_eq!(h.job(&lease.job_id).await.status, Some(JobStatus::Completed));
}

/// Many successes at once (the Redis store records them in batches): each
/// is fenced on its own lease and gets its own answer.
async fn concurrent_successes_keep_their_own_fences(h: Harness) {
    let q = h.queue("q");
    for i in 0..40 {
        h.store.enqueue(h.new_job(&format!("j{i:02}"), &q), EnqueueMode::Standard).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), 40, h.now).await;
    assert_eq!(batch.jobs.len(), 40);
    let mut tasks = tokio::task::JoinSet::new();
    for (i, claimed) in batch.jobs.into_iter().enumerate() {
        let mut lease = claimed.lease;
        let stale = i % 5 == 0;
        if stale {
            lease.token = format_timestamp(h.at(-1.0));
        }
        let (store, done) = (h.store.clone(), h.at(1.0));
        tasks.spawn(async move {
            let fence = store.complete(&lease, &json!(i), done).await.unwrap();
            (lease.job_id, stale, i, fence)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (id, stale, i, fence) = joined.unwrap();
        let job = h.job(&id).await;
        if stale {
            assert_eq!(fence, Fence::Stale, "{id}");
            assert_eq!(job.status, Some(JobStatus::Active), "{id}: a stale success writes nothing");
        } else {
            assert_eq!(fence, Fence::Applied, "{id}");
            assert_eq!(job.status, Some(JobStatus::Completed), "{id}");
            assert_eq!(job.result, Some(json!(i)), "{id}: its own result");
        }
    }
}

async fn a_stale_lease_writes_nothing(h: Harness) {
    let (q, lease) = claimed(&h, "a").await;
    let before = h.store.job_fields(&lease.job_id).await.unwrap();
    let forged = [
        Lease { token: format_timestamp(h.at(-1.0)), ..lease.clone() },
        Lease { worker_id: h.worker("intruder"), ..lease.clone() },
    ];
    let d = h.defaults();
    for f in &forged {
        assert_eq!(h.store.complete(f, &json!(1), h.now).await.unwrap(), Fence::Stale);
        assert_eq!(h.store.retry(f, "e", h.now, h.now).await.unwrap(), Fence::Stale);
        assert_eq!(h.store.dead_letter(f, "e", AttemptCount::Counted, h.now).await.unwrap(), Fence::Stale);
        assert_eq!(h.store.release(f, Some("e"), h.now).await.unwrap(), Fence::Stale);
        assert_eq!(h.store.finish_cancelled(f).await.unwrap(), Fence::Stale);
    }
    assert_eq!(h.store.job_fields(&lease.job_id).await.unwrap(), before);
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 0);
    assert!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap().is_empty());
    assert_eq!(h.store.renew(std::slice::from_ref(&lease), LEASE).await.unwrap(), vec![LeaseState::Held]);
}

async fn a_retry_counts_the_attempt_and_reschedules_on_the_jobs_queue(h: Harness) {
    let home = h.queue("home");
    let elsewhere = h.queue("elsewhere");
    h.store.enqueue(h.new_job("a", &home), EnqueueMode::Standard).await.unwrap();
    // Claimed from its own queue; the retry must go back to the job's queue.
    let lease = h.claim(&home, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    let lease = Lease { queue: elsewhere.clone(), ..lease };
    let ready_at = h.at(5.5004);
    assert_eq!(h.store.retry(&lease, "boom", ready_at, h.at(0.5)).await.unwrap(), Fence::Applied);

    let job = h.job(&lease.job_id).await;
    assert_eq!(job.status, Some(JobStatus::Retrying));
    assert_eq!(job.current_retries, 1);
    assert_eq!(job.last_error.as_deref(), Some("boom"));
    let fields = h.store.job_fields(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(fields["next_scheduled_run_time"], format_timestamp(h.at(5.5)), "millisecond precision");
    assert_eq!(h.store.queue_len(&home).await.unwrap(), 1);
    assert_eq!(h.store.queue_len(&elsewhere).await.unwrap(), 0);

    let early = h.claim(&home, &h.worker("w"), 1, h.at(5.0)).await;
    assert!(early.jobs.is_empty());
    assert_eq!(early.next_ready, Some(h.at(5.5)));
    let again = h.claim(&home, &h.worker("w"), 1, h.at(5.5)).await;
    let job = again.jobs[0].job.as_ref().unwrap();
    assert_eq!(job.attempt(), 2);
    // A late write of the earlier attempt is stale: the job belongs to the new one.
    assert_eq!(h.store.retry(&lease, "boom", ready_at, h.at(0.5)).await.unwrap(), Fence::Stale);
    assert_eq!(h.job(&lease.job_id).await.status, Some(JobStatus::Active));
}

async fn a_dead_letter_moves_the_job_to_its_dlq(h: Harness) {
    let d = h.defaults();
    let mut ids = Vec::new();
    for name in ["first", "second"] {
        let (_, lease) = claimed(&h, name).await;
        assert_eq!(
            h.store.dead_letter(&lease, "Job timed out after 1s.", AttemptCount::Counted, h.at(2.0)).await.unwrap(),
            Fence::Applied
        );
        ids.push(lease.job_id.clone());
        let job = h.job(&lease.job_id).await;
        assert_eq!(job.status, Some(JobStatus::Failed));
        assert_eq!(job.current_retries, 1);
        assert_eq!(job.last_error.as_deref(), Some("Job timed out after 1s."));
        assert_eq!(job.completion_time, Some(h.at(2.0)));
        assert_eq!(
            h.store.dead_letter(&lease, "again", AttemptCount::Counted, h.at(3.0)).await.unwrap(),
            Fence::Applied,
            "a re-sent write is acknowledged"
        );
        assert_eq!(h.job(&lease.job_id).await.current_retries, 1, "and not applied twice");
    }
    ids.reverse();
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), ids, "newest first");
    assert_eq!(h.store.dlq_ids(&d.dlq, 1, 10).await.unwrap(), ids[1..].to_vec());
    assert!(h.store.dlq_ids(&d.dlq, 0, 0).await.unwrap().is_empty());
}

async fn a_quarantine_does_not_count_the_attempt(h: Harness) {
    let (_, lease) = claimed(&h, "a").await;
    let d = h.defaults();
    let msg = "Failed to parse claimed job definition. Moved to DLQ.";
    assert_eq!(h.store.quarantine(&lease, msg, h.now).await.unwrap(), Fence::Applied);
    let job = h.job(&lease.job_id).await;
    assert_eq!(job.current_retries, 0);
    assert_eq!(job.last_error.as_deref(), Some(msg));
    assert_eq!(h.store.quarantine(&lease, "again", h.now).await.unwrap(), Fence::Applied, "a re-sent write");
    assert_eq!(h.job(&lease.job_id).await.last_error.as_deref(), Some(msg), "is not applied twice");
    assert_eq!(job.status, Some(JobStatus::Failed));
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), vec![lease.job_id.clone()]);
}

async fn a_release_puts_the_job_back_without_counting(h: Harness) {
    let (q, lease) = claimed(&h, "a").await;
    let msg = "Job execution interrupted by worker shutdown. Re-queued.";
    assert_eq!(h.store.release(&lease, Some(msg), h.at(1.0)).await.unwrap(), Fence::Applied);
    let fields = h.store.job_fields(&lease.job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "PENDING");
    assert_eq!(fields["last_error"], msg);
    assert!(!fields.contains_key("start_time") && !fields.contains_key("worker_id"));
    assert_eq!(fields["current_retries"], "0");
    assert_eq!(h.store.renew(std::slice::from_ref(&lease), LEASE).await.unwrap(), vec![LeaseState::Lost]);

    let again = h.claim(&q, &h.worker("w2"), 1, h.at(1.0)).await;
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(again.jobs[0].job.as_ref().unwrap().attempt(), 1);

    // Without a reason, last_error is left as it was.
    let lease = again.jobs[0].lease.clone();
    assert_eq!(h.store.release(&lease, None, h.at(2.0)).await.unwrap(), Fence::Applied);
    assert_eq!(h.job(&lease.job_id).await.last_error.as_deref(), Some(msg));
}

async fn renewals_report_held_lost_and_cancel_requested(h: Harness) {
    let q = h.queue("q");
    for id in ["a", "b"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), 2, h.now).await;
    let leases: Vec<Lease> = batch.jobs.iter().map(|c| c.lease.clone()).collect();
    assert_eq!(h.store.renew(&leases, LEASE).await.unwrap(), vec![LeaseState::Held, LeaseState::Held]);
    assert!(h.store.renew(&[], LEASE).await.unwrap().is_empty());

    assert_eq!(h.store.cancel(&leases[0].job_id).await.unwrap(), CancelResult::CancelRequested);
    let forged = Lease { token: "other".into(), ..leases[1].clone() };
    let all = [leases[0].clone(), leases[1].clone(), forged];
    assert_eq!(
        h.store.renew(&all, LEASE).await.unwrap(),
        vec![LeaseState::CancelRequested, LeaseState::Held, LeaseState::Lost]
    );

    assert_eq!(h.store.finish_cancelled(&leases[0]).await.unwrap(), Fence::Applied);
    let fields = h.store.job_fields(&leases[0].job_id).await.unwrap().unwrap();
    assert_eq!(fields["status"], "CANCELLED");
    assert!(!fields.contains_key("cancel_requested"));
    assert!(!fields.contains_key("completion_time"), "a cancel records no time");
    assert_eq!(h.store.finish_cancelled(&leases[0]).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.renew(&leases, LEASE).await.unwrap(), vec![LeaseState::Lost, LeaseState::Held]);
}

async fn a_waiter_wakes_on_the_terminal_event(h: Harness) {
    let (_, lease) = claimed(&h, "a").await;
    let id = lease.job_id.clone();
    assert_eq!(h.store.wait_job_event(&id, None, Duration::from_millis(20)).await.unwrap(), None);
    assert_eq!(h.store.wait_job_event(&id, None, Duration::ZERO).await.unwrap(), None);

    // From the start of the stream: wakes however the two tasks interleave.
    let store = h.store.clone();
    let waiter_id = id.clone();
    let waiter =
        tokio::spawn(
            async move { store.wait_job_event(&waiter_id, Some("0-0".into()), Duration::from_secs(20)).await },
        );
    assert_eq!(h.store.complete(&lease, &json!(null), h.now).await.unwrap(), Fence::Applied);
    let entry = waiter.await.unwrap().unwrap().expect("the waiter sees the completed event");
    // Nothing after that entry.
    assert_eq!(h.store.wait_job_event(&id, Some(entry.clone()), Duration::from_millis(20)).await.unwrap(), None);
    assert_eq!(h.store.wait_job_event(&id, Some("0-0".into()), Duration::from_millis(20)).await.unwrap(), Some(entry));
}
