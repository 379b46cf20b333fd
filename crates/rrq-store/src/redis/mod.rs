//! [`RedisStore`]: the [`Store`] on Redis (or Valkey), in rrq 0.11.1's schema.
//!
//! Connections: one multiplexed client runs every command and script; a
//! small pool of dedicated connections serves blocking reads (`XREAD BLOCK`)
//! so they never delay other commands; a subscriber connection (opened on
//! first use) listens on the ready and cancel channels and, unless turned
//! off, on keyspace notifications of the queues (see `notify.rs`), so jobs
//! from any producer wake a worker at once. All of them reconnect with an
//! exponential backoff, and every command has a timeout.
//!
//! Writes that touch several keys are single Lua scripts (see `scripts.rs`).
//! Successes are recorded in batches: [`Store::complete`] hands its attempt
//! to a task that sends everything waiting as one script call (each attempt
//! still fenced on its own lease, with its own reply), so a busy worker
//! makes one call per batch of completions rather than one per job, and an
//! idle one waits for no one.
//! A client never re-sends a command after a lost reply
//! (`max_command_attempts = 1`), and the scripts are written so that a caller
//! re-running one after an error cannot apply it twice. A claim that fails on
//! the connection is asked once more with the same token; the repeat returns
//! the jobs a lost run took, so a dropped reply does not orphan them.

#[cfg(test)]
mod lint;
mod notify;
mod options;
mod scripts;
#[cfg(feature = "tls")]
mod tls;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fred::clients::{ExclusivePool, SubscriberClient};
use fred::prelude::*;
use fred::types::scripts::Script;
use rrq_protocol::{DlqName, JobId, QueueName};
use serde_json::Value as Json;
use tokio::sync::{OnceCell, mpsc, oneshot};

pub use self::options::{CA_FILE_ENV, ConnectOptions};
use crate::clock::{Clock, SystemClock, epoch_ms, format_timestamp};
use crate::error::{BoxError, StoreError, mask_dsn};
use crate::job::{Job, JobDefaults, JobParseError, JobStatus, NewJob};
use crate::keys;
use crate::shared::{self, Plan};
use crate::store::{
    CancelResult, ClaimBatch, ClaimRequest, Claimed, EnqueueMode, Enqueued, Fence, Lease, LeaseState, QueueInfo,
    ReadySignals, Recovery, Signal, Store, WorkerHealth, WorkerRecord,
};

/// How long [`RedisStore::connect`] waits for the first `PING` answer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Timeout of every ordinary command (blocking reads get their own).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Extra time a blocking read may take beyond its block time.
const BLOCK_MARGIN: Duration = Duration::from_secs(5);
/// Dedicated connections for blocking reads.
const BLOCKING_CONNECTIONS: usize = 4;
/// Jobs per script call in [`Store::enqueue_batch`]. One script over many
/// jobs measured 25-30 % faster than a pipeline of one script call per job;
/// small chunks with [`BATCH_IN_FLIGHT`] always in flight let the client
/// encode while Redis runs (batches of 1,000: 500-job chunks 77,000 jobs/s,
/// 200 about 88,000, 100 about 110,000), and keep each script short.
const BATCH_CHUNK: usize = 100;
/// Chunks of one [`Store::enqueue_batch`] call sent before the first answer
/// is awaited. After an error, chunks other than the failed one may have
/// been applied (as the failed one may have): the call's `Err` says nothing
/// about which jobs exist.
const BATCH_IN_FLIGHT: usize = 4;
/// Most attempts recorded by one completion script call: bounds the time
/// one call keeps Redis busy (about 10 commands per attempt).
const COMPLETE_BATCH: usize = 256;
/// Ids per script call in [`Store::dlq_purge`]: each is one `LREM` that
/// stops at its entry, so one call stays short even on a long DLQ.
const PURGE_CHUNK: usize = 100;
/// Ready signals buffered per subscriber before new ones are dropped.
const READY_BUFFER: usize = 256;
/// How long a job's events stream outlives its terminal event by default
/// (see [`RedisStore::with_events_ttl`]).
pub const DEFAULT_EVENTS_TTL: Duration = Duration::from_secs(60);
/// Keys asked for per `SCAN` step, and keys per inspection script call.
const SCAN_COUNT: usize = 500;

/// The [`Store`] on Redis. Cheap to clone: clones share the connections.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    /// Where claims quarantine broken jobs, and the queue of jobs without one.
    defaults: Arc<JobDefaults>,
    /// Whether the subscription uses keyspace notifications.
    keyspace: bool,
    /// Expiry of a job's events stream after its terminal event.
    events_ttl: Duration,
}

struct Inner {
    /// Commands and scripts.
    client: Client,
    /// Settings for the connections opened later.
    builder: Builder,
    /// Connections for blocking reads, opened on first use.
    blocking: OnceCell<ExclusivePool>,
    /// The ready-channel subscription, opened on first use.
    subscriber: OnceCell<SubscriberClient>,
    /// Which changes the subscription reports (shared with the task that
    /// re-enables keyspace notifications after a reconnect).
    signals: Arc<Mutex<ReadySignals>>,
    /// The database whose keyspace events are subscribed.
    db: u8,
    /// The DSN with its password masked, for errors.
    dsn: String,
    /// Successes waiting for the batching task (see [`complete_batches`]).
    completions: mpsc::UnboundedSender<Completion>,
}

/// One success for the batching task: the script's keys and arguments for
/// this attempt, and where its fence goes.
struct Completion {
    keys: [String; 4],
    args: [String; 7],
    reply: oneshot::Sender<Result<Fence, StoreError>>,
}

