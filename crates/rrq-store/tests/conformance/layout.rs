//! The sharded key layout (`rrq_store::keys::Layout`) against real servers:
//! its slots are the ones a Redis Cluster computes, its shards spread over
//! a cluster's masters, and the Lua helpers that turn a job's queue or DLQ
//! name into a key give the single layout's keys unchanged and the shard's
//! keys in the sharded layout.

use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::keys::{self, DEFAULT_QUEUE_SHARDS, Layout};
use rrq_test_support::TestRedis;
use rrq_test_support::cluster::TestCluster;
use rrq_test_support::resp::{self, Reply};

#[test]
fn slots_agree_with_a_real_cluster_and_shards_spread_over_its_masters() {
    let cluster = TestCluster::start();
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let (queue, dlq) = (QueueName::new("emails{x}"), DlqName::new("dead"));
    for shard in layout.shards() {
        let id = (0..).map(|n| JobId::new(format!("job-{n}"))).find(|id| layout.shard_of(id) == shard).unwrap();
        let built = [
            layout.queue(&queue, shard),
            layout.dlq(&dlq, shard),
            layout.leases(shard),
            layout.job(&id),
            layout.lock(&id),
            layout.active("w", shard),
        ];
        for key in built {
            assert_eq!(keys::key_slot(key.as_bytes()), cluster.slot_of(&key), "{key}");
        }
    }
    for key in [layout.health("w"), layout.cron_ticks(), layout.unique_lock("u"), layout.idempotency("i")] {
        assert_eq!(keys::key_slot(key.as_bytes()), cluster.slot_of(&key), "{key}");
    }

    let masters = cluster.masters();
    assert_eq!(masters.len(), 3);
    let master_of = |slot: u16| masters.iter().position(|m| m.serves(slot)).unwrap();
    let mut shards = [0usize; 3];
    for shard in layout.shards() {
        shards[master_of(keys::key_slot(layout.tag(shard).unwrap().as_bytes()))] += 1;
    }
    assert!(shards.iter().all(|n| *n >= 21), "shards per master: {shards:?}");
    let mut jobs = [0usize; 3];
    let total = 30_000;
    for _ in 0..total {
        let id = JobId::new(uuid::Uuid::new_v4().to_string());
        jobs[master_of(keys::key_slot(layout.job(&id).as_bytes()))] += 1;
    }
    assert!(jobs.iter().all(|n| n * 4 >= total), "jobs per master: {jobs:?}");
}

/// Runs `full_name(name, prefix, 'fallback')` and `untagged(key)` from
/// `common.lua` on a server.
fn helpers(port: u16, name: &str, prefix: &str, key: &str) -> (String, String) {
    let common = include_str!("../../src/redis/scripts/common.lua");
    let script = format!("{common}\nreturn {{full_name(ARGV[1], KEYS[1], 'fallback'), untagged(KEYS[2])}}");
    match resp::call(port, &["EVAL", &script, "2", prefix, key, name]) {
        Ok(Reply::Array(Some(items))) => match items.as_slice() {
            [Reply::Bulk(Some(full)), Reply::Bulk(Some(plain))] => (full.clone(), plain.clone()),
            other => panic!("unexpected reply {other:?}"),
        },
        other => panic!("EVAL failed: {other:?}"),
    }
}

#[test]
fn scripts_name_queues_and_dlqs_by_the_layout() {
    let redis = TestRedis::start();
    let names = ["emails", " emails ", "rrq:queue:emails", "  rrq:queue:a{b}:c", "rrq:queue:", "", "   ", "x:{y}:z"];
    // The single layout: the rule the scripts always followed.
    for prefix in [QueueName::PREFIX, DlqName::PREFIX] {
        for name in names {
            let trimmed = name.trim();
            let want = if trimmed.is_empty() {
                "fallback".to_owned()
            } else if trimmed.starts_with(prefix) {
                trimmed.to_owned()
            } else {
                format!("{prefix}{trimmed}")
            };
            let key = format!("{prefix}{trimmed}");
            assert_eq!(helpers(redis.port(), name, prefix, &key), (want, key.clone()), "{name:?} under {prefix}");
        }
    }
    // The sharded layout: a job's untagged name becomes the shard's key, and
    // the shard's key is untagged back into the name a job hash holds.
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    for shard in [layout.shards().next().unwrap(), layout.shards().last().unwrap()] {
        for name in names.iter().filter(|n| !n.trim().is_empty()) {
            let (queue, dlq) = (QueueName::new(name), DlqName::new(name));
            let prefix = layout.on_shard(shard, QueueName::PREFIX);
            let want = (layout.queue(&queue, shard), queue.as_str().to_owned());
            assert_eq!(helpers(redis.port(), name, &prefix, &layout.queue(&queue, shard)), want, "{name:?}");
            let prefix = layout.on_shard(shard, DlqName::PREFIX);
            let want = (layout.dlq(&dlq, shard), dlq.as_str().to_owned());
            assert_eq!(helpers(redis.port(), name, &prefix, &layout.dlq(&dlq, shard)), want, "{name:?}");
        }
    }
}
