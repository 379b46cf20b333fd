//! Processes the harness owns: a private Redis with AOF, `rrq worker run`
//! orchestrators, and a monitor thread that watches `/proc` for their
//! descendants; plus a minimal RESP client for poking Redis directly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

/// Seconds since the epoch, the clock of the record file.
pub fn now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// How often the monitor looks at `/proc`.
const MONITOR_PERIOD: Duration = Duration::from_millis(40);

// ---------------------------------------------------------------------------
// /proc

/// `(ppid, start time in ticks, state)` of `pid`.
pub fn stat(pid: u32) -> Option<(u32, u64, char)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((ppid, start, state))
}

/// Whether the process `pid` that started at `start` still runs (a zombie does not).
pub fn alive(pid: u32, start: u64) -> bool {
    matches!(stat(pid), Some((_, s, state)) if s == start && state != 'Z' && state != 'X')
}

pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> =
        raw.split(|b| *b == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
    let mut s = args.join(" ");
    s.truncate(120);
    s
}

/// The process group of `pid`.
fn pgrp(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text.rsplit_once(')')?.1.split_whitespace().nth(2)?.parse().ok()
}

/// A fresh snapshot of the processes under `root`: its descendants by ppid,
/// and every member of their process groups (a runner's group may hold
/// processes re-parented away from the tree), never the harness's own group.
pub fn tree_under(root: u32) -> Vec<(u32, u64)> {
    let procs = all_processes();
    let mut under: Vec<u32> = Vec::new();
    let mut frontier = vec![root];
    // Bounded: each pid enters once, and there are finitely many.
    while let Some(p) = frontier.pop() {
        for (pid, (ppid, _)) in &procs {
            if *ppid == p && !under.contains(pid) {
                under.push(*pid);
                frontier.push(*pid);
            }
        }
    }
    let ours = pgrp(std::process::id());
    let groups: Vec<u32> = under.iter().filter_map(|p| pgrp(*p)).filter(|g| Some(*g) != ours && *g != root).collect();
    for pid in procs.keys() {
        if !under.contains(pid) && *pid != root && pgrp(*pid).is_some_and(|g| groups.contains(&g)) {
            under.push(*pid);
        }
    }
    under.into_iter().filter_map(|p| procs.get(&p).map(|(_, start)| (p, *start))).collect()
}

/// Every process: pid → (ppid, start).
fn all_processes() -> BTreeMap<u32, (u32, u64)> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else { return out };
    for entry in dir.flatten() {
        if let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok())
            && let Some((ppid, start, state)) = stat(pid)
            && state != 'Z'
        {
            out.insert(pid, (ppid, start));
        }
    }
    out
}

