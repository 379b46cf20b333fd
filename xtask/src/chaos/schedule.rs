//! A schedule: the jobs and the timed faults of one chaos run, all drawn from
//! one seed, so `--seed S --schedules 1` replays it.

use std::fmt;

/// SplitMix64: small, fast, deterministic.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A float in `lo..hi`.
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        self.range(0.0, 1.0) < p
    }
}

/// Which way a blackhole holds bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Commands do not reach Redis.
    ToRedis,
    /// Commands run, replies do not come back.
    ToClient,
    Both,
}

/// Which Redis server a server-side fault hits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Node {
    /// The only server (the single-server variant).
    Server,
    /// Cluster node `i` (its server, or its proxy).
    One(usize),
    /// Every cluster node at once.
    All,
}

impl Node {
    /// The indices of the nodes hit, out of `count`.
    pub fn indices(self, count: usize) -> Vec<usize> {
        match self {
            Node::One(i) => vec![i % count.max(1)],
            Node::Server | Node::All => (0..count).collect(),
        }
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Server => Ok(()),
            Node::One(i) => write!(f, " (node n{i})"),
            Node::All => write!(f, " (every node)"),
        }
    }
}

/// One injected fault (or the end of one).
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// SIGKILL orchestrator `w`; start it again `restart_after` seconds later.
    OrchKill { w: usize, restart_after: f64 },
    /// SIGSTOP orchestrator `w`, SIGCONT after `secs`.
    OrchStop { w: usize, secs: f64 },
    /// SIGKILL one runner process (`pick` chooses among the live ones) of orchestrator `w`.
    RunnerKill { w: usize, pick: u64 },
    /// SIGSTOP one runner process of orchestrator `w`, SIGCONT after `secs`.
    RunnerStop { w: usize, pick: u64, secs: f64 },
    /// Stop Redis (SHUTDOWN, or SIGKILL when `hard`), start it again from its AOF after `down`.
    RedisRestart { node: Node, down: f64, hard: bool },
    /// Drop every proxied connection.
    Cut { node: Node },
    /// Hold the proxied bytes in `dir` for `secs`, sockets open.
    Blackhole { node: Node, dir: Direction, secs: f64 },
    /// `DEBUG SLEEP secs`.
    RedisSleep { node: Node, secs: f64 },
    /// `CLIENT PAUSE` for `secs`.
    ClientPause { node: Node, secs: f64 },
    /// `rrq job cancel` of `n` jobs, running ones first.
    Cancel { n: usize },
    /// `rrq dlq requeue --job-id` of up to `n` FAILED jobs.
    Requeue { n: usize },
    /// `rrq job retry` of up to `n` FAILED jobs.
    Retry { n: usize },
}

impl Fault {
    /// The fault's kind, for the summary.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::OrchKill { .. } => "orchestrator-sigkill",
            Fault::OrchStop { .. } => "orchestrator-sigstop",
            Fault::RunnerKill { .. } => "runner-sigkill",
            Fault::RunnerStop { .. } => "runner-sigstop",
            Fault::RedisRestart { .. } => "redis-restart",
            Fault::Cut { .. } => "cut",
            Fault::Blackhole { .. } => "blackhole",
            Fault::RedisSleep { .. } => "debug-sleep",
            Fault::ClientPause { .. } => "client-pause",
            Fault::Cancel { .. } => "cancel",
            Fault::Requeue { .. } => "dlq-requeue",
            Fault::Retry { .. } => "job-retry",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::OrchKill { w, restart_after } => {
                write!(f, "SIGKILL orchestrator w{w}, restart {restart_after:.1}s later")
            }
            Fault::OrchStop { w, secs } => write!(f, "SIGSTOP orchestrator w{w} for {secs:.1}s"),
            Fault::RunnerKill { w, pick } => write!(f, "SIGKILL runner (pick {}) of w{w}", pick % 1000),
            Fault::RunnerStop { w, pick, secs } => {
                write!(f, "SIGSTOP runner (pick {}) of w{w} for {secs:.1}s", pick % 1000)
            }
            Fault::RedisRestart { node, down, hard } => write!(
                f,
                "{} Redis{node}, restart from AOF {down:.1}s later",
                if *hard { "SIGKILL" } else { "SHUTDOWN" }
            ),
            Fault::Cut { node } => write!(f, "cut every worker connection{node}"),
            Fault::Blackhole { node, dir, secs } => write!(f, "blackhole {dir:?} for {secs:.1}s{node}"),
            Fault::RedisSleep { node, secs } => write!(f, "DEBUG SLEEP {secs:.1}{node}"),
            Fault::ClientPause { node, secs } => write!(f, "CLIENT PAUSE {:.0}ms{node}", secs * 1000.0),
            Fault::Cancel { n } => write!(f, "rrq job cancel x{n}"),
            Fault::Requeue { n } => write!(f, "rrq dlq requeue x{n}"),
            Fault::Retry { n } => write!(f, "rrq job retry x{n}"),
        }
    }
}

