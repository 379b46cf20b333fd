//! The dashboard on a large Redis: `N` jobs queued (the `--backlog-jobs`
//! count, 1,000,000 by default) plus `N / 20` scheduled an hour ahead in the
//! default queue, `N / 10` jobs dead-lettered into the default DLQ, eight
//! worker health records and three cron entries. Then `rrq dashboard`
//! (release build) is started and every JSON endpoint its pages call is
//! timed over HTTP on loopback: one warm-up request each, then rounds that
//! call every endpoint once. Only the requests are timed, not the set-up.
//!
//! Every answer is checked (status 200, and the rows and counts the seeded
//! data implies), so an error page cannot pass for a fast one.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rrq_producer::EnqueueOptions;
use rrq_protocol::QueueName;
use rrq_store::{AttemptCount, ClaimRequest, Clock as _, Fence, Store, SystemClock, WorkerHealth, format_timestamp};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::env::free_port;
use super::progress;
use super::scenarios::{Ctx, enqueue_noops, job_id};

/// Requests per endpoint (after one warm-up request).
pub(crate) const REQUESTS: usize = 20;

/// The page-answer target, in ms.
pub(crate) const TARGET_MS: f64 = 200.0;

/// Fake workers whose health records the workers page lists.
const WORKERS: usize = 8;

/// Cron entries in the dashboard's configuration.
const CRON: &str = r#"
[[rrq.cron_jobs]]
name = "nightly-report"
function_name = "report"
schedule = "0 3 * * *"

[[rrq.cron_jobs]]
name = "cleanup"
function_name = "cleanup"
schedule = "0 */5 * * * *"
unique = true

[[rrq.cron_jobs]]
name = "paris-digest"
function_name = "digest"
schedule = "30 8 * * 1-5"
timezone = "Europe/Paris"
"#;

/// Functions of the dead-lettered jobs (job `i` gets `i % 4`).
const DEAD_FUNCTIONS: [&str; 4] = ["send_email", "charge_card", "resize_image", "sync_inventory"];

/// The last error of dead-lettered job `i` (five kinds, `i % 5`).
fn dead_error(i: usize) -> String {
    match i % 5 {
        0 => "ConnectionError: smtp.example.com:587 refused the connection".to_owned(),
        1 => format!("CardDeclined: card ending {:04} was declined (insufficient funds)", i % 10_000),
        2 => "TimeoutError: the handler ran past its 300 s timeout".to_owned(),
        3 => format!("KeyError: 'sku-{}' is not in the catalogue", i % 1000),
        _ => format!("ValueError: upload {i}.png is not a PNG image"),
    }
}

/// Filters the two filtered DLQ reads use: a function substring matching a
/// quarter of the entries, an error substring matching a fifth.
const FUNCTION_FILTER: &str = "charge";
const ERROR_FILTER: &str = "declined";

/// One timed endpoint and its two figures.
pub(crate) struct Endpoint {
    pub name: &'static str,
    pub p50: &'static str,
    pub p99: &'static str,
    pub label50: &'static str,
    pub label99: &'static str,
}

macro_rules! endpoint {
    ($name:literal, $what:literal) => {
        Endpoint {
            name: $name,
            p50: concat!("dashboard_", $name, "_p50"),
            p99: concat!("dashboard_", $name, "_p99"),
            label50: concat!("dashboard: ", $what, ", p50"),
            label99: concat!("dashboard: ", $what, ", p99"),
        }
    };
}

/// The endpoints the pages call, in the order each round calls them.
pub(crate) const ENDPOINTS: [Endpoint; 9] = [
    endpoint!("overview", "overview (GET /api/overview)"),
    endpoint!("queue", "queue page, first 50 of 1M"),
    endpoint!("queue_deep", "queue page at offset 900,000"),
    endpoint!("job", "job page"),
    endpoint!("dlq", "DLQ page, first 50 of 100k"),
    endpoint!("dlq_function", "DLQ filtered by function"),
    endpoint!("dlq_error", "DLQ filtered by error text"),
    endpoint!("workers", "workers page"),
    endpoint!("cron", "cron page"),
];

/// Sizes of the seeded data.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sizes {
    pub queued: usize,
    pub scheduled: usize,
    pub dead: usize,
}

impl Sizes {
    pub(crate) fn for_backlog(queued: usize) -> Sizes {
        Sizes { queued, scheduled: queued / 20, dead: queued / 10 }
    }

