//! Every wrapper's KEYS in the sharded layout fall in one Redis Cluster
//! slot: the slot of the shard's hash tag. (The single layout's do not,
//! which shows the check can fail.)

use std::time::Duration;

use chrono::{DateTime, Utc};
use rrq_protocol::{DlqName, JobId, QueueName};

use super::*;
use crate::clock::parse_timestamp;
use crate::job::NewJob;
use crate::keys::{DEFAULT_QUEUE_SHARDS, key_slot};
use crate::shared::{self, Plan};
use crate::store::EnqueueMode;

fn now() -> DateTime<Utc> {
    parse_timestamp("2030-01-01T00:00:00Z").unwrap()
}

/// The first of `job-0`, `job-1`, ... on `shard`.
fn id_in(layout: &Layout, shard: Shard) -> JobId {
    (0..).map(|n| JobId::new(format!("job-{n}"))).find(|id| layout.shard_of(id) == shard).unwrap()
}

/// `n` ids of `shard`.
fn ids_in(layout: &Layout, shard: Shard, n: usize) -> Vec<JobId> {
    (0..).map(|n| JobId::new(format!("id-{n}"))).filter(|id| layout.shard_of(id) == shard).take(n).collect()
}

pub(super) fn new_job(id: &JobId) -> NewJob {
    NewJob {
        id: id.clone(),
        function_name: "f".into(),
        params: Default::default(),
        queue: QueueName::new("emails"),
        enqueue_time: now(),
        scheduled_time: now(),
        max_retries: 5,
        job_timeout_seconds: 300,
        result_ttl_seconds: 86_400,
        trace_context: Default::default(),
        correlation_context: Default::default(),
        unique_key: None,
    }
}

fn lease(id: &JobId) -> Lease {
    Lease { job_id: id.clone(), worker_id: "w-1".into(), token: "t".into(), queue: QueueName::new("emails") }
}

/// The KEYS of one call of every wrapper, named, for jobs of `shard`.
fn every_call(layout: &Layout, shard: Shard) -> Vec<(&'static str, Vec<String>)> {
    let id = id_in(layout, shard);
    let ids = ids_in(layout, shard, 3);
    let leases: Vec<Lease> = ids.iter().map(lease).collect();
    let (queue, dlq) = (QueueName::new("emails"), DlqName::new("dead"));
    let keys = |call: (Vec<String>, Vec<Value>)| call.0;
    let fenced = || Fenced::new(layout, &lease(&id));
    let claim = Claim {
        layout: layout.clone(),
        shard,
        queue: queue.clone(),
        default_dlq: dlq.clone(),
        worker: "w-1".into(),
        now_ms: 0,
        max: 10,
        lease_ttl_ms: 1000,
        token: "t".into(),
        start_score: 0,
        lock_expiry: 0,
        replay: false,
        max_payload_bytes: 1000,
    };
    let recover = Recover {
        layout: layout.clone(),
        shard,
        default_queue: queue.clone(),
        default_dlq: dlq.clone(),
        now_ms: 0,
        limit: 10,
        now_text: String::new(),
        default_max_retries: 5,
    };
    let attempt = |id: &JobId| Attempt {
        layout: layout.clone(),
        id: id.clone(),
        worker: "w-1".into(),
        token: "t".into(),
        result: "null".into(),
        completion_time: String::new(),
        default_result_ttl: 60,
        events_ttl_ms: 60_000,
    };
    let mut calls = vec![
        ("claim", keys(claim.keys_and_args())),
        ("recover", keys(recover.keys_and_args())),
        ("renew", keys(Renew { layout, leases: &leases, ttl_ms: 1000 }.keys_and_args())),
        ("complete", keys(Complete { attempts: ids.iter().map(attempt).collect() }.keys_and_args())),
        (
            "retry",
            keys(
                Retry {
                    fenced: fenced(),
                    default_queue: queue.clone(),
                    error: String::new(),
                    ready_ms: 0,
                    ready_text: String::new(),
                    now_ms: 0,
                }
                .keys_and_args(),
            ),
        ),
        (
            "dead_letter",
            keys(
                DeadLetter {
                    fenced: fenced(),
                    default_dlq: dlq.clone(),
                    reason: String::new(),
                    count_attempt: true,
                    completion_time: String::new(),
                }
                .keys_and_args(),
            ),
        ),
        ("release", keys(Release { fenced: fenced(), queue: queue.clone(), reason: None, now_ms: 0 }.keys_and_args())),
        ("finish_cancelled", keys(FinishCancelled { fenced: fenced() }.keys_and_args())),
        ("cancel", keys(Cancel { layout, id: &id, default_queue: &queue }.keys_and_args())),
        (
            "dlq_requeue",
            keys(
                DlqRequeue { layout, dlq: &dlq, queue: &queue, id: &id, now_ms: 0, now_text: String::new() }
                    .keys_and_args(),
            ),
        ),
        ("dlq_purge", keys(DlqPurge { layout, dlq: &dlq, ids: &ids }.keys_and_args())),
        ("inspect_jobs", keys(InspectJobs::of(layout, &ids).keys_and_args())),
        (
            "inspect_queues",
            keys(
                InspectQueues(vec![layout.queue(&queue, shard), layout.queue(&QueueName::new("other"), shard)])
                    .keys_and_args(),
            ),
        ),
        (
            "enqueue_batch",
            keys(
                EnqueueBatch {
                    channel: layout.ready_channel(shard),
                    jobs: ids.iter().map(|id| BatchJob::new(layout, &new_job(id))).collect(),
                }
                .keys_and_args(),
            ),
        ),
        (
            "enqueue",
            keys(
                Enqueue { job: NewJobCall::new(layout, &new_job(&id), 0, true), idempotency_key: None }.keys_and_args(),
            ),
        ),
    ];
    calls.extend(dedup_calls(layout, shard));
    calls
}

