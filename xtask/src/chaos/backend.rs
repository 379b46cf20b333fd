//! The Redis side of a schedule: one server behind one proxy, or a Redis
//! Cluster of masters, each behind a proxy of its own.
//!
//! A cluster node announces its proxy's port (`cluster-announce-port`), so
//! the clients' view of the cluster (`CLUSTER SLOTS`, `MOVED`/`ASK`) names
//! the proxies and every client connection, redirections included, passes
//! one; the cluster bus (`cluster-port`, announced as it is) stays direct,
//! so a proxy fault cuts the clients off a node while the other nodes still
//! see it. No replicas: every master keeps an AOF with `appendfsync always`
//! and comes back from it with every write it acknowledged, as the single
//! server does, whereas a failover to an asynchronously fed replica may lose
//! acknowledged writes (docs/cluster.md), which the invariants would report
//! as lost jobs. (With replicas, their replication links would have to pass
//! the proxies too, or a proxy fault would not isolate a master.)
//!
//! Needs Redis 7.0 or later (`cluster-port`, `CLUSTER ADDSLOTSRANGE`).
//!
//! The harness itself reads keys behind the clients' back, straight from
//! the server holding each key's slot ([`Backend::routed`]): the slots are
//! assigned here and never move (no replica, no resharding).

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use rrq_store::keys::{self, Layout};

use super::procs::{Redis, Reply, resp, resp1};
use super::proxy::Proxy;

/// How long a new cluster may take to agree on its nodes and slots.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);
/// `cluster-node-timeout`: short, so a frozen or restarted node is flagged
/// failed (and the cluster refuses commands) within the schedule.
const NODE_TIMEOUT_MS: &str = "1000";

/// One Redis server and the proxy in front of it (dropped in this order).
pub struct Node {
    pub proxy: Proxy,
    pub redis: Redis,
    /// The hash slots it serves (all of them for the single server).
    slots: RangeInclusive<u16>,
}

/// The servers of a schedule and how the harness names and finds keys.
pub struct Backend {
    pub nodes: Vec<Node>,
    pub layout: Layout,
}

impl Backend {
    /// One server with the single key layout.
    pub fn single(dir: &Path) -> Result<Backend> {
        let redis = Redis::start(&dir.join("redis"))?;
        let proxy = Proxy::start(redis.port)?;
        let node = Node { proxy, redis, slots: 0..=keys::SLOTS - 1 };
        Ok(Backend { nodes: vec![node], layout: Layout::single() })
    }