    /// The offset of the deep queue page: 90 % into the ready jobs.
    fn deep_offset(self) -> usize {
        self.queued / 10 * 9
    }
}

/// One run of the scenario.
#[derive(Debug)]
pub(crate) struct Run {
    /// Per endpoint (in [`ENDPOINTS`] order): the timed requests, in ms.
    pub latencies: Vec<Vec<f64>>,
    /// Set-up figures and what the answers said (for the JSON record).
    pub details: Value,
}

/// Seeds the data, starts `rrq dashboard`, times every endpoint.
pub(crate) async fn run(ctx: &Ctx, sizes: Sizes, tag: &str) -> Result<Run> {
    ctx.setup.redis.flush()?;
    let seeded = seed(ctx, sizes, tag).await?;
    let used_mb = redis_used_mb(ctx)?;
    progress(&format!("  seeded; Redis holds {used_mb:.0} MB; starting rrq dashboard"));
    let mut dashboard = DashboardProcess::start(&ctx.setup.rrq, &ctx.setup.redis.dsn, &ctx.setup.work, tag)?;
    let ready_after = dashboard.wait_ready(sizes).await?;
    progress(&format!("  dashboard answering with counts and discovery after {ready_after:.1} s; timing"));

    let mut latencies = vec![Vec::with_capacity(REQUESTS); ENDPOINTS.len()];
    let mut answers = serde_json::Map::new();
    for round in 0..=REQUESTS {
        for (e, endpoint) in ENDPOINTS.iter().enumerate() {
            let path = path(endpoint.name, round, sizes, tag);
            let (ms, body) = dashboard.get(&path).await?;
            check(endpoint.name, &body, sizes, tag).with_context(|| format!("GET {path} answered {body}"))?;
            if round == 0 {
                answers.insert(endpoint.name.to_owned(), summary(endpoint.name, &body));
            } else {
                latencies[e].push(ms);
            }
        }
    }
    dashboard.stop();
    // Free the data now rather than at the next run's start.
    ctx.setup.redis.flush()?;
    Ok(Run {
        latencies,
        details: json!({
            "sizes": {"queued": sizes.queued, "scheduled": sizes.scheduled, "dead": sizes.dead},
            "seed": seeded,
            "redis_used_mb": used_mb,
            "dashboard_ready_s": ready_after,
            "answers": answers,
        }),
    })
}

/// The request path of `endpoint` in round `round` (the job page cycles
/// through queued and dead-lettered jobs).
fn path(endpoint: &str, round: usize, sizes: Sizes, tag: &str) -> String {
    match endpoint {
        "overview" => "/api/overview".to_owned(),
        "queue" => "/api/queue?name=default".to_owned(),
        "queue_deep" => format!("/api/queue?name=default&offset={}", sizes.deep_offset()),
        "job" if round.is_multiple_of(2) => format!("/api/job?id={}", job_id(tag, round * 37_831 % sizes.queued)),
        "job" => format!("/api/job?id={}", job_id(&dead_tag(tag), round * 7_919 % sizes.dead)),
        "dlq" => "/api/dlq".to_owned(),
        "dlq_function" => format!("/api/dlq?function={FUNCTION_FILTER}"),
        "dlq_error" => format!("/api/dlq?error={ERROR_FILTER}"),
        "workers" => "/api/workers".to_owned(),
        "cron" => "/api/cron".to_owned(),
        other => unreachable!("no endpoint {other}"),
    }
}

fn dead_tag(tag: &str) -> String {
    format!("{tag}-dead")
}

fn rows(body: &Value) -> Result<&Vec<Value>> {
    body["jobs"].as_array().context("no `jobs` list")
}