/// Sends `sig` (`KILL`, `STOP`, `CONT`, `TERM`) to `pid` if it is still the
/// process that started at `start`.
pub fn signal(pid: u32, start: u64, sig: &str) -> bool {
    if stat(pid).is_none_or(|(_, s, _)| s != start) {
        return false;
    }
    Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------
// The monitor.

/// A process the monitor saw descend from an orchestrator (or run a job).
#[derive(Clone, Debug)]
pub struct Tracked {
    pub start: u64,
    pub owner: Option<String>,
    pub cmd: String,
    pub died: Option<f64>,
}

#[derive(Default)]
struct MonitorState {
    /// Live orchestrators: pid → (start, instance label).
    roots: BTreeMap<u32, (u64, String)>,
    tracked: BTreeMap<u32, Tracked>,
}

/// Watches `/proc` every few tens of milliseconds: records every descendant
/// of the registered orchestrators (with its owner) and the moment each
/// tracked process dies; also tracks the pids named in the record file.
pub struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Monitor {
    pub fn start(record: PathBuf) -> Monitor {
        let state: Arc<Mutex<MonitorState>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (s, halt) = (Arc::clone(&state), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut offset = 0u64;
            while !halt.load(Ordering::Relaxed) {
                let procs = all_processes();
                let record_pids = read_new_pids(&record, &mut offset);
                let t = now();
                let mut st = s.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for (pid, (_, start)) in &procs {
                    // Walk up to a registered orchestrator (bounded by the depth).
                    let mut cur = *pid;
                    let mut owner = None;
                    for _ in 0..16 {
                        let Some((ppid, _)) = procs.get(&cur) else { break };
                        if let Some((_, label)) = st.roots.get(ppid) {
                            owner = Some(label.clone());
                            break;
                        }
                        cur = *ppid;
                    }
                    let known = st.tracked.get(pid).is_some_and(|k| k.start == *start);
                    if owner.is_some() && !known {
                        st.tracked.insert(*pid, Tracked { start: *start, owner, cmd: cmdline(*pid), died: None });
                    }
                }
                for pid in record_pids {
                    if let Some((_, start)) = procs.get(&pid)
                        && !st.tracked.contains_key(&pid)
                    {
                        st.tracked.insert(pid, Tracked { start: *start, owner: None, cmd: cmdline(pid), died: None });
                    }
                }
                for (pid, k) in st.tracked.iter_mut() {
                    if k.died.is_none() && procs.get(pid).is_none_or(|(_, s)| *s != k.start) {
                        k.died = Some(t);
                    }
                }
                drop(st);
                std::thread::sleep(MONITOR_PERIOD); // sleep-ok: the monitor's polling period
            }
        });
        Monitor { state, stop, thread: Some(thread) }
    }

    pub fn add_root(&self, pid: u32, start: u64, label: &str) {
        self.lock().roots.insert(pid, (start, label.to_owned()));
    }

    pub fn remove_root(&self, pid: u32) {
        self.lock().roots.remove(&pid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MonitorState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every tracked process.
    pub fn tracked(&self) -> BTreeMap<u32, Tracked> {
        self.lock().tracked.clone()
    }

    /// Live tracked descendants of orchestrator instance `label`.
    pub fn live_under(&self, label: &str) -> Vec<(u32, u64)> {
        self.lock()
            .tracked
            .iter()
            .filter(|(_, k)| k.owner.as_deref() == Some(label) && k.died.is_none())
            .map(|(pid, k)| (*pid, k.start))
            .collect()
    }

    /// SIGKILLs every tracked process still alive (cleanup).
    pub fn kill_all(&self) {
        for (pid, k) in self.tracked() {
            if k.died.is_none() {
                signal(pid, k.start, "KILL");
            }
        }
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.kill_all();
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Pids of the start lines appended to `record` since `offset`.
fn read_new_pids(record: &Path, offset: &mut u64) -> Vec<u32> {
    let Ok(mut f) = File::open(record) else { return Vec::new() };
    if f.seek(SeekFrom::Start(*offset)).is_err() {
        return Vec::new();
    }
    let mut text = String::new();
    if f.read_to_string(&mut text).is_err() {
        return Vec::new();
    }
    // Only whole lines; a torn tail is read next time.
    let whole = text.rfind('\n').map_or(0, |i| i + 1);
    *offset += whole as u64;
    text[..whole].lines().filter_map(super::check::Line::parse).filter(|l| l.start).map(|l| l.pid).collect()
}

// ---------------------------------------------------------------------------
// Redis.

/// A reply from [`resp`].
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    Status(String),
    Error(String),
    Int(i64),
    Bulk(Option<String>),
    Array(Vec<Reply>),
}

/// Sends commands to Redis on `port` on one connection and reads every reply;
/// `limit` bounds each read.
pub fn resp(port: u16, commands: &[Vec<String>], limit: Duration) -> Result<Vec<Reply>> {
    let mut stream = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), limit)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut replies = Vec::with_capacity(commands.len());
    for chunk in commands.chunks(500) {
        let mut req = Vec::new();
        for args in chunk {
            req.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
                req.extend_from_slice(a.as_bytes());
                req.extend_from_slice(b"\r\n");
            }
        }
        stream.write_all(&req)?;
        for _ in chunk {
            replies.push(read_reply(&mut reader)?);
        }
    }
    Ok(replies)
}

/// One command.
pub fn resp1(port: u16, args: &[&str], limit: Duration) -> Result<Reply> {
    let cmd = vec![args.iter().map(|a| (*a).to_owned()).collect()];
    Ok(resp(port, &cmd, limit)?.remove(0))
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line)? == 0 {
        bail!("redis closed the connection");
    }
    let line = line.trim_end_matches(['\r', '\n']);
    let (kind, rest) = line.split_at_checked(1).context("empty reply line")?;
    Ok(match kind {
        "+" => Reply::Status(rest.to_owned()),
        "-" => Reply::Error(rest.to_owned()),
        ":" => Reply::Int(rest.parse()?),
        "$" => {
            let n: i64 = rest.parse()?;
            if n < 0 {
                Reply::Bulk(None)
            } else {
                let mut buf = vec![0u8; n as usize + 2];
                r.read_exact(&mut buf)?;
                buf.truncate(n as usize);
                Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned()))
            }
        }
        "*" => {
            let n: i64 = rest.parse()?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(read_reply(r)?);
            }
            Reply::Array(items)
        }
        other => bail!("unexpected reply type {other:?}"),
    })
}

/// A private `redis-server` with an append-only file (fsync always).
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    /// More arguments, on every start (a cluster node's).
    args: Vec<String>,
    child: Option<Child>,
}

impl Redis {
    pub fn start(dir: &Path) -> Result<Redis> {
        Redis::start_with(dir, free_port()?, Vec::new())
    }

