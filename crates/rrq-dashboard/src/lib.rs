//! RRQ's web dashboard: a JSON API and a small embedded web UI over a
//! [`Store`].
//!
//! Place in the graph: beside `rrq-cli`, above `rrq-store`, `rrq-core`
//! (cron schedules), `rrq-producer` (replays) and `rrq-config`. It never
//! names a Redis key; the one module that reads or writes through the store
//! is [`data`], and it alone knows job field names.
//!
//! Main types: [`Options`] (listen address, token, read-only) and
//! [`Dashboard`] (built from the settings and a store; [`Dashboard::router`]
//! for tests, [`Dashboard::serve`] to listen).
//!
//! Invariants:
//! * a non-loopback address is refused without an access token
//!   ([`security::check_bind`]); tokens and CSRF secrets compare in constant
//!   time;
//! * every action is a `POST` with the CSRF header and a same-origin
//!   `Origin`; read-only mode refuses them all with 403;
//! * no request scans the keyspace: queues and workers are discovered by a
//!   background task and counts sampled every few seconds ([`sampler`]);
//!   pages are read from sorted sets and lists by offset;
//! * the Redis DSN is never kept, so no answer can carry its password.
//!
//! Tests: unit tests beside the code; `tests/dashboard` drives the router
//! against a private `redis-server`, and headless Chromium through
//! ChromeDriver against a served dashboard.

pub mod data;
pub mod sampler;
pub mod security;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use rrq_config::Settings;
use rrq_core::inspect::WorkerRow;
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{Clock as _, Store, SystemClock};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub use data::{DataError, Known};
pub use sampler::{CompletedCounter, Samples};
pub use security::{BindError, TOKEN_ENV};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const LOGIN_HTML: &str = include_str!("assets/login.html");

/// Most rows one page may ask for.
pub const MAX_PAGE: usize = 500;

/// How the dashboard is served.
#[derive(Clone, Debug)]
pub struct Options {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Access token; required on a non-loopback address.
    pub token: Option<String>,
    /// Hide and refuse every action.
    pub read_only: bool,
    /// How often counts are sampled for the overview and its chart (at
    /// least every 100 ms).
    pub sample_every: Duration,
    /// How often queues and workers are discovered (keyspace scans; at
    /// least every 100 ms).
    pub discover_every: Duration,
}

impl Options {
    /// Loopback defaults: sample every 2 s, discover every 10 s.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            token: None,
            read_only: false,
            sample_every: Duration::from_secs(2),
            discover_every: Duration::from_secs(10),
        }
    }
}

/// Why the dashboard could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The bind rule refused the address (see [`BindError`]).
    #[error(transparent)]
    Bind(#[from] BindError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug)]
struct AppState {
    store: Arc<dyn Store>,
    known: Arc<Known>,
    samples: Arc<Samples>,
    token: Option<String>,
    csrf: String,
    read_only: bool,
}

type Shared = Arc<AppState>;

/// A dashboard over one store.
#[derive(Clone)]
pub struct Dashboard {
    state: Shared,
    options: Options,
    completed: Option<CompletedCounter>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dashboard").field("options", &self.options).finish_non_exhaustive()
    }
}

impl Dashboard {
    /// Builds a dashboard. Fails when the bind rule refuses the options.
    pub fn new(settings: &Settings, store: Arc<dyn Store>, options: Options) -> Result<Self, BindError> {
        security::check_bind(options.listen, options.token.as_deref())?;
        // A zero interval would make a busy loop (and tokio refuses it).
        let sample_every = options.sample_every.max(Duration::from_millis(100));
        let samples = Arc::new(Samples::new(sample_every, Duration::from_secs(3600)));
        let state = Arc::new(AppState {
            store,
            known: Arc::new(Known::from_settings(settings)),
            samples,
            token: options.token.clone(),
            csrf: security::new_secret(),
            read_only: options.read_only,
        });
        Ok(Self { state, options, completed: None })
    }