/// Checks an answer against what was seeded.
fn check(endpoint: &str, body: &Value, sizes: Sizes, tag: &str) -> Result<()> {
    let (queued, scheduled, dead) = (sizes.queued as u64, sizes.scheduled as u64, sizes.dead as u64);
    match endpoint {
        "overview" => {
            let queues = body["queues"].as_array().context("no `queues`")?;
            let default = queues.iter().find(|q| q["name"] == "default").context("no default queue listed")?;
            ensure!(default["ready"] == queued && default["scheduled"] == scheduled, "wrong counts: {default}");
            ensure!(body["dlq"]["len"] == dead, "wrong DLQ length");
            ensure!(body["workers_alive"] == WORKERS, "not every worker listed");
        }
        "queue" | "queue_deep" => {
            let jobs = rows(body)?;
            ensure!(jobs.len() == 50, "{} rows, not 50", jobs.len());
            ensure!(body["counts"]["ready"] == queued, "wrong ready count");
            let first = if endpoint == "queue" { 0 } else { sizes.deep_offset() };
            ensure!(jobs[0]["id"] == job_id(tag, first), "the page does not start at job {first}");
            ensure!(jobs.iter().all(|j| j["status"] == "PENDING"), "a row is not a readable PENDING job");
        }
        "job" => {
            let status = body["status"].as_str().context("no status")?;
            ensure!(status == "PENDING" || status == "FAILED", "status {status}");
            ensure!(!body["timeline"].as_array().context("no timeline")?.is_empty(), "empty timeline");
        }
        "dlq" | "dlq_function" | "dlq_error" => {
            let jobs = rows(body)?;
            ensure!(body["total"] == dead, "wrong DLQ total");
            let matched = body["matched"].as_u64().context("no `matched`")?;
            ensure!(jobs.len() as u64 == matched.min(50), "{} rows of {matched} matches", jobs.len());
            ensure!(matched > 0, "nothing matched");
            let (field, needle) = match endpoint {
                "dlq_function" => ("function", FUNCTION_FILTER),
                "dlq_error" => ("last_error", ERROR_FILTER),
                _ => ("status", "FAILED"),
            };
            for j in jobs {
                let value = j[field].as_str().unwrap_or_default().to_lowercase();
                ensure!(value.contains(&needle.to_lowercase()), "row {} does not match {needle:?}", j["id"]);
            }
            ensure!(endpoint != "dlq" || matched == dead, "the unfiltered page matches {matched} of {dead}");
        }
        "workers" => {
            let workers = body["workers"].as_array().context("no `workers`")?;
            ensure!(workers.len() == WORKERS, "{} workers listed, not {WORKERS}", workers.len());
        }
        "cron" => {
            let entries = body["entries"].as_array().context("no `entries`")?;
            ensure!(entries.len() == 3, "{} cron entries, not 3", entries.len());
            ensure!(body["invalid"].as_array().is_some_and(Vec::is_empty), "a cron entry failed: {}", body["invalid"]);
            ensure!(entries.iter().all(|e| e["next_runs"].as_array().is_some_and(|r| !r.is_empty())), "no next runs");
        }
        other => bail!("no check for {other}"),
    }
    Ok(())
}

/// What the first answer of an endpoint said, for the JSON record.
fn summary(endpoint: &str, body: &Value) -> Value {
    match endpoint {
        "dlq" | "dlq_function" | "dlq_error" => {
            json!({"total": body["total"], "scanned": body["scanned"], "matched": body["matched"]})
        }
        "queue" | "queue_deep" => json!({"counts": body["counts"], "offset": body["offset"]}),
        "workers" => json!({"workers": body["workers"].as_array().map_or(0, Vec::len)}),
        "cron" => json!({"entries": body["entries"].as_array().map_or(0, Vec::len)}),
        _ => json!({"bytes": body.to_string().len()}),
    }
}

/// Seeds the queue, the scheduled jobs, the DLQ and the worker records;
/// returns how long each part took.
async fn seed(ctx: &Ctx, sizes: Sizes, tag: &str) -> Result<Value> {
    let t = Instant::now();
    enqueue_noops(&ctx.producer, tag, sizes.queued, 10_000).await?;
    let queued_s = t.elapsed().as_secs_f64();
    progress(&format!("  {} jobs queued in {queued_s:.1} s", sizes.queued));

    let t = Instant::now();
    for start in (0..sizes.scheduled).step_by(10_000) {
        let end = (start + 10_000).min(sizes.scheduled);
        let jobs = (start..end).map(|i| {
            let options = EnqueueOptions {
                job_id: Some(job_id(&format!("{tag}-later"), i)),
                defer_by: Some(Duration::from_secs(3600)),
                ..EnqueueOptions::default()
            };
            ("noop".to_owned(), json!({"n": i}), options)
        });
        for r in ctx.producer.enqueue_batch(jobs).await? {
            r?;
        }
    }
    let scheduled_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    dead_letter_many(ctx, sizes.dead, &dead_tag(tag)).await?;
    let dead_s = t.elapsed().as_secs_f64();
    progress(&format!("  {} jobs dead-lettered in {dead_s:.1} s", sizes.dead));

    let now = SystemClock.now();
    for w in 0..WORKERS {
        let health = WorkerHealth {
            active_jobs: (w % 3) as u64,
            concurrency_limit: 50,
            queues: vec![ctx.queue.as_str().to_owned()],
            status: "running".to_owned(),
            timestamp: json!(format_timestamp(now)),
            worker_id: format!("{tag}-worker-{w}"),
            completed_jobs: None,
            failed_jobs: None,
            active_by_queue: None,
        };
        ctx.store.heartbeat(&health, Duration::from_secs(3600)).await?;
    }
    Ok(json!({"queued_s": queued_s, "scheduled_s": scheduled_s, "dead_letter_s": dead_s}))
}