    /// A server on `port` with more arguments, kept across restarts.
    pub fn start_with(dir: &Path, port: u16, args: Vec<String>) -> Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let mut r = Redis { port, dir: dir.to_owned(), args, child: None };
        r.launch()?;
        Ok(r)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server (again, from its AOF) and waits until it answers.
    pub fn launch(&mut self) -> Result<()> {
        let log = File::create(self.dir.join("redis.log"))?;
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--enable-debug-command", "local"])
            .args(&self.args)
            .arg("--dir")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start redis-server (apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Reply::Status(s)) = resp1(self.port, &["PING"], Duration::from_millis(500))
                && s == "PONG"
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("redis-server on port {} did not answer within 20 s", self.port);
            }
            std::thread::sleep(Duration::from_millis(20)); // sleep-ok: polling with a deadline
        }
    }

    /// Stops the server: SHUTDOWN (graceful) or SIGKILL.
    pub fn stop(&mut self, hard: bool) {
        let Some(mut child) = self.child.take() else { return };
        if !hard {
            let _ = resp1(self.port, &["SHUTDOWN"], Duration::from_secs(2));
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10)); // sleep-ok: polling with a deadline
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop(true);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A free loopback port (bound and released).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `n` consecutive free loopback ports; the first one.
pub fn free_ports(n: u16, salt: u64) -> Result<u16> {
    for attempt in 0..200u64 {
        let base = 20_000 + ((salt.wrapping_mul(7919).wrapping_add(attempt * 104_729)) % 30_000) as u16;
        let ok = (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if ok {
            return Ok(base);
        }
    }
    bail!("no {n} consecutive free ports")
}

// ---------------------------------------------------------------------------
// Orchestrators.

/// One `rrq worker run` process.
pub struct Orchestrator {
    pub label: String,
    pub pid: u32,
    pub start: u64,
    child: Child,
    pub exited: bool,
}

impl Orchestrator {
    pub fn spawn(rrq: &Path, config: &Path, log: &Path, label: &str) -> Result<Orchestrator> {
        let file = File::create(log)?;
        let child = Command::new(rrq)
            .args(["worker", "run", "--queue", "default", "--queue", "chaos_py", "--queue", "chaos_sh", "--config"])
            .arg(config)
            .env("RUST_LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("start {}", rrq.display()))?;
        let pid = child.id();
        let start = stat(pid).map_or(0, |(_, s, _)| s);
        Ok(Orchestrator { label: label.to_owned(), pid, start, child, exited: false })
    }

    pub fn signal(&self, sig: &str) -> bool {
        !self.exited && signal(self.pid, self.start, sig)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if !self.exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exited = true;
        }
    }

    /// Whether the process has exited by itself (reaped if so).
    pub fn has_exited(&mut self) -> bool {
        if !self.exited && matches!(self.child.try_wait(), Ok(Some(_))) {
            self.exited = true;
        }
        self.exited
    }

    /// Waits for the process to exit, at most `limit`; whether it did.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = true;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20)); // sleep-ok: polling with a deadline
        }
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        // A stopped process dies of SIGKILL too.
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kills what a test started, also when it fails.
    struct Reap(Vec<(u32, u64)>, Child);

    impl Drop for Reap {
        fn drop(&mut self) {
            for (pid, start) in &self.0 {
                signal(*pid, *start, "KILL");
            }
            let _ = self.1.kill();
            let _ = self.1.wait();
        }
    }

    #[test]
    fn the_tree_under_a_process_holds_its_grandchildren_and_they_are_seen_dead() {
        // A shell that keeps two children (no exec).
        let child = Command::new("sh").args(["-c", "sleep 30 & sleep 30; :"]).spawn().unwrap();
        let root = child.id();
        let mut reap = Reap(Vec::new(), child);
        let deadline = Instant::now() + Duration::from_secs(5);
        let tree = loop {
            let tree = tree_under(root);
            if tree.len() >= 2 || Instant::now() > deadline {
                break tree;
            }
            std::thread::sleep(Duration::from_millis(10)); // sleep-ok: polling with a deadline
        };
        reap.0.clone_from(&tree);
        assert_eq!(tree.len(), 2, "{tree:?}");
        assert!(tree.iter().all(|(pid, start)| alive(*pid, *start) && cmdline(*pid).starts_with("sleep")));
        let (pid, start) = tree[0];
        assert!(signal(pid, start, "KILL"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid, start) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10)); // sleep-ok: polling with a deadline
        }
        assert!(!alive(pid, start), "a killed (zombie or reaped) process is not alive");
        assert!(!signal(pid, start.wrapping_add(1), "KILL"), "a different start time is another process");
    }
}
