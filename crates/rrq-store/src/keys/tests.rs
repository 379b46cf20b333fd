//! The layouts pinned down: the single layout is rrq 0.11.1's schema byte
//! for byte, the sharded one is spelled as `docs/cluster.md` says and
//! spreads jobs over a default cluster's masters.

use rrq_protocol::{DlqName, JobId, QueueName};

use super::*;

fn sample() -> (JobId, QueueName, DlqName) {
    (JobId::new("0c5e-id"), QueueName::new("emails"), DlqName::new("dead"))
}

/// Every key the layout builds, named, for the tables below.
fn every_key(layout: &Layout, shard: Shard) -> Vec<(&'static str, String)> {
    let (id, queue, dlq) = sample();
    vec![
        ("job", layout.job(&id)),
        ("lock", layout.lock(&id)),
        ("events", layout.events(&id)),
        ("queue", layout.queue(&queue, shard)),
        ("dlq", layout.dlq(&dlq, shard)),
        ("active", layout.active("w-1", shard)),
        ("leases", layout.leases(shard)),
        ("paused", layout.paused(shard)),
        ("idempotency", layout.idempotency("order-7")),
        ("rate_limit", layout.rate_limit("mail")),
        ("rate_limit prefixed", layout.rate_limit("rrq:rate_limit:mail")),
        ("debounce", layout.debounce("sync")),
        ("debounce prefixed", layout.debounce("rrq:debounce:sync")),
        ("unique_lock", layout.unique_lock("report")),
        ("health", layout.health("w-1")),
        ("health prefix", layout.health_prefix()),
        ("cron ticks", layout.cron_ticks()),
        ("job prefix", layout.on_shard(shard, JOB_PREFIX)),
        ("lock prefix", layout.on_shard(shard, LOCK_PREFIX)),
        ("unique lock prefix", layout.on_shard(shard, UNIQUE_LOCK_PREFIX)),
        ("active prefix", layout.on_shard(shard, ACTIVE_PREFIX)),
        ("events prefix", layout.on_shard(shard, EVENTS_PREFIX)),
        ("quarantine prefix", layout.on_shard(shard, QUARANTINE_PREFIX)),
        ("queue prefix", layout.on_shard(shard, QueueName::PREFIX)),
        ("dlq prefix", layout.on_shard(shard, DlqName::PREFIX)),
    ]
}

#[test]
fn single_layout_is_the_reference_schema() {
    let golden = [
        ("job", "rrq:job:0c5e-id"),
        ("lock", "rrq:lock:job:0c5e-id"),
        ("events", "rrq:events:job:0c5e-id"),
        ("queue", "rrq:queue:emails"),
        ("dlq", "rrq:dlq:dead"),
        ("active", "rrq:active:jobs:w-1"),
        ("leases", "rrq:leases"),
        ("paused", "rrq:paused_queues"),
        ("idempotency", "rrq:idempotency:order-7"),
        ("rate_limit", "rrq:rate_limit:mail"),
        ("rate_limit prefixed", "rrq:rate_limit:mail"),
        ("debounce", "rrq:debounce:sync"),
        ("debounce prefixed", "rrq:debounce:sync"),
        ("unique_lock", "rrq:lock:unique:report"),
        ("health", "rrq:health:worker:w-1"),
        ("health prefix", "rrq:health:worker:"),
        ("cron ticks", "rrq:cron:ticks"),
        ("job prefix", "rrq:job:"),
        ("lock prefix", "rrq:lock:job:"),
        ("unique lock prefix", "rrq:lock:unique:"),
        ("active prefix", "rrq:active:jobs:"),
        ("events prefix", "rrq:events:job:"),
        ("quarantine prefix", "rrq:quarantine:"),
        ("queue prefix", "rrq:queue:"),
        ("dlq prefix", "rrq:dlq:"),
    ];
    let single = Layout::single();
    assert_eq!(single, Layout::default());
    assert!(!single.is_sharded());
    assert_eq!(single.shard_count(), 1);
    assert_eq!(single.shards().collect::<Vec<_>>(), vec![Shard::FIRST]);
    let (id, _, _) = sample();
    assert_eq!(single.shard_of(&id), Shard::FIRST);
    assert_eq!(single.tag(Shard::FIRST), None);
    let built = every_key(&single, Shard::FIRST);
    assert_eq!(built.len(), golden.len());
    for ((what, key), (want_what, want)) in built.iter().zip(golden) {
        assert_eq!((*what, key.as_str()), (want_what, want));
    }
    // The free functions and constants are the same names.
    let (id, queue, dlq) = sample();
    assert_eq!(
        [job(&id), lock(&id), events(&id), queue_key(&queue), dlq_key(&dlq), active("w-1"), health("w-1")],
        [golden[0].1, golden[1].1, golden[2].1, golden[3].1, golden[4].1, golden[5].1, golden[14].1].map(String::from)
    );
    assert_eq!([LEASES, PAUSED, CRON_TICKS], [golden[6].1, golden[7].1, golden[16].1]);
    assert_eq!(READY_CHANNEL, "rrq:ready");
    assert_eq!(CANCEL_CHANNEL, "rrq:cancel");
}

