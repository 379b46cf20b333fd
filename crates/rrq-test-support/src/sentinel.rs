//! A Redis master watched by three sentinels, for one test.
//!
//! [`TestSentinel::start`] runs a master, one replica of it and three
//! sentinels (`redis-server --sentinel`), all private servers on free
//! loopback ports, and returns once the replica's link is up and every
//! sentinel knows the replica and the two other sentinels (so a failover can
//! reach its quorum of 2). The sentinels declare the master down after 1 s
//! without an answer and give a failover 2 s, so
//! [`TestSentinel::kill_master`] finishes within a few seconds. Everything is
//! killed, and the scratch directories removed, on drop.

use std::time::Duration;

use crate::resp::{self, Reply};
use crate::{TestRedis, wait};

/// The name the sentinels monitor the master under.
pub const SERVICE_NAME: &str = "rrq-test";

/// How long the setup or a failover may take.
const DEADLINE: Duration = Duration::from_secs(30);

/// A master, its replica and three sentinels; killed on drop.
#[derive(Debug)]
pub struct TestSentinel {
    /// The first master, then its replica.
    data: Vec<TestRedis>,
    /// Whether `data[i]` still runs.
    alive: Vec<bool>,
    sentinels: Vec<TestRedis>,
}

impl TestSentinel {
    /// Starts the master, the replica and the sentinels, and waits until the
    /// sentinels are ready to fail over.
    ///
    /// # Panics
    ///
    /// When a server cannot be started (see [`TestRedis::private`]) or the
    /// setup does not settle within 30 s.
    pub fn start() -> TestSentinel {
        let master = TestRedis::private();
        let master_port = master.port().to_string();
        let replica = TestRedis::private_with_args(&["--replicaof", "127.0.0.1", &master_port]);
        let replica_port = replica.port();
        wait::until("the replica's link to its master", DEADLINE, || {
            let link = resp::info_field(replica_port, &["INFO", "replication"], "master_link_status");
            if link.as_deref() == Some("up") { Ok(()) } else { Err(format!("master_link_status {link:?}")) }
        });
        let config = format!(
            "sentinel monitor {SERVICE_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {SERVICE_NAME} 1000\n\
             sentinel failover-timeout {SERVICE_NAME} 2000\n\
             sentinel parallel-syncs {SERVICE_NAME} 1\n"
        );
        let sentinels: Vec<TestRedis> =
            (0..3).map(|_| TestRedis::private_with_config(&config, &["--sentinel"])).collect();
        let setup = TestSentinel { data: vec![master, replica], alive: vec![true, true], sentinels };
        wait::until("every sentinel seeing the replica and the other sentinels", DEADLINE, || {
            for port in setup.sentinel_ports() {
                let state = master_state(port)?;
                let field = |name: &str| state.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
                if field("num-slaves") != Some("1") || field("num-other-sentinels") != Some("2") {
                    return Err(format!(
                        "sentinel {port}: num-slaves {:?}, num-other-sentinels {:?}",
                        field("num-slaves"),
                        field("num-other-sentinels")
                    ));
                }
            }
            Ok(())
        });
        setup
    }

    /// The DSN in fred's scheme:
    /// `redis-sentinel://127.0.0.1:S1/0?sentinelServiceName=NAME&node=127.0.0.1:S2&node=127.0.0.1:S3`.
    pub fn dsn(&self) -> String {
        let ports = self.sentinel_ports();
        let mut dsn = format!("redis-sentinel://127.0.0.1:{}/0?sentinelServiceName={SERVICE_NAME}", ports[0]);
        for port in &ports[1..] {
            dsn.push_str(&format!("&node=127.0.0.1:{port}"));
        }
        dsn
    }

    /// The sentinels' ports.
    pub fn sentinel_ports(&self) -> Vec<u16> {
        self.sentinels.iter().map(TestRedis::port).collect()
    }

    /// The ports of the master and the replica, in start order (the first
    /// master first), killed ones included.
    pub fn data_ports(&self) -> Vec<u16> {
        self.data.iter().map(TestRedis::port).collect()
    }

    /// The master's port as the first sentinel reports it
    /// (`SENTINEL get-master-addr-by-name`).
    ///
    /// # Panics
    ///
    /// When the sentinel does not answer with an address.
    pub fn master_port(&self) -> u16 {
        let port = self.sentinels[0].port();
        reported_master(port).unwrap_or_else(|e| panic!("sentinel {port}: {e}"))
    }

    /// Kills the current master with SIGKILL and waits until every sentinel
    /// reports the replica as the master and the replica says it is one.
    /// Returns the new master's port.
    ///
    /// # Panics
    ///
    /// When the failover does not finish within 30 s, or the master was
    /// already killed once (the setup has a single replica).
    pub fn kill_master(&mut self) -> u16 {
        let old = self.master_port();
        let i = self.data.iter().position(|d| d.port() == old).expect("the sentinels report one of our servers");
        let next = self
            .data
            .iter()
            .zip(&self.alive)
            .find(|(d, alive)| **alive && d.port() != old)
            .map(|(d, _)| d.port())
            .expect("a running replica to fail over to");
        self.data[i].kill();
        self.alive[i] = false;
        wait::until(&format!("the sentinels failing over from {old} to {next}"), DEADLINE, || {
            for port in self.sentinel_ports() {
                let reported = reported_master(port)?;
                if reported != next {
                    return Err(format!("sentinel {port} reports master {reported}"));
                }
            }
            let role = resp::info_field(next, &["INFO", "replication"], "role");
            if role.as_deref() == Some("master") { Ok(()) } else { Err(format!("{next} has role {role:?}")) }
        });
        next
    }
}

/// `SENTINEL get-master-addr-by-name` on the sentinel on `port`: the port.
fn reported_master(port: u16) -> Result<u16, String> {
    match resp::call(port, &["SENTINEL", "get-master-addr-by-name", SERVICE_NAME]) {
        Ok(Reply::Array(Some(addr))) if addr.len() == 2 => {
            addr[1].text().and_then(|p| p.parse().ok()).ok_or_else(|| format!("bad address {addr:?}"))
        }
        other => Err(format!("get-master-addr-by-name: {other:?}")),
    }
}

/// `SENTINEL master NAME` on the sentinel on `port`, as field/value pairs.
fn master_state(port: u16) -> Result<Vec<(String, String)>, String> {
    let reply = resp::call(port, &["SENTINEL", "master", SERVICE_NAME]).map_err(|e| format!("sentinel {port}: {e}"))?;
    let items = reply.items();
    if items.is_empty() {
        return Err(format!("sentinel {port}: SENTINEL master answered {reply:?}"));
    }
    Ok(items.chunks(2).filter_map(|kv| Some((kv.first()?.text()?.to_owned(), kv.get(1)?.text()?.to_owned()))).collect())
}
