//! The producer: options in, job ids out.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{
    CancelResult, Clock, EnqueueMode, Enqueued, Job, JobParseError, JobStatus, NewJob, RedisStore, Store, StoreError,
    SystemClock,
};
use serde_json::{Map, Value};

use crate::correlation::correlation_context;

/// Defaults applied to every enqueue (the producer side of `rrq.toml`).
#[derive(Clone, Debug, PartialEq)]
pub struct ProducerConfig {
    /// Queue used when an enqueue names none.
    pub queue: QueueName,
    /// Attempts allowed per job, in total (the job's `max_retries` field,
    /// named as in the reference: 0 and 1 both allow one attempt).
    pub max_retries: u32,
    /// Per-attempt timeout in seconds (> 0).
    pub job_timeout_seconds: i64,
    /// TTL of a completed job (0 = keep forever).
    pub result_ttl_seconds: i64,
    /// TTL of idempotency keys.
    pub idempotency_ttl: Duration,
    /// Correlation attribute → path into params.
    pub correlation_mappings: BTreeMap<String, String>,
    /// Replicas that must hold each enqueued job before the enqueue returns
    /// (`[rrq] min_replicas_acked`; Redis `WAIT`, one more round trip per
    /// call). 0, the default, returns as soon as the master has the job; a
    /// failover before a replica has it could then lose it.
    pub min_replicas_acked: u32,
    /// How long an enqueue waits for those replicas before failing with
    /// [`StoreError::NotReplicated`] (`[rrq] replica_ack_timeout_seconds`).
    pub replica_ack_timeout: Duration,
    /// Shards per queue on a Redis Cluster (`[rrq] queue_shards`; `None`:
    /// the store's default). Read only by [`Producer::connect`].
    pub queue_shards: Option<u16>,
}

impl Default for ProducerConfig {
    /// The reference's producer defaults.
    fn default() -> Self {
        Self {
            queue: QueueName::new("default"),
            max_retries: 5,
            job_timeout_seconds: 300,
            result_ttl_seconds: 86_400,
            idempotency_ttl: Duration::from_secs(21_600),
            correlation_mappings: BTreeMap::new(),
            min_replicas_acked: 0,
            replica_ack_timeout: Duration::from_secs(1),
            queue_shards: None,
        }
    }
}

impl ProducerConfig {
    /// The producer settings of a loaded `rrq.toml`.
    pub fn from_settings(s: &rrq_config::Settings) -> Self {
        Self {
            queue: s.default_queue.clone(),
            max_retries: s.default_max_retries,
            job_timeout_seconds: s.default_job_timeout_seconds,
            result_ttl_seconds: s.default_result_ttl_seconds,
            idempotency_ttl: Duration::from_secs(s.unique_job_lock_ttl_seconds.max(1) as u64),
            correlation_mappings: s.correlation_mappings.clone(),
            min_replicas_acked: s.min_replicas_acked,
            replica_ack_timeout: s.replica_ack_timeout,
            queue_shards: s.queue_shards,
        }
    }
}

/// A key and a window, for rate limiting and debouncing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limit {
    /// The key shared by the calls that limit each other.
    pub key: String,
    /// The window.
    pub window: Duration,
}

/// Per-enqueue options; everything defaults to the producer's configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EnqueueOptions {
    /// Target queue (bare or full name).
    pub queue: Option<String>,
    /// Caller-chosen job id (must not exist yet).
    pub job_id: Option<String>,
    /// Run no earlier than this long after the enqueue time.
    pub defer_by: Option<Duration>,
    /// Run no earlier than this time (wins over `defer_by`).
    pub defer_until: Option<DateTime<Utc>>,
    /// Attempts allowed in total (the job's `max_retries` field).
    pub max_retries: Option<u32>,
    /// Per-attempt timeout in seconds (> 0).
    pub job_timeout_seconds: Option<i64>,
    /// TTL after success (0 = keep forever).
    pub result_ttl_seconds: Option<i64>,
    /// Idempotency key: while it names a live job, that job's id is returned.
    pub idempotency_key: Option<String>,
    /// TTL of the idempotency key.
    pub idempotency_ttl: Option<Duration>,
    /// Leading-edge rate limit (at most one job per window).
    pub rate_limit: Option<Limit>,
    /// Trailing-edge debounce (later calls update the pending job).
    pub debounce: Option<Limit>,
    /// Trace propagation carrier to store with the job.
    pub trace_context: BTreeMap<String, String>,
    /// Overrides the recorded enqueue time.
    pub enqueue_time: Option<DateTime<Utc>>,
}

