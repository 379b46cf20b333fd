//! Redis faults: a restart mid-burst with and without an append-only file,
//! stalls (`DEBUG SLEEP`, `CLIENT PAUSE`), and connections cut by a proxy.
//! The worker rides each out without exiting.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rrq_producer::Producer;
use rrq_protocol::JobId;
use rrq_store::{InspectStore, RedisStore};
use rrq_test_support::TestRedis;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

use super::harness::{
    Config, Orchestrator, Records, Reply, count_runs, enqueue_many, poll_until, redis_with, soak, store,
    wait_all_completed,
};
use crate::report;
use crate::support::TempDir;

/// What the worker logs when a renewal or a claim reached the command
/// timeout: Redis has been gone for at least 10 s.
const LONG_OUTAGE_LOGS: [&str; 3] =
    ["job lock renewal did not answer in time", "could not renew job locks", "redis unavailable; will retry"];

/// What the worker logs when a store call finds Redis unreachable (at once
/// for a command in flight; after the 10 s command timeout for one sent while
/// the client reconnects).
const OUTAGE_LOG: &str = "redis is unreachable";

/// Waits until `n` executions are recorded.
pub(super) async fn wait_runs(record: &Path, n: usize) {
    poll_until(Duration::from_secs(60), &format!("{n} executions"), async || (count_runs(record) >= n).then_some(()))
        .await;
}

/// Waits until executions are recorded past `n` again; how long it took.
async fn wait_progress(record: &Path, n: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    poll_until(limit, "jobs to run again", async || (count_runs(record) > n).then_some(())).await;
    started.elapsed()
}

/// Checks a burst after the fact: every job ran, none overlapped; returns
/// the executions.
pub(super) fn audit(test: &str, record: &Path, ids: &[JobId]) -> Records {
    let runs = Records::load(record);
    let never_ran: Vec<&JobId> = ids.iter().filter(|id| !runs.runs.contains_key(id.as_str())).collect();
    let overlapping = runs.overlapping();
    report!(
        test,
        "observed: {} jobs completed; lost {}, re-runs {}, overlapping executions {}; the work stood still {:.2}s at most",
        ids.len(),
        never_ran.len(),
        runs.reruns(),
        overlapping.len(),
        runs.longest_gap()
    );
    assert!(never_ran.is_empty(), "jobs never ran: {never_ran:?}");
    assert!(overlapping.is_empty(), "executions overlapped: {overlapping:?}");
    runs
}

/// A burst of `record` jobs and a worker running it.
struct Burst {
    /// Holds the record file; removed with the burst.
    _dir: TempDir,
    record: std::path::PathBuf,
    ids: Vec<JobId>,
    store: RedisStore,
    worker: Orchestrator,
}

impl Burst {
    /// Enqueues through `redis` directly; the worker connects to `worker_dsn`.
    async fn start(name: &str, redis: &TestRedis, worker_dsn: &str, n: usize) -> Burst {
        let dir = TempDir::new(name);
        let record = dir.path().join("record.jsonl");
        let path = Config::rust(worker_dsn, 2, 8).write(&dir, "rrq.toml");
        let producer = Producer::new(redis.url()).await.unwrap();
        let ids = enqueue_many(&producer, "burst", n, "record", json!({"path": record, "seconds": 0.05})).await;
        let store = store(redis.url()).await;
        let worker = Orchestrator::start(&dir, &path, "worker");
        Burst { _dir: dir, record, ids, store, worker }
    }

