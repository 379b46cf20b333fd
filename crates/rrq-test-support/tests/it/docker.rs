use std::time::{Duration, Instant};

use rrq_test_support::docker::{self, DockerRedis};
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
