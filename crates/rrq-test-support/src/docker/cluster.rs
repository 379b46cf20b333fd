//! A Redis Cluster in Docker containers: [`DockerCluster`].
//!
//! Six containers of the local image (three masters, one replica each) on a
//! private network, started with `cluster-enabled yes` and a short
//! `cluster-node-timeout`, and joined by `redis-cli --cluster create` run on
//! the host against the containers' addresses (the image holds only the
//! server; on Linux the host reaches a bridge network's addresses). The
//! nodes announce those addresses, so a client on the host follows the
//! cluster's own view ([`DockerCluster::dsn`]).
//!
//! Unlike [`TestCluster`](crate::cluster::TestCluster), a node here can be
//! cut off the network while it keeps running
//! ([`DockerCluster::disconnect`]): a master that is partitioned, not dead,
//! with client connections to it that hang rather than break.
//!
//! The blocking methods poll the nodes through their published host ports
//! with a deadline; call them from a blocking context (in an async test,
//! `tokio::task::block_in_place`).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::DockerRedis;
use crate::cluster::{ClusterNode, Role, parse_node_line_with_host, settled};
use crate::resp;
use crate::wait;

/// The port every node listens on inside its container.
pub const NODE_PORT: u16 = 6379;

/// How long the cluster may take to form, fail over or heal.
const SETTLE_DEADLINE: Duration = Duration::from_secs(40);

/// Arguments of every node: a 1 s node timeout and no validity limit, so a
/// replica takes over within a few seconds of losing its master, and no
/// replica migration, so the shape stays as created.
const NODE_ARGS: &[&str] = &[
    "--cluster-enabled",
    "yes",
    "--cluster-node-timeout",
    "1000",
    "--cluster-replica-validity-factor",
    "0",
    "--cluster-allow-replica-migration",
    "no",
];

/// A Redis Cluster in containers on a private network; the containers and
/// the network are removed on drop (on a tokio runtime).
#[derive(Debug)]
pub struct DockerCluster {
    redis: DockerRedis,
    /// Whether node `i` is on the network and running (not cut off, not killed).
    reachable: Vec<bool>,
}

/// One node as the cluster sees it ([`DockerCluster::nodes`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerClusterNode {
    /// Its index among the containers (for [`DockerCluster::disconnect`] and
    /// the like).
    pub index: usize,
    /// Its address on the private network (port [`NODE_PORT`]).
    pub ip: String,
    /// The 40-character cluster node id.
    pub id: String,
    pub role: Role,
    /// The slot ranges it serves (empty for a replica).
    pub slots: Vec<RangeInclusive<u16>>,
    /// Whether the viewing node flags it as failed (`fail`).
    pub failed: bool,
}

impl DockerClusterNode {
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }

    /// Whether it serves `slot`.
    pub fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|r| r.contains(&slot))
    }
}

impl DockerCluster {
    /// Three masters with one replica each, returned once every node reports
    /// `cluster_state:ok` with all slots served, knows the five others,
    /// agrees on the slot owners, and every replica's link is up.
    ///
    /// # Panics
    ///
    /// When a container does not start (see [`DockerRedis::start`]), when
    /// `redis-cli` is missing or cannot create the cluster, or when it does
    /// not settle within 40 s. Call [`super::require_docker`] first.
    pub async fn start() -> DockerCluster {
        let redis = DockerRedis::start_with_args(6, NODE_ARGS).await;
        let cluster = DockerCluster { reachable: vec![true; redis.nodes().len()], redis };
        cluster.create(1);
        cluster.wait_until_settled("the new cluster", true);
        cluster
    }

    fn create(&self, replicas_per_master: usize) {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["--cluster", "create"]);
        cmd.args(self.redis.nodes().iter().map(|n| format!("{}:{NODE_PORT}", n.ip())));
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
                "`redis-cli --cluster create` against the containers failed ({}):\n{}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    /// The containers (addresses, host ports, ids).
    pub fn redis(&self) -> &DockerRedis {
        &self.redis
    }

    /// `redis-cluster://IP:6379?node=IP:6379&...`, naming every node that is
    /// reachable now by its address on the private network.
    ///
    /// # Panics
    ///
    /// When no node is reachable.
    pub fn dsn(&self) -> String {
        let mut ips = self.reachable_indices().map(|i| self.redis.nodes()[i].ip());
        let first = ips.next().expect("a cluster with every node cut off has no DSN");
        let mut dsn = format!("redis-cluster://{first}:{NODE_PORT}");
        for (k, ip) in ips.enumerate() {
            dsn.push_str(if k == 0 { "?" } else { "&" });
            dsn.push_str(&format!("node={ip}:{NODE_PORT}"));
        }
        dsn
    }

