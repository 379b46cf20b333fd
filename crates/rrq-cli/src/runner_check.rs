//! `rrq runner check`: the runner conformance kit.
//!
//! Starts a runner as a managed pool does, as far as the runner can tell
//! (the command, then `--tcp-socket 127.0.0.1:PORT`, `RRQ_RUNNER_TCP_SOCKET`
//! set to the same address, the runner's `env` and `cwd`, `RRQ_REDIS_DSN`
//! withheld unless `env` sets it, stdin from `/dev/null`, its own process
//! group; its stdout and stderr go to our stderr), then talks the runner
//! protocol to it directly and checks each rule of docs/RUNNER_PROTOCOL.md
//! that a runner is responsible for.
//!
//! The runner under test must register the check handlers:
//!
//! | handler | params | must |
//! |---|---|---|
//! | `rrq_check.echo` | any object | succeed with `{"params", "job_id", "attempt", "trace_context"}` taken from the request |
//! | `rrq_check.sleep` | `seconds` (number) | sleep that long, then succeed; stop when cancelled or at the deadline |
//! | `rrq_check.fail` | `message` (string) | fail (`status = error`) with exactly that message |
//! | `rrq_check.retry` | `delay` (number) | ask for a retry after `delay` seconds |
//!
//! Each check runs on its own connection(s) and reports what it expected and
//! what it saw; the command exits with status 1 when any check fails.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::os::fd::AsFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow};
use bytes::BytesMut;
use chrono::{SecondsFormat, Utc};
use rrq_pool::PoolConfig;
use rrq_protocol::{
    CancelRequest, Envelope, ExecutionContext, ExecutionOutcome, ExecutionRequest, FrameDecoder, OutcomeStatus,
    PROTOCOL_VERSION, encode_frame_to_vec, error_types,
};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::exit::{CliError, Exit};
use crate::output;
use rrq_store::{Clock as _, SystemClock};

/// Handler names a runner registers for the check.
pub const ECHO: &str = "rrq_check.echo";
/// Sleeps `seconds`.
pub const SLEEP: &str = "rrq_check.sleep";
/// Fails with `message`.
pub const FAIL: &str = "rrq_check.fail";
/// Retries after `delay`.
pub const RETRY: &str = "rrq_check.retry";

/// The message of a request stopped by a cancel frame.
const CANCELLED_MESSAGE: &str = "Job cancelled";
/// How many requests the concurrency check sends at once.
const CONCURRENT: usize = 8;
/// How long each of them sleeps.
const CONCURRENT_SLEEP: f64 = 1.0;
/// The concurrency check passes when all answers are in by then (serial
/// execution would take `CONCURRENT * CONCURRENT_SLEEP`).
const CONCURRENT_LIMIT: Duration = Duration::from_millis(3_500);
/// How often the cancel check repeats its cancel while the request is
/// unanswered.
const CANCEL_REPEAT: Duration = Duration::from_millis(250);
/// The longest wait for any single expected answer or event.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// `rrq runner check` options.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Check the runner `[rrq.runners.NAME]` of the configuration (its cmd, env and cwd)
    #[arg(long, value_name = "NAME", conflicts_with = "cmd")]
    runner: Option<String>,
    /// Print the results as JSON
    #[arg(long)]
    json: bool,
    /// Port to start the runner on (default: a free one)
    #[arg(long)]
    port: Option<u16>,
    /// The runner command and its arguments (after `--`)
    #[arg(last = true, value_name = "CMD")]
    cmd: Vec<String>,
    #[command(flatten)]
    config: crate::ConfigArgs,
}

/// One check's result.
#[derive(Debug, Clone)]
struct Outcome {
    name: &'static str,
    expected: &'static str,
    passed: bool,
    detail: String,
}