impl Drop for Inner {
    /// Closes the connections once the last handle is gone; otherwise their
    /// tasks would keep reconnecting for the rest of the process.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let client = self.client.clone();
        let blocking = self.blocking.take();
        let subscriber = self.subscriber.take();
        runtime.spawn(async move {
            let _ = client.quit().await;
            if let Some(pool) = blocking {
                let _ = pool.quit().await;
            }
            if let Some(sub) = subscriber {
                let _ = sub.quit().await;
            }
        });
    }
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore").field("dsn", &self.inner.dsn).finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to the server named by `dsn` and checks that it answers.
    ///
    /// Accepted forms: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` (TLS, only with the crate feature `tls`) and the
    /// `valkey://` / `valkeys://` spellings. Redis Cluster URLs are refused:
    /// the 0.11.1 key layout cannot span hash slots.
    ///
    /// TLS trusts the system's root certificates plus those in the PEM file
    /// named by `RRQ_REDIS_CA_FILE` ([`ConnectOptions::from_env`]); use
    /// [`RedisStore::connect_with`] to pass that file without the environment.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidDsn`] for a DSN that cannot be used,
    /// [`StoreError::Tls`] when TLS cannot be set up or the server's
    /// certificate is not trusted, and [`StoreError::Unavailable`] when the
    /// server does not answer `PING` within five seconds (wrong address,
    /// refused credentials, ...).
    pub async fn connect(dsn: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(dsn, ConnectOptions::from_env()).await
    }

    /// [`RedisStore::connect`] with explicit [`ConnectOptions`] instead of
    /// those of the environment.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`].
    pub async fn connect_with(dsn: &str, options: ConnectOptions) -> Result<RedisStore, StoreError> {
        let masked = mask_dsn(dsn);
        let config = parse_dsn(dsn, &masked, &options)?;
        let db = config.database.unwrap_or(0);
        let builder = builder(config);
        let client = builder
            .build()
            .map_err(|e| StoreError::InvalidDsn { dsn: masked.clone(), reason: e.details().to_owned() })?;
        let ready = async {
            client.init().await?;
            client.ping::<String>(None).await
        };
        let failure = match tokio::time::timeout(CONNECT_DEADLINE, ready).await {
            Ok(Ok(_)) => {
                let (completions, pending) = mpsc::unbounded_channel();
                // Ends when the last handle is dropped (the sender goes with `Inner`).
                tokio::spawn(complete_batches(client.clone(), masked.clone(), pending));
                return Ok(RedisStore {
                    inner: Arc::new(Inner {
                        client,
                        builder,
                        blocking: OnceCell::new(),
                        subscriber: OnceCell::new(),
                        signals: Arc::new(Mutex::new(ReadySignals::NotSubscribed)),
                        db,
                        dsn: masked,
                        completions,
                    }),
                    defaults: Arc::new(JobDefaults::default()),
                    keyspace: true,
                    events_ttl: DEFAULT_EVENTS_TTL,
                });
            }
            Ok(Err(e)) => connect_error(e, masked),
            Err(_) => StoreError::Unavailable {
                dsn: masked,
                source: format!("no answer to PING within {}s", CONNECT_DEADLINE.as_secs()).into(),
            },
        };
        // Stop the reconnect loop of the client we are giving up on, without
        // making the caller wait for a server that does not answer.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECT_DEADLINE, client.quit()).await;
        });
        Err(failure)
    }

    /// Sets the defaults used where a call has none of its own: the DLQ that
    /// [`Store::claim`] quarantines broken job keys into and the queue
    /// [`Store::cancel`] assumes for a job without `queue_name`. Both default
    /// to the reference's (`rrq:dlq:default`, `rrq:queue:default`).
    #[must_use]
    pub fn with_defaults(self, defaults: JobDefaults) -> Self {
        RedisStore { defaults: Arc::new(defaults), ..self }
    }

    /// Whether [`Store::subscribe_ready`] also listens to keyspace
    /// notifications of the queues (on by default; `[rrq]
    /// keyspace_notifications`). On, the first subscription adds `K` and `z`
    /// to the server's `notify-keyspace-events` (keeping the flags already
    /// set) so that jobs added by any producer are signalled; where the
    /// server refuses `CONFIG`, a warning says so and
    /// [`Store::ready_signals`] reports it. Set before the first subscription.
    #[must_use]
    pub fn with_keyspace_notifications(self, on: bool) -> Self {
        RedisStore { keyspace: on, ..self }
    }

    /// How long a job's events stream (`rrq:events:job:{id}`, only a wake-up
    /// for waiters, who start at `$`) is kept after its terminal event, at
    /// most as long as the job's result (`[rrq] job_events_ttl_seconds`,
    /// default [`DEFAULT_EVENTS_TTL`]; at least 1 ms).
    #[must_use]
    pub fn with_events_ttl(self, ttl: Duration) -> Self {
        RedisStore { events_ttl: ttl.max(Duration::from_millis(1)), ..self }
    }

    /// Closes every connection. Calls made afterwards fail.
    pub async fn close(&self) {
        let _ = self.inner.client.quit().await;
        if let Some(pool) = self.inner.blocking.get() {
            let _ = pool.quit().await;
        }
        if let Some(sub) = self.inner.subscriber.get() {
            let _ = sub.quit().await;
        }
    }

    fn error(&self, op: &'static str, e: Error) -> StoreError {
        classify(&self.inner.dsn, op, e)
    }

    /// Runs a script; `args` as fred takes them (strings, or [`Value`]s
    /// where static ones save an allocation each).
    async fn eval<V>(&self, op: &'static str, script: &Script, keys: Vec<String>, args: V) -> Result<Value, StoreError>
    where
        V: TryInto<fred::types::MultipleValues> + Send,
        V::Error: Into<fred::error::Error> + Send,
    {
        script.evalsha_with_reload::<Value, _, _>(&self.inner.client, keys, args).await.map_err(|e| self.error(op, e))
    }

    async fn blocking(&self) -> Result<&ExclusivePool, StoreError> {
        self.inner
            .blocking
            .get_or_try_init(|| async {
                let pool = self
                    .inner
                    .builder
                    .build_exclusive_pool(BLOCKING_CONNECTIONS)
                    .map_err(|e| self.error("connect", e))?;
                match tokio::time::timeout(CONNECT_DEADLINE, pool.init()).await {
                    Ok(Ok(_)) => Ok(pool),
                    Ok(Err(e)) => Err(self.error("connect", e)),
                    Err(_) => Err(self.unavailable("blocking connections did not open")),
                }
            })
            .await
    }

    async fn subscriber(&self) -> Result<&SubscriberClient, StoreError> {
        self.inner
            .subscriber
            .get_or_try_init(|| async {
                let sub = self.inner.builder.build_subscriber_client().map_err(|e| self.error("subscribe_ready", e))?;
                let opened = async {
                    sub.init().await?;
                    // A detached task that re-subscribes after every reconnect.
                    drop(sub.manage_subscriptions());
                    sub.subscribe(vec![keys::READY_CHANNEL, keys::CANCEL_CHANNEL]).await?;
                    if self.keyspace {
                        sub.psubscribe(notify::pattern(self.inner.db)).await?;
                    }
                    // fred sends (P)SUBSCRIBE without waiting for a reply: an
                    // answered PING on the same connection shows the server
                    // has processed them, so no signal sent from now on is lost.
                    sub.ping::<Value>(None).await.map(drop)
                };
                match tokio::time::timeout(CONNECT_DEADLINE, opened).await {
                    Ok(Ok(())) => {
                        self.watch_keyspace_config(&sub).await;
                        Ok(sub)
                    }
                    Ok(Err(e)) => Err(self.error("subscribe_ready", e)),
                    Err(_) => Err(self.unavailable("the ready-channel subscription did not open")),
                }
            })
            .await
    }

    /// Turns keyspace notifications on (now and after every reconnect of the
    /// subscriber, as a restarted server forgets `CONFIG SET`) and records
    /// which signals the subscription delivers.
    async fn watch_keyspace_config(&self, sub: &SubscriberClient) {
        let signals = self.inner.signals.clone();
        if !self.keyspace {
            *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ReadySignals::Partial {
                reason: format!("keyspace notifications are turned off (`[rrq] {} = false`)", notify::CONFIG_KEY),
            };
            return;
        }
        let state = notify::enable(&self.inner.client).await;
        *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        let (client, mut reconnects) = (self.inner.client.clone(), sub.reconnect_rx());
        tokio::spawn(async move {
            // Ends when the subscriber is closed (its sender goes with it).
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) = reconnects.recv().await {
                let state = notify::enable(&client).await;
                *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
            }
        });
    }

    fn unavailable(&self, what: &str) -> StoreError {
        StoreError::Unavailable { dsn: self.inner.dsn.clone(), source: what.to_owned().into() }
    }
}

