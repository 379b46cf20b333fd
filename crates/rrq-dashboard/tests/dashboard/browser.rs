//! The web UI in real headless Chromium, driven through ChromeDriver, with a
//! worker running in this process. These tests never skip: without
//! `chromium` and `chromedriver` they fail and say how to install them.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use rrq_core::{InProcessRunner, Worker, WorkerConfig};
use rrq_dashboard::{Dashboard, Options};
use rrq_protocol::{JobId, QueueName};
use rrq_runner::{HandlerResult, JobContext, Registry};
use rrq_store::JobStatus;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::Env;

/// How long a browser-visible change may take under load.
const PATIENCE: Duration = Duration::from_secs(30);

fn tool(env: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(env).map(PathBuf::from).unwrap_or_else(|| PathBuf::from(default));
    assert!(
        path.exists(),
        "{} not found: the dashboard's browser tests need Chromium and ChromeDriver; \
         install them with `apt-get install chromium chromium-driver` (or set {env})",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().unwrap().port()
}

/// A ChromeDriver process with one headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    async fn start() -> Browser {
        let chromium = tool("RRQ_CHROMIUM", "/usr/bin/chromium");
        let chromedriver = tool("RRQ_CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", chromedriver.display()));
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen on {port}");
            tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: waiting for an external process to open its port.
        }
        let profile = std::env::temp_dir().join(format!("rrq-dashboard-chromium-{}-{port}", std::process::id()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ],
            }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a Chromium session through chromedriver");
        Browser { client, driver, profile }
    }

    /// Polls until the element `css` exists and its text satisfies `ok`;
    /// returns the text.
    async fn text_until(&self, css: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = String::from("<no element>");
        loop {
            if let Ok(el) = self.client.find(Locator::Css(css)).await
                && let Ok(text) = el.text().await
            {
                if ok(&text) {
                    return text;
                }
                last = text;
            }
            if Instant::now() > deadline {
                self.screenshot("timeout").await;
                panic!("{css} never matched; last text: {last:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: polling the page with a deadline (the page refreshes itself).
        }
    }

    async fn click(&self, css: &str) {
        let el = self.client.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await;
        el.unwrap_or_else(|e| panic!("no {css}: {e}")).click().await.expect("click");
    }

    /// Saves a screenshot under target/ (`CARGO_TARGET_TMPDIR`).
    async fn screenshot(&self, name: &str) -> PathBuf {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        if let Ok(png) = self.client.screenshot().await {
            std::fs::write(&path, png).expect("write screenshot");
        }
        path
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// A worker in this process polling `queues`, with handlers `work` (returns
/// at once, counted) and `slow` (runs until cancelled).
struct RunningWorker {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    completed: Arc<AtomicU64>,
}

impl RunningWorker {
    fn start(env: &Env, queues: &[&str]) -> RunningWorker {
        let completed = Arc::new(AtomicU64::new(0));
        let mut registry = Registry::new();
        let done = completed.clone();
        registry.register("work", move |_: Value, _ctx: JobContext| {
            done.fetch_add(1, Ordering::SeqCst);
            async move { HandlerResult::Ok("done") }
        });
        registry.register("slow", |_: Value, ctx: JobContext| async move {
            ctx.cancelled().await;
            HandlerResult::Ok("stopped")
        });
        let mut config = WorkerConfig::new(queues.iter().map(|q| QueueName::new(q)));
        config.poll_interval = Duration::from_millis(50);
        config.heartbeat_interval = Duration::from_secs(1);
        config.health_ttl = Duration::from_secs(5);
        config.renew_interval = Duration::from_millis(500);
        let runner = Arc::new(InProcessRunner::new(registry, 4));
        let worker = Worker::new(config, env.store.clone()).runner("python", runner);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let _ = worker.run(token).await;
        });
        RunningWorker { stop, task, completed }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// Serves a dashboard on a loopback port with fast sampling.
async fn serve(
    env: &Env,
    worker: Option<&RunningWorker>,
    configure: impl FnOnce(&mut Options),
) -> (String, CancellationToken) {
    let mut options = Options::new("127.0.0.1:0".parse().unwrap());
    options.sample_every = Duration::from_millis(250);
    options.discover_every = Duration::from_millis(250);
    configure(&mut options);
    let mut dashboard = Dashboard::new(&env.settings, env.store.clone(), options).expect("dashboard");
    if let Some(w) = worker {
        let count = w.completed.clone();
        dashboard = dashboard.with_completed_counter(Arc::new(move || count.load(Ordering::SeqCst)));
    }
    let stop = CancellationToken::new();
    let addr: SocketAddr = dashboard.serve(stop.clone()).await.expect("serve");
    (format!("http://{addr}"), stop)
}

async fn status(env: &Env, id: &JobId) -> Option<JobStatus> {
    env.store.job(id).await.expect("read job").and_then(|j| j.ok()).and_then(|j| j.status)
}

async fn wait_status(env: &Env, id: &JobId, want: JobStatus) {
    let deadline = Instant::now() + PATIENCE;
    while status(env, id).await != Some(want) {
        assert!(Instant::now() < deadline, "job {id} never became {want}: {:?}", status(env, id).await);
        tokio::time::sleep(Duration::from_millis(50)).await; // sleep-ok: polling Redis with a deadline for a state the worker writes.
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_shows_the_queues_workers_and_the_chart() {
    let env = Env::new(
        "[[rrq.cron_jobs]]\nname = \"nightly-report\"\nfunction_name = \"nightly_report\"\nschedule = \"0 3 * * *\"",
    )
    .await;
    let worker = RunningWorker::start(&env, &["default", "emails"]);
    for _ in 0..3 {
        env.failed("report", "reports", "ValueError: missing column 'total'").await;
    }
    // No completion counter from this process: the chart reads the worker's
    // heartbeats, as a standalone `rrq dashboard` does.
    let (url, stop) = serve(&env, None, |_| {}).await;
    let browser = Browser::start().await;
    browser.client.goto(&url).await.unwrap();
    // Work flows in rounds while the page watches: completions and failures
    // per second. Each round waits for the worker to finish the previous one.
    let mut expected = 0;
    for round in 0..12u64 {
        let n = [4, 9, 14, 7, 18, 11, 5, 16, 12, 8, 13, 6][round as usize];
        for i in 0..n {
            env.enqueue("work", if i % 3 == 0 { "emails" } else { "default" }).await;
        }
        expected += n;
        if round % 4 == 1 {
            env.failed("report", "reports", "KeyError: 'customer_id'").await;
        }
        let deadline = Instant::now() + PATIENCE;
        while worker.completed.load(Ordering::SeqCst) < expected {
            assert!(Instant::now() < deadline, "the worker did not finish round {round}");
            tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: polling the worker's completion count with a deadline.
        }
    }
    for _ in 0..4 {
        env.enqueue_with("work", json!({}), "emails", |o| o.defer_by = Some(Duration::from_secs(600))).await;
    }
    env.enqueue("send_digest", "paused-digest").await;
    env.store.pause(&QueueName::new("paused-digest")).await.unwrap();
    env.failed("report", "reports", "TimeoutError: upstream took 30s").await;
    browser
        .text_until("#queues", |t| t.contains("emails") && t.contains("paused-digest") && t.contains("paused"))
        .await;
    browser.text_until("#c-workers .n", |t| t == "1").await;
    browser.text_until("#c-failed .n", |t| t == "7").await;
    browser.text_until("#c-scheduled .n", |t| t == "4").await;
    let deadline = Instant::now() + PATIENCE;
    while browser.client.find(Locator::Css("#throughput polyline[data-series=completed]")).await.is_err() {
        assert!(Instant::now() < deadline, "the completed series is never drawn");
        tokio::time::sleep(Duration::from_millis(100)).await; // sleep-ok: polling the page with a deadline for its next refresh.
    }
    let shot = browser.screenshot("overview").await;
    assert!(std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false), "a real screenshot: {shot:?}");
    // Search by id from the overview opens the job page.
    let id = env.enqueue_with("work", json!({"x": 1}), "later", |o| o.defer_by = Some(Duration::from_secs(60))).await;
    let input = browser.client.find(Locator::Css("#search-id")).await.unwrap();
    input.send_keys(id.as_str()).await.unwrap();
    browser.click("#search button").await;
    browser.text_until("#job-id", |t| t == id.as_str()).await;
    // The workers and cron pages.
    browser.click("a[data-nav=workers]").await;
    let workers = browser.text_until("#workers", |t| t.contains("rrq_worker_") && t.contains("emails")).await;
    assert!(!workers.contains("http"), "queues show as names: {workers}");
    browser.screenshot("workers").await;
    browser.click("a[data-nav=cron]").await;
    browser
        .text_until("#cron", |t| {
            t.contains("nightly-report") && t.contains("nightly_report") && t.contains("0 3 * * *")
        })
        .await;
    browser.screenshot("cron").await;
    browser.close().await;
    stop.cancel();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pausing_a_queue_in_the_page_stops_the_worker_taking_from_it() {
    let env = Env::new("").await;
    let worker = RunningWorker::start(&env, &["default", "other"]);
    let (url, stop) = serve(&env, Some(&worker), |_| {}).await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{url}/#/queue/default")).await.unwrap();
    browser.click("button[data-action=pause]").await;
    browser.text_until("h1", |t| t.contains("paused")).await;
    assert_eq!(env.store.paused().await.unwrap(), vec![QueueName::new("default")]);
    let held = env.enqueue("work", "default").await;
    let proof = env.enqueue("work", "other").await;
    // The worker is polling (it ran the job of the other queue)...
    wait_status(&env, &proof, JobStatus::Completed).await;
    // ...yet the paused queue's job waits, and the page lists it.
    assert_eq!(status(&env, &held).await, Some(JobStatus::Pending));
    browser.text_until("#queue-jobs", |t| t.contains(held.as_str())).await;
    browser.screenshot("queue-paused").await;
    browser.click("button[data-action=resume]").await;
    wait_status(&env, &held, JobStatus::Completed).await;
    browser.close().await;
    stop.cancel();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_dead_letter_from_the_page_runs_it_to_completion() {
    let env = Env::new("").await;
    let id = env.failed("work", "default", "ConnectionError: db down").await;
    let worker = RunningWorker::start(&env, &["default"]);
    let (url, stop) = serve(&env, Some(&worker), |_| {}).await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{url}/#/dlq")).await.unwrap();
    browser.text_until("#dlq-jobs", |t| t.contains("ConnectionError: db down")).await;
    browser.screenshot("dlq").await;
    browser.click(&format!("a[data-job='{id}']")).await;
    browser.text_until("#job-status", |t| t == "FAILED").await;
    browser.click("button[data-action=retry]").await;
    browser.text_until("#job-status", |t| t == "COMPLETED").await;
    assert_eq!(status(&env, &id).await, Some(JobStatus::Completed));
    browser.screenshot("job-completed").await;
    browser.close().await;
    stop.cancel();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_running_job_from_the_page_stops_it() {
    let env = Env::new("").await;
    let worker = RunningWorker::start(&env, &["default"]);
    let id = env.enqueue("slow", "default").await;
    wait_status(&env, &id, JobStatus::Active).await;
    let (url, stop) = serve(&env, Some(&worker), |_| {}).await;
    let browser = Browser::start().await;
    // The overview counts the running job under its queue (from the
    // worker's heartbeat).
    browser.client.goto(&url).await.unwrap();
    browser.text_until("tr[data-queue-row=default] td:nth-child(4)", |t| t == "1").await;
    browser.client.goto(&format!("{url}/#/job/{id}")).await.unwrap();
    browser.text_until("#job-status", |t| t == "ACTIVE").await;
    browser.click("button[data-action=cancel]").await;
    browser.text_until("#job-status", |t| t == "CANCELLED").await;
    assert_eq!(status(&env, &id).await, Some(JobStatus::Cancelled));
    browser.close().await;
    stop.cancel();
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dashboard_with_a_token_shows_only_its_login_until_given_it() {
    let env = Env::new("").await;
    env.enqueue("work", "default").await;
    let (url, stop) = serve(&env, None, |o| o.token = Some("letmein-42".into())).await;
    let browser = Browser::start().await;
    browser.client.goto(&url).await.unwrap();
    browser.text_until("#login", |t| t.contains("access token")).await;
    let source = browser.client.source().await.unwrap();
    assert!(!source.contains("rrq-csrf"), "no dashboard page before the token");
    let field = browser.client.find(Locator::Css("#token")).await.unwrap();
    field.send_keys("wrong").await.unwrap();
    browser.click("#login button").await;
    browser.text_until("#login", |t| t.contains("Wrong access token")).await;
    let field = browser.client.find(Locator::Css("#token")).await.unwrap();
    field.send_keys("letmein-42").await.unwrap();
    browser.click("#login button").await;
    browser.text_until("#queues", |t| t.contains("default")).await;
    browser.close().await;
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_filtered_requeued_by_selection_and_purged_after_confirming() {
    let env = Env::new("").await;
    let a1 = env.failed("alpha_task", "q1", "alpha broke").await;
    let a2 = env.failed("alpha_task", "q1", "alpha broke again").await;
    let b = env.failed("beta_task", "q2", "beta broke").await;
    let (url, stop) = serve(&env, None, |_| {}).await;
    let browser = Browser::start().await;
    browser.client.goto(&format!("{url}/#/dlq")).await.unwrap();
    browser.text_until("#dlq-count", |t| t.starts_with("3 matching of 3")).await;

    // Requeue a selection of one.
    browser.click(&format!("tr[data-dlq-row='{b}'] input[type=checkbox]")).await;
    browser.click("button[data-action='requeue selected']").await;
    browser.text_until("#dlq-count", |t| t.starts_with("2 matching of 2")).await;
    assert_eq!(status(&env, &b).await, Some(JobStatus::Pending));

    // Filter by function, then purge: nothing goes before the confirmation.
    let input = browser.client.find(Locator::Css("input[data-filter=function]")).await.unwrap();
    input.send_keys("ALPHA\u{E007}").await.unwrap();
    browser.text_until("#dlq-count", |t| t.starts_with("2 matching of 2")).await;
    browser.click("button[data-action='purge matching…']").await;
    let question = browser.text_until("#purge-confirm", |t| t.contains("Purge 2")).await;
    assert!(question.contains("for good"), "{question}");
    assert_eq!(env.store.dlq_len(&rrq_protocol::DlqName::new("default")).await.unwrap(), 2, "not before confirming");
    browser.screenshot("dlq-purge-confirm").await;
    // One more match arrives while the question is open: the confirmation
    // purges the two it named, not the newcomer.
    let late = env.failed("alpha_task", "q1", "alpha broke late").await;
    browser.click("#purge-yes").await;
    browser.text_until("#dlq-count", |t| t.starts_with("1 matching of 1")).await;
    assert_eq!(status(&env, &late).await, Some(JobStatus::Failed));
    for id in [&a1, &a2] {
        assert_eq!(env.store.job(id).await.unwrap(), None, "purged jobs are deleted");
    }
    browser.close().await;
    stop.cancel();
}