/// The enqueues under a dedup key whose own shard is `shard`, each with an
/// id of that shard (as the cluster store must pick them).
fn dedup_calls(layout: &Layout, shard: Shard) -> Vec<(&'static str, Vec<String>)> {
    let key_in =
        |shard_of: &dyn Fn(&str) -> Shard| (0..).map(|n| format!("key-{n}")).find(|k| shard_of(k) == shard).unwrap();
    let job = new_job(&id_in(layout, shard));
    let plan = |mode: EnqueueMode| shared::plan(&job, &mode, layout).unwrap();
    let call = |ttl| NewJobCall::new(layout, &job, ttl, true);
    let window = Duration::from_secs(5);
    let mut out = Vec::new();
    let key = key_in(&|k| layout.idempotency_shard(k));
    if let Plan::Idempotent { key, ttl } = plan(EnqueueMode::Idempotent { key, ttl: window }) {
        out.push(("enqueue idempotent", Enqueue { job: call(ttl), idempotency_key: Some(key) }.keys_and_args().0));
    }
    let key = key_in(&|k| layout.rate_limit_shard(k));
    if let Plan::RateLimited { key, ttl } = plan(EnqueueMode::RateLimited { key, window }) {
        out.push(("enqueue rate limited", EnqueueRateLimited { job: call(ttl), limit_key: key }.keys_and_args().0));
    }
    let key = key_in(&|k| layout.debounce_shard(k));
    if let Plan::Debounced { key, ttl } = plan(EnqueueMode::Debounced { key, window }) {
        let call = EnqueueDebounced {
            job: call(ttl),
            debounce_key: key,
            has_trace_context: false,
            has_correlation_context: false,
        };
        out.push(("enqueue debounced", call.keys_and_args().0));
    }
    let key = key_in(&|k| layout.unique_lock_shard(k));
    if let Plan::UniqueLock { key, ttl, .. } = plan(EnqueueMode::UniqueLock { key, ttl: window }) {
        out.push((
            "enqueue unique",
            EnqueueUnique { job: call(ttl), lock_key: key, enqueue_time: 0 }.keys_and_args().0,
        ));
    }
    assert_eq!(out.len(), 4, "every dedup mode planned");
    out
}

/// The cluster-wide calls: KEYS of the `{global}` tag.
fn global_calls(layout: &Layout) -> Vec<(&'static str, Vec<String>)> {
    let health = InspectWorkers(vec![layout.health("w-1"), layout.health("w-2")]);
    vec![
        ("cron_tick", CronTick { layout, entry: "e", tick: 0 }.keys_and_args().0),
        ("inspect_workers", health.keys_and_args().0),
    ]
}

fn slots(keys: &[String]) -> std::collections::BTreeSet<u16> {
    keys.iter().map(|k| key_slot(k.as_bytes())).collect()
}

#[test]
fn every_call_of_the_sharded_layout_is_one_slot() {
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    for shard in [Shard::FIRST, layout.shards().nth(37).unwrap(), layout.shards().last().unwrap()] {
        let want = key_slot(layout.tag(shard).unwrap().as_bytes());
        let calls = every_call(&layout, shard);
        assert_eq!(calls.len(), 19, "every wrapper but the cluster-wide ones");
        for (what, keys) in calls {
            assert!(keys.len() > 1 || what == "enqueue", "{what}: {keys:?}");
            assert_eq!(slots(&keys), [want].into(), "{what} on shard {}: {keys:?}", shard.index());
        }
    }
    let want = key_slot(crate::keys::GLOBAL_TAG.as_bytes());
    for (what, keys) in global_calls(&layout) {
        assert_eq!(slots(&keys), [want].into(), "{what}: {keys:?}");
    }
}

#[test]
fn the_single_layout_spans_slots() {
    let layout = Layout::single();
    let spread = every_call(&layout, Shard::FIRST).into_iter().filter(|(_, keys)| slots(keys).len() > 1).count();
    assert!(spread >= 15, "only {spread} calls span several slots");
}