    fn reachable_indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.reachable.iter().enumerate().filter(|(_, r)| **r).map(|(i, _)| i)
    }

    /// Every node as a reachable node sees the cluster now, in container
    /// order.
    ///
    /// # Panics
    ///
    /// When no reachable node answers `CLUSTER NODES`.
    pub fn nodes(&self) -> Vec<DockerClusterNode> {
        self.reachable_indices()
            .find_map(|i| self.view_of(i).ok())
            .expect("no reachable cluster node answers CLUSTER NODES")
    }

    /// The masters not flagged as failed, in container order.
    pub fn masters(&self) -> Vec<DockerClusterNode> {
        self.nodes().into_iter().filter(|n| n.is_master() && !n.failed).collect()
    }

    /// Cuts node `i` off the private network (`docker network disconnect`):
    /// it keeps running, but neither the host nor the other nodes reach it;
    /// connections to it hang.
    pub fn disconnect(&mut self, i: usize) {
        self.redis.disconnect(i);
        self.reachable[i] = false;
    }

    /// Puts node `i` back on the network with its former address.
    pub fn reconnect(&mut self, i: usize) {
        self.redis.reconnect(i);
        self.reachable[i] = true;
    }

    /// Kills node `i` with SIGKILL (`docker kill`).
    pub fn kill(&mut self, i: usize) {
        self.redis.kill(i);
        self.reachable[i] = false;
    }

    /// After master `i` was cut off or killed: waits until one of its
    /// replicas serves its former slots in the view of every reachable node
    /// and the reachable part of the cluster is settled again. Returns the
    /// promoted node.
    ///
    /// # Panics
    ///
    /// When node `i` is reachable, was not a master with a replica (as the
    /// reachable nodes remember it), or no replica takes over within 40 s.
    pub fn wait_for_failover(&self, i: usize) -> DockerClusterNode {
        assert!(!self.reachable[i], "node {i} is still reachable: cut it off or kill it first");
        let before = self.nodes();
        let master = before.iter().find(|n| n.index == i).unwrap_or_else(|| panic!("no cluster node {i}"));
        assert!(master.is_master(), "node {i} is not a master: {master:?}");
        let replicas: Vec<String> = before
            .iter()
            .filter(|n| matches!(&n.role, Role::Replica { master_id } if *master_id == master.id))
            .map(|n| n.id.clone())
            .collect();
        assert!(!replicas.is_empty(), "master {i} has no replica to promote");
        let slots = master.slots.clone();
        let probe = *slots.first().unwrap_or_else(|| panic!("master {i} serves no slot")).start();
        let promoted = wait::until(&format!("a replica of node {i} taking over"), SETTLE_DEADLINE, || {
            let mut promoted = None;
            for j in self.reachable_indices() {
                let owner = self.view_of(j)?.into_iter().find(|n| n.is_master() && !n.failed && n.serves(probe));
                match owner {
                    Some(p) if replicas.contains(&p.id) && p.slots == slots => promoted = Some(p),
                    Some(p) => return Err(format!("node {j} sees node {} serving {:?}", p.index, p.slots)),
                    None => return Err(format!("node {j} sees no live master serving slot {probe}")),
                }
            }
            promoted.ok_or_else(|| "no reachable node".to_owned())
        });
        self.wait_until_settled("the cluster after the failover", false);
        promoted
    }

    /// After [`DockerCluster::reconnect`] of a master that lost its slots:
    /// waits until node `i` is a replica of `master_id` with its link up,
    /// every node knows every other without a failure flag, and the cluster
    /// is settled.
    ///
    /// # Panics
    ///
    /// When that does not happen within 40 s.
    pub fn wait_rejoined_as_replica(&self, i: usize, master_id: &str) {
        wait::until(&format!("node {i} rejoining as a replica of {master_id}"), SETTLE_DEADLINE, || {
            let mine = self.view_of(i)?;
            let me = mine.iter().find(|n| n.index == i).ok_or_else(|| format!("node {i} misses itself"))?;
            match &me.role {
                Role::Replica { master_id: m } if m == master_id => {}
                other => return Err(format!("node {i} is {other:?}")),
            }
            for j in self.reachable_indices() {
                if let Some(n) = self.view_of(j)?.into_iter().find(|n| n.failed) {
                    return Err(format!("node {j} still flags node {} as failed", n.index));
                }
            }
            Ok(())
        });
        self.wait_until_settled("the healed cluster", true);
    }

    /// Waits until every reachable node reports `cluster_state:ok` with all
    /// slots served, they agree on who serves which slot, and every reachable
    /// replica's link is up. With `all_known`, each must know all six nodes.
    fn wait_until_settled(&self, what: &str, all_known: bool) {
        let known = all_known.then_some(self.reachable.len());
        wait::until(&format!("{what} settling"), SETTLE_DEADLINE, || {
            let indices: Vec<usize> = self.reachable_indices().collect();
            let nodes: Vec<(String, u16)> =
                indices.iter().map(|&i| (i.to_string(), self.redis.nodes()[i].host_port())).collect();
            settled(&nodes, known, |k| {
                let i = indices[k];
                let view = self.view_of(i)?;
                let me = view.iter().find(|n| n.index == i).ok_or_else(|| format!("node {i} misses itself"))?;
                Ok((me.is_master(), view.into_iter().map(|n| (n.id, n.slots)).collect()))
            })
        });
    }

    /// `CLUSTER NODES` of node `i` (through its host port), each node
    /// matched to its container by address.
    fn view_of(&self, i: usize) -> Result<Vec<DockerClusterNode>, String> {
        let port = self.redis.nodes()[i].host_port();
        let text = resp::text(port, &["CLUSTER", "NODES"])
            .map_err(|e| format!("CLUSTER NODES on node {i}: {e}"))?
            .ok_or_else(|| format!("CLUSTER NODES on node {i}: nil"))?;
        let index: BTreeMap<&str, usize> = self.redis.nodes().iter().enumerate().map(|(k, n)| (n.ip(), k)).collect();
        let mut nodes = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (host, ClusterNode { id, role, slots, failed, .. }) = parse_node_line_with_host(line)?;
            // A node that has not learnt its own address yet lists itself
            // without one.
            let k =
                if host.is_empty() && line.contains("myself") { Some(i) } else { index.get(host.as_str()).copied() };
            let k = k.ok_or_else(|| format!("node {i} lists a node at {host:?}, not one of the containers"))?;
            nodes.push(DockerClusterNode {
                index: k,
                ip: self.redis.nodes()[k].ip().to_owned(),
                id,
                role,
                slots,
                failed,
            });
        }
        nodes.sort_by_key(|n| n.index);
        Ok(nodes)
    }
}
