use std::time::{Duration, Instant};

use rrq_test_support::docker::{self, DockerCluster, DockerRedis};
use rrq_test_support::resp::{self, Reply};

fn ping(port: u16) -> bool {
    matches!(resp::call(port, &["PING"]), Ok(Reply::Status(s)) if s == "PONG")
}

/// Polls `probe` until it holds, for at most 20 s.
fn eventually(what: &str, mut probe: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(20);
    while !probe() {
        assert!(Instant::now() < end, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(50)); // sleep-ok: state poll, bounded by `end`
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_node_answers_on_its_mapped_port_until_it_is_cut_off_and_after_it_is_back() {
    if !docker::require_docker("docker::a_docker_node_answers_on_its_mapped_port") {
        return;
    }
    let redis = DockerRedis::start(2).await;
    let network = redis.network().to_owned();
    let [a, b] = redis.nodes() else { panic!("two nodes") };
    assert!(ping(a.host_port()) && ping(b.host_port()), "both nodes answer from the host");
    assert_ne!(a.ip(), b.ip());

    // The nodes reach each other on the private network: b replicates a.
    let replicaof = resp::call(b.host_port(), &["REPLICAOF", a.ip(), "6379"]).unwrap();
    assert_eq!(replicaof, Reply::Status("OK".into()));
    assert_eq!(resp::call(a.host_port(), &["SET", "k", "v"]).unwrap(), Reply::Status("OK".into()));
    eventually("b's copy of k", || {
        resp::call(b.host_port(), &["GET", "k"]).ok() == Some(Reply::Bulk(Some("v".into())))
    });

    redis.disconnect(0);
    assert!(!ping(a.host_port()), "a disconnected node must not answer on its mapped port");
    assert!(ping(b.host_port()), "the other node still answers");

    redis.reconnect(0);
    eventually("a answering again on the same port", || ping(a.host_port()));
    let ip = resp::call(b.host_port(), &["INFO", "replication"]).unwrap();
    assert!(ip.text().unwrap().contains(&format!("master_host:{}", a.ip())), "{ip:?}");

    redis.kill(1);
    eventually("the killed node going silent", || !ping(b.host_port()));

    drop(redis);
    let gone = std::process::Command::new("docker").args(["network", "inspect", &network]).output().unwrap();
    assert!(!gone.status.success(), "the network {network} must be removed on drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_docker_cluster_fails_over_a_cut_off_master_and_takes_it_back_as_a_replica() {
    if !docker::require_docker("docker::a_docker_cluster_fails_over_a_cut_off_master") {
        return;
    }
    let mut cluster = DockerCluster::start().await;
    let network = cluster.redis().network().to_owned();
    let masters = cluster.masters();
    assert_eq!(masters.len(), 3, "three masters: {masters:?}");
    let served: usize = masters.iter().flat_map(|m| &m.slots).map(|r| r.clone().count()).sum();
    assert_eq!(served, 16384, "the masters serve every slot once: {masters:?}");
    let dsn = cluster.dsn();
    assert!(dsn.starts_with("redis-cluster://") && dsn.matches("node=").count() == 5, "{dsn}");

    // A key written through a master is readable from the host on the
    // node's published port, and reaches its replica.
    let cut = masters[0].clone();
    let slot_key = key_on(&cluster, &cut);
    let port = cluster.redis().nodes()[cut.index].host_port();
    assert_eq!(resp::call(port, &["SET", &slot_key, "v"]).unwrap(), Reply::Status("OK".into()));
    let replica = cluster
        .nodes()
        .into_iter()
        .find(|n| n.role == rrq_test_support::cluster::Role::Replica { master_id: cut.id.clone() })
        .expect("the master has a replica");
    let replica_port = cluster.redis().nodes()[replica.index].host_port();
    // (A replica redirects reads; DBSIZE counts what it holds.)
    eventually("the replica's copy", || resp::call(replica_port, &["DBSIZE"]).ok() == Some(Reply::Int(1)));

    cluster.disconnect(cut.index);
    let promoted = tokio::task::block_in_place(|| cluster.wait_for_failover(cut.index));
    assert_eq!(promoted.id, replica.id, "its only replica took over");
    assert_eq!(promoted.slots, cut.slots);
    assert!(!cluster.dsn().contains(&format!("{}:", cut.ip)), "the DSN names reachable nodes only");
    let promoted_port = cluster.redis().nodes()[promoted.index].host_port();
    assert!(
        matches!(resp::call(promoted_port, &["GET", &slot_key]), Ok(Reply::Bulk(Some(v))) if v == "v"),
        "the promoted replica serves the key"
    );

    cluster.reconnect(cut.index);
    tokio::task::block_in_place(|| cluster.wait_rejoined_as_replica(cut.index, &promoted.id));
    let roles = cluster.nodes();
    assert_eq!(roles.iter().filter(|n| n.is_master()).count(), 3, "{roles:?}");

    drop(cluster);
    let gone = std::process::Command::new("docker").args(["network", "inspect", &network]).output().unwrap();
    assert!(!gone.status.success(), "the network {network} must be removed on drop");
}

/// A key whose slot `master` serves.
fn key_on(cluster: &DockerCluster, master: &rrq_test_support::docker::DockerClusterNode) -> String {
    let port = cluster.redis().nodes()[master.index].host_port();
    (0..)
        .map(|i| format!("k{i}"))
        .find(|k| {
            let slot = resp::call(port, &["CLUSTER", "KEYSLOT", k]);
            matches!(slot, Ok(Reply::Int(s)) if master.serves(u16::try_from(s).expect("a slot")))
        })
        .expect("some key lands on every master")
}