    /// Adds a count of completed jobs to the chart, used while no live
    /// worker's health record carries counts (a worker serving the
    /// dashboard in-process passes its own count).
    pub fn with_completed_counter(mut self, counter: CompletedCounter) -> Self {
        self.completed = Some(counter);
        self
    }

    /// The CSRF secret pages embed (for tests and API clients).
    pub fn csrf_secret(&self) -> &str {
        &self.state.csrf
    }

    /// Discovers queues and workers and samples the counts once, now
    /// (the background task does this periodically).
    pub async fn refresh(&self) -> Result<(), rrq_store::StoreError> {
        let s = &self.state;
        sampler::discover_once(s.store.as_ref(), &s.samples).await?;
        sampler::sample_once(s.store.as_ref(), &s.known, &s.samples, self.completed.as_ref()).await
    }

    /// The HTTP routes, without a listener and without the background
    /// sampler (call [`Dashboard::refresh`] to fill the overview).
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/api/session", get(session))
            .route("/api/overview", get(overview))
            .route("/api/queue", get(queue_page))
            .route("/api/queue/pause", post(queue_pause))
            .route("/api/queue/resume", post(queue_resume))
            .route("/api/job", get(job_detail))
            .route("/api/job/retry", post(job_retry))
            .route("/api/job/cancel", post(job_cancel))
            .route("/api/job/replay", post(job_replay))
            .route("/api/dlq", get(dlq_page))
            .route("/api/dlq/requeue", post(dlq_requeue))
            .route("/api/dlq/purge", post(dlq_purge))
            .route("/api/workers", get(workers))
            .route("/api/cron", get(cron))
            .route("/", get(index))
            .route("/assets/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
            .route("/assets/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
            .layer(middleware::from_fn_with_state(self.state.clone(), guard));
        Router::new().route("/login", post(login)).merge(api).with_state(self.state.clone())
    }

    /// Binds the address, starts the sampler and serves until `stop`.
    /// Returns the bound address (useful with port 0) once listening.
    pub async fn serve(self, stop: CancellationToken) -> Result<SocketAddr, ServeError> {
        let addr = self.options.listen;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|source| ServeError::Listen { addr, source })?;
        let local = listener.local_addr().map_err(|source| ServeError::Listen { addr, source })?;
        let s = &self.state;
        tokio::spawn(sampler::run(
            s.store.clone(),
            s.known.clone(),
            s.samples.clone(),
            self.options.discover_every.max(Duration::from_millis(100)),
            self.completed.clone(),
            stop.child_token(),
        ));
        let app = self.router();
        info!(%local, read_only = self.options.read_only, "serving the dashboard");
        tokio::spawn(async move {
            let shutdown = stop.cancelled_owned();
            if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                tracing::warn!(error = %e, "dashboard server stopped");
            }
        });
        Ok(local)
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Token check on everything, CSRF and read-only checks on actions.
async fn guard(State(s): State<Shared>, req: Request, next: Next) -> Response {
    if s.token.is_none() && !security::host_is_loopback(req.headers()) {
        return error(
            StatusCode::FORBIDDEN,
            "without an access token the dashboard answers only requests to localhost or a loopback address",
        );
    }
    if let Some(token) = &s.token
        && !security::has_token(req.headers(), token)
    {
        if req.method() == Method::GET && !req.uri().path().starts_with("/api/") {
            return (StatusCode::UNAUTHORIZED, Html(LOGIN_HTML)).into_response();
        }
        return error(StatusCode::UNAUTHORIZED, "an access token is required (Authorization: Bearer <token>)");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        if s.read_only {
            return error(StatusCode::FORBIDDEN, "the dashboard is read-only");
        }
        if let Some(why) = security::csrf_refusal(req.headers(), &s.csrf) {
            return error(StatusCode::FORBIDDEN, why);
        }
    }
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    resp
}

/// Decodes one `application/x-www-form-urlencoded` value.
fn form_value(body: &str, name: &str) -> Option<String> {
    let raw = body.split('&').filter_map(|p| p.split_once('=')).find(|(k, _)| *k == name)?.1;
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `POST /login` (a plain form with `token`): sets the token cookie and
/// sends the browser to the overview.
async fn login(State(s): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let Some(token) = &s.token else { return error(StatusCode::NOT_FOUND, "no access token is configured") };
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok())
        && origin != "null"
    {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if origin.split_once("://").map(|(_, h)| h) != host {
            return error(StatusCode::FORBIDDEN, "the request's Origin is not this dashboard");
        }
    }
    let given = form_value(&body, "token").unwrap_or_default();
    if !security::secrets_equal(given.trim(), token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(LOGIN_HTML.replace("<!--ERROR-->", "<p class=\"error\">Wrong access token.</p>")),
        )
            .into_response();
    }
    let cookie = format!("{}={token}; Path=/; HttpOnly; SameSite=Strict", security::TOKEN_COOKIE);
    match HeaderValue::from_str(&cookie) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::SET_COOKIE, v), (header::LOCATION, HeaderValue::from_static("/"))])
            .into_response(),
        Err(_) => error(StatusCode::BAD_REQUEST, "the access token cannot be sent as a cookie"),
    }
}