fn queue_key(q: &QueueName) -> String {
    queue(q).to_owned()
}

fn dlq_key(d: &DlqName) -> String {
    dlq(d).to_owned()
}

#[test]
fn sharded_layout_spelling() {
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let (id, _, _) = sample();
    let shard = layout.shard_of(&id);
    assert_eq!(shard.index(), crc16(b"0c5e-id") % DEFAULT_QUEUE_SHARDS);
    let tag = layout.tag(shard).unwrap().to_owned();
    assert!(tag.starts_with(&format!("{{{}.", shard.index())) && tag.ends_with('}'), "{tag}");
    let single = Layout::single();
    for ((what, key), (_, plain)) in every_key(&layout, shard).into_iter().zip(every_key(&single, Shard::FIRST)) {
        let rest = plain.strip_prefix("rrq:").unwrap();
        let dedup =
            ["idempotency", "rate_limit", "rate_limit prefixed", "debounce", "debounce prefixed", "unique_lock"];
        let want = if what.starts_with("health") || what == "cron ticks" {
            format!("rrq:{{global}}:{rest}")
        } else if dedup.contains(&what) {
            let own = layout.shard_of_key(&key).expect("a dedup key carries a shard tag");
            format!("rrq:{}:{rest}", layout.tag(own).unwrap())
        } else {
            format!("rrq:{tag}:{rest}")
        };
        assert_eq!(key, want, "{what}");
        if !dedup.contains(&what) && !want.contains("{global}") {
            assert_eq!(layout.shard_of_key(&key), Some(shard), "{what}");
        }
    }
    // A dedup key hashes on its own text, its prefix left out.
    assert_eq!(layout.rate_limit("mail"), layout.rate_limit("rrq:rate_limit:mail"));
    assert_eq!(layout.rate_limit_shard("mail").index(), crc16(b"mail") % DEFAULT_QUEUE_SHARDS);
    assert_eq!(layout.debounce_shard("rrq:debounce:sync").index(), crc16(b"sync") % DEFAULT_QUEUE_SHARDS);
    assert_eq!(layout.unique_lock_shard("report").index(), crc16(b"report") % DEFAULT_QUEUE_SHARDS);
    assert_eq!(layout.idempotency_shard("order-7").index(), crc16(b"order-7") % DEFAULT_QUEUE_SHARDS);
    // Untagged, cluster-wide and foreign tags name no shard.
    assert_eq!(layout.shard_of_key("rrq:job:x"), None);
    assert_eq!(layout.shard_of_key(&layout.cron_ticks()), None);
    assert_eq!(layout.shard_of_key("rrq:{3.999999}:job:x"), None);
    assert_eq!(single.shard_of_key(&layout.job(&id)), None);
}