/// Runs `rrq runner check`.
pub(crate) async fn run(args: CheckArgs) -> Result<Exit, CliError> {
    let mut config = target(&args)?;
    let port = match args.port {
        Some(p) => p,
        None => free_port().context("cannot find a free port for the runner")?,
    };
    config.base_port = port;
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let results = check(&config, addr).await?;
    let failed = results.iter().filter(|r| !r.passed).count();
    if args.json {
        let rows: Vec<Value> = results
            .iter()
            .map(|r| json!({"check": r.name, "passed": r.passed, "expected": r.expected, "detail": r.detail}))
            .collect();
        output::print_json(&json!({"runner": config.cmd, "passed": failed == 0, "checks": rows}));
    } else {
        let mut t = output::table(&["CHECK", "RESULT", "EXPECTED", "DETAIL"]);
        for r in &results {
            t.add_row(vec![r.name, if r.passed { "pass" } else { "FAIL" }, r.expected, &r.detail]);
        }
        outln!("{}", output::render(&t));
        outln!("{} of {} checks passed", results.len() - failed, results.len());
    }
    if failed == 0 {
        Ok(Exit::Ok)
    } else {
        let names: Vec<&str> = results.iter().filter(|r| !r.passed).map(|r| r.name).collect();
        Err(CliError::new(Exit::Failure, anyhow!("runner check failed: {}", names.join(", "))))
    }
}

/// The pool configuration of the runner under test.
fn target(args: &CheckArgs) -> Result<PoolConfig, CliError> {
    if let Some(name) = &args.runner {
        let loaded = rrq_config::load(args.config.config.as_deref()).map_err(|e| CliError::new(Exit::Config, e))?;
        for w in &loaded.warnings {
            eprintln!("Warning: {w}");
        }
        let config = crate::runners::pool_config(name, &loaded.settings).map_err(|e| CliError::new(Exit::Config, e))?;
        if config.cmd.is_empty() {
            return Err(CliError::new(
                Exit::Config,
                anyhow!("runner '{name}' has no cmd; `rrq runner check` starts the runner itself"),
            ));
        }
        return Ok(config);
    }
    if args.cmd.is_empty() {
        return Err(CliError::new(
            Exit::Usage,
            anyhow!("name a runner with --runner NAME, or give its command after `--`"),
        ));
    }
    let mut config = PoolConfig::managed("check", args.cmd.clone(), 1);
    // As `rrq worker` does: the orchestrator's Redis DSN is withheld.
    config.env_remove.push("RRQ_REDIS_DSN".to_owned());
    Ok(config)
}

fn free_port() -> std::io::Result<u16> {
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port())
}

/// Starts the runner, runs every check, stops it.
async fn check(config: &PoolConfig, addr: SocketAddr) -> Result<Vec<Outcome>, CliError> {
    let mut child = spawn(config, addr)?;
    let mut results = Vec::new();
    let ready = match wait_ready(&mut child, addr, config.connect_timeout).await {
        Ok(()) => serves_after_probe(&mut child, addr).await,
        Err(e) => Err(e),
    };
    let started = ready.is_ok();
    results.push(Outcome {
        name: "starts",
        expected: "accepts connections on the --tcp-socket address, survives an empty probe connection and answers",
        passed: started,
        detail: ready.err().unwrap_or_else(|| format!("listening on {addr}")),
    });
    if !started {
        let _ = child.start_kill();
        let _ = child.wait().await;
        return Ok(results);
    }
    let rules: [(&'static str, &'static str); 12] = [
        ("echo", "rrq_check.echo answers success with the params, job_id and request_id of the request"),
        ("context", "the handler sees the request's job_id, attempt and trace_context unchanged"),
        ("error", "rrq_check.fail answers status error with the handler's message"),
        ("retry", "rrq_check.retry answers status retry with retry_after_seconds = delay"),
        ("handler_not_found", "an unregistered function answers status error, error.type handler_not_found"),
        ("protocol_version", "a request with protocol_version \"1\" is refused with status error"),
        ("concurrent", "8 pipelined 1 s requests on one connection are all answered within 3.5 s"),
        ("cancel", "a cancel frame on another connection ends a running request: error, cancelled, \"Job cancelled\""),
        ("deadline", "a running request is stopped at context.deadline: status timeout, error.type timeout"),
        ("deadline_passed", "a request whose deadline has passed is answered timeout without running the handler"),
        ("malformed_frame", "invalid JSON in a frame closes that connection without a reply; others keep working"),
        ("shutdown", "SIGTERM to the process group makes the runner exit within the term grace"),
    ];
    for (name, expected) in rules {
        let verdict = match name {
            "echo" => echo(addr).await,
            "context" => context(addr).await,
            "error" => error(addr).await,
            "retry" => retry(addr).await,
            "handler_not_found" => not_found(addr).await,
            "protocol_version" => version(addr).await,
            "concurrent" => concurrent(addr).await,
            "cancel" => cancel(addr).await,
            "deadline" => deadline(addr).await,
            "deadline_passed" => deadline_passed(addr).await,
            "malformed_frame" => malformed(addr).await,
            _ => shutdown(&mut child, config.term_grace.max(Duration::from_secs(1))).await,
        };
        let (passed, detail) = match verdict {
            Ok(detail) => (true, detail),
            Err(e) => (false, format!("{e:#}")),
        };
        results.push(Outcome { name, expected, passed, detail });
    }
    if child.try_wait().ok().flatten().is_none() {
        kill_group(&child, libc::SIGKILL);
        let _ = child.wait().await;
    }
    Ok(results)
}

