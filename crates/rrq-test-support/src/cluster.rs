//! A local Redis Cluster for one test.
//!
//! [`TestCluster::start`] runs six private `redis-server` processes (three
//! masters, one replica each; [`TestCluster::with_shape`] picks other
//! numbers) on free loopback ports with `cluster-enabled yes`, joins them
//! with `redis-cli --cluster create`, and returns once every node reports
//! `cluster_state:ok` with all 16384 slots served, every node knows every
//! other, all nodes agree on who serves which slot and every replica's link
//! to its master is up.
//!
//! The nodes are [`TestRedis`] servers, so they start, wait and stop as a
//! single test server does, each in its own scratch directory (where its
//! `nodes.conf` lives); dropping the cluster kills them and removes the
//! directories. A short node timeout (`cluster-node-timeout` 1 s) and
//! `cluster-replica-validity-factor 0` let a replica take over within a few
//! seconds of its master's death ([`TestCluster::kill_master`]).
//! [`TestCluster::migrate_slots`] moves slots and their keys between masters
//! with the `CLUSTER SETSLOT`/`MIGRATE` steps a resharding tool takes;
//! [`TestCluster::begin_slot_migration`] stops half-way, for `-ASK` redirects.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::resp::{self, Reply};
use crate::{TestRedis, wait};

/// The number of hash slots of a Redis Cluster.
pub const SLOTS: u16 = 16384;

/// How long the cluster may take to settle after it is created, a failover
/// or a migration.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);
/// Keys moved by one `MIGRATE`.
const MIGRATE_BATCH: usize = 100;

/// Arguments of every node, besides `cluster-enabled` and its bus port.
const NODE_ARGS: &[&str] = &[
    "--cluster-node-timeout",
    "1000",
    "--cluster-replica-validity-factor",
    "0",
    "--cluster-allow-replica-migration",
    "no",
];

/// A Redis Cluster of private servers, killed on drop.
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<TestRedis>,
    /// Whether `nodes[i]` still runs (not killed by the test).
    alive: Vec<bool>,
}

/// What a node is in the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    Master,
    /// A replica of the master with this node id.
    Replica {
        master_id: String,
    },
}

/// One node as the cluster sees it (from [`TestCluster::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    pub port: u16,
    /// The 40-character cluster node id.
    pub id: String,
    pub role: Role,
    /// The slot ranges this node serves (empty for a replica).
    pub slots: Vec<RangeInclusive<u16>>,
    /// Whether the cluster flags the node as failed (`fail`), as after a kill.
    pub failed: bool,
}

impl ClusterNode {
    /// `127.0.0.1:{port}`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// Whether this node serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

impl TestCluster {
    /// Three masters with one replica each.
    ///
    /// # Panics
    ///
    /// When a node cannot be started (see [`TestRedis::private`]), when
    /// `redis-cli` is missing or fails to create the cluster, or when the
    /// cluster does not settle within 30 s.
    pub fn start() -> TestCluster {
        TestCluster::with_shape(3, 1)
    }

    /// `masters` masters (at least 3, as `redis-cli --cluster create`
    /// demands) with `replicas_per_master` replicas each.
    ///
    /// # Panics
    ///
    /// As [`TestCluster::start`], and for fewer than 3 masters.
    pub fn with_shape(masters: usize, replicas_per_master: usize) -> TestCluster {
        assert!(masters >= 3, "a Redis Cluster needs at least 3 masters, {masters} asked for");
        let count = masters * (1 + replicas_per_master);
        let nodes: Vec<TestRedis> = (0..count).map(|_| TestRedis::private_cluster_node(NODE_ARGS)).collect();
        let cluster = TestCluster { alive: vec![true; nodes.len()], nodes };
        cluster.create(replicas_per_master);
        cluster.wait_until_settled("the new cluster", true);
        cluster
    }