async fn index(State(s): State<Shared>) -> Response {
    let page =
        INDEX_HTML.replace("{{CSRF}}", &s.csrf).replace("{{READ_ONLY}}", if s.read_only { "true" } else { "false" });
    ([(header::CACHE_CONTROL, "no-store")], Html(page)).into_response()
}

async fn session(State(s): State<Shared>) -> Response {
    Json(json!({"csrf": s.csrf, "read_only": s.read_only, "csrf_header": security::CSRF_HEADER})).into_response()
}

fn data_error(e: DataError) -> Response {
    match e {
        DataError::NotFound(id) => error(StatusCode::NOT_FOUND, format!("job '{id}' not found")),
        DataError::Conflict(m) => error(StatusCode::CONFLICT, m),
        DataError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
        DataError::Store(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("reading Redis failed: {e}")),
    }
}

fn store_error(e: rrq_store::StoreError) -> Response {
    data_error(DataError::Store(e))
}

async fn overview(State(s): State<Shared>) -> Response {
    let snapshot = s.samples.snapshot();
    Json(json!({
        "queues": snapshot.queues,
        "dlq": {"name": snapshot.dlq, "len": snapshot.failed},
        "active": snapshot.active,
        "workers_alive": snapshot.workers_alive,
        "sampled_at": snapshot.sampled_at,
        "discovered_at": snapshot.discovered_at,
        "error": snapshot.error,
        "series": {
            "interval_seconds": s.samples.interval.as_secs_f64(),
            "capacity": s.samples.capacity(),
            "points": s.samples.points(),
        },
    }))
    .into_response()
}

#[derive(Deserialize)]
struct PageQuery {
    name: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

fn page_bounds(offset: Option<usize>, limit: Option<usize>) -> (usize, usize) {
    // Redis ranges are signed 64-bit: keep offset + limit within them.
    let max_offset = usize::try_from(i64::MAX).unwrap_or(usize::MAX) - MAX_PAGE;
    (offset.unwrap_or(0).min(max_offset), limit.unwrap_or(50).clamp(1, MAX_PAGE))
}

/// A refusal before any work: status and message.
#[derive(Debug)]
struct Refusal(StatusCode, &'static str);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        error(self.0, self.1)
    }
}

fn queue_name(name: Option<&str>) -> Result<QueueName, Refusal> {
    name.and_then(QueueName::parse).ok_or(Refusal(StatusCode::BAD_REQUEST, "the `name` parameter names a queue"))
}