/// The runner process, started as `rrq-pool` starts a managed runner.
fn spawn(config: &PoolConfig, addr: SocketAddr) -> Result<Child, CliError> {
    let socket = addr.to_string();
    let mut command = Command::new(&config.cmd[0]);
    for name in &config.env_remove {
        command.env_remove(name);
    }
    command
        .args(&config.cmd[1..])
        .arg("--tcp-socket")
        .arg(&socket)
        .envs(&config.env)
        .env("RRQ_RUNNER_TCP_SOCKET", &socket)
        .stdin(Stdio::null())
        .stdout(to_stderr()?)
        .stderr(to_stderr()?)
        .process_group(0)
        .kill_on_drop(true);
    if let Some(cwd) = &config.cwd {
        command.current_dir(cwd);
    }
    command.spawn().map_err(|e| {
        CliError::new(Exit::Failure, anyhow!(e).context(format!("cannot start runner command {:?}", config.cmd)))
    })
}

/// Our stderr, for the runner's output (stdout stays ours for the report).
fn to_stderr() -> Result<Stdio, CliError> {
    let fd = std::io::stderr().as_fd().try_clone_to_owned()?;
    Ok(Stdio::from(fd))
}

/// Probes the address like the pool does (connect, close at once) until it
/// answers, the process exits, or `timeout` passes.
async fn wait_ready(child: &mut Child, addr: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the runner exited before listening ({status})"));
        }
        if let Ok(probe) = TcpStream::connect(addr).await {
            drop(probe);
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(format!("nothing listened on {addr} within {timeout:?}"));
        }
        // sleep-ok: readiness poll with backoff, as the pool does.
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// After the empty probe of [`wait_ready`]: the runner is still running and
/// answers a request on a new connection (a runner that dies when a
/// connection closes without data would fail every pool start).
async fn serves_after_probe(child: &mut Child, addr: SocketAddr) -> Result<(), String> {
    let req = request(ECHO, json!({"probe": "after"}));
    let answered = call(addr, &req).await;
    if let Ok(Some(status)) = child.try_wait() {
        return Err(format!("the runner exited after an empty probe connection ({status})"));
    }
    answered.map(|_| ()).map_err(|e| format!("no answer after an empty probe connection: {e:#}"))
}

fn kill_group(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()).filter(|p| *p > 1) {
        // SAFETY: kill(2) takes plain integers; the negative pid names the
        // process group our child leads.
        #[allow(unsafe_code, reason = "signalling a process group has no safe std API")]
        let _ = unsafe { libc::kill(-pid, signal) };
    }
}