#[test]
fn a_queue_name_holding_braces_keeps_the_shard_tag() {
    // Redis hashes the first `{...}`: the layout's tag comes before any name.
    let layout = Layout::sharded(16).unwrap();
    let queue = QueueName::new("a{b}c");
    for shard in layout.shards() {
        let key = layout.queue(&queue, shard);
        assert_eq!(key_slot(key.as_bytes()), key_slot(layout.tag(shard).unwrap().as_bytes()), "{key}");
    }
}

#[test]
fn shard_counts_are_bounded() {
    assert!(Layout::sharded(0).is_err());
    assert!(Layout::sharded(MAX_QUEUE_SHARDS + 1).is_err());
    let widest = Layout::sharded(MAX_QUEUE_SHARDS).unwrap();
    assert_eq!(widest.shard_count(), MAX_QUEUE_SHARDS);
    assert_eq!(Layout::sharded(1).unwrap().shards().count(), 1);
}

#[test]
fn shard_tags_are_distinct_and_spread_over_the_slots() {
    for shards in [1, 2, 3, 16, DEFAULT_QUEUE_SHARDS, MAX_QUEUE_SHARDS] {
        let layout = Layout::sharded(shards).unwrap();
        let slots: Vec<u32> = layout.shards().map(|s| u32::from(key_slot(layout.tag(s).unwrap().as_bytes()))).collect();
        let band = u32::from(SLOTS) / u32::from(shards);
        for (i, slot) in slots.iter().enumerate() {
            // In its own band, away from the edges.
            let lo = i as u32 * u32::from(SLOTS) / u32::from(shards);
            assert!((lo..lo + band + 1).contains(slot), "{shards} shards: shard {i} at slot {slot}");
        }
        assert!(slots.windows(2).all(|w| w[0] < w[1]), "{shards} shards: slots in order");
    }
}

/// The slot ranges `redis-cli --cluster create` gives three masters.
const THREE_MASTERS: [std::ops::RangeInclusive<u16>; 3] = [0..=5460, 5461..=10922, 10923..=16383];

#[test]
fn random_ids_spread_over_three_masters() {
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let total = 30_000;
    let mut per_master = [0usize; 3];
    let mut per_shard = vec![0usize; usize::from(layout.shard_count())];
    for _ in 0..total {
        let id = JobId::new(uuid::Uuid::new_v4().to_string());
        let slot = key_slot(layout.job(&id).as_bytes());
        per_master[THREE_MASTERS.iter().position(|r| r.contains(&slot)).unwrap()] += 1;
        per_shard[usize::from(layout.shard_of(&id).index())] += 1;
    }
    for (master, n) in per_master.iter().enumerate() {
        assert!(*n * 4 >= total, "master {master} holds {n} of {total} jobs: {per_master:?}");
    }
    // Every shard is used, none far above its share (1/64 = 469 ids).
    assert!(per_shard.iter().all(|n| (300..650).contains(n)), "{per_shard:?}");
}

#[test]
fn the_default_shards_split_evenly_over_three_masters() {
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let mut per_master = [0u16; 3];
    for shard in layout.shards() {
        let slot = key_slot(layout.tag(shard).unwrap().as_bytes());
        per_master[THREE_MASTERS.iter().position(|r| r.contains(&slot)).unwrap()] += 1;
    }
    assert_eq!(per_master, [21, 22, 21]);
}