    /// A cluster of `masters` masters with the sharded key layout (the
    /// default shard count, as the workers and the producer use).
    pub fn cluster(dir: &Path, masters: usize) -> Result<Backend> {
        let layout = Layout::sharded(keys::DEFAULT_QUEUE_SHARDS)?;
        let ports = distinct_free_ports(2 * masters)?;
        let per = usize::from(keys::SLOTS) / masters;
        let mut nodes = Vec::with_capacity(masters);
        let mut buses = Vec::with_capacity(masters);
        for i in 0..masters {
            let (port, bus) = (ports[2 * i], ports[2 * i + 1]);
            let proxy = Proxy::start(port)?;
            let args: Vec<String> = [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                NODE_TIMEOUT_MS,
                "--cluster-announce-ip",
                "127.0.0.1",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-announce-bus-port",
                &bus.to_string(),
                "--cluster-announce-port",
                &proxy.port.to_string(),
            ]
            .iter()
            .map(|a| (*a).to_owned())
            .collect();
            let redis = Redis::start_with(&dir.join(format!("redis-n{i}")), port, args)?;
            let first = (i * per) as u16;
            let last = if i + 1 == masters { keys::SLOTS - 1 } else { ((i + 1) * per - 1) as u16 };
            nodes.push(Node { proxy, redis, slots: first..=last });
            buses.push(bus);
        }
        // Slots and a distinct config epoch on each node alone, then each
        // meets the first one at the addresses it announces (its proxy for
        // clients, its bus directly).
        for (i, n) in nodes.iter().enumerate() {
            let (first, last) = (n.slots.start().to_string(), n.slots.end().to_string());
            ok(n.redis.port, &["CLUSTER", "ADDSLOTSRANGE", &first, &last])?;
            ok(n.redis.port, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()])?;
        }
        let (proxy0, bus0) = (nodes[0].proxy.port.to_string(), buses[0].to_string());
        for n in &nodes[1..] {
            ok(n.redis.port, &["CLUSTER", "MEET", "127.0.0.1", &proxy0, &bus0])?;
        }
        let backend = Backend { nodes, layout };
        backend.wait_settled()?;
        Ok(backend)
    }

    pub fn is_cluster(&self) -> bool {
        self.layout.is_sharded()
    }

    /// The DSN of the workers: through the proxies.
    pub fn worker_dsn(&self) -> String {
        if self.is_cluster() { self.cluster_dsn() } else { format!("redis://127.0.0.1:{}", self.nodes[0].proxy.port) }
    }

    /// The DSN of the producer and the `rrq` CLI: the server itself, or on a
    /// cluster the proxies (a cluster client follows the addresses the nodes
    /// announce, which are the proxies, whichever node it asks first).
    pub fn tool_dsn(&self) -> String {
        if self.is_cluster() { self.cluster_dsn() } else { self.nodes[0].redis.url() }
    }

    fn cluster_dsn(&self) -> String {
        let mut dsn = format!("redis-cluster://127.0.0.1:{}", self.nodes[0].proxy.port);
        for (i, n) in self.nodes.iter().enumerate().skip(1) {
            dsn.push_str(if i == 1 { "?" } else { "&" });
            dsn.push_str(&format!("node=127.0.0.1:{}", n.proxy.port));
        }
        dsn
    }

    /// The node serving `key`'s slot.
    fn node_of(&self, key: &str) -> usize {
        if !self.is_cluster() {
            return 0;
        }
        let slot = keys::key_slot(key.as_bytes());
        self.nodes.iter().position(|n| n.slots.contains(&slot)).unwrap_or(0)
    }

    /// Sends each command to the server holding its key (its second word),
    /// one pipeline per server, straight (not through the proxies); the
    /// replies in the order of `commands`, `None` for the commands of a
    /// server that did not answer.
    pub fn routed(&self, commands: &[Vec<String>], limit: Duration) -> Vec<Option<Reply>> {
        let mut by_node: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
        for (i, c) in commands.iter().enumerate() {
            by_node.entry(self.node_of(c.get(1).map_or("", String::as_str))).or_default().push(i);
        }
        let mut out = vec![None; commands.len()];
        for (node, indices) in by_node {
            let batch: Vec<Vec<String>> = indices.iter().map(|&i| commands[i].clone()).collect();
            if let Ok(replies) = resp(self.nodes[node].redis.port, &batch, limit) {
                for (i, r) in indices.into_iter().zip(replies) {
                    out[i] = Some(r);
                }
            }
        }
        out
    }

    /// Waits until every node reports `cluster_state:ok`, knows every other
    /// node, and lists the proxies (only) in `CLUSTER SLOTS`.
    fn wait_settled(&self) -> Result<()> {
        let mut proxies: Vec<i64> = self.nodes.iter().map(|n| i64::from(n.proxy.port)).collect();
        proxies.sort_unstable();
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let mut last = String::new();
            let settled = self.nodes.iter().all(|n| {
                let info = match resp1(n.redis.port, &["CLUSTER", "INFO"], Duration::from_secs(2)) {
                    Ok(Reply::Bulk(Some(text))) => text,
                    other => {
                        last = format!("CLUSTER INFO on {}: {other:?}", n.redis.port);
                        return false;
                    }
                };
                let known = format!("cluster_known_nodes:{}", self.nodes.len());
                if !info.contains("cluster_state:ok") || !info.lines().any(|l| l.trim() == known) {
                    last = format!("node {} not settled", n.redis.port);
                    return false;
                }
                let mut announced = match resp1(n.redis.port, &["CLUSTER", "SLOTS"], Duration::from_secs(2)) {
                    Ok(Reply::Array(ranges)) => ranges.iter().filter_map(master_port).collect::<Vec<i64>>(),
                    _ => Vec::new(),
                };
                announced.sort_unstable();
                if announced != proxies {
                    last = format!("node {} announces {announced:?}, not the proxies {proxies:?}", n.redis.port);
                    return false;
                }
                true
            });
            if settled {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the cluster did not settle within {SETTLE_LIMIT:?}: {last}");
            }
            std::thread::sleep(Duration::from_millis(50)); // sleep-ok: polling with a deadline
        }
    }
}

/// The port of the master of one `CLUSTER SLOTS` range.
fn master_port(range: &Reply) -> Option<i64> {
    let Reply::Array(fields) = range else { return None };
    let Some(Reply::Array(master)) = fields.get(2) else { return None };
    match master.get(1) {
        Some(Reply::Int(port)) => Some(*port),
        _ => None,
    }
}

/// Runs a command that must answer `+OK`.
fn ok(port: u16, args: &[&str]) -> Result<()> {
    match resp1(port, args, Duration::from_secs(5))? {
        Reply::Status(s) if s == "OK" => Ok(()),
        other => bail!("{} on port {port}: {other:?}", args.join(" ")),
    }
}

/// `n` distinct free loopback ports (all bound at once, then released).
fn distinct_free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<std::net::TcpListener> =
        (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<_>>()?;
    Ok(listeners.iter().map(|l| l.local_addr().map(|a| a.port())).collect::<std::io::Result<_>>()?)
}