impl EnqueueOptions {
    /// Options targeting `queue`.
    pub fn queue(queue: impl Into<String>) -> Self {
        Self { queue: Some(queue.into()), ..Self::default() }
    }
}

/// Status, result and last error of a job.
#[derive(Clone, Debug, PartialEq)]
pub struct JobResult {
    /// The status (`None` when the stored value is unknown).
    pub status: Option<JobStatus>,
    /// The handler's result, once completed.
    pub result: Option<Value>,
    /// The last failure message (kept after a later success, as the reference does).
    pub last_error: Option<String>,
}

/// Why a producer call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProducerError {
    /// An option is invalid (the message names it).
    #[error("{0}")]
    InvalidOption(String),
    /// The rate limiter dropped the job (use [`Producer::try_enqueue`] to get
    /// this as a value).
    #[error("rate limited: a job with rate-limit key '{0}' was enqueued within the window")]
    RateLimited(String),
    /// The configuration file could not be loaded.
    #[error("cannot load the RRQ configuration")]
    Config(#[source] rrq_config::Error),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The job hash exists but cannot be read as a job.
    #[error("job '{id}' cannot be read")]
    Unreadable {
        /// The job.
        id: JobId,
        /// What is wrong with it.
        #[source]
        source: JobParseError,
    },
}

/// Enqueues jobs and reads them back.
#[derive(Clone, Debug)]
pub struct Producer {
    store: Arc<dyn Store>,
    config: ProducerConfig,
    clock: Arc<dyn Clock>,
}

impl Producer {
    /// Connects to Redis at `dsn` with the default configuration.
    pub async fn new(dsn: &str) -> Result<Self, ProducerError> {
        Self::connect(dsn, ProducerConfig::default()).await
    }

    /// Connects to Redis at `dsn` with `config`.
    pub async fn connect(dsn: &str, config: ProducerConfig) -> Result<Self, ProducerError> {
        // A DSN alone carries no CA file: take it from the environment, as
        // the `rrq` command does through its settings.
        let options = rrq_store::ConnectOptions::default()
            .with_ca_file_opt(rrq_config::redis_ca_file_from_env())
            .with_queue_shards_opt(config.queue_shards);
        let store = RedisStore::connect_with(dsn, options).await?;
        Ok(Self::with_store(Arc::new(store), config))
    }

    /// Loads `rrq.toml` (explicit path, else `RRQ_CONFIG`, else `./rrq.toml`)
    /// and connects to the Redis it names.
    pub async fn from_config_file(path: Option<&Path>) -> Result<Self, ProducerError> {
        let loaded = rrq_config::load(path).map_err(ProducerError::Config)?;
        Self::connect(&loaded.settings.redis_dsn, ProducerConfig::from_settings(&loaded.settings)).await
    }

    /// A producer over any store (e.g. `MemoryStore` in tests).
    pub fn with_store(store: Arc<dyn Store>, config: ProducerConfig) -> Self {
        Self { store, config, clock: Arc::new(SystemClock) }
    }

    /// Replaces the clock.
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The store behind this producer.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The producer's defaults.
    pub fn config(&self) -> &ProducerConfig {
        &self.config
    }