    fn create(&self, replicas_per_master: usize) {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"]);
        cmd.args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        cmd.args(["--cluster-replicas", &replicas_per_master.to_string(), "--cluster-yes"]);
        let output = match cmd.stdin(Stdio::null()).output() {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                panic!("`redis-cli` was not found: install it (`apt-get install redis-tools`) to run cluster tests")
            }
            Err(e) => panic!("cannot run `redis-cli`: {e}"),
        };
        if !output.status.success() {
            panic!(
                "`redis-cli --cluster create` failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// The cluster's DSN in fred's scheme:
    /// `redis-cluster://127.0.0.1:P1?node=127.0.0.1:P2&node=...`, naming every
    /// node still running.
    pub fn dsn(&self) -> String {
        let mut ports = self.live_ports();
        let first = ports.next().expect("a cluster with every node killed has no DSN");
        let mut dsn = format!("redis-cluster://127.0.0.1:{first}");
        for (i, port) in ports.enumerate() {
            dsn.push_str(if i == 0 { "?" } else { "&" });
            dsn.push_str(&format!("node=127.0.0.1:{port}"));
        }
        dsn
    }

    /// The ports of every node started, killed ones included.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(TestRedis::port).collect()
    }

    fn live_ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().zip(&self.alive).filter(|(_, alive)| **alive).map(|(n, _)| n.port())
    }

    /// Every node as a running node sees the cluster now, in start order.
    ///
    /// # Panics
    ///
    /// When no running node answers `CLUSTER NODES`.
    pub fn nodes(&self) -> Vec<ClusterNode> {
        let view = self
            .live_ports()
            .find_map(|port| view_of(port).ok())
            .expect("no running cluster node answers CLUSTER NODES");
        let mut by_port: BTreeMap<u16, ClusterNode> = view.into_iter().map(|n| (n.port, n)).collect();
        self.ports().iter().filter_map(|p| by_port.remove(p)).collect()
    }