async fn queue_page(State(s): State<Shared>, Query(q): Query<PageQuery>) -> Response {
    let queue = match queue_name(q.name.as_deref()) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    let (offset, limit) = page_bounds(q.offset, q.limit);
    let active = data::active_by_queue(&s.samples.discovery().workers).get(queue.as_str()).copied().unwrap_or(0);
    match data::queue_page(s.store.as_ref(), &queue, offset, limit, SystemClock.now(), active).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct NameBody {
    name: String,
}

async fn set_paused(s: &AppState, name: &str, pause: bool) -> Response {
    let queue = match queue_name(Some(name)) {
        Ok(q) => q,
        Err(r) => return r.into_response(),
    };
    match data::set_paused(s.store.as_ref(), &queue, pause).await {
        Ok(changed) => Json(json!({"queue": queue.as_str(), "paused": pause, "changed": changed})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn queue_pause(State(s): State<Shared>, Json(b): Json<NameBody>) -> Response {
    set_paused(&s, &b.name, true).await
}

async fn queue_resume(State(s): State<Shared>, Json(b): Json<NameBody>) -> Response {
    set_paused(&s, &b.name, false).await
}

#[derive(Deserialize)]
struct IdQuery {
    id: String,
}

fn job_id(id: &str) -> Result<JobId, Refusal> {
    if id.trim().is_empty() {
        return Err(Refusal(StatusCode::BAD_REQUEST, "the `id` parameter names a job"));
    }
    Ok(JobId::new(id.trim()))
}

async fn job_detail(State(s): State<Shared>, Query(q): Query<IdQuery>) -> Response {
    let id = match job_id(&q.id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match data::job_detail(s.store.as_ref(), &s.known, &id).await {
        Ok(d) => Json(d).into_response(),
        Err(e) => data_error(e),
    }
}

async fn job_retry(State(s): State<Shared>, Json(b): Json<IdQuery>) -> Response {
    let id = match job_id(&b.id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match data::retry_job(s.store.as_ref(), &s.known, &id, SystemClock.now()).await {
        Ok(queue) => Json(json!({"job_id": id.as_str(), "queue": queue.as_str()})).into_response(),
        Err(e) => data_error(e),
    }
}

async fn job_cancel(State(s): State<Shared>, Json(b): Json<IdQuery>) -> Response {
    let id = match job_id(&b.id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match data::cancel_job(s.store.as_ref(), &id).await {
        Ok(result) => Json(json!({"job_id": id.as_str(), "result": result})).into_response(),
        Err(e) => data_error(e),
    }
}

async fn job_replay(State(s): State<Shared>, Json(b): Json<IdQuery>) -> Response {
    let id = match job_id(&b.id) {
        Ok(id) => id,
        Err(r) => return r.into_response(),
    };
    match data::replay_job(s.store.clone(), &s.known, &id).await {
        Ok((new_id, queue)) => {
            Json(json!({"job_id": id.as_str(), "new_job_id": new_id.as_str(), "queue": queue.as_str()})).into_response()
        }
        Err(e) => data_error(e),
    }
}

#[derive(Deserialize, Default)]
struct DlqQuery {
    dlq: Option<String>,
    queue: Option<String>,
    function: Option<String>,
    error: Option<String>,
    offset: Option<usize>,
    limit: Option<usize>,
}

impl DlqQuery {
    fn filter(&self) -> data::DlqFilter {
        data::DlqFilter { queue: self.queue.clone(), function: self.function.clone(), error: self.error.clone() }
    }
}

fn dlq_name(known: &Known, name: Option<&str>) -> DlqName {
    name.and_then(DlqName::parse).unwrap_or_else(|| known.default_dlq.clone())
}

async fn dlq_page(State(s): State<Shared>, Query(q): Query<DlqQuery>) -> Response {
    let dlq = dlq_name(&s.known, q.dlq.as_deref());
    let (offset, limit) = page_bounds(q.offset, q.limit);
    match data::dlq_page(s.store.as_ref(), &s.known, &dlq, &q.filter(), offset, limit).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
struct DlqAction {
    dlq: Option<String>,
    /// Exactly these ids (a selection, or one).
    ids: Option<Vec<String>>,
    /// Every entry matching the filter.
    #[serde(default)]
    all_matching: bool,
    #[serde(default)]
    filter: data::DlqFilter,
    /// Purge only: without it the answer only counts what would go.
    #[serde(default)]
    confirm: bool,
}

async fn dlq_targets(s: &AppState, dlq: &DlqName, b: &DlqAction) -> Result<Vec<(JobId, Option<QueueName>)>, Response> {
    match (&b.ids, b.all_matching) {
        (Some(ids), false) => {
            let ids: Vec<JobId> = ids.iter().filter(|i| !i.trim().is_empty()).map(|i| JobId::new(i.trim())).collect();
            data::queues_of(s.store.as_ref(), &ids).await.map_err(store_error)
        }
        (None, true) => data::dlq_matching(s.store.as_ref(), &s.known, dlq, &b.filter).await.map_err(store_error),
        _ => {
            Err(error(StatusCode::BAD_REQUEST, "give either `ids` or `all_matching: true` (with an optional `filter`)"))
        }
    }
}

async fn dlq_requeue(State(s): State<Shared>, Json(b): Json<DlqAction>) -> Response {
    let dlq = dlq_name(&s.known, b.dlq.as_deref());
    let targets = match dlq_targets(&s, &dlq, &b).await {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    match data::dlq_requeue(s.store.as_ref(), &s.known, &dlq, &targets, SystemClock.now()).await {
        Ok(n) => Json(json!({"dlq": dlq.as_str(), "requested": targets.len(), "requeued": n})).into_response(),
        Err(e) => store_error(e),
    }
}

async fn dlq_purge(State(s): State<Shared>, Json(b): Json<DlqAction>) -> Response {
    let dlq = dlq_name(&s.known, b.dlq.as_deref());
    let targets = match dlq_targets(&s, &dlq, &b).await {
        Ok(t) => t,
        Err(r) => return r.into_response(),
    };
    if !b.confirm {
        // The ids let a confirmation purge exactly what was shown, not what
        // matches by the time it is given.
        let ids: Vec<&str> = targets.iter().map(|(id, _)| id.as_str()).collect();
        return Json(json!({"dlq": dlq.as_str(), "would_purge": ids.len(), "ids": ids, "purged": 0})).into_response();
    }
    let ids: Vec<JobId> = targets.into_iter().map(|(id, _)| id).collect();
    match data::dlq_purge(s.store.as_ref(), &dlq, &ids).await {
        Ok(n) => Json(json!({"dlq": dlq.as_str(), "purged": n})).into_response(),
        Err(e) => store_error(e),
    }
}

/// The workers of the last discovery as `rrq worker list --json` prints
/// them (the same rows), ages measured now.
async fn workers(State(s): State<Shared>) -> Response {
    let d = s.samples.discovery();
    let now = SystemClock.now();
    // The TTLs were read at the discovery: what is left of them now.
    let elapsed = d.at.map_or(0, |at| u64::try_from((now - at).num_seconds()).unwrap_or(0));
    let rows: Vec<WorkerRow> = d
        .workers
        .iter()
        .map(|w| {
            let mut row = rrq_core::inspect::worker_row(w, now);
            row.ttl_seconds = row.ttl_seconds.map(|t| t.saturating_sub(elapsed));
            row
        })
        .collect();
    Json(json!({"workers": rows, "discovered_at": d.at})).into_response()
}

async fn cron(State(s): State<Shared>) -> Response {
    match data::cron(s.store.as_ref(), &s.known, SystemClock.now()).await {
        Ok(page) => Json(page).into_response(),
        Err(e) => store_error(e),
    }
}