#[test]
fn ready_keys_name_their_queue_and_shard() {
    let queue = QueueName::new("a{b}:c");
    let single = Layout::single();
    assert_eq!(single.queue_of(&single.queue(&queue, Shard::FIRST)), Some((queue.clone(), Shard::FIRST)));
    assert_eq!(single.queue_of("rrq:dlq:x"), None);
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    for shard in layout.shards() {
        assert_eq!(layout.queue_of(&layout.queue(&queue, shard)), Some((queue.clone(), shard)));
        assert_eq!(layout.queue_of(&layout.dlq(&DlqName::new("x"), shard)), None);
    }
    // A single-layout key, or another shard count's, names no shard here.
    assert_eq!(layout.queue_of(queue.as_str()), None);
    let other = Layout::sharded(16).unwrap();
    let foreign = other.queue(&queue, other.shards().nth(5).unwrap());
    assert_eq!(layout.queue_of(&foreign), None, "{foreign}");
}

#[test]
fn a_shards_ready_channel_hashes_to_its_slot_and_names_its_shard() {
    assert_eq!(Layout::single().ready_channel(Shard::FIRST), READY_CHANNEL);
    assert_eq!(Layout::single().ready_channel_shard(READY_CHANNEL), None);
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let queue = QueueName::new("q");
    for shard in layout.shards() {
        let channel = layout.ready_channel(shard);
        // SPUBLISH in a script on the shard's slot must stay in that slot.
        assert_eq!(key_slot(channel.as_bytes()), key_slot(layout.queue(&queue, shard).as_bytes()), "{channel}");
        assert_eq!(layout.ready_channel_shard(&channel), Some(shard));
    }
    assert_eq!(layout.ready_channel_shard(READY_CHANNEL), None);
    assert_eq!(layout.ready_channel_shard(&layout.leases(layout.shards().nth(3).unwrap())), None);
}

#[test]
fn scan_globs_match_every_shard_and_escape_the_prefix() {
    assert_eq!(Layout::single().shards_glob(QueueName::PREFIX), "rrq:queue:*");
    assert_eq!(Layout::single().shards_glob("rrq:job:a*b?[c]\\"), "rrq:job:a\\*b\\?\\[c\\]\\\\*");
    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    assert_eq!(layout.shards_glob(QueueName::PREFIX), "rrq:{*}:queue:*");
    assert_eq!(layout.shards_glob(JOB_PREFIX), "rrq:{*}:job:*");
    assert_eq!(layout.shards_glob("rrq:job:x*"), "rrq:{*}:job:x\\**");
}

#[test]
fn untagging_gives_back_the_shard_and_the_single_name() {
    let (id, queue, dlq) = sample();
    let single = Layout::single();
    assert_eq!(single.untag("rrq:job:x"), Some((Shard::FIRST, "rrq:job:x".to_owned())));
    assert_eq!(single.job_of_key(&single.job(&id)), Some(id.clone()));
    assert_eq!(single.job_of_key("rrq:lock:job:x"), None);
    assert_eq!(single.shard_count_record(), None, "one server records nothing");

    let layout = Layout::sharded(DEFAULT_QUEUE_SHARDS).unwrap();
    let other = Layout::sharded(32).unwrap();
    for shard in layout.shards() {
        for name in [queue.as_str(), dlq.as_str(), LEASES, "rrq:job:x"] {
            assert_eq!(layout.untag(&layout.on_shard(shard, name)), Some((shard, name.to_owned())));
        }
    }
    for shard in other.shards() {
        assert_eq!(layout.untag(&other.on_shard(shard, "rrq:job:x")), None, "another count's tag");
    }
    assert_eq!(layout.untag(&layout.health("w")), None, "the cluster-wide tag is no shard");
    assert_eq!(layout.untag("rrq:job:x"), None, "an untagged key");
    assert_eq!(layout.job_of_key(&layout.job(&id)), Some(id.clone()));
    let elsewhere = layout.shards().find(|s| *s != layout.shard_of(&id)).unwrap();
    assert_eq!(layout.job_of_key(&layout.on_shard(elsewhere, &job(&id))), None, "not the id's own shard");
    assert_eq!(layout.job_of_key(&layout.lock(&id)), None);
    assert_eq!(layout.shard_count_record().as_deref(), Some("rrq:{global}:layout"));
}
