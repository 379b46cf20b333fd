use rrq_test_support::resp::{self, Reply};
use rrq_test_support::sentinel::{SERVICE_NAME, TestSentinel};

#[test]
fn killing_the_master_makes_the_sentinels_report_the_promoted_replica() {
    let mut setup = TestSentinel::start();
    let ports = setup.sentinel_ports();
    assert_eq!(ports.len(), 3);
    assert_eq!(
        setup.dsn(),
        format!(
            "redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE_NAME}&node=127.0.0.1:{}&node=127.0.0.1:{}",
            ports[0], ports[1], ports[2]
        )
    );
    let [master, replica] = setup.data_ports()[..] else { panic!("a master and a replica") };
    assert_eq!(setup.master_port(), master);
    assert_eq!(resp::call(master, &["SET", "k", "v"]).unwrap(), Reply::Status("OK".into()));
    assert_eq!(resp::call(master, &["WAIT", "1", "5000"]).unwrap(), Reply::Int(1));
    // A replica refuses writes until it is promoted.
    assert!(matches!(resp::call(replica, &["SET", "k", "w"]).unwrap(), Reply::Error(e) if e.starts_with("READONLY")));

    let promoted = setup.kill_master();

    assert_eq!(promoted, replica);
    assert!(resp::call(master, &["PING"]).is_err(), "the killed master must not answer");
    for port in ports {
        let reply = resp::call(port, &["SENTINEL", "get-master-addr-by-name", SERVICE_NAME]).unwrap();
        assert_eq!(reply.items()[1].text(), Some(replica.to_string().as_str()), "sentinel {port}");
    }
    assert_eq!(resp::call(replica, &["GET", "k"]).unwrap(), Reply::Bulk(Some("v".into())));
    assert_eq!(
        resp::call(replica, &["SET", "k", "w"]).unwrap(),
        Reply::Status("OK".into()),
        "the new master takes writes"
    );
}