/// A client error as a [`StoreError`]: connection trouble is `Unavailable`.
fn classify(dsn: &str, op: &'static str, e: Error) -> StoreError {
    match e.kind() {
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
            StoreError::Unavailable { dsn: dsn.to_owned(), source: Box::new(e) }
        }
        _ => StoreError::Command { op, source: Box::new(e) },
    }
}

/// Records successes in batches: waits for one, takes every other one
/// already waiting (up to [`COMPLETE_BATCH`]), runs one script call for all
/// of them and answers each. While a call is in flight new successes queue
/// up, so the batch grows with the load and a lone success goes at once.
async fn complete_batches(client: Client, dsn: String, mut pending: mpsc::UnboundedReceiver<Completion>) {
    const OP: &str = "complete";
    let mut batch: Vec<Completion> = Vec::with_capacity(COMPLETE_BATCH);
    while let Some(first) = pending.recv().await {
        batch.push(first);
        while batch.len() < COMPLETE_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let mut keys = Vec::with_capacity(2 + 4 * batch.len());
        let mut args = Vec::with_capacity(7 * batch.len());
        keys.extend([keys::LEASES.to_owned(), keys::UNIQUE_LOCK_PREFIX.to_owned()]);
        for c in &mut batch {
            keys.extend(c.keys.iter_mut().map(std::mem::take));
            args.extend(c.args.iter_mut().map(std::mem::take));
        }
        let reply = scripts::COMPLETE.evalsha_with_reload::<Value, _, _>(&client, keys, args).await;
        let codes = match reply {
            Ok(v) => array(OP, v).and_then(|codes| {
                if codes.len() == batch.len() {
                    Ok(codes)
                } else {
                    Err(protocol(OP, format!("{} codes for {} attempts", codes.len(), batch.len())))
                }
            }),
            Err(e) => Err(classify(&dsn, OP, e)),
        };
        match codes {
            Ok(codes) => {
                for (c, code) in batch.drain(..).zip(codes) {
                    let _ = c.reply.send(fence(OP, code));
                }
            }
            Err(e) => {
                // Every attempt of the batch gets the error (the call may or
                // may not have run; a retry of each is safe either way).
                let text = e.to_string();
                let unavailable = matches!(e, StoreError::Unavailable { .. });
                for c in batch.drain(..) {
                    let source: BoxError = text.clone().into();
                    let err = if unavailable {
                        StoreError::Unavailable { dsn: dsn.clone(), source }
                    } else {
                        StoreError::Command { op: OP, source }
                    };
                    let _ = c.reply.send(Err(err));
                }
            }
        }
    }
}

/// Parses a DSN into a client configuration, refusing what we cannot serve.
fn parse_dsn(dsn: &str, masked: &str, options: &ConnectOptions) -> Result<Config, StoreError> {
    let invalid = |reason: &str| StoreError::InvalidDsn { dsn: masked.to_owned(), reason: reason.to_owned() };
    let (scheme, rest) = dsn.split_once("://").ok_or_else(|| invalid("missing scheme"))?;
    let tls = match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => {
            if !cfg!(feature = "tls") {
                return Err(invalid("TLS needs rrq-store's `tls` feature"));
            }
            true
        }
        s if s.contains("cluster") => {
            return Err(invalid("Redis Cluster is not supported: the rrq 0.11.1 key layout spans hash slots"));
        }
        _ => return Err(invalid("the scheme must be redis:// or rediss://")),
    };
    // The client parses the plain form: TLS is set up below, not with the
    // client's default (system roots only, and an error on any unreadable
    // one). Its messages never contain the URL, so no password leaks.
    #[cfg_attr(not(feature = "tls"), expect(unused_mut))]
    let mut config = Config::from_url(&format!("redis://{rest}")).map_err(|e| invalid(e.details()))?;
    #[cfg(feature = "tls")]
    if tls {
        let tls =
            tls::config(options.ca_file()).map_err(|reason| StoreError::Tls { dsn: masked.to_owned(), reason })?;
        config.tls = Some(tls);
    }
    #[cfg(not(feature = "tls"))]
    let _ = (tls, options);
    Ok(config)
}

/// Why the first connection failed: a TLS handshake the client refused, or
/// an unreachable server.
fn connect_error(e: Error, dsn: String) -> StoreError {
    #[cfg(feature = "tls")]
    if let Some(reason) = tls::handshake_failure(&e) {
        return StoreError::Tls { dsn, reason };
    }
    StoreError::Unavailable { dsn, source: Box::new(e) }
}

fn builder(config: Config) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        // Reconnection is off unless a policy is set; retry forever, 100 ms to 2 s apart.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_DEADLINE;
            c.internal_command_timeout = CONNECT_DEADLINE;
            // A reply lost with the connection must surface as an error,
            // never as a silent second run of a script.
            c.max_command_attempts = 1;
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        });
    builder
}

// ---------------------------------------------------------------------------
// Reply decoding.

fn protocol(op: &'static str, detail: impl Into<String>) -> StoreError {
    StoreError::Protocol { op, detail: detail.into() }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b).into_owned()),
        other => other.as_string(),
    }
}

fn int(op: &'static str, v: &Value) -> Result<i64, StoreError> {
    v.as_i64().ok_or_else(|| protocol(op, format!("expected an integer, got {v:?}")))
}

fn array(op: &'static str, v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) => Ok(items),
        Value::Null => Ok(Vec::new()),
        other => Err(protocol(op, format!("expected an array, got {other:?}"))),
    }
}

/// Text that must round-trip exactly (job ids, key names): an error when
/// it is not UTF-8, never a lossy decoding that names something else.
fn strict_text(op: &'static str, v: &Value, what: &str) -> Result<String, StoreError> {
    match v {
        Value::Bytes(b) => String::from_utf8(b.to_vec())
            .map_err(|_| protocol(op, format!("{what} is not valid UTF-8 ({:?})", String::from_utf8_lossy(b)))),
        other => other.as_string().ok_or_else(|| protocol(op, format!("{what} is not text: {other:?}"))),
    }
}

/// A job id from a reply (see [`strict_text`]).
fn job_id(op: &'static str, v: &Value) -> Result<JobId, StoreError> {
    strict_text(op, v, "job id").map(JobId::new)
}

fn ids(op: &'static str, v: Value) -> Result<Vec<JobId>, StoreError> {
    array(op, v)?.iter().map(|i| job_id(op, i)).collect()
}

/// Hash fields from an `HGETALL` reply (a flat array, or a map in RESP3).
fn fields(op: &'static str, v: Value) -> Result<HashMap<String, String>, StoreError> {
    let pairs: Vec<(Value, Value)> = match v {
        Value::Map(map) => map.inner().into_iter().map(|(k, v)| (Value::from(k), v)).collect(),
        other => {
            let flat = array(op, other)?;
            if flat.len() % 2 != 0 {
                return Err(protocol(op, "hash reply has an odd number of items"));
            }
            let mut it = flat.into_iter();
            let mut out = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                out.push((k, v));
            }
            out
        }
    };
    pairs
        .into_iter()
        .map(|(k, v)| match (text(&k), text(&v)) {
            (Some(k), Some(v)) => Ok((k, v)),
            _ => Err(protocol(op, "hash field is not text")),
        })
        .collect()
}

