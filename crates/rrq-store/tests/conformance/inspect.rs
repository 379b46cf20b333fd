//! Inspection verbs used by the CLI.

use std::time::Duration;

use rrq_store::{AttemptCount, EnqueueMode, Fence, JobParseError, JobStatus, SyntheticJob, WorkerHealth};
use serde_json::json;

use crate::harness::Harness;

conformance!(
    shared:
        queues_are_listed_with_their_score_range,
        queue_entries_page_in_ready_order,
        ready_jobs_are_counted_up_to_a_time,
        absurd_page_offsets_answer_an_empty_page,
        workers_are_listed_with_their_record_and_ttl,
        job_ids_and_dlq_lengths_are_counted,
        job_fields_are_read_in_batches_in_the_order_asked,
        job_views_type_the_stored_fields_and_name_a_problem,
        a_synthetic_job_is_written_unqueued_and_reads_back_typed,
        a_dlq_purge_removes_exactly_the_ids_given,
        put_job_fields_writes_a_hash_without_queueing_it,
        delete_matching_counts_then_deletes_the_matching_keys;
    private: ;
    cluster:
        queues_are_listed_with_their_score_range,
        queue_entries_page_in_ready_order,
        ready_jobs_are_counted_up_to_a_time,
        absurd_page_offsets_answer_an_empty_page,
        workers_are_listed_with_their_record_and_ttl,
        job_ids_and_dlq_lengths_are_counted,
        job_fields_are_read_in_batches_in_the_order_asked,
        job_views_type_the_stored_fields_and_name_a_problem,
        a_dlq_purge_removes_exactly_the_ids_given,
        put_job_fields_writes_a_hash_without_queueing_it,
);