/// Half the server-side faults of a cluster hit one node (its server or its
/// proxy), the other half every node.
fn pick_node(rng: &mut Rng, nodes: usize) -> Node {
    if rng.chance(0.5) { Node::One(rng.below(nodes as u64) as usize) } else { Node::All }
}

impl Fault {
    /// The fault aimed at `node` (server-side faults only; the others are
    /// returned as they are).
    fn on(self, node: Node) -> Fault {
        match self {
            Fault::RedisRestart { down, hard, .. } => Fault::RedisRestart { node, down, hard },
            Fault::Cut { .. } => Fault::Cut { node },
            Fault::Blackhole { dir, secs, .. } => Fault::Blackhole { node, dir, secs },
            Fault::RedisSleep { secs, .. } => Fault::RedisSleep { node, secs },
            Fault::ClientPause { secs, .. } => Fault::ClientPause { node, secs },
            other => other,
        }
    }
}

/// What a job does.
#[derive(Clone, Debug, PartialEq)]
pub enum JobKind {
    /// The `chaos` handler on runner `runner` (`rust`, `python`, `launched`).
    Chaos { runner: &'static str, seconds: f64, outcome: &'static str, ignore_cancel: bool },
    /// A `chaos` job longer than its own (short) timeout.
    TimesOut { seconds: f64, timeout: i64 },
    /// `job_params` overwritten with bad JSON.
    BadJson,
    /// A handler no runner has.
    UnknownHandler,
    /// `job_timeout_seconds = 2^62`.
    HugeTimeout,
    /// `result_ttl_seconds = 2^63 - 1`.
    HugeResultTtl,
}

/// One job of a schedule.
#[derive(Clone, Debug, PartialEq)]
pub struct JobSpec {
    pub kind: JobKind,
    /// Deferred by this many seconds.
    pub defer: Option<f64>,
    /// An idempotency key (shared by a few jobs: the duplicates return the first id).
    pub unique: Option<String>,
    pub max_retries: u32,
}

/// One schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub seed: u64,
    /// Cluster nodes (masters); 0: one server.
    pub nodes: usize,
    pub workers: usize,
    pub jobs: Vec<JobSpec>,
    /// Faults by start time (seconds after the jobs are enqueued).
    pub faults: Vec<(f64, Fault)>,
}