fn fence(op: &'static str, v: Value) -> Result<Fence, StoreError> {
    match int(op, &v)? {
        1 => Ok(Fence::Applied),
        0 => Ok(Fence::Stale),
        n => Err(protocol(op, format!("unknown fence code {n}"))),
    }
}

/// `{status, id}` from an enqueue script.
fn enqueued(op: &'static str, v: Value) -> Result<Result<Enqueued, StoreError>, StoreError> {
    let reply = array(op, v)?;
    let (Some(status), Some(id)) = (reply.first(), reply.get(1)) else {
        return Err(protocol(op, "expected {status, id}"));
    };
    let id = job_id(op, id)?;
    Ok(match int(op, status)? {
        1 => Ok(Enqueued::Created(id)),
        0 => Ok(Enqueued::Existing(id)),
        2 => Ok(Enqueued::RateLimited),
        -1 => Err(StoreError::JobIdTaken(id)),
        n => return Err(protocol(op, format!("unknown enqueue status {n}"))),
    })
}

/// The fields of a new job, flattened for a script's arguments.
fn field_args(job: &NewJob, out: &mut Vec<String>) {
    for (name, value) in job.to_fields() {
        out.push(name.to_owned());
        out.push(value);
    }
}

/// Escapes glob characters so a prefix matches literally in `SCAN MATCH`.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A score reply as a time (scores are epoch milliseconds).
fn score_time(v: &Value) -> Option<DateTime<Utc>> {
    match v {
        Value::Double(f) => ms_to_time(*f),
        other => text(other).and_then(|s| s.parse::<f64>().ok()).and_then(ms_to_time),
    }
}

fn flag(b: bool) -> String {
    if b { "1" } else { "0" }.to_owned()
}

fn ms_to_time(ms: f64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms.floor() as i64)
}

/// The id of the first entry in an `XREAD` reply.
fn first_entry_id(v: Value) -> Option<String> {
    let streams: Vec<Value> = match v {
        Value::Map(map) => map.inner().into_values().collect(),
        Value::Array(items) => items
            .into_iter()
            .filter_map(|s| match s {
                Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                _ => None,
            })
            .collect(),
        _ => return None,
    };
    streams.into_iter().find_map(|entries| match entries {
        Value::Array(entries) => entries.into_iter().find_map(|e| match e {
            Value::Array(parts) => parts.first().and_then(text),
            _ => None,
        }),
        _ => None,
    })
}

impl RedisStore {
    async fn enqueue_one(&self, job: NewJob, plan: Plan) -> Result<Result<Enqueued, StoreError>, StoreError> {
        let ready_now = shared::is_due(job.scheduled_time, SystemClock.now());
        let mut keys = vec![keys::job(&job.id), keys::queue(&job.queue).to_owned()];
        let mut args = vec![job.id.as_str().to_owned(), epoch_ms(job.scheduled_time).to_string()];
        match plan {
            Plan::Standard | Plan::Idempotent { .. } => {
                keys.push(keys::JOB_PREFIX.to_owned());
                let ttl = match plan {
                    Plan::Idempotent { key, ttl } => {
                        keys.push(key);
                        ttl
                    }
                    _ => 0,
                };
                args.extend([ttl.to_string(), flag(ready_now), keys::READY_CHANNEL.to_owned()]);
                field_args(&job, &mut args);
                enqueued("enqueue", self.eval("enqueue", &scripts::ENQUEUE, keys, args).await?)
            }
            Plan::RateLimited { key, ttl } => {
                keys.push(key);
                args.extend([ttl.to_string(), flag(ready_now), keys::READY_CHANNEL.to_owned()]);
                field_args(&job, &mut args);
                enqueued("enqueue", self.eval("enqueue", &scripts::ENQUEUE_RATE_LIMITED, keys, args).await?)
            }
            Plan::Debounced { key, ttl } => {
                keys.extend([key, keys::JOB_PREFIX.to_owned(), QueueName::PREFIX.to_owned()]);
                args.extend([
                    ttl.to_string(),
                    flag(ready_now),
                    keys::READY_CHANNEL.to_owned(),
                    flag(!job.trace_context.is_empty()),
                    flag(!job.correlation_context.is_empty()),
                ]);
                field_args(&job, &mut args);
                enqueued("enqueue", self.eval("enqueue", &scripts::ENQUEUE_DEBOUNCED, keys, args).await?)
            }
            Plan::UniqueLock { key, unique, ttl } => {
                let mut job = job;
                job.unique_key = Some(unique);
                keys.push(key);
                args.extend([
                    ttl.to_string(),
                    flag(ready_now),
                    keys::READY_CHANNEL.to_owned(),
                    epoch_ms(job.enqueue_time).to_string(),
                ]);
                field_args(&job, &mut args);
                enqueued("enqueue", self.eval("enqueue", &scripts::ENQUEUE_UNIQUE, keys, args).await?)
            }
        }
    }

    async fn enqueue_chunk(&self, jobs: &[NewJob]) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        const OP: &str = "enqueue_batch";
        let now = SystemClock.now();
        let mut keys = Vec::with_capacity(jobs.len() * 2);
        // Values rather than strings: the field names go out without an
        // allocation each.
        let mut args: Vec<Value> = Vec::with_capacity(1 + jobs.len() * 30);
        args.push(Value::from_static_str(keys::READY_CHANNEL));
        for job in jobs {
            keys.push(keys::job(&job.id));
            keys.push(keys::queue(&job.queue).to_owned());
            let fields = job.to_fields();
            args.push(job.id.as_str().into());
            args.push(epoch_ms(job.scheduled_time).into());
            args.push(Value::from_static_str(if shared::is_due(job.scheduled_time, now) { "1" } else { "0" }));
            args.push((fields.len() as i64 * 2).into());
            for (name, value) in fields {
                args.push(Value::from_static_str(name));
                args.push(value.into());
            }
        }
        let statuses = array(OP, self.eval(OP, &scripts::ENQUEUE_BATCH, keys, args).await?)?;
        if statuses.len() != jobs.len() {
            return Err(protocol(OP, format!("{} statuses for {} jobs", statuses.len(), jobs.len())));
        }
        jobs.iter()
            .zip(statuses)
            .map(|(job, s)| match int(OP, &s)? {
                1 => Ok(Ok(Enqueued::Created(job.id.clone()))),
                -1 => Ok(Err(StoreError::JobIdTaken(job.id.clone()))),
                n => Err(protocol(OP, format!("unknown enqueue status {n}"))),
            })
            .collect()
    }

    /// Runs one plain command.
    async fn command(&self, op: &'static str, name: &'static str, args: Vec<String>) -> Result<Value, StoreError> {
        let cmd = fred::types::CustomCommand::new_static(name, fred::types::ClusterHash::FirstKey, false);
        self.inner.client.custom(cmd, args).await.map_err(|e| self.error(op, e))
    }

    /// Keys matching `prefix*` of one Redis type, each once; stops early
    /// once `limit` keys were found (`0` = no limit).
    async fn scan(&self, op: &'static str, prefix: &str, kind: &str, limit: usize) -> Result<Vec<String>, StoreError> {
        let pattern = format!("{}*", glob_escape(prefix));
        let mut cursor = "0".to_owned();
        let mut found = std::collections::BTreeSet::new();
        loop {
            let args = vec![
                cursor,
                "MATCH".to_owned(),
                pattern.clone(),
                "COUNT".to_owned(),
                SCAN_COUNT.to_string(),
                "TYPE".to_owned(),
                kind.to_owned(),
            ];
            let mut reply = array(op, self.command(op, "SCAN", args).await?)?.into_iter();
            let (Some(next), Some(keys)) = (reply.next(), reply.next()) else {
                return Err(protocol(op, "expected {cursor, keys}"));
            };
            cursor = text(&next).ok_or_else(|| protocol(op, "cursor is not text"))?;
            for key in array(op, keys)? {
                found.insert(strict_text(op, &key, "key")?);
            }
            if cursor == "0" || (limit > 0 && found.len() >= limit) {
                break;
            }
        }
        let mut keys: Vec<String> = found.into_iter().collect();
        if limit > 0 {
            keys.truncate(limit);
        }
        Ok(keys)
    }

    /// Keys and arguments shared by the fenced scripts: job, lock, active
    /// set, lease index; job id, worker id, token.
    fn fenced(lease: &Lease) -> (Vec<String>, Vec<String>) {
        (
            vec![
                keys::job(&lease.job_id),
                keys::lock(&lease.job_id),
                keys::active(&lease.worker_id),
                keys::LEASES.to_owned(),
            ],
            vec![lease.job_id.as_str().to_owned(), lease.worker_id.clone(), lease.token.clone()],
        )
    }
}