    /// The masters, in start order.
    pub fn masters(&self) -> Vec<ClusterNode> {
        self.nodes().into_iter().filter(|n| n.is_master() && !n.failed).collect()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn slot_of(&self, key: &str) -> u16 {
        let port = self.live_ports().next().expect("no running cluster node");
        match resp::call(port, &["CLUSTER", "KEYSLOT", key]) {
            Ok(Reply::Int(slot)) => u16::try_from(slot).expect("slots fit in u16"),
            other => panic!("CLUSTER KEYSLOT {key} on port {port}: {other:?}"),
        }
    }

    /// The master serving `slot`.
    ///
    /// # Panics
    ///
    /// When no master serves it.
    pub fn master_for_slot(&self, slot: u16) -> ClusterNode {
        self.masters().into_iter().find(|n| n.serves(slot)).unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// Kills the node on `port` with SIGKILL, as a crash would, and returns at
    /// once.
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`.
    pub fn kill(&mut self, port: u16) {
        let i = self.index_of(port);
        self.nodes[i].kill();
        self.alive[i] = false;
    }

    /// Freezes the node on `port` (SIGSTOP): it answers nothing and keeps
    /// its connections open, as a host cut off the network. Returns once the
    /// process is stopped; its replica takes over after the node timeout.
    ///
    /// # Panics
    ///
    /// When no running node of this cluster listens on `port`.
    pub fn freeze(&self, port: u16) {
        let i = self.index_of(port);
        self.nodes[i].freeze();
    }

    /// Lets a frozen node go on (SIGCONT).
    ///
    /// # Panics
    ///
    /// When no node of this cluster listens on `port`.
    pub fn thaw(&self, port: u16) {
        let i = self.index_of(port);
        self.nodes[i].thaw();
    }

    /// Kills the master on `port` with SIGKILL and waits until one of its
    /// replicas has taken over its slots and the cluster is settled again
    /// (`cluster_state:ok` with every slot served, on every running node).
    /// Returns the promoted node.
    ///
    /// # Panics
    ///
    /// When `port` is not a master with a replica, or no replica takes over
    /// within 30 s.
    pub fn kill_master(&mut self, port: u16) -> ClusterNode {
        let before = self.nodes();
        let master = before.iter().find(|n| n.port == port).unwrap_or_else(|| panic!("no cluster node on port {port}"));
        assert!(master.is_master(), "the node on port {port} is not a master: {master:?}");
        let replicas: Vec<String> = before
            .iter()
            .filter(|n| matches!(&n.role, Role::Replica { master_id } if *master_id == master.id))
            .map(|n| n.id.clone())
            .collect();
        assert!(!replicas.is_empty(), "the master on port {port} has no replica to promote");
        let slots = master.slots.clone();
        self.kill(port);
        let promoted =
            wait::until(&format!("a replica of the master on port {port} taking over"), SETTLE_DEADLINE, || {
                let now = self.nodes();
                now.into_iter()
                    .find(|n| replicas.contains(&n.id) && n.is_master() && n.slots == slots)
                    .ok_or_else(|| format!("replicas {replicas:?} not yet master of {slots:?}"))
            });
        self.wait_until_settled("the cluster after a failover", false);
        promoted
    }

    /// Moves every slot of `slots` not already served by the master on
    /// `to_port` there, keys included: for each slot, `CLUSTER SETSLOT
    /// IMPORTING` on the target, `MIGRATING` on the source, `MIGRATE` of its
    /// keys in batches, then `CLUSTER SETSLOT NODE` on the target, the source
    /// and every other master. Returns once every running node agrees.
    ///
    /// # Panics
    ///
    /// When `to_port` is not a running master, or a step fails.
    pub fn migrate_slots(&self, slots: RangeInclusive<u16>, to_port: u16) {
        let view = self.nodes();
        let target = view
            .iter()
            .find(|n| n.port == to_port && n.is_master() && !n.failed)
            .unwrap_or_else(|| panic!("no running master on port {to_port}"));
        let masters: Vec<&ClusterNode> = view.iter().filter(|n| n.is_master() && !n.failed).collect();
        let to = to_port.to_string();
        for slot in slots.clone() {
            let Some(source) = masters.iter().find(|n| n.serves(slot)) else {
                panic!("slot {slot} is served by no running master")
            };
            if source.port == to_port {
                continue;
            }
            let s = slot.to_string();
            mark_migration(slot, source, target);
            loop {
                let keys = match resp::call(source.port, &["CLUSTER", "GETKEYSINSLOT", &s, &MIGRATE_BATCH.to_string()])
                {
                    Ok(Reply::Array(Some(keys))) => keys,
                    other => panic!("CLUSTER GETKEYSINSLOT {slot} on port {}: {other:?}", source.port),
                };
                if keys.is_empty() {
                    break;
                }
                let mut args = vec!["MIGRATE", "127.0.0.1", &to, "", "0", "5000", "KEYS"];
                args.extend(keys.iter().filter_map(Reply::text));
                ok(source.port, &args);
            }
            ok(to_port, &["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
            ok(source.port, &["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
            for other in masters.iter().filter(|n| n.port != to_port && n.port != source.port) {
                ok(other.port, &["CLUSTER", "SETSLOT", &s, "NODE", &target.id]);
            }
        }
        wait::until(&format!("every node seeing slots {slots:?} on port {to_port}"), SETTLE_DEADLINE, || {
            for port in self.live_ports() {
                let view = view_of(port)?;
                let owner = |slot| view.iter().find(|n| n.serves(slot)).map(|n| n.port);
                if let Some(slot) = slots.clone().find(|s| owner(*s) != Some(to_port)) {
                    return Err(format!("node {port} sees slot {slot} on {:?}", owner(slot)));
                }
            }
            Ok(())
        });
        self.wait_until_settled("the cluster after a migration", false);
    }

    /// Leaves `slot` half-way to the master on `to_port`: `IMPORTING` on the
    /// target, `MIGRATING` on its master, no key moved. Its master still
    /// answers for the keys it holds and redirects the others with `-ASK`
    /// to the target. [`TestCluster::migrate_slots`] finishes the move.
    ///
    /// # Panics
    ///
    /// When `to_port` is not a running master or already serves `slot`.
    pub fn begin_slot_migration(&self, slot: u16, to_port: u16) {
        let view = self.nodes();
        let target = view
            .iter()
            .find(|n| n.port == to_port && n.is_master() && !n.failed)
            .unwrap_or_else(|| panic!("no running master on port {to_port}"));
        let source = view
            .iter()
            .find(|n| n.is_master() && !n.failed && n.serves(slot))
            .unwrap_or_else(|| panic!("slot {slot} is served by no running master"));
        assert_ne!(source.port, to_port, "slot {slot} is already served by port {to_port}");
        mark_migration(slot, source, target);
    }

    fn index_of(&self, port: u16) -> usize {
        self.nodes.iter().position(|n| n.port() == port).unwrap_or_else(|| panic!("no cluster node on port {port}"))
    }

    /// Waits until every running node reports `cluster_state:ok` with all
    /// slots served, all of them see the same masters serving the same
    /// slots, and every running replica's link to its master is up. With
    /// `all_known`, every node must also know every other one.
    fn wait_until_settled(&self, what: &str, all_known: bool) {
        let known = all_known.then_some(self.nodes.len());
        wait::until(&format!("{what} settling"), SETTLE_DEADLINE, || {
            let nodes: Vec<(String, u16)> = self.live_ports().map(|port| (port.to_string(), port)).collect();
            settled(&nodes, known, |k| {
                let port = nodes[k].1;
                let view = view_of(port)?;
                let me = view.iter().find(|n| n.port == port).ok_or_else(|| format!("node {port} misses itself"))?;
                Ok((me.is_master(), view.into_iter().map(|n| (n.id, n.slots)).collect()))
            })
        });
    }
}

/// One round of a settle check over `nodes` (a label for messages and the
/// port each answers on): every node reports `cluster_state:ok` with all
/// slots served (and `known` nodes, when given), every replica's link to its
/// master is up, and all of them see the same masters serving the same
/// slots. `view` tells, for a node's position in `nodes`, whether the node
/// is a master and the slot ranges every node serves as it sees them. The
/// error names the first node not there yet.
pub(crate) fn settled(
    nodes: &[(String, u16)],
    known: Option<usize>,
    mut view: impl FnMut(usize) -> Result<(bool, SlotOwners), String>,
) -> Result<(), String> {
    let mut first: Option<(&str, SlotOwners)> = None;
    for (k, (label, port)) in nodes.iter().enumerate() {
        let field = |name| resp::info_field(*port, &["CLUSTER", "INFO"], name);
        if field("cluster_state").as_deref() != Some("ok") {
            return Err(format!("node {label}: cluster_state {:?}", field("cluster_state")));
        }
        if field("cluster_slots_ok") != Some(SLOTS.to_string()) {
            return Err(format!("node {label}: cluster_slots_ok {:?}", field("cluster_slots_ok")));
        }
        if let Some(known) = known
            && field("cluster_known_nodes") != Some(known.to_string())
        {
            return Err(format!("node {label}: cluster_known_nodes {:?}", field("cluster_known_nodes")));
        }
        let (is_master, owners) = view(k)?;
        if !is_master {
            let link = resp::info_field(*port, &["INFO", "replication"], "master_link_status");
            if link.as_deref() != Some("up") {
                return Err(format!("replica {label}: master_link_status {link:?}"));
            }
        }
        let mut owners: SlotOwners = owners.into_iter().filter(|(_, slots)| !slots.is_empty()).collect();
        owners.sort_by(|a, b| a.0.cmp(&b.0));
        match &first {
            None => first = Some((label, owners)),
            Some((seen_by, seen)) if *seen != owners => {
                return Err(format!("nodes {seen_by} and {label} disagree on slots: {seen:?} / {owners:?}"));
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// Node ids with the slot ranges they serve, as one node sees them.
pub(crate) type SlotOwners = Vec<(String, Vec<RangeInclusive<u16>>)>;

/// `CLUSTER NODES` of the node on `port`, parsed.
fn view_of(port: u16) -> Result<Vec<ClusterNode>, String> {
    let text = resp::text(port, &["CLUSTER", "NODES"])
        .map_err(|e| format!("CLUSTER NODES on {port}: {e}"))?
        .ok_or_else(|| format!("CLUSTER NODES on {port}: nil"))?;
    text.lines().filter(|l| !l.trim().is_empty()).map(parse_node_line).collect()
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@bus[,host]> <flags> <master|-> <ping> <pong> <epoch> <link> <slot>...`.
fn parse_node_line(line: &str) -> Result<ClusterNode, String> {
    parse_node_line_with_host(line).map(|(_, node)| node)
}

/// [`parse_node_line`], with the host the node announces (its IP; the port
/// alone tells nodes apart only when they all run on one host).
pub(crate) fn parse_node_line_with_host(line: &str) -> Result<(String, ClusterNode), String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let bad = || format!("unexpected CLUSTER NODES line {line:?}");
    if fields.len() < 8 {
        return Err(bad());
    }
    let addr = fields[1].split(['@', ',']).next().ok_or_else(bad)?;
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let flags: Vec<&str> = fields[2].split(',').collect();
    let role = if flags.contains(&"master") {
        Role::Master
    } else if flags.contains(&"slave") {
        Role::Replica { master_id: fields[3].to_owned() }
    } else {
        return Err(bad());
    };
    let mut slots = Vec::new();
    // `[slot->-id]` / `[slot-<-id]` entries describe migrations in progress.
    for entry in fields[8..].iter().filter(|e| !e.starts_with('[')) {
        let (from, to) = entry.split_once('-').unwrap_or((entry, entry));
        let (from, to) = (from.parse().map_err(|_| bad())?, to.parse().map_err(|_| bad())?);
        slots.push(from..=to);
    }
    let node = ClusterNode { port, id: fields[0].to_owned(), role, slots, failed: flags.contains(&"fail") };
    Ok((host.to_owned(), node))
}

/// `CLUSTER SETSLOT IMPORTING` on the target, then `MIGRATING` on the
/// source (the order a resharding tool uses, so no request is bounced
/// between two nodes that both disown the slot).
fn mark_migration(slot: u16, source: &ClusterNode, target: &ClusterNode) {
    let s = slot.to_string();
    ok(target.port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &source.id]);
    ok(source.port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", &target.id]);
}

/// Runs a command that must answer `+OK`.
fn ok(port: u16, args: &[&str]) {
    match resp::call(port, args) {
        Ok(Reply::Status(s)) if s == "OK" => {}
        other => panic!("{} on port {port}: {other:?}", args.join(" ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_lines_are_parsed() {
        let master = parse_node_line(
            "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host master - 0 1 4 connected 0-5 9 [10->-e7d]",
        )
        .unwrap();
        assert_eq!(master.port, 30004);
        assert_eq!(master.role, Role::Master);
        assert_eq!(master.slots, vec![0..=5, 9..=9]);
        assert!(master.serves(9) && !master.serves(10));
        assert!(!master.failed);
        let replica =
            parse_node_line("e7d1eecce 127.0.0.1:30002@31002 myself,slave,fail 07c37d 0 0 2 connected").unwrap();
        assert_eq!(replica.role, Role::Replica { master_id: "07c37d".into() });
        assert!(replica.failed && replica.slots.is_empty());
        assert!(parse_node_line("garbage").is_err());
        assert!(parse_node_line("a 127.0.0.1:1@2 master - 0 0 1 connected x-y").is_err());
    }
}