/// One client connection speaking frames.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Conn {
    async fn open(addr: SocketAddr) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr).await.with_context(|| format!("cannot connect to {addr}"))?;
        Ok(Conn { stream, buf: BytesMut::new(), decoder: FrameDecoder::default() })
    }

    async fn send(&mut self, message: &Envelope) -> anyhow::Result<()> {
        let frame = encode_frame_to_vec(message, self.decoder.max_frame_bytes())?;
        self.send_raw(&frame).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        self.stream.write_all(bytes).await.context("write to the runner failed")
    }

    /// The next message, `None` when the runner closed the connection.
    /// Cancel-safe: a message cut short by a timeout is read on.
    async fn next(&mut self) -> anyhow::Result<Option<Envelope>> {
        loop {
            if let Some(msg) = self.decoder.decode(&mut self.buf).context("the runner sent an invalid frame")? {
                return Ok(Some(msg));
            }
            let n = match self.stream.read_buf(&mut self.buf).await {
                Ok(n) => n,
                // A reset is the runner closing the connection too.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => 0,
                Err(e) => return Err(anyhow!(e).context("read from the runner failed")),
            };
            if n == 0 {
                return match self.decoder.decode_eof(&mut self.buf) {
                    Ok(msg) => Ok(msg),
                    Err(e) => Err(anyhow!(e).context("the runner closed the connection inside a frame")),
                };
            }
        }
    }

    /// The next message within `wait`.
    async fn recv(&mut self, wait: Duration) -> anyhow::Result<Option<Envelope>> {
        tokio::time::timeout(wait, self.next()).await.map_err(|_| anyhow!("no answer within {wait:?}"))?
    }

    /// The next response; anything else is an error.
    async fn response(&mut self, wait: Duration) -> anyhow::Result<ExecutionOutcome> {
        as_response(self.recv(wait).await?)
    }
}

fn as_response(message: Option<Envelope>) -> anyhow::Result<ExecutionOutcome> {
    match message {
        Some(Envelope::Response(outcome)) => Ok(outcome),
        Some(other) => Err(anyhow!("expected a response frame, got {other:?}")),
        None => Err(anyhow!("the runner closed the connection without answering")),
    }
}

fn request(function: &str, params: Value) -> ExecutionRequest {
    let job_id = format!("check-{}", uuid());
    let params = match params {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: uuid(),
        job_id: job_id.clone(),
        function_name: function.to_owned(),
        params,
        context: ExecutionContext {
            job_id,
            attempt: 1,
            enqueue_time: rfc3339(SystemClock.now()),
            queue_name: rrq_protocol::QueueName::new("rrq_check").as_str().to_owned(),
            deadline: Some(rfc3339(SystemClock.now() + chrono::Duration::seconds(60))),
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_runner_check".to_owned()),
        },
    }
}

fn rfc3339(t: chrono::DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Sends `request` on a fresh connection and returns its response.
async fn call(addr: SocketAddr, request: &ExecutionRequest) -> anyhow::Result<ExecutionOutcome> {
    let mut conn = Conn::open(addr).await?;
    conn.send(&Envelope::Request(request.clone())).await?;
    let outcome = conn.response(ANSWER_WAIT).await?;
    correlated(request, &outcome)?;
    Ok(outcome)
}

fn correlated(request: &ExecutionRequest, outcome: &ExecutionOutcome) -> anyhow::Result<()> {
    if outcome.request_id.as_deref() != Some(request.request_id.as_str()) {
        return Err(anyhow!(
            "response request_id {:?} does not match the request's {:?}",
            outcome.request_id,
            request.request_id
        ));
    }
    if outcome.job_id != request.job_id {
        return Err(anyhow!("response job_id {:?} does not match the request's {:?}", outcome.job_id, request.job_id));
    }
    Ok(())
}

fn describe(outcome: &ExecutionOutcome) -> String {
    let mut s = format!("status {}", status_name(outcome.status));
    if let Some(e) = &outcome.error {
        let _ = write!(s, ", error.message {:?}", e.message);
        if let Some(kind) = &e.kind {
            let _ = write!(s, ", error.type {kind:?}");
        }
    }
    if let Some(r) = &outcome.result {
        let _ = write!(s, ", result {r}");
    }
    s
}

fn status_name(status: OutcomeStatus) -> &'static str {
    match status {
        OutcomeStatus::Success => "success",
        OutcomeStatus::Retry => "retry",
        OutcomeStatus::Timeout => "timeout",
        OutcomeStatus::Error => "error",
    }
}

fn expect_status(outcome: &ExecutionOutcome, status: OutcomeStatus) -> anyhow::Result<()> {
    if outcome.status == status {
        Ok(())
    } else {
        Err(anyhow!("expected status {}, got {}", status_name(status), describe(outcome)))
    }
}

async fn echo(addr: SocketAddr) -> anyhow::Result<String> {
    let params = json!({"text": "héllo", "n": 3, "nested": {"list": [1, 2, null], "flag": true}});
    let req = request(ECHO, params.clone());
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Success)?;
    let got = outcome.result.as_ref().and_then(|r| r.get("params"));
    if got != Some(&params) {
        return Err(anyhow!("expected result.params {params}, got {}", describe(&outcome)));
    }
    Ok("params echoed, ids matched".to_owned())
}

