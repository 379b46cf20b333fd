//! Claims: readiness, order, limits, pausing, exclusivity.

use rrq_store::{EnqueueMode, JobStatus, format_timestamp};

use crate::harness::Harness;

conformance!(
    shared:
        a_claim_takes_due_jobs_in_score_order,
        a_claim_takes_at_most_max_jobs,
        a_claimed_job_is_not_claimed_again,
        a_paused_queue_is_skipped_until_resumed;
    private:;
    cluster:
        a_claimed_job_is_not_claimed_again,
        a_paused_queue_is_skipped_until_resumed,
);

async fn a_claim_takes_due_jobs_in_score_order(h: Harness) {
    let q = h.queue("q");
    for (id, at) in [("late", 2.0), ("early", 1.0), ("future", 60.0)] {
        let mut job = h.new_job(id, &q);
        job.scheduled_time = h.at(at);
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    let worker = h.worker("w");
    assert!(h.claim(&q, &worker, 10, h.at(0.5)).await.jobs.is_empty(), "nothing is due yet");

    let now = h.at(10.0);
    let batch = h.claim(&q, &worker, 10, now).await;
    assert!(!batch.paused);
    assert!(batch.dropped.is_empty());
    let ids: Vec<_> = batch.jobs.iter().map(|c| c.lease.job_id.clone()).collect();
    assert_eq!(ids, vec![h.id("early"), h.id("late")]);
    assert_eq!(batch.next_ready, Some(h.at(60.0)), "the head of the queue is reported");

    let claimed = &batch.jobs[0];
    assert_eq!(claimed.lease.worker_id, worker);
    assert_eq!(claimed.lease.token, format_timestamp(now), "the token is the claim time");
    assert_eq!(claimed.lease.queue, q);
    let job = claimed.job.as_ref().expect("the job parses");
    assert_eq!(job.status, Some(JobStatus::Active), "the returned fields are those after the claim");
    assert_eq!(job.start_time, Some(now));
    assert_eq!(job.worker_id.as_deref(), Some(worker.as_str()));
    assert_eq!(job.function_name, "echo");
    assert_eq!(h.job(&h.id("early")).await.status, Some(JobStatus::Active));
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);
}

async fn a_claim_takes_at_most_max_jobs(h: Harness) {
    let q = h.queue("q");
    for i in 0..5 {
        let mut job = h.new_job(&format!("j{i}"), &q);
        job.scheduled_time = h.at(f64::from(i));
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    let batch = h.claim(&q, &h.worker("w"), 2, h.at(10.0)).await;
    assert_eq!(batch.jobs.len(), 2);
    assert_eq!(batch.next_ready, Some(h.at(2.0)));
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 3);
    let none = h.claim(&q, &h.worker("w"), 0, h.at(10.0)).await;
    assert!(none.jobs.is_empty(), "max 0 claims nothing");
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 3);
}

async fn a_claimed_job_is_not_claimed_again(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    assert_eq!(h.claim(&q, &h.worker("w1"), 5, h.now).await.jobs.len(), 1);
    let second = h.claim(&q, &h.worker("w2"), 5, h.now).await;
    assert!(second.jobs.is_empty());
    assert_eq!(second.next_ready, None, "an empty queue has no head");
    assert_eq!(h.job(&h.id("a")).await.worker_id, Some(h.worker("w1")));
}

async fn a_paused_queue_is_skipped_until_resumed(h: Harness) {
    let (q, other) = (h.queue("q"), h.queue("other"));
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    assert!(h.store.pause(&q).await.unwrap());
    assert!(!h.store.pause(&q).await.unwrap(), "pausing twice changes nothing");
    assert!(h.store.paused().await.unwrap().contains(&q));
    assert!(!h.store.paused().await.unwrap().contains(&other));

    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    assert!(batch.paused);
    assert!(batch.jobs.is_empty());
    assert_eq!(h.store.queue_len(&q).await.unwrap(), 1);

    assert!(h.store.resume(&q).await.unwrap());
    assert!(!h.store.resume(&q).await.unwrap());
    assert!(!h.store.paused().await.unwrap().contains(&q));
    let batch = h.claim(&q, &h.worker("w"), 5, h.now).await;
    assert!(!batch.paused);
    assert_eq!(batch.jobs.len(), 1);
}