    /// Enqueues `function_name` with `params` (a JSON object, or `null` for
    /// none) and returns the id that represents the request. A rate-limited
    /// call is an error here; see [`Producer::try_enqueue`].
    pub async fn enqueue(
        &self,
        function_name: &str,
        params: Value,
        options: EnqueueOptions,
    ) -> Result<JobId, ProducerError> {
        let key = options.rate_limit.as_ref().map(|l| l.key.clone());
        match self.try_enqueue(function_name, params, options).await? {
            Enqueued::Created(id) | Enqueued::Existing(id) => Ok(id),
            Enqueued::RateLimited => Err(ProducerError::RateLimited(key.unwrap_or_default())),
        }
    }

    /// Enqueues with the older positional/keyword call shape (rrq 0.9.9):
    /// `kwargs` become the params and non-empty `args` go to `params.args` —
    /// the same mapping the worker applies to jobs written by 0.9.9 producers.
    pub async fn enqueue_args(
        &self,
        function_name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        options: EnqueueOptions,
    ) -> Result<JobId, ProducerError> {
        let mut params = kwargs;
        if !args.is_empty() {
            if params.contains_key("args") {
                return Err(ProducerError::InvalidOption(
                    "positional args collide with a keyword argument named `args`".into(),
                ));
            }
            params.insert("args".to_owned(), Value::Array(args));
        }
        self.enqueue(function_name, Value::Object(params), options).await
    }

    /// Enqueues and reports exactly what happened (created, an existing job
    /// returned, or dropped by the rate limiter). With
    /// [`ProducerConfig::min_replicas_acked`], returns only once that many
    /// replicas hold the write, or fails with [`StoreError::NotReplicated`]
    /// (inside [`ProducerError::Store`]).
    pub async fn try_enqueue(
        &self,
        function_name: &str,
        params: Value,
        options: EnqueueOptions,
    ) -> Result<Enqueued, ProducerError> {
        let (job, mode) = self.prepare(function_name, params, options)?;
        let enqueued = self.store.enqueue(job, mode).await?;
        // A rate-limited call wrote nothing: there is nothing to confirm.
        if !matches!(enqueued, Enqueued::RateLimited) {
            self.confirm_replicated().await?;
        }
        Ok(enqueued)
    }

    /// With `min_replicas_acked`, waits until that many replicas hold this
    /// producer's writes; an error means the job exists on the master only.
    async fn confirm_replicated(&self) -> Result<(), ProducerError> {
        let ProducerConfig { min_replicas_acked, replica_ack_timeout, .. } = self.config;
        // Off by default: no call (not even a boxed future) on the enqueue path.
        if min_replicas_acked == 0 {
            return Ok(());
        }
        Ok(self.store.confirm_replicated(min_replicas_acked, replica_ack_timeout).await?)
    }

    /// Enqueues many plain jobs in one round trip; each gets its own result.
    /// With `min_replicas_acked`, one confirmation covers the whole batch,
    /// and its failure fails the call (the jobs exist on the master only).
    pub async fn enqueue_batch(
        &self,
        jobs: impl IntoIterator<Item = (String, Value, EnqueueOptions)>,
    ) -> Result<Vec<Result<JobId, ProducerError>>, ProducerError> {
        let mut prepared = Vec::new();
        for (function, params, options) in jobs {
            if options.rate_limit.is_some() || options.debounce.is_some() || options.idempotency_key.is_some() {
                return Err(ProducerError::InvalidOption(
                    "enqueue_batch takes plain jobs only (no rate limit, debounce or idempotency key)".into(),
                ));
            }
            prepared.push(self.prepare(&function, params, options)?.0);
        }
        let results = self.store.enqueue_batch(prepared).await?;
        self.confirm_replicated().await?;
        Ok(results
            .into_iter()
            .map(|r| match r {
                Ok(Enqueued::Created(id) | Enqueued::Existing(id)) => Ok(id),
                Ok(Enqueued::RateLimited) => Err(ProducerError::RateLimited(String::new())),
                Err(e) => Err(ProducerError::Store(e)),
            })
            .collect())
    }