async fn queues_are_listed_with_their_score_range(h: Harness) {
    let (one, two, gone) = (h.queue("one"), h.queue("two"), h.queue("gone"));
    for (id, q, at) in [("a", &one, 2.0), ("b", &one, 1.0), ("c", &two, 5.0), ("d", &gone, 0.0)] {
        let mut job = h.new_job(id, q);
        job.scheduled_time = h.at(at);
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    assert_eq!(h.claim(&gone, &h.worker("w"), 1, h.now).await.jobs.len(), 1);

    let ours: Vec<_> =
        h.store.queues().await.unwrap().into_iter().filter(|i| [&one, &two, &gone].contains(&&i.queue)).collect();
    assert_eq!(ours.len(), 2, "an emptied queue is not listed: {ours:?}");
    let (first, second) = if ours[0].queue == one { (&ours[0], &ours[1]) } else { (&ours[1], &ours[0]) };
    assert_eq!(
        (first.queue.clone(), first.len, first.oldest, first.newest),
        (one, 2, Some(h.at(1.0)), Some(h.at(2.0)))
    );
    assert_eq!(
        (second.queue.clone(), second.len, second.oldest, second.newest),
        (two, 1, Some(h.at(5.0)), Some(h.at(5.0)))
    );
}

/// An offset or limit past anything Redis can index (an operator's typo, a
/// crafted dashboard URL) is an empty page, not an error.
async fn absurd_page_offsets_answer_an_empty_page(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let dlq = rrq_protocol::DlqName::new(h.queue("dlq").bare());
    for (offset, limit) in [(usize::MAX, 10), (usize::MAX - 1, usize::MAX), (1 << 63, 1)] {
        assert!(h.store.queue_entries(&q, offset, limit).await.unwrap().is_empty(), "queue at {offset}+{limit}");
        assert!(h.store.dlq_ids(&dlq, offset, limit).await.unwrap().is_empty(), "dlq at {offset}+{limit}");
    }
    assert_eq!(h.store.queue_entries(&q, 0, usize::MAX).await.unwrap().len(), 1, "a huge limit is all of it");
}

async fn queue_entries_page_in_ready_order(h: Harness) {
    let q = h.queue("q");
    for (id, at) in [("c", 3.0), ("a", 1.0), ("b", 2.0)] {
        let mut job = h.new_job(id, &q);
        job.scheduled_time = h.at(at);
        h.store.enqueue(job, EnqueueMode::Standard).await.unwrap();
    }
    let all = h.store.queue_entries(&q, 0, 10).await.unwrap();
    assert_eq!(all, vec![(h.id("a"), h.at(1.0)), (h.id("b"), h.at(2.0)), (h.id("c"), h.at(3.0))]);
    assert_eq!(h.store.queue_entries(&q, 1, 1).await.unwrap(), vec![(h.id("b"), h.at(2.0))]);
    assert!(h.store.queue_entries(&q, 0, 0).await.unwrap().is_empty());
    assert!(h.store.queue_entries(&q, 5, 10).await.unwrap().is_empty());
    assert!(h.store.queue_entries(&h.queue("none"), 0, 10).await.unwrap().is_empty());
}

/// Ready means a ready time at or before the moment asked (to the
/// millisecond), whichever shard a job is on.
async fn ready_jobs_are_counted_up_to_a_time(h: Harness) {
    let q = h.queue("q");
    assert_eq!(h.store.queue_ready_len(&q, h.now).await.unwrap(), 0, "an empty queue");
    for (n, at) in [-2.0, -1.0, 0.0, 0.0, 0.001, 1.0, 5.0, 5.0].into_iter().enumerate() {
        let mut job = h.new_job(&format!("j{n}"), &q);
        job.scheduled_time = h.at(at);
        h.store.enqueue(job, rrq_store::EnqueueMode::Standard).await.unwrap();
    }
    let ready = async |at: f64| h.store.queue_ready_len(&q, h.at(at)).await.unwrap();
    assert_eq!(ready(-10.0).await, 0);
    assert_eq!(ready(-2.0).await, 1, "a job due exactly then is ready");
    assert_eq!(ready(0.0).await, 4);
    assert_eq!(ready(0.001).await, 5, "one millisecond later");
    assert_eq!(ready(4.999).await, 6);
    assert_eq!(ready(5.0).await, 8);
}

async fn workers_are_listed_with_their_record_and_ttl(h: Harness) {
    let names = [h.worker("w1"), h.worker("w2")];
    for (i, name) in names.iter().enumerate() {
        let health = WorkerHealth {
            active_jobs: i as u64,
            concurrency_limit: 4,
            queues: vec![h.queue("q").to_string()],
            status: "polling".into(),
            timestamp: json!(1_795_824_000),
            worker_id: name.clone(),
            completed_jobs: None,
            failed_jobs: None,
            active_by_queue: None,
        };
        h.store.heartbeat(&health, Duration::from_secs(70)).await.unwrap();
    }
    let ours: Vec<_> = h.store.workers().await.unwrap().into_iter().filter(|w| names.contains(&w.worker_id)).collect();
    assert_eq!(ours.iter().map(|w| w.worker_id.clone()).collect::<Vec<_>>(), names.to_vec(), "sorted by id");
    for (i, w) in ours.iter().enumerate() {
        let health = w.health.as_ref().expect("the record is JSON");
        assert_eq!(health["active_jobs"], i as u64);
        assert_eq!(health["timestamp"], 1_795_824_000, "a numeric timestamp is kept as is");
        let ttl = w.ttl.expect("the record expires");
        assert!(ttl > Duration::from_secs(60) && ttl <= Duration::from_secs(70), "{ttl:?}");
    }
    let infos: Vec<_> =
        h.store.worker_infos().await.unwrap().into_iter().filter(|w| names.contains(&w.worker_id)).collect();
    assert_eq!(infos.len(), 2);
    for (i, w) in infos.iter().enumerate() {
        assert_eq!(
            (w.status.as_deref(), w.active_jobs, w.concurrency_limit),
            (Some("polling"), Some(i as u64), Some(4))
        );
        assert_eq!(w.queues, Some(vec![h.queue("q").to_string()]));
        assert_eq!(w.last_heartbeat.map(|t| t.timestamp()), Some(1_795_824_000), "epoch seconds read as a time");
        assert!(w.ttl.is_some());
    }
}

async fn job_ids_and_dlq_lengths_are_counted(h: Harness) {
    let q = h.queue("q");
    for id in ["a", "b"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let all = h.store.job_ids(0).await.unwrap();
    assert!(all.contains(&h.id("a")) && all.contains(&h.id("b")));
    assert_eq!(h.store.job_ids(1).await.unwrap().len(), 1);

    let d = h.defaults();
    assert_eq!(h.store.dlq_len(&d.dlq).await.unwrap(), 0);
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    assert_eq!(h.store.dead_letter(&lease, "e", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    assert_eq!(h.store.dlq_len(&d.dlq).await.unwrap(), 1);
}

async fn job_fields_are_read_in_batches_in_the_order_asked(h: Harness) {
    let q = h.queue("q");
    for id in ["a", "b"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let ids = [h.id("b"), h.id("missing"), h.id("a")];
    let batch = h.store.job_fields_batch(&ids).await.unwrap();
    assert_eq!(batch.len(), 3);
    assert_eq!(batch[0], h.store.job_fields(&ids[0]).await.unwrap());
    assert_eq!(batch[0].as_ref().expect("b exists")["id"], ids[0].as_str());
    assert_eq!(batch[1], None, "a missing job reads as None");
    assert_eq!(batch[2].as_ref().expect("a exists")["function_name"], "echo");
    assert!(h.store.job_fields_batch(&[]).await.unwrap().is_empty());

    // More ids than one chunk still come back one per id, in order.
    let many: Vec<_> = (0..1200).map(|i| if i % 2 == 0 { h.id("a") } else { h.id("none") }).collect();
    let batch = h.store.job_fields_batch(&many).await.unwrap();
    assert_eq!(batch.len(), many.len());
    assert!(batch.iter().enumerate().all(|(i, f)| f.is_some() == (i % 2 == 0)));
}

async fn a_dlq_purge_removes_exactly_the_ids_given(h: Harness) {
    let q = h.queue("q");
    let d = h.defaults();
    for id in ["a", "b", "c", "late"] {
        h.store.enqueue(h.new_job(id, &q), EnqueueMode::Standard).await.unwrap();
    }
    let mut leases: Vec<_> = h.claim(&q, &h.worker("w"), 4, h.now).await.jobs.into_iter().map(|c| c.lease).collect();
    // (A cluster claims shard by shard, not in enqueue order.)
    let late = leases.remove(leases.iter().position(|l| l.job_id == h.id("late")).expect("late was claimed"));
    for lease in &leases {
        assert_eq!(h.store.dead_letter(lease, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    }
    // What a purge asks about: the ids as listed, newest first (on a
    // cluster, newest first within each shard, shard after shard).
    let shown = h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap();
    if h.is_cluster() {
        let layout = h.layout();
        let mut expected = vec![h.id("c"), h.id("b"), h.id("a")];
        expected.sort_by_key(|id| layout.shard_of(id));
        assert_eq!(shown, expected);
    } else {
        assert_eq!(shown, vec![h.id("c"), h.id("b"), h.id("a")]);
    }
    // Meanwhile `a` is requeued and a new job is dead-lettered.
    assert!(h.store.dlq_requeue(&d.dlq, &h.id("a"), &q, h.now).await.unwrap());
    assert_eq!(h.store.dead_letter(&late, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);

    assert_eq!(h.store.dlq_purge(&d.dlq, &[]).await.unwrap(), 0, "no ids, nothing removed");
    assert_eq!(h.store.dlq_purge(&d.dlq, &shown).await.unwrap(), 2, "b and c; a had left");
    assert_eq!(h.store.dlq_ids(&d.dlq, 0, 10).await.unwrap(), vec![h.id("late")], "the late arrival stays");
    assert!(h.store.job_fields(&h.id("late")).await.unwrap().is_some());
    for id in ["b", "c"] {
        assert!(h.store.job_fields(&h.id(id)).await.unwrap().is_none(), "{id} was deleted");
    }
    assert_eq!(h.job(&h.id("a")).await.status, Some(rrq_store::JobStatus::Pending), "the requeued job is kept");
    assert_eq!(h.store.dlq_purge(&d.dlq, &shown).await.unwrap(), 0, "a repeat removes nothing");
}

async fn put_job_fields_writes_a_hash_without_queueing_it(h: Harness) {
    let (id, queue) = (h.id("synthetic"), h.queue("q"));
    let fields: std::collections::BTreeMap<String, String> = [
        ("id", id.as_str()),
        ("function_name", "echo"),
        ("job_params", "{}"),
        ("enqueue_time", "2030-01-01T00:00:00+00:00"),
        ("status", "COMPLETED"),
        ("queue_name", queue.as_str()),
        ("current_retries", "2"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    h.store.put_job_fields(&id, &fields).await.unwrap();
    assert_eq!(h.store.job_fields(&id).await.unwrap(), Some(fields.clone()));
    assert_eq!(h.store.queue_len(&queue).await.unwrap(), 0, "nothing was queued");
    assert_eq!(h.job(&id).await.status, Some(rrq_store::JobStatus::Completed));

    // Later fields are merged into the hash; the others stay.
    let more = [("current_retries".to_owned(), "3".to_owned())].into();
    h.store.put_job_fields(&id, &more).await.unwrap();
    let stored = h.store.job_fields(&id).await.unwrap().unwrap();
    assert_eq!((stored["current_retries"].as_str(), stored["status"].as_str()), ("3", "COMPLETED"));
}

async fn delete_matching_counts_then_deletes_the_matching_keys(h: Harness) {
    let queue = h.queue("q");
    for id in ["a", "b"] {
        h.store.enqueue(h.new_job(id, &queue), EnqueueMode::Standard).await.unwrap();
    }
    let pattern = format!("rrq:job:*{}", h.id(""));
    assert_eq!(h.store.delete_matching(&pattern, true).await.unwrap(), 2, "both job hashes match");
    assert!(h.store.job_fields(&h.id("a")).await.unwrap().is_some(), "a dry run deletes nothing");
    assert_eq!(h.store.delete_matching(&format!("rrq:job:[a]{}", h.id("")), false).await.unwrap(), 1);
    assert!(h.store.job_fields(&h.id("a")).await.unwrap().is_none());
    assert!(h.store.job_fields(&h.id("b")).await.unwrap().is_some(), "b did not match [a]");
    assert_eq!(h.store.delete_matching(&pattern, false).await.unwrap(), 1);
    assert!(h.store.job_fields(&h.id("b")).await.unwrap().is_none());
    assert_eq!(h.store.queue_len(&queue).await.unwrap(), 2, "the queue key did not match the pattern");
    assert_eq!(h.store.delete_matching(queue.as_str(), false).await.unwrap(), 1, "a pattern may be a plain key");
    assert_eq!(h.store.queue_len(&queue).await.unwrap(), 0);
    assert_eq!(h.store.delete_matching(&pattern, false).await.unwrap(), 0, "nothing left to match");
}

async fn job_views_type_the_stored_fields_and_name_a_problem(h: Harness) {
    let q = h.queue("q");
    h.store.enqueue(h.new_job("a", &q), EnqueueMode::Standard).await.unwrap();
    let lease = h.claim(&q, &h.worker("w"), 1, h.now).await.jobs.remove(0).lease;
    assert_eq!(h.store.dead_letter(&lease, "boom", AttemptCount::Counted, h.now).await.unwrap(), Fence::Applied);
    let odd: std::collections::BTreeMap<String, String> =
        [("status", "weird"), ("enqueue_time", "yesterday"), ("colour", "blue")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
    h.store.put_job_fields(&h.id("odd"), &odd).await.unwrap();

    let ids = [h.id("a"), h.id("missing"), h.id("odd")];
    let views = h.store.job_views(&ids).await.unwrap();
    assert_eq!(views.len(), 3);
    assert_eq!(views[0], h.store.job_view(&ids[0]).await.unwrap(), "one view reads as the batch does");
    assert_eq!(views[1], None, "a missing job has no view");
    assert_eq!(h.store.job_view(&ids[1]).await.unwrap(), None);

    let a = views[0].as_ref().expect("a exists");
    assert_eq!((a.id.clone(), a.function_name.as_deref()), (ids[0].clone(), Some("echo")));
    assert_eq!((a.status, a.status_label()), (Some(JobStatus::Failed), "FAILED".to_owned()));
    assert_eq!((a.queue.as_ref(), a.current_retries), (Some(&q), Some(1)));
    assert_eq!(a.last_error.as_deref(), Some("boom"));
    assert!(a.start_time.is_some() && a.completion_time.is_some() && a.enqueue_time.is_some() && a.params.is_some());
    assert_eq!((a.worker_id.as_deref(), a.problem.as_ref()), (Some(h.worker("w").as_str()), None));
    assert_eq!(a.raw, h.store.job_fields(&ids[0]).await.unwrap().unwrap(), "the stored hash is kept whole");

    let odd = views[2].as_ref().expect("odd exists");
    assert_eq!((odd.status, odd.status_label()), (None, "WEIRD".to_owned()));
    assert_eq!((odd.enqueue_time, odd.function_name.as_ref()), (None, None));
    assert_eq!(odd.problem, Some(JobParseError::Missing("function_name")), "why a worker could not run it");
    assert_eq!(odd.raw["colour"], "blue", "fields RRQ does not know are kept");
    assert!(h.store.job_views(&[]).await.unwrap().is_empty());
}

async fn a_synthetic_job_is_written_unqueued_and_reads_back_typed(h: Harness) {
    let (id, queue) = (h.id("synthetic"), h.queue("q"));
    let job = SyntheticJob {
        id: id.clone(),
        function_name: "echo".into(),
        params: json!({"n": 1}).as_object().cloned().unwrap(),
        queue: queue.clone(),
        status: JobStatus::Failed,
        enqueue_time: h.at(0.0),
        current_retries: 2,
        max_retries: 3,
        job_timeout_seconds: 300,
        result_ttl_seconds: 86_400,
        start_time: Some(h.at(1.0)),
        worker_id: Some("w".into()),
        completion_time: Some(h.at(2.0)),
        next_scheduled_run_time: None,
        result: None,
        last_error: Some("synthetic".into()),
    };
    h.store.insert_synthetic_job(&job).await.unwrap();
    assert_eq!(h.store.queue_len(&queue).await.unwrap(), 0, "nothing was queued");
    let view = h.store.job_view(&id).await.unwrap().expect("written");
    assert_eq!(view.problem, None, "a worker could read it");
    assert_eq!(
        (view.status, view.queue.as_ref(), view.current_retries),
        (Some(JobStatus::Failed), Some(&queue), Some(2))
    );
    assert_eq!((view.start_time, view.completion_time), (job.start_time, job.completion_time));
    assert_eq!((view.last_error.as_deref(), view.result.as_ref()), (Some("synthetic"), None));
    assert_eq!(view.params.as_ref(), Some(&job.params));
    let parsed = h.job(&id).await;
    assert_eq!((parsed.max_retries, parsed.job_timeout_seconds), (Some(3), Some(300)));
}