async fn context(addr: SocketAddr) -> anyhow::Result<String> {
    let mut req = request(ECHO, json!({}));
    req.context.attempt = 3;
    let trace: BTreeMap<String, String> = [
        ("traceparent".to_owned(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
        ("tracestate".to_owned(), "rrq=check".to_owned()),
    ]
    .into();
    req.context.trace_context = Some(trace.clone());
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Success)?;
    let result = outcome.result.clone().unwrap_or(Value::Null);
    let want = json!({"job_id": req.job_id, "attempt": 3, "trace_context": trace});
    for key in ["job_id", "attempt", "trace_context"] {
        if result.get(key) != want.get(key) {
            return Err(anyhow!("expected result.{key} = {}, got {}", want[key], describe(&outcome)));
        }
    }
    Ok("job_id, attempt 3 and trace_context seen by the handler".to_owned())
}

async fn error(addr: SocketAddr) -> anyhow::Result<String> {
    let req = request(FAIL, json!({"message": "check failure 42"}));
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Error)?;
    if outcome.error_message() != Some("check failure 42") {
        return Err(anyhow!("expected error.message \"check failure 42\", got {}", describe(&outcome)));
    }
    Ok(describe(&outcome))
}

async fn retry(addr: SocketAddr) -> anyhow::Result<String> {
    let req = request(RETRY, json!({"delay": 1.5}));
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Retry)?;
    if outcome.retry_after_seconds.is_none_or(|d| (d - 1.5).abs() > 1e-6) {
        return Err(anyhow!("expected retry_after_seconds 1.5, got {:?}", outcome.retry_after_seconds));
    }
    Ok("retry_after_seconds 1.5".to_owned())
}

async fn not_found(addr: SocketAddr) -> anyhow::Result<String> {
    let req = request("rrq_check.no_such_handler", json!({}));
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Error)?;
    if outcome.error_kind() != Some(error_types::HANDLER_NOT_FOUND) {
        return Err(anyhow!("expected error.type \"handler_not_found\", got {}", describe(&outcome)));
    }
    Ok(describe(&outcome))
}

async fn version(addr: SocketAddr) -> anyhow::Result<String> {
    let mut req = request(ECHO, json!({}));
    req.protocol_version = "1".to_owned();
    let outcome = call(addr, &req).await?;
    expect_status(&outcome, OutcomeStatus::Error)?;
    Ok(describe(&outcome))
}

async fn concurrent(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = Conn::open(addr).await?;
    let requests: Vec<ExecutionRequest> =
        (0..CONCURRENT).map(|_| request(SLEEP, json!({"seconds": CONCURRENT_SLEEP}))).collect();
    let started = Instant::now();
    for r in &requests {
        conn.send(&Envelope::Request(r.clone())).await?;
    }
    let mut pending: BTreeMap<String, &ExecutionRequest> = requests.iter().map(|r| (r.request_id.clone(), r)).collect();
    while !pending.is_empty() {
        let left = CONCURRENT_LIMIT.saturating_sub(started.elapsed());
        let outcome = conn.response(left).await.with_context(|| {
            format!("{} of {CONCURRENT} answers missing after {:?}", pending.len(), started.elapsed())
        })?;
        let id = outcome.request_id.clone().unwrap_or_default();
        let Some(req) = pending.remove(&id) else {
            return Err(anyhow!("response for an unknown or repeated request_id {id:?}"));
        };
        correlated(req, &outcome)?;
        expect_status(&outcome, OutcomeStatus::Success)?;
    }
    Ok(format!("{CONCURRENT} answers in {:.2} s", started.elapsed().as_secs_f64()))
}