    fn prepare(
        &self,
        function_name: &str,
        params: Value,
        options: EnqueueOptions,
    ) -> Result<(NewJob, EnqueueMode), ProducerError> {
        let invalid = |m: &str| ProducerError::InvalidOption(m.to_owned());
        if function_name.trim().is_empty() {
            return Err(invalid("function_name cannot be empty"));
        }
        let params: Map<String, Value> = match params {
            Value::Object(m) => m,
            Value::Null => Map::new(),
            other => return Err(ProducerError::InvalidOption(format!("params must be a JSON object, got {other}"))),
        };
        let queue = match &options.queue {
            None => self.config.queue.clone(),
            Some(q) => QueueName::parse(q).ok_or_else(|| invalid("queue_name cannot be empty"))?,
        };
        let job_timeout_seconds = options.job_timeout_seconds.unwrap_or(self.config.job_timeout_seconds);
        if job_timeout_seconds <= 0 {
            return Err(invalid("job_timeout_seconds must be positive"));
        }
        if options.rate_limit.is_some() && options.debounce.is_some() {
            return Err(invalid("rate_limit and debounce options are mutually exclusive"));
        }
        let enqueue_time = options.enqueue_time.unwrap_or_else(|| self.clock.now());
        let to_delta = |d: Duration| TimeDelta::from_std(d).map_err(|_| invalid("a duration is too large"));
        let mut deferral = Duration::ZERO;
        let mut scheduled_time = match (options.defer_until, options.defer_by) {
            (Some(t), _) => t,
            (None, Some(by)) if !by.is_zero() => {
                // Whole milliseconds, rounded up, as the reference does.
                let by = Duration::from_millis(by.as_nanos().div_ceil(1_000_000) as u64);
                deferral = by;
                enqueue_time + to_delta(by)?
            }
            _ => enqueue_time,
        };
        let mode = if let Some(limit) = options.rate_limit {
            if limit.key.trim().is_empty() {
                return Err(invalid("rate_limit_key cannot be empty"));
            }
            if limit.window.is_zero() {
                return Err(invalid("rate_limit_seconds must be positive"));
            }
            EnqueueMode::RateLimited { key: limit.key, window: limit.window }
        } else if let Some(limit) = options.debounce {
            if limit.key.trim().is_empty() {
                return Err(invalid("debounce_key cannot be empty"));
            }
            if limit.window.is_zero() {
                return Err(invalid("debounce_seconds must be positive"));
            }
            if options.defer_until.is_none() && options.defer_by.is_none() {
                scheduled_time = enqueue_time + to_delta(limit.window)?;
            }
            EnqueueMode::Debounced { key: limit.key, window: limit.window }
        } else if let Some(key) = options.idempotency_key {
            if key.trim().is_empty() {
                return Err(invalid("unique_key cannot be empty"));
            }
            let ttl = options.idempotency_ttl.unwrap_or(self.config.idempotency_ttl);
            if ttl.is_zero() {
                return Err(invalid("unique_ttl_seconds must be positive"));
            }
            let ttl = ttl.max(Duration::from_secs(deferral.as_secs_f64().ceil() as u64));
            EnqueueMode::Idempotent { key, ttl }
        } else {
            EnqueueMode::Standard
        };
        let id = match options.job_id {
            Some(id) if id.trim().is_empty() => return Err(invalid("job_id cannot be empty")),
            Some(id) => JobId::new(id),
            None => self.store.new_job_id(&mode),
        };
        let mut trace_context = options.trace_context;
        inject_current_trace(&mut trace_context);
        let correlation = correlation_context(&self.config.correlation_mappings, &params, &trace_context);
        let job = NewJob {
            id,
            function_name: function_name.to_owned(),
            params,
            queue,
            enqueue_time,
            scheduled_time,
            max_retries: options.max_retries.unwrap_or(self.config.max_retries),
            job_timeout_seconds,
            result_ttl_seconds: options.result_ttl_seconds.unwrap_or(self.config.result_ttl_seconds),
            trace_context,
            correlation_context: correlation,
            unique_key: None,
        };
        Ok((job, mode))
    }

