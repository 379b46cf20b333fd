use std::collections::BTreeSet;

use rrq_test_support::cluster::{Role, SLOTS, TestCluster};
use rrq_test_support::resp::{self, Reply};

/// The seed nodes of a `redis-cluster://` DSN, as fred reads it: the
/// authority, then every `node=` parameter.
fn seeds(dsn: &str) -> Vec<u16> {
    let rest = dsn.strip_prefix("redis-cluster://").unwrap_or_else(|| panic!("not a cluster DSN: {dsn}"));
    let (first, query) = rest.split_once('?').unwrap_or((rest, ""));
    std::iter::once(first)
        .chain(query.split('&').filter_map(|p| p.strip_prefix("node=")))
        .map(|addr| addr.strip_prefix("127.0.0.1:").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("{addr}")))
        .collect()
}

/// Sends a command to `port`, following `-MOVED` redirects as a cluster
/// client does.
fn cluster_call(mut port: u16, args: &[&str]) -> Reply {
    for _ in 0..5 {
        match resp::call(port, args).unwrap() {
            Reply::Error(e) if e.starts_with("MOVED ") => {
                let addr = e.rsplit(' ').next().unwrap();
                port = addr.rsplit_once(':').unwrap().1.parse().unwrap();
            }
            reply => return reply,
        }
    }
    panic!("too many redirects for {args:?}");
}

fn dbsize(port: u16) -> i64 {
    match resp::call(port, &["DBSIZE"]).unwrap() {
        Reply::Int(n) => n,
        other => panic!("DBSIZE on {port}: {other:?}"),
    }
}

#[test]
fn a_cluster_covers_every_slot_and_spreads_keys_written_through_its_dsn_over_three_masters() {
    let cluster = TestCluster::start();
    let nodes = cluster.nodes();
    assert_eq!(nodes.len(), 6, "{nodes:#?}");
    let masters: Vec<_> = nodes.iter().filter(|n| n.is_master()).collect();
    assert_eq!(masters.len(), 3, "{nodes:#?}");
    let mut covered = BTreeSet::new();
    for master in &masters {
        for range in &master.slots {
            for slot in range.clone() {
                assert!(covered.insert(slot), "slot {slot} served twice: {nodes:#?}");
            }
        }
    }
    assert_eq!(covered.len(), usize::from(SLOTS), "every slot must be served");
    for node in nodes.iter().filter(|n| !n.is_master()) {
        let Role::Replica { master_id } = &node.role else { unreachable!() };
        assert!(masters.iter().any(|m| &m.id == master_id), "{node:?} replicates no master");
        assert_eq!(node.id.len(), 40, "{node:?}");
    }

    let dsn = cluster.dsn();
    let seeds = seeds(&dsn);
    assert_eq!(BTreeSet::from_iter(seeds.iter().copied()), BTreeSet::from_iter(cluster.ports()), "{dsn}");
    for i in 0..90 {
        let key = format!("key-{i}");
        assert_eq!(cluster_call(seeds[0], &["SET", &key, "v"]), Reply::Status("OK".into()));
    }
    let per_master: Vec<i64> = masters.iter().map(|m| dbsize(m.port)).collect();
    assert_eq!(per_master.iter().sum::<i64>(), 90, "{per_master:?}");
    assert!(per_master.iter().all(|n| *n > 0), "every master must hold some keys: {per_master:?}");
    for i in 0..90 {
        let key = format!("key-{i}");
        let owner = cluster.master_for_slot(cluster.slot_of(&key));
        assert_eq!(resp::call(owner.port, &["GET", &key]).unwrap(), Reply::Bulk(Some("v".into())), "{key}");
    }
}

#[test]
fn killing_a_master_promotes_its_replica_with_the_data() {
    let mut cluster = TestCluster::start();
    let slot = cluster.slot_of("survivor");
    let master = cluster.master_for_slot(slot);
    assert_eq!(resp::call(master.port, &["SET", "survivor", "yes"]).unwrap(), Reply::Status("OK".into()));
    // The replica must have the key before its master dies.
    assert_eq!(resp::call(master.port, &["WAIT", "1", "5000"]).unwrap(), Reply::Int(1));
    let replica = cluster
        .nodes()
        .into_iter()
        .find(|n| n.role == Role::Replica { master_id: master.id.clone() })
        .expect("the master has a replica");

    let promoted = cluster.kill_master(master.port);

    assert_eq!(promoted.id, replica.id);
    assert_eq!(promoted.slots, master.slots);
    assert!(resp::call(master.port, &["PING"]).is_err(), "the killed master must not answer");
    let after = cluster.nodes();
    let old = after.iter().find(|n| n.id == master.id).expect("the cluster still lists the dead master");
    assert!(old.failed, "{old:?}");
    assert_eq!(cluster.master_for_slot(slot).port, replica.port);
    assert_eq!(resp::call(replica.port, &["GET", "survivor"]).unwrap(), Reply::Bulk(Some("yes".into())));
    assert!(!cluster.dsn().contains(&format!(":{}", master.port)), "the DSN names running nodes only");
}

#[test]
fn migrating_slots_moves_their_keys_and_ownership_to_another_master() {
    let cluster = TestCluster::start();
    let slot = cluster.slot_of("moving");
    let source = cluster.master_for_slot(slot);
    let target = cluster.masters().into_iter().find(|m| m.port != source.port).unwrap();
    for key in ["moving", "{moving}:a", "{moving}:b"] {
        assert_eq!(resp::call(source.port, &["SET", key, "v"]).unwrap(), Reply::Status("OK".into()));
    }
    // Slots on both sides of the key's, to move a range.
    let first = slot.saturating_sub(2);
    let last = (slot + 2).min(SLOTS - 1);
    let owned_by_source: Vec<u16> = (first..=last).filter(|s| source.serves(*s)).collect();

    // Half-way, the source keeps answering for the keys it holds and sends
    // clients to the target for the others.
    cluster.begin_slot_migration(slot, target.port);
    assert_eq!(resp::call(source.port, &["GET", "moving"]).unwrap(), Reply::Bulk(Some("v".into())));
    assert_eq!(
        resp::call(source.port, &["GET", "{moving}:absent"]).unwrap(),
        Reply::Error(format!("ASK {slot} 127.0.0.1:{}", target.port))
    );
    assert_eq!(cluster.master_for_slot(slot).port, source.port, "ownership moves only at the end");

    cluster.migrate_slots(first..=last, target.port);

    for s in first..=last {
        assert_eq!(cluster.master_for_slot(s).port, target.port, "slot {s}");
    }
    assert_eq!(resp::call(target.port, &["GET", "{moving}:b"]).unwrap(), Reply::Bulk(Some("v".into())));
    match resp::call(source.port, &["GET", "moving"]).unwrap() {
        Reply::Error(e) => assert_eq!(e, format!("MOVED {slot} 127.0.0.1:{}", target.port)),
        other => panic!("the source must redirect, got {other:?}"),
    }
    assert!(owned_by_source.contains(&slot));
    assert_eq!(dbsize(source.port), 0, "no key stays behind");
    assert_eq!(dbsize(target.port), 3, "the three keys moved with their slot");
}