/// How many times a claim whose reply was lost is asked for again (with
/// backoff from 50 ms, about 2.5 s in all: far inside the lease).
const CLAIM_REPLAYS: usize = 6;

#[async_trait]
impl Store for RedisStore {
    async fn enqueue(&self, job: NewJob, mode: EnqueueMode) -> Result<Enqueued, StoreError> {
        let plan = shared::plan(&job, &mode)?;
        self.enqueue_one(job, plan).await?
    }

    async fn enqueue_batch(&self, jobs: Vec<NewJob>) -> Result<Vec<Result<Enqueued, StoreError>>, StoreError> {
        for job in &jobs {
            shared::plan(job, &EnqueueMode::Standard)?;
        }
        // A few chunks always in flight: the client encodes the next while
        // Redis runs the previous (the connection pipelines them in order).
        use futures::StreamExt as _;
        let mut chunks = jobs.chunks(BATCH_CHUNK);
        let mut in_flight = futures::stream::FuturesOrdered::new();
        let mut out = Vec::with_capacity(jobs.len());
        loop {
            while in_flight.len() < BATCH_IN_FLIGHT {
                let Some(chunk) = chunks.next() else { break };
                in_flight.push_back(self.enqueue_chunk(chunk));
            }
            let Some(reply) = in_flight.next().await else { break };
            out.extend(reply?);
        }
        Ok(out)
    }

    async fn job(&self, id: &JobId) -> Result<Option<Result<Job, JobParseError>>, StoreError> {
        let key = keys::job(id);
        match self.inner.client.hgetall::<Value, _>(&key).await {
            Ok(v) => {
                let f = fields("job", v)?;
                Ok(if f.is_empty() { None } else { Some(Job::from_fields(id.as_str(), &f)) })
            }
            Err(e) if e.details().starts_with("WRONGTYPE") => {
                let found: String = self.inner.client.r#type(&key).await.map_err(|e| self.error("job", e))?;
                Ok(Some(Err(JobParseError::WrongType { found })))
            }
            Err(e) => Err(self.error("job", e)),
        }
    }

    async fn job_fields(&self, id: &JobId) -> Result<Option<BTreeMap<String, String>>, StoreError> {
        let v = self.inner.client.hgetall::<Value, _>(keys::job(id)).await.map_err(|e| self.error("job_fields", e))?;
        let f = fields("job_fields", v)?;
        Ok(if f.is_empty() { None } else { Some(f.into_iter().collect()) })
    }

    async fn job_fields_batch(&self, ids: &[JobId]) -> Result<Vec<Option<BTreeMap<String, String>>>, StoreError> {
        const OP: &str = "job_fields_batch";
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(SCAN_COUNT) {
            let keys = chunk.iter().map(keys::job).collect();
            let reply = array(OP, self.eval(OP, &scripts::INSPECT_JOBS, keys, Vec::<String>::new()).await?)?;
            if reply.len() != chunk.len() {
                return Err(protocol(OP, format!("{} hashes for {} ids", reply.len(), chunk.len())));
            }
            for hash in reply {
                let f = fields(OP, hash)?;
                out.push(if f.is_empty() { None } else { Some(f.into_iter().collect()) });
            }
        }
        Ok(out)
    }

    async fn wait_job_event(
        &self,
        id: &JobId,
        after: Option<String>,
        timeout: Duration,
    ) -> Result<Option<String>, StoreError> {
        let pool = self.blocking().await?;
        let client = pool.acquire().await;
        let after = after.unwrap_or_else(|| "$".to_owned());
        let block_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // BLOCK 0 would wait forever: a zero timeout is a plain read.
        let block = (!timeout.is_zero()).then(|| block_ms.max(1));
        let options = Options { timeout: Some(timeout + BLOCK_MARGIN), max_attempts: Some(1), ..Default::default() };
        match client.with_options(&options).xread::<Value, _, _>(Some(1), block, keys::events(id), after).await {
            Ok(v) => Ok(first_entry_id(v)),
            // A block that ends without data may surface as a timeout.
            Err(e) if *e.kind() == ErrorKind::Timeout => Ok(None),
            Err(e) => Err(self.error("wait_job_event", e)),
        }
    }