    /// The job's status, result and last error; `None` if it does not exist.
    pub async fn status(&self, id: &JobId) -> Result<Option<JobResult>, ProducerError> {
        match self.store.job(id).await? {
            None => Ok(None),
            Some(Ok(job)) => Ok(Some(result_of(job))),
            Some(Err(source)) => Err(ProducerError::Unreadable { id: id.clone(), source }),
        }
    }

    /// The full job record; `None` if it does not exist.
    pub async fn job(&self, id: &JobId) -> Result<Option<Job>, ProducerError> {
        match self.store.job(id).await? {
            None => Ok(None),
            Some(Ok(job)) => Ok(Some(job)),
            Some(Err(source)) => Err(ProducerError::Unreadable { id: id.clone(), source }),
        }
    }

    /// Waits until the job is completed, failed or cancelled, at most
    /// `timeout`; `Ok(None)` if it did not finish in time (or does not exist).
    pub async fn wait_for_completion(&self, id: &JobId, timeout: Duration) -> Result<Option<JobResult>, ProducerError> {
        self.wait_for_completion_with(id, timeout, Duration::from_millis(250)).await
    }

    /// [`Producer::wait_for_completion`] with the longest single block on the
    /// job's event stream between re-reads.
    pub async fn wait_for_completion_with(
        &self,
        id: &JobId,
        timeout: Duration,
        block_interval: Duration,
    ) -> Result<Option<JobResult>, ProducerError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last_event = None;
        loop {
            if let Some(r) = self.status(id).await?
                && matches!(r.status, Some(JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled))
            {
                return Ok(Some(r));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let mut block = deadline - now;
            if !block_interval.is_zero() {
                block = block.min(block_interval);
            }
            let block = block.max(Duration::from_millis(1));
            if let Some(event) = self.store.wait_job_event(id, last_event.clone(), block).await? {
                last_event = Some(event);
            }
        }
    }

    /// Cancels a job: a pending one is removed from its queue; a running one
    /// is stopped by its worker.
    pub async fn cancel(&self, id: &JobId) -> Result<CancelResult, ProducerError> {
        Ok(self.store.cancel(id).await?)
    }
}

/// Adds the current span's OpenTelemetry context to the job's carrier, with
/// the globally installed propagator (W3C trace context when the application
/// installed one; nothing otherwise). Keys the caller set win.
fn inject_current_trace(carrier: &mut BTreeMap<String, String>) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let mut injected = std::collections::HashMap::new();
    opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut injected));
    for (k, v) in injected.into_iter().filter(|(_, v)| !v.is_empty()) {
        carrier.entry(k).or_insert(v);
    }
}

fn result_of(job: Job) -> JobResult {
    JobResult { status: job.status, result: job.result, last_error: job.last_error }
}

#[cfg(test)]
mod tests {
    use std::error::Error;

    use super::*;

    /// Each level's Display, outermost first.
    fn levels(e: &(dyn Error + 'static)) -> Vec<String> {
        let mut levels = vec![e.to_string()];
        let mut cause = e.source();
        while let Some(c) = cause {
            levels.push(c.to_string());
            cause = c.source();
        }
        levels
    }

    #[test]
    fn each_level_displays_itself_only() {
        let unreadable =
            ProducerError::Unreadable { id: JobId::from("j1".to_owned()), source: JobParseError::Missing("status") };
        assert_eq!(levels(&unreadable), ["job 'j1' cannot be read", "job hash has no `status` field"]);
        let store = ProducerError::from(StoreError::Command { op: "enqueue", source: "READONLY replica".into() });
        let errors =
            [unreadable, store, ProducerError::InvalidOption("bad".into()), ProducerError::RateLimited("k".into())];
        for e in &errors {
            let levels = levels(e);
            for pair in levels.windows(2) {
                assert!(!pair[0].contains(&pair[1]), "a level repeats its cause: {levels:?}");
            }
        }
    }
}