    async fn finish(mut self, test: &str, limit: Duration) -> Records {
        let took = wait_all_completed(&self.store, &self.ids, limit).await;
        report!(test, "observed: the burst finished {:.1}s after the last fault", took.as_secs_f64());
        let runs = audit(test, &self.record, &self.ids);
        assert!(self.worker.is_running(), "the worker rode the fault out");
        self.worker.signal("TERM");
        assert!(self.worker.wait_exit(Duration::from_secs(15)).await.success());
        runs
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redis_restart_with_aof_mid_burst_loses_no_acknowledged_job() {
    const T: &str = "redis_restart_aof";
    let mut redis = TestRedis::private_with_aof();
    let n = soak(300, 3000);
    let burst = Burst::start("fault-redis-aof", &redis, redis.url(), n).await;
    wait_runs(&burst.record, n / 3).await;
    redis.stop();
    let down = Instant::now();
    let ran = count_runs(&burst.record);
    // Down until a renewal (or a claim) gives up after the 10 s command
    // timeout: the running jobs' leases lapse during the outage.
    let seen = poll_until(Duration::from_secs(30), "the worker to give up on a command", async || {
        let log = burst.worker.log();
        LONG_OUTAGE_LOGS.into_iter().find(|m| log.contains(m))
    })
    .await;
    redis.start_again();
    let outage = down.elapsed();
    report!(
        T,
        "injected: Redis stopped after {ran} of {n} executions; restarted from its AOF {:.1}s later",
        outage.as_secs_f64()
    );
    let resumed = wait_progress(&burst.record, count_runs(&burst.record), Duration::from_secs(40)).await;
    report!(
        T,
        "observed: the worker logged {seen:?} during the outage; jobs ran again {:.2}s after Redis returned",
        resumed.as_secs_f64()
    );
    let runs = burst.finish(T, Duration::from_secs(60)).await;
    assert!(runs.uncounted().is_empty(), "a re-run carries a higher attempt: {:?}", runs.uncounted());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_persistence_the_worker_survives_a_redis_crash_and_runs_new_jobs() {
    const T: &str = "redis_restart_empty";
    let mut redis = TestRedis::private();
    let dir = TempDir::new("fault-redis-empty");
    let path = Config::rust(redis.url(), 1, 4).write(&dir, "rrq.toml");
    let mut worker = Orchestrator::start(&dir, &path, "worker");
    let producer = Producer::new(redis.url()).await.unwrap();
    let before = enqueue_many(&producer, "before", 20, "noop", json!({})).await;
    let store = store(redis.url()).await;
    wait_all_completed(&store, &before, Duration::from_secs(30)).await;

    redis.kill();
    let down = Instant::now();
    worker.wait_log(OUTAGE_LOG, Duration::from_secs(15)).await;
    report!(T, "injected: Redis SIGKILLed (no persistence); outage logged after {:.2}s", down.elapsed().as_secs_f64());
    redis.start_again();
    let back = Instant::now();
    let after = enqueue_many(&producer, "after", 20, "noop", json!({})).await;
    let took = wait_all_completed(&store, &after, Duration::from_secs(30)).await;
    report!(
        T,
        "observed: Redis back empty; 20 new jobs enqueued and completed {:.2}s after it returned (the last {:.2}s after \
         its enqueue); the worker process kept running",
        back.elapsed().as_secs_f64(),
        took.as_secs_f64()
    );
    assert!(worker.is_running());
    assert!(!worker.log().contains("ERROR"), "an outage is not an error: {}", worker.log());
    worker.signal("TERM");
    assert!(worker.wait_exit(Duration::from_secs(15)).await.success());
}

/// Sends a command that stalls the server and waits for its reply.
async fn stall(port: u16, args: &'static [&'static str]) -> Duration {
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        let reply = redis_with(port, &args, Duration::from_secs(10)).expect("the stall command answers");
        assert_eq!(reply, Reply::Status("OK".into()), "{args:?}");
        started.elapsed()
    })
    .await
    .expect("the stall thread")
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stalls_mid_burst_delay_jobs_but_lose_none() {
    const T: &str = "redis_stall";
    let redis = TestRedis::private_with_args(&["--enable-debug-command", "local"]);
    let n = soak(300, 3000);
    let burst = Burst::start("fault-redis-stall", &redis, redis.url(), n).await;
    wait_runs(&burst.record, n / 3).await;
    let slept = stall(redis.port(), &["DEBUG", "SLEEP", "2"]).await;
    report!(T, "injected: DEBUG SLEEP 2 (server blocked {:.2}s)", slept.as_secs_f64());
    wait_runs(&burst.record, 2 * n / 3).await;
    // CLIENT PAUSE answers at once and holds every other client's commands.
    stall(redis.port(), &["CLIENT", "PAUSE", "2000"]).await;
    report!(T, "injected: CLIENT PAUSE 2000 (every other client held 2 s)");
    let runs = burst.finish(T, Duration::from_secs(60)).await;
    assert!(runs.longest_gap() >= 1.5, "the stalls held the work up (else the test proves nothing)");
    assert_eq!(runs.reruns(), 0, "a stall shorter than the command timeout fails nothing, so nothing runs twice");
}

/// A TCP proxy between the worker and Redis that can cut every connection.
struct Proxy {
    port: u16,
    accept: AbortHandle,
    links: Arc<Mutex<Vec<AbortHandle>>>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the proxy");
        let port = listener.local_addr().unwrap().port();
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&links);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let link = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                registry.lock().unwrap().push(link.abort_handle());
            }
        });
        Proxy { port, accept: accept.abort_handle(), links }
    }

    /// Drops every open connection (both directions); returns how many.
    fn cut(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap());
        let open = links.iter().filter(|l| !l.is_finished()).count();
        for link in links {
            link.abort();
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cut_redis_connections_mid_burst_lose_no_job() {
    const T: &str = "redis_cut";
    let redis = TestRedis::private();
    let proxy = Proxy::start(redis.port()).await;
    let n = soak(300, 3000);
    let dsn = format!("redis://127.0.0.1:{}", proxy.port);
    let burst = Burst::start("fault-redis-cut", &redis, &dsn, n).await;
    let (store, ids) = (burst.store.clone(), burst.ids.clone());
    for at in [n / 3, 2 * n / 3] {
        wait_runs(&burst.record, at).await;
        let cut = proxy.cut();
        report!(T, "injected: every worker connection to Redis cut ({cut} connections) after {at} executions");
    }
    let ran = count_runs(&burst.record);
    let resumed = wait_progress(&burst.record, ran, Duration::from_secs(40)).await;
    report!(T, "observed: jobs ran again {:.2}s after the cut", resumed.as_secs_f64());
    let runs = burst.finish(T, Duration::from_secs(60)).await;
    // A reply lost with the connection is asked for again (outcome writes are
    // re-run, a claim is repeated with its token): nothing waits for a lease
    // to expire, and no attempt is counted for a job that ran once.
    let fields = store.job_fields_batch(&ids).await.unwrap();
    let counted = fields.iter().flatten().filter(|f| f.get("current_retries").map(String::as_str) != Some("0")).count();
    report!(T, "observed: {counted} jobs with an extra attempt counted");
    assert_eq!(counted, 0, "no job was left to orphan recovery");
    assert_eq!(runs.reruns(), 0);
}