impl Schedule {
    /// Draws a schedule from `seed`, for one server (`nodes` 0) or a cluster
    /// of `nodes` masters. The cluster draws one or two more numbers per
    /// fault (which node a server-side fault hits), after the fault's own, so a
    /// seed's single-server schedule is the same as before the cluster
    /// variant existed.
    pub fn generate(seed: u64, nodes: usize) -> Schedule {
        let mut rng = Rng::new(seed);
        let workers = 2 + rng.below(2) as usize;
        let n = 150 + rng.below(150) as usize;
        let mut jobs = Vec::with_capacity(n + 8);
        for i in 0..n {
            let roll = rng.below(100);
            let (runner, seconds, outcome, ignore_cancel, max_retries) = match roll {
                0..=49 => ("rust", rng.range(0.02, 0.3), "ok", false, 10),
                50..=59 => ("rust", rng.range(0.8, 2.5), "ok", false, 10),
                60..=64 => ("rust", rng.range(0.8, 2.0), "ok", true, 10),
                65..=74 => ("python", rng.range(0.02, 1.0), "ok", rng.chance(0.2), 10),
                75..=82 => ("launched", rng.range(0.02, 1.0), "ok", false, 10),
                83..=89 => ("rust", 0.02, "fail", false, 2),
                90..=94 => ("python", 0.02, "fail", false, 2),
                _ => ("rust", 0.05, "retry", false, 10),
            };
            let defer = rng.chance(0.25).then(|| rng.range(0.3, 6.0));
            let unique = rng.chance(0.05).then(|| format!("u{}", rng.below(5)));
            let _ = i;
            jobs.push(JobSpec {
                kind: JobKind::Chaos { runner, seconds, outcome, ignore_cancel },
                defer,
                unique,
                max_retries,
            });
        }
        let poison = [
            JobKind::BadJson,
            JobKind::UnknownHandler,
            JobKind::HugeTimeout,
            JobKind::HugeResultTtl,
            JobKind::TimesOut { seconds: 3.0, timeout: 1 },
        ];
        for kind in poison {
            jobs.push(JobSpec { kind, defer: None, unique: None, max_retries: 2 });
        }
        let window = rng.range(4.0, 7.0);
        let count = 5 + rng.below(7) as usize;
        let mut faults = Vec::with_capacity(count);
        for _ in 0..count {
            let at = rng.range(0.3, window);
            let w = rng.below(workers as u64) as usize;
            let fault = match rng.below(100) {
                0..=11 => Fault::OrchKill { w, restart_after: rng.range(0.3, 3.0) },
                12..=21 => Fault::OrchStop { w, secs: rng.range(0.5, 5.0) },
                22..=33 => Fault::RunnerKill { w, pick: rng.next_u64() },
                34..=39 => Fault::RunnerStop { w, pick: rng.next_u64(), secs: rng.range(0.5, 3.0) },
                40..=47 => Fault::RedisRestart { node: Node::Server, down: rng.range(0.3, 3.0), hard: rng.chance(0.5) },
                48..=54 => Fault::Cut { node: Node::Server },
                55..=62 => Fault::Blackhole {
                    node: Node::Server,
                    dir: [Direction::ToRedis, Direction::ToClient, Direction::Both][rng.below(3) as usize],
                    secs: rng.range(0.5, 4.0),
                },
                63..=67 => Fault::RedisSleep { node: Node::Server, secs: rng.range(0.3, 2.0) },
                68..=72 => Fault::ClientPause { node: Node::Server, secs: rng.range(0.3, 2.0) },
                73..=84 => Fault::Cancel { n: 1 + rng.below(5) as usize },
                85..=92 => Fault::Requeue { n: 1 + rng.below(3) as usize },
                _ => Fault::Retry { n: 1 + rng.below(3) as usize },
            };
            let fault = if nodes > 0 { fault.on(pick_node(&mut rng, nodes)) } else { fault };
            faults.push((at, fault));
        }
        faults.sort_by(|a, b| a.0.total_cmp(&b.0));
        Schedule { seed, nodes, workers, jobs, faults }
    }

    /// The timed faults, one per line.
    pub fn describe(&self) -> String {
        let on = if self.nodes > 0 { format!(", a cluster of {} masters", self.nodes) } else { String::new() };
        let mut s = format!("seed {} ({} orchestrators, {} jobs{on}):\n", self.seed, self.workers, self.jobs.len());
        for (at, f) in &self.faults {
            s.push_str(&format!("  +{at:5.2}s  {f}\n"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_draws_the_same_schedule() {
        let (a, b) = (Schedule::generate(42, 0), Schedule::generate(42, 0));
        assert_eq!(a.faults, b.faults);
        assert_eq!(a.jobs, b.jobs);
        assert_ne!(Schedule::generate(43, 0).faults, a.faults);
        assert!(a.faults.windows(2).all(|w| w[0].0 <= w[1].0));
        assert!(a.describe().starts_with("seed 42 "));
    }

    #[test]
    fn a_cluster_schedule_aims_its_server_faults_at_nodes() {
        let on_node = |f: &Fault| match f {
            Fault::RedisRestart { node, .. }
            | Fault::Cut { node }
            | Fault::Blackhole { node, .. }
            | Fault::RedisSleep { node, .. }
            | Fault::ClientPause { node, .. } => Some(*node),
            _ => None,
        };
        let mut seen = Vec::new();
        for seed in 0..200 {
            let (single, cluster) = (Schedule::generate(seed, 0), Schedule::generate(seed, 3));
            assert_eq!(single.jobs, cluster.jobs, "the jobs do not depend on the variant");
            assert!(single.faults.iter().filter_map(|(_, f)| on_node(f)).all(|n| n == Node::Server));
            for n in cluster.faults.iter().filter_map(|(_, f)| on_node(f)) {
                assert!(matches!(n, Node::All | Node::One(0..=2)), "{n:?}");
                seen.push(n);
            }
        }
        assert!(seen.contains(&Node::All) && (0..3).all(|i| seen.contains(&Node::One(i))));
        assert_eq!(Node::One(4).indices(3), vec![1]);
        assert_eq!(Node::All.indices(3), vec![0, 1, 2]);
        assert_eq!(Node::Server.indices(1), vec![0]);
    }

    #[test]
    fn the_rng_stays_in_its_ranges() {
        let mut r = Rng::new(1);
        for _ in 0..1000 {
            let x = r.range(0.5, 2.0);
            assert!((0.5..2.0).contains(&x));
            assert!(r.below(3) < 3);
        }
        assert_eq!(r.below(0), 0);
    }
}