async fn cancel(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = Conn::open(addr).await?;
    let req = request(SLEEP, json!({"seconds": 30}));
    conn.send(&Envelope::Request(req.clone())).await?;
    // The cancel travels on its own connection, as the orchestrator sends
    // it, so it can overtake the request; a runner ignores a cancel for a
    // request it has not taken up yet (protocol section 5.4). Nothing tells
    // when the request was taken up, so the cancel is repeated until the
    // request is answered.
    let cancel = Envelope::Cancel(CancelRequest::new(req.job_id.clone(), Some(req.request_id.clone())));
    let started = Instant::now();
    let mut sent = 0;
    let outcome = loop {
        let mut other = Conn::open(addr).await?;
        other.send(&cancel).await?;
        drop(other);
        sent += 1;
        let left = ANSWER_WAIT.saturating_sub(started.elapsed());
        if let Ok(message) = tokio::time::timeout(CANCEL_REPEAT.min(left), conn.next()).await {
            break as_response(message?)?;
        }
        if started.elapsed() >= ANSWER_WAIT {
            return Err(anyhow!("the cancelled request was not answered within {ANSWER_WAIT:?} ({sent} cancels sent)"));
        }
    };
    correlated(&req, &outcome)?;
    expect_status(&outcome, OutcomeStatus::Error)?;
    if outcome.error_kind() != Some(error_types::CANCELLED) {
        return Err(anyhow!("expected error.type \"cancelled\", got {}", describe(&outcome)));
    }
    if outcome.error_message() != Some(CANCELLED_MESSAGE) {
        return Err(anyhow!("expected error.message {CANCELLED_MESSAGE:?}, got {}", describe(&outcome)));
    }
    let cancels = if sent == 1 { "1 cancel".to_owned() } else { format!("{sent} cancels") };
    Ok(format!("answered {:.2} s after the first cancel ({cancels} sent)", started.elapsed().as_secs_f64()))
}

async fn deadline(addr: SocketAddr) -> anyhow::Result<String> {
    let mut req = request(SLEEP, json!({"seconds": 30}));
    req.context.deadline = Some(rfc3339(SystemClock.now() + chrono::Duration::milliseconds(1_000)));
    let started = Instant::now();
    let outcome = call(addr, &req).await?;
    expect_timeout(&outcome)?;
    Ok(format!("timeout after {:.2} s", started.elapsed().as_secs_f64()))
}

/// `status = timeout` with `error.type = timeout`.
fn expect_timeout(outcome: &ExecutionOutcome) -> anyhow::Result<()> {
    expect_status(outcome, OutcomeStatus::Timeout)?;
    if outcome.error_kind() != Some(error_types::TIMEOUT) {
        return Err(anyhow!("expected error.type \"timeout\", got {}", describe(outcome)));
    }
    Ok(())
}

async fn deadline_passed(addr: SocketAddr) -> anyhow::Result<String> {
    // rrq_check.fail answers with its message if it runs at all.
    let message = "rrq_check.fail ran although the deadline had passed";
    let mut req = request(FAIL, json!({"message": message}));
    req.context.deadline = Some(rfc3339(SystemClock.now() - chrono::Duration::seconds(60)));
    let outcome = call(addr, &req).await?;
    if outcome.error_message() == Some(message) {
        return Err(anyhow!("the handler ran: {}", describe(&outcome)));
    }
    expect_timeout(&outcome)?;
    Ok(describe(&outcome))
}

async fn malformed(addr: SocketAddr) -> anyhow::Result<String> {
    let mut conn = Conn::open(addr).await?;
    let payload = b"{this is not json";
    let mut frame = (payload.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(payload);
    conn.send_raw(&frame).await?;
    match conn.recv(ANSWER_WAIT).await {
        Ok(None) => {}
        Ok(Some(msg)) => return Err(anyhow!("expected the connection to be closed, got a reply {msg:?}")),
        Err(e) => return Err(e.context("expected the runner to close the connection")),
    }
    let req = request(ECHO, json!({"after": "malformed"}));
    let outcome = call(addr, &req).await.context("the runner stopped serving after a malformed frame")?;
    expect_status(&outcome, OutcomeStatus::Success)?;
    Ok("connection closed; a new connection is served".to_owned())
}

async fn shutdown(child: &mut Child, grace: Duration) -> anyhow::Result<String> {
    let started = Instant::now();
    kill_group(child, libc::SIGTERM);
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => {
            let status = status.context("cannot wait for the runner")?;
            Ok(format!("exited after {:.2} s ({status})", started.elapsed().as_secs_f64()))
        }
        Err(_) => Err(anyhow!("still running {grace:?} after SIGTERM (the orchestrator would SIGKILL it)")),
    }
}