    async fn claim(&self, req: ClaimRequest) -> Result<ClaimBatch, StoreError> {
        const OP: &str = "claim";
        let token = format_timestamp(req.now);
        let now_ms = epoch_ms(req.now);
        let ttl_ms = shared::lease_ms(req.lease_ttl);
        let keys = vec![
            keys::queue(&req.queue).to_owned(),
            keys::active(&req.worker_id),
            keys::LEASES.to_owned(),
            keys::PAUSED.to_owned(),
            keys::dlq(&self.defaults.dlq).to_owned(),
            keys::JOB_PREFIX.to_owned(),
            keys::LOCK_PREFIX.to_owned(),
            keys::QUARANTINE_PREFIX.to_owned(),
            keys::EVENTS_PREFIX.to_owned(),
            QueueName::PREFIX.to_owned(),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
            DlqName::PREFIX.to_owned(),
        ];
        let args = vec![
            req.worker_id.clone(),
            now_ms.to_string(),
            req.max.to_string(),
            ttl_ms.to_string(),
            token.clone(),
            req.now.timestamp().to_string(),
            now_ms.saturating_add(ttl_ms).to_string(),
            token.clone(),
            flag(false),
            req.max_payload_bytes.to_string(),
        ];
        let first = scripts::CLAIM.evalsha_with_reload::<Value, _, _>(&self.inner.client, keys.clone(), args.clone());
        let reply = match first.await {
            Ok(reply) => reply,
            // The connection broke with the script sent: it may have run and
            // only its reply been lost. Asking again with the same token
            // returns what that run took; otherwise its jobs would sit locked
            // until their lease expired and recovery re-queued them with an
            // attempt counted. (A timeout is not repeated: during an outage
            // that would only double the wait.)
            // The repeat is tried a few times, with backoff, while the
            // connection is still coming back.
            Err(e) if matches!(e.kind(), ErrorKind::IO | ErrorKind::Canceled) => {
                let mut args = args;
                args[8] = flag(true);
                let (mut last, mut delay, mut replayed) = (e, std::time::Duration::from_millis(50), None);
                for _ in 0..CLAIM_REPLAYS {
                    tracing::debug!(error = %last, "claim reply lost with the connection; asking again with the same token");
                    tokio::time::sleep(delay).await;
                    let again = scripts::CLAIM.evalsha_with_reload::<Value, _, _>(
                        &self.inner.client,
                        keys.clone(),
                        args.clone(),
                    );
                    match again.await {
                        Ok(reply) => {
                            replayed = Some(reply);
                            break;
                        }
                        Err(e) if matches!(e.kind(), ErrorKind::IO | ErrorKind::Canceled) => {
                            last = e;
                            delay = (delay * 2).min(std::time::Duration::from_secs(1));
                        }
                        Err(e) => return Err(self.error(OP, e)),
                    }
                }
                match replayed {
                    Some(reply) => reply,
                    None => return Err(self.error(OP, last)),
                }
            }
            Err(e) => return Err(self.error(OP, e)),
        };
        let reply = array(OP, reply)?;
        let mut it = reply.into_iter();
        let (Some(paused), Some(claimed), Some(dropped), Some(head)) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(protocol(OP, "expected {paused, claimed, dropped, head}"));
        };
        let mut jobs = Vec::new();
        let mut claimed = array(OP, claimed)?.into_iter();
        while let (Some(id), Some(hash)) = (claimed.next(), claimed.next()) {
            let id = job_id(OP, &id)?;
            let job = Job::from_fields(id.as_str(), &fields(OP, hash)?);
            let lease =
                Lease { job_id: id, worker_id: req.worker_id.clone(), token: token.clone(), queue: req.queue.clone() };
            jobs.push(Claimed { lease, job });
        }
        let next_ready = score_time(&head);
        Ok(ClaimBatch { jobs, dropped: ids(OP, dropped)?, next_ready, paused: int(OP, &paused)? == 1 })
    }

    async fn renew(&self, leases: &[Lease], ttl: Duration) -> Result<Vec<LeaseState>, StoreError> {
        const OP: &str = "renew";
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ttl_ms = shared::lease_ms(ttl);
        let mut keys = vec![keys::LEASES.to_owned()];
        let mut args = vec![ttl_ms.to_string()];
        for lease in leases {
            keys.extend([keys::job(&lease.job_id), keys::lock(&lease.job_id)]);
            args.extend([lease.job_id.as_str().to_owned(), lease.worker_id.clone(), lease.token.clone()]);
        }
        let codes = array(OP, self.eval(OP, &scripts::RENEW, keys, args).await?)?;
        if codes.len() != leases.len() {
            return Err(protocol(OP, format!("{} states for {} leases", codes.len(), leases.len())));
        }
        codes
            .iter()
            .map(|c| match int(OP, c)? {
                1 => Ok(LeaseState::Held),
                2 => Ok(LeaseState::CancelRequested),
                0 => Ok(LeaseState::Lost),
                n => Err(protocol(OP, format!("unknown lease state {n}"))),
            })
            .collect()
    }

    async fn complete(
        &self,
        lease: &Lease,
        result: &Json,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (reply, fenced) = oneshot::channel();
        let completion = Completion {
            keys: [
                keys::job(&lease.job_id),
                keys::lock(&lease.job_id),
                keys::active(&lease.worker_id),
                keys::events(&lease.job_id),
            ],
            args: [
                lease.job_id.as_str().to_owned(),
                lease.worker_id.clone(),
                lease.token.clone(),
                shared::result_json(result),
                format_timestamp(now),
                defaults.result_ttl_seconds.to_string(),
                self.events_ttl.as_millis().max(1).to_string(),
            ],
            reply,
        };
        let closed = || self.unavailable("the completion task has stopped");
        self.inner.completions.send(completion).map_err(|_| closed())?;
        fenced.await.map_err(|_| closed())?
    }

    async fn retry(
        &self,
        lease: &Lease,
        error: &str,
        ready_at: DateTime<Utc>,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (mut keys, mut args) = Self::fenced(lease);
        keys.extend([
            keys::events(&lease.job_id),
            keys::queue(&defaults.queue).to_owned(),
            QueueName::PREFIX.to_owned(),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
        ]);
        args.extend([
            error.to_owned(),
            epoch_ms(ready_at).to_string(),
            shared::retry_time_text(ready_at),
            epoch_ms(now).to_string(),
            keys::READY_CHANNEL.to_owned(),
        ]);
        fence("retry", self.eval("retry", &scripts::RETRY, keys, args).await?)
    }

    async fn dead_letter(
        &self,
        lease: &Lease,
        reason: &str,
        count_attempt: bool,
        now: DateTime<Utc>,
        defaults: &JobDefaults,
    ) -> Result<Fence, StoreError> {
        let (mut keys, mut args) = Self::fenced(lease);
        keys.extend([
            keys::events(&lease.job_id),
            keys::dlq(&defaults.dlq).to_owned(),
            DlqName::PREFIX.to_owned(),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
        ]);
        args.extend([reason.to_owned(), flag(count_attempt), format_timestamp(now)]);
        fence("dead_letter", self.eval("dead_letter", &scripts::DEAD_LETTER, keys, args).await?)
    }

    async fn release(&self, lease: &Lease, reason: Option<&str>, now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut keys, mut args) = Self::fenced(lease);
        keys.extend([
            keys::queue(&lease.queue).to_owned(),
            keys::events(&lease.job_id),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
        ]);
        args.extend([
            flag(reason.is_some()),
            reason.unwrap_or_default().to_owned(),
            epoch_ms(now).to_string(),
            keys::READY_CHANNEL.to_owned(),
        ]);
        fence("release", self.eval("release", &scripts::RELEASE, keys, args).await?)
    }

    async fn finish_cancelled(&self, lease: &Lease, _now: DateTime<Utc>) -> Result<Fence, StoreError> {
        let (mut keys, args) = Self::fenced(lease);
        keys.extend([keys::events(&lease.job_id), keys::UNIQUE_LOCK_PREFIX.to_owned()]);
        fence("finish_cancelled", self.eval("finish_cancelled", &scripts::FINISH_CANCELLED, keys, args).await?)
    }

    async fn heartbeat(&self, health: &WorkerHealth, ttl: Duration) -> Result<(), StoreError> {
        let json = shared::health_json(health)?;
        let ttl = i64::try_from(shared::health_ttl(ttl)).unwrap_or(i64::MAX);
        self.inner
            .client
            .set::<(), _, _>(keys::health(&health.worker_id), json, Some(Expiration::EX(ttl)), None, false)
            .await
            .map_err(|e| self.error("heartbeat", e))
    }

    async fn recover(&self, now: DateTime<Utc>, limit: usize, defaults: &JobDefaults) -> Result<Recovery, StoreError> {
        const OP: &str = "recover";
        let keys = vec![
            keys::LEASES.to_owned(),
            keys::queue(&defaults.queue).to_owned(),
            keys::dlq(&defaults.dlq).to_owned(),
            keys::JOB_PREFIX.to_owned(),
            keys::LOCK_PREFIX.to_owned(),
            keys::ACTIVE_PREFIX.to_owned(),
            keys::EVENTS_PREFIX.to_owned(),
            QueueName::PREFIX.to_owned(),
            DlqName::PREFIX.to_owned(),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
        ];
        let args = vec![
            epoch_ms(now).to_string(),
            limit.to_string(),
            format_timestamp(now),
            defaults.max_retries.to_string(),
            keys::READY_CHANNEL.to_owned(),
        ];
        let reply = array(OP, self.eval(OP, &scripts::RECOVER, keys, args).await?)?;
        let mut it = reply.into_iter();
        let (Some(requeued), Some(dead), Some(cancelled)) = (it.next(), it.next(), it.next()) else {
            return Err(protocol(OP, "expected {requeued, dead_lettered, cancelled}"));
        };
        Ok(Recovery { requeued: ids(OP, requeued)?, dead_lettered: ids(OP, dead)?, cancelled: ids(OP, cancelled)? })
    }

    async fn subscribe_ready(&self) -> Result<mpsc::Receiver<Signal>, StoreError> {
        let sub = self.subscriber().await?;
        let (mut messages, mut keyspace) = (sub.message_rx(), sub.keyspace_event_rx());
        let db = self.inner.db;
        let (tx, rx) = mpsc::channel(READY_BUFFER);
        tokio::spawn(async move {
            loop {
                let signal = tokio::select! {
                    _ = tx.closed() => break,
                    msg = messages.recv() => match msg {
                        Ok(msg) => notify::signal(&msg.channel, &msg.value),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    event = keyspace.recv() => match event {
                        Ok(event) => notify::keyspace_signal(&event, db),
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => None,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                };
                // Best effort: a full buffer drops the signal.
                if let Some(signal) = signal
                    && let Err(mpsc::error::TrySendError::Closed(_)) = tx.try_send(signal)
                {
                    break;
                }
            }
        });
        Ok(rx)
    }

    fn ready_signals(&self) -> ReadySignals {
        self.inner.signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    async fn pause(&self, queue: &QueueName) -> Result<bool, StoreError> {
        let added: i64 =
            self.inner.client.sadd(keys::PAUSED, keys::queue(queue)).await.map_err(|e| self.error("pause", e))?;
        Ok(added > 0)
    }

    async fn resume(&self, queue: &QueueName) -> Result<bool, StoreError> {
        let removed: i64 =
            self.inner.client.srem(keys::PAUSED, keys::queue(queue)).await.map_err(|e| self.error("resume", e))?;
        // Resuming adds nothing to the queue, so no keyspace event tells
        // workers to claim its waiting jobs: say so on the ready channel.
        self.inner
            .client
            .publish::<(), _, _>(keys::READY_CHANNEL, keys::queue(queue))
            .await
            .map_err(|e| self.error("resume", e))?;
        Ok(removed > 0)
    }

    async fn paused(&self) -> Result<Vec<QueueName>, StoreError> {
        let mut names: Vec<String> =
            self.inner.client.smembers(keys::PAUSED).await.map_err(|e| self.error("paused", e))?;
        names.sort();
        Ok(names.iter().map(|n| QueueName::new(n)).collect())
    }

    async fn cancel(&self, id: &JobId, _now: DateTime<Utc>) -> Result<CancelResult, StoreError> {
        const OP: &str = "cancel";
        let keys = vec![
            keys::job(id),
            keys::queue(&self.defaults.queue).to_owned(),
            keys::events(id),
            QueueName::PREFIX.to_owned(),
            keys::UNIQUE_LOCK_PREFIX.to_owned(),
        ];
        let args = vec![id.as_str().to_owned(), keys::CANCEL_CHANNEL.to_owned()];
        let reply = array(OP, self.eval(OP, &scripts::CANCEL, keys, args).await?)?;
        let code = int(OP, reply.first().ok_or_else(|| protocol(OP, "empty reply"))?)?;
        let status = reply.get(1).and_then(text).and_then(|s| JobStatus::parse(&s));
        match code {
            1 => Ok(CancelResult::Cancelled),
            2 => Ok(CancelResult::CancelRequested),
            0 => Ok(CancelResult::NotFound),
            3 => Ok(CancelResult::NotCancellable(status)),
            n => Err(protocol(OP, format!("unknown cancel code {n}"))),
        }
    }

    async fn queue_len(&self, queue: &QueueName) -> Result<u64, StoreError> {
        self.inner.client.zcard(keys::queue(queue)).await.map_err(|e| self.error("queue_len", e))
    }

    async fn dlq_ids(&self, dlq: &DlqName, offset: usize, limit: usize) -> Result<Vec<JobId>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = start.saturating_add(i64::try_from(limit).unwrap_or(i64::MAX)).saturating_sub(1);
        let listed: Value =
            self.inner.client.lrange(keys::dlq(dlq), start, stop).await.map_err(|e| self.error("dlq_ids", e))?;
        ids("dlq_ids", listed)
    }

    async fn dlq_requeue(
        &self,
        dlq: &DlqName,
        id: &JobId,
        target: &QueueName,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        const OP: &str = "dlq_requeue";
        let keys = vec![keys::dlq(dlq).to_owned(), keys::queue(target).to_owned(), keys::job(id)];
        let args = vec![
            id.as_str().to_owned(),
            epoch_ms(now).to_string(),
            format_timestamp(now),
            keys::READY_CHANNEL.to_owned(),
        ];
        Ok(int(OP, &self.eval(OP, &scripts::DLQ_REQUEUE, keys, args).await?)? == 1)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>, StoreError> {
        const OP: &str = "queues";
        let keys = self.scan(OP, QueueName::PREFIX, "zset", 0).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_COUNT) {
            let reply =
                array(OP, self.eval(OP, &scripts::INSPECT_QUEUES, chunk.to_vec(), Vec::<String>::new()).await?)?;
            for (key, info) in chunk.iter().zip(reply) {
                let info = array(OP, info)?;
                let len = u64::try_from(int(OP, info.first().ok_or_else(|| protocol(OP, "empty queue info"))?)?)
                    .unwrap_or_default();
                if len > 0 {
                    out.push(QueueInfo {
                        queue: QueueName::new(key),
                        len,
                        oldest: info.get(1).and_then(score_time),
                        newest: info.get(2).and_then(score_time),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.queue.cmp(&b.queue));
        Ok(out)
    }

    async fn queue_entries(
        &self,
        queue: &QueueName,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(JobId, DateTime<Utc>)>, StoreError> {
        const OP: &str = "queue_entries";
        if limit == 0 {
            return Ok(Vec::new());
        }
        let stop = offset.saturating_add(limit) - 1;
        let args = vec![keys::queue(queue).to_owned(), offset.to_string(), stop.to_string(), "WITHSCORES".to_owned()];
        let flat = array(OP, self.command(OP, "ZRANGE", args).await?)?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut it = flat.into_iter();
        while let Some(member) = it.next() {
            // RESP3 answers [member, score] pairs, RESP2 a flat list.
            let (member, score) = match member {
                Value::Array(mut pair) if pair.len() == 2 => {
                    let score = pair.pop().unwrap_or(Value::Null);
                    (pair.pop().unwrap_or(Value::Null), score)
                }
                m => (m, it.next().unwrap_or(Value::Null)),
            };
            let id = job_id(OP, &member)?;
            let at = score_time(&score).ok_or_else(|| protocol(OP, format!("bad score {score:?}")))?;
            out.push((id, at));
        }
        Ok(out)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>, StoreError> {
        const OP: &str = "workers";
        let keys = self.scan(OP, keys::HEALTH_PREFIX, "string", 0).await?;
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(SCAN_COUNT) {
            let reply =
                array(OP, self.eval(OP, &scripts::INSPECT_WORKERS, chunk.to_vec(), Vec::<String>::new()).await?)?;
            for (key, record) in chunk.iter().zip(reply) {
                let record = array(OP, record)?;
                let pttl = int(OP, record.get(1).ok_or_else(|| protocol(OP, "missing PTTL"))?)?;
                if pttl == -2 {
                    continue; // expired between the scan and the read
                }
                let health = record.first().and_then(text).and_then(|s| serde_json::from_str::<Json>(&s).ok());
                out.push(WorkerRecord {
                    worker_id: key[keys::HEALTH_PREFIX.len()..].to_owned(),
                    health,
                    ttl: u64::try_from(pttl).ok().map(Duration::from_millis),
                });
            }
        }
        out.sort_by(|a, b| a.worker_id.cmp(&b.worker_id));
        Ok(out)
    }

    async fn job_ids(&self, limit: usize) -> Result<Vec<JobId>, StoreError> {
        let keys = self.scan("job_ids", keys::JOB_PREFIX, "hash", limit).await?;
        Ok(keys.into_iter().map(|k| JobId::new(&k[keys::JOB_PREFIX.len()..])).collect())
    }

    async fn dlq_purge(&self, dlq: &DlqName, ids: &[JobId]) -> Result<u64, StoreError> {
        const OP: &str = "dlq_purge";
        let mut taken = 0u64;
        for chunk in ids.chunks(PURGE_CHUNK) {
            let mut keys = Vec::with_capacity(1 + 2 * chunk.len());
            keys.push(keys::dlq(dlq).to_owned());
            keys.extend(chunk.iter().flat_map(|id| [keys::job(id), keys::events(id)]));
            let args: Vec<String> = chunk.iter().map(|id| id.as_str().to_owned()).collect();
            let n = int(OP, &self.eval(OP, &scripts::DLQ_PURGE, keys, args).await?)?;
            taken += u64::try_from(n).map_err(|_| protocol(OP, "negative count"))?;
        }
        Ok(taken)
    }

    async fn dlq_len(&self, dlq: &DlqName) -> Result<u64, StoreError> {
        self.inner.client.llen(keys::dlq(dlq)).await.map_err(|e| self.error("dlq_len", e))
    }

    async fn unique_lock_ttl(&self, key: &str) -> Result<Option<Duration>, StoreError> {
        const OP: &str = "unique_lock_ttl";
        let ms = int(OP, &self.command(OP, "PTTL", vec![keys::unique_lock(key)]).await?)?;
        Ok(u64::try_from(ms).ok().filter(|ms| *ms > 0).map(Duration::from_millis))
    }

    async fn cron_tick(&self, entry: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        const OP: &str = "cron_tick";
        shared::cron_entry(entry)?;
        let score = self.command(OP, "ZSCORE", vec![keys::CRON_TICKS.to_owned(), entry.to_owned()]).await?;
        let secs = match score {
            Value::Null => None,
            Value::Double(f) => Some(f),
            other => Some(
                text(&other)
                    .and_then(|s| s.parse::<f64>().ok())
                    .ok_or_else(|| protocol(OP, format!("expected a score, got {other:?}")))?,
            ),
        };
        Ok(secs.and_then(|s| DateTime::from_timestamp(s as i64, 0)))
    }

    async fn record_cron_tick(&self, entry: &str, tick: DateTime<Utc>) -> Result<(), StoreError> {
        const OP: &str = "record_cron_tick";
        shared::cron_entry(entry)?;
        let args = vec![entry.to_owned(), tick.timestamp().to_string()];
        self.eval(OP, &scripts::CRON_TICK, vec![keys::CRON_TICKS.to_owned()], args).await?;
        Ok(())
    }

    async fn put_job_fields(&self, id: &JobId, fields: &BTreeMap<String, String>) -> Result<(), StoreError> {
        const OP: &str = "put_job_fields";
        if fields.is_empty() {
            return Ok(());
        }
        let mut args = vec![keys::job(id)];
        for (k, v) in fields {
            args.extend([k.clone(), v.clone()]);
        }
        self.command(OP, "HSET", args).await?;
        Ok(())
    }

    async fn delete_matching(&self, pattern: &str, dry_run: bool) -> Result<u64, StoreError> {
        const OP: &str = "delete_matching";
        let mut cursor = "0".to_owned();
        // Key names as bytes: a name that is not UTF-8 is deleted as it is.
        let mut found = std::collections::BTreeSet::<Vec<u8>>::new();
        loop {
            let args = vec![cursor, "MATCH".to_owned(), pattern.to_owned(), "COUNT".to_owned(), SCAN_COUNT.to_string()];
            let mut reply = array(OP, self.command(OP, "SCAN", args).await?)?.into_iter();
            let (Some(next), Some(keys)) = (reply.next(), reply.next()) else {
                return Err(protocol(OP, "expected {cursor, keys}"));
            };
            cursor = text(&next).ok_or_else(|| protocol(OP, "cursor is not text"))?;
            for key in array(OP, keys)? {
                let name = match key {
                    Value::Bytes(b) => b.to_vec(),
                    other => other.as_string().ok_or_else(|| protocol(OP, "key is not text"))?.into_bytes(),
                };
                found.insert(name);
            }
            if cursor == "0" {
                break;
            }
        }
        if dry_run {
            return Ok(found.len() as u64);
        }
        let keys: Vec<Vec<u8>> = found.into_iter().collect();
        let mut deleted = 0u64;
        let del = fred::types::CustomCommand::new_static("DEL", fred::types::ClusterHash::FirstKey, false);
        for chunk in keys.chunks(SCAN_COUNT) {
            let args: Vec<Value> = chunk.iter().map(|k| Value::Bytes(k.clone().into())).collect();
            let reply: Value = self.inner.client.custom(del.clone(), args).await.map_err(|e| self.error(OP, e))?;
            deleted += u64::try_from(int(OP, &reply)?).map_err(|_| protocol(OP, "negative count"))?;
        }
        Ok(deleted)
    }
}