/// `n` jobs of a scratch queue claimed in batches and moved to the default
/// DLQ with the store's own verbs (claim, then `dead_letter` per job, 64 in
/// flight), so their hashes are what a worker leaves.
async fn dead_letter_many(ctx: &Ctx, n: usize, tag: &str) -> Result<()> {
    const BATCH: usize = 1000;
    const IN_FLIGHT: usize = 64;
    let source = QueueName::parse("dashboard-bench-dead").expect("a valid queue name");
    for start in (0..n).step_by(10_000) {
        let end = (start + 10_000).min(n);
        let jobs = (start..end).map(|i| {
            let options = EnqueueOptions {
                job_id: Some(job_id(tag, i)),
                queue: Some(source.as_str().to_owned()),
                ..EnqueueOptions::default()
            };
            (DEAD_FUNCTIONS[i % DEAD_FUNCTIONS.len()].to_owned(), json!({"n": i}), options)
        });
        for r in ctx.producer.enqueue_batch(jobs).await? {
            r?;
        }
    }
    let mut done = 0;
    while done < n {
        let req = ClaimRequest {
            queue: source.clone(),
            worker_id: format!("{tag}-seeder"),
            max: BATCH,
            now: SystemClock.now(),
            lease_ttl: Duration::from_secs(600),
            max_payload_bytes: usize::MAX,
        };
        let batch = ctx.store.claim(req).await?;
        ensure!(!batch.jobs.is_empty(), "the scratch queue ran dry after {done} of {n} jobs");
        let leases: Vec<_> = batch.jobs.into_iter().map(|c| c.lease).collect();
        let mut tasks = tokio::task::JoinSet::new();
        for lane in 0..IN_FLIGHT.min(leases.len()) {
            let store: Arc<dyn Store> = ctx.store.clone();
            let mine: Vec<_> = leases.iter().skip(lane).step_by(IN_FLIGHT).cloned().collect();
            tasks.spawn(async move {
                for lease in mine {
                    let index = lease.job_id.as_str().rsplit('-').next().and_then(|i| i.parse().ok()).unwrap_or(0);
                    let fence =
                        store.dead_letter(&lease, &dead_error(index), AttemptCount::Counted, SystemClock.now()).await?;
                    ensure!(fence == Fence::Applied, "dead-lettering {} was refused as stale", lease.job_id);
                }
                anyhow::Ok(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r??;
        }
        done += leases.len();
    }
    Ok(())
}

fn redis_used_mb(ctx: &Ctx) -> Result<f64> {
    let info = ctx.setup.redis.cli(&["INFO", "memory"])?;
    let bytes = info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no used_memory in INFO memory")?;
    Ok(bytes / (1024.0 * 1024.0))
}

/// `rrq dashboard` on a free loopback port.
struct DashboardProcess {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl DashboardProcess {
    fn start(rrq: &std::path::Path, dsn: &str, work: &std::path::Path, tag: &str) -> Result<DashboardProcess> {
        let port = free_port()?;
        let config = work.join(format!("{tag}-dashboard.toml"));
        std::fs::write(&config, format!("[rrq]\nredis_dsn = {dsn:?}\n{CRON}"))?;
        let log = work.join(format!("{tag}-dashboard.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(rrq)
            .args(["dashboard", "--read-only", "--listen", &format!("127.0.0.1:{port}"), "--config"])
            .arg(&config)
            .env("RUST_LOG", "warn")
            .env_remove("RRQ_CONFIG")
            .env_remove("RRQ_REDIS_DSN")
            .env_remove("RRQ_DASHBOARD_TOKEN")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {} dashboard", rrq.display()))?;
        Ok(DashboardProcess { child, port, log })
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Polls the overview until its counts were sampled and queues and
    /// workers discovered (120 s at most); returns the seconds it took.
    async fn wait_ready(&mut self, sizes: Sizes) -> Result<f64> {
        let started = Instant::now();
        let deadline = started + Duration::from_secs(120);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!("rrq dashboard exited ({status}):\n{}", self.log_tail());
            }
            let last = match self.get("/api/overview").await {
                Ok((_, body)) if check("overview", &body, sizes, "").is_ok() => {
                    return Ok(started.elapsed().as_secs_f64());
                }
                Ok((_, body)) => body.to_string(),
                Err(e) => format!("{e:#}"),
            };
            if Instant::now() > deadline {
                bail!(
                    "the dashboard's overview did not show the seeded counts and workers within 120 s; last: {last}\nlog:\n{}",
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One `GET` on a fresh connection: milliseconds from connect to the
    /// last byte, and the JSON body of a 200 answer.
    async fn get(&self, path: &str) -> Result<(f64, Value)> {
        let started = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        stream.set_nodelay(true)?;
        // HTTP/1.0: the answer has a length or ends with the connection,
        // never chunked.
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{}\r\nAccept: application/json\r\n\r\n", self.port);
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let (status, body) = parse_response(&raw)?;
        ensure!(status == 200, "GET {path} answered {status}: {}", String::from_utf8_lossy(body));
        Ok((ms, serde_json::from_slice(body).with_context(|| format!("GET {path}: the body is not JSON"))?))
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for DashboardProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The status and body of a raw HTTP/1.x answer (without chunked encoding).
fn parse_response(raw: &[u8]) -> Result<(u16, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("the answer has no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("the answer's headers are not UTF-8")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no status in {:?}", head.lines().next().unwrap_or_default()))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
        })
    });
    ensure!(!chunked, "a chunked answer to an HTTP/1.0 request");
    Ok((status, &raw[end + 4..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_split_into_status_and_body() {
        let raw = b"HTTP/1.0 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
        assert_eq!(parse_response(raw).unwrap(), (200, &b"{}"[..]));
        let (status, body) = parse_response(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"error\":\"x\"}").unwrap();
        assert_eq!((status, body), (503, &b"{\"error\":\"x\"}"[..]));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err(), "no end of headers");
        assert!(parse_response(b"garbage\r\n\r\n").is_err(), "no status");
    }

    #[test]
    fn every_endpoint_has_a_path_and_a_check() {
        let sizes = Sizes::for_backlog(1_000_000);
        assert_eq!((sizes.scheduled, sizes.dead, sizes.deep_offset()), (50_000, 100_000, 900_000));
        for e in &ENDPOINTS {
            assert!(path(e.name, 1, sizes, "t").starts_with("/api/"), "{}", e.name);
            let err = check(e.name, &json!({}), sizes, "t").unwrap_err();
            assert!(!err.to_string().starts_with("no check"), "{}: {err}", e.name);
        }
        // The job page alternates between a queued and a dead-lettered job,
        // both within the seeded ranges.
        assert_eq!(path("job", 2, sizes, "t"), format!("/api/job?id={}", job_id("t", 75_662)));
        assert_eq!(path("job", 1, sizes, "t"), format!("/api/job?id={}", job_id("t-dead", 7_919)));
    }

    #[test]
    fn a_dlq_row_that_does_not_match_the_filter_fails_the_check() {
        let sizes = Sizes { queued: 1000, scheduled: 0, dead: 2 };
        let row = |f: &str| json!({"id": "x", "function": f, "status": "FAILED", "last_error": "E: declined"});
        let good = json!({"total": 2, "matched": 2, "jobs": [row("charge_card"), row("charge_card")]});
        assert!(check("dlq_function", &good, sizes, "t").is_ok());
        let bad = json!({"total": 2, "matched": 2, "jobs": [row("charge_card"), row("send_email")]});
        assert!(check("dlq_function", &bad, sizes, "t").is_err());
        assert!(check("dlq_error", &bad, sizes, "t").is_ok());
    }
}
