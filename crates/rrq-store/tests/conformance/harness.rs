//! One store under test, with what a test needs around it: a fixed `now`,
//! names unique to the test, and ways to make time pass for the store.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use fred::prelude::*;
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::keys::Layout;
use rrq_store::{
    ClaimBatch, ClaimRequest, Job, JobDefaults, ManualClock, MemoryStore, NewJob, RedisStore, Store, keys,
    parse_timestamp,
};
use rrq_test_support::TestRedis;
use rrq_test_support::cluster::TestCluster;

/// The lease TTL used by tests that do not care: long enough never to expire
/// on its own while a test runs.
pub const LEASE: Duration = Duration::from_secs(30);

/// The store under test and its surroundings.
pub struct Harness {
    /// The store, as the worker sees it.
    pub store: Arc<dyn Store>,
    /// A fixed instant the test starts at (data timestamps derive from it).
    pub now: DateTime<Utc>,
    /// Suffix that makes this test's names unique on a shared server.
    ns: String,
    backend: Backend,
}

enum Backend {
    Memory {
        clock: ManualClock,
    },
    Redis {
        client: Client,
        _server: Server,
        layout: Layout,
        _ready: Option<tokio::sync::mpsc::Receiver<rrq_store::Signal>>,
    },
}

/// The servers a Redis harness runs on, stopped when it is dropped.
enum Server {
    Single(#[allow(dead_code, reason = "held to keep the server running")] TestRedis),
    Cluster(TestCluster),
}

impl Harness {
    /// A [`MemoryStore`] on a manual clock.
    pub async fn memory() -> Harness {
        let now = parse_timestamp("2030-01-01T00:00:00Z").unwrap();
        let clock = ManualClock::new(now);
        let ns = ns();
        let store = MemoryStore::with_clock(Arc::new(clock.clone())).with_defaults(defaults_for(&ns));
        Harness { store: Arc::new(store), now, ns, backend: Backend::Memory { clock } }
    }

    /// A [`RedisStore`] on the test Redis (possibly shared: isolate by name).
    pub async fn redis() -> Harness {
        Self::on(TestRedis::start()).await
    }

    /// A [`RedisStore`] on a server of its own, for tests that touch
    /// keyspace-wide state (the lease index read by recovery).
    pub async fn redis_private() -> Harness {
        Self::on(TestRedis::private()).await
    }

    async fn on(redis: TestRedis) -> Harness {
        // Keyspace notifications off: the shared tests count RRQ's own ready
        // signals; `signals.rs` tests the notifications.
        let ns = ns();
        let store = RedisStore::connect(redis.url())
            .await
            .expect("connect to the test redis")
            .with_defaults(defaults_for(&ns))
            .with_keyspace_notifications(false);
        let client = raw_client(redis.url()).await;
        // Real wall time (whole milliseconds, like queue scores), so "ready
        // now" and stream ids line up with `now`.
        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let backend = Backend::Redis { client, _server: Server::Single(redis), layout: Layout::single(), _ready: None };
        Harness { store: Arc::new(store), now, ns, backend }
    }

    /// A [`RedisStore`] on a Redis Cluster of its own (three masters, three
    /// replicas), in the sharded layout with the default shard count.
    pub async fn cluster() -> Harness {
        let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
        let ns = ns();
        let store = RedisStore::connect(&cluster.dsn())
            .await
            .expect("connect to the test cluster")
            .with_defaults(defaults_for(&ns))
            .with_keyspace_notifications(false);
        let client = raw_client(&cluster.dsn()).await;
        let now = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
        let layout = Layout::sharded(keys::DEFAULT_QUEUE_SHARDS).unwrap();
        // Subscribed, as a worker's store is: claims then work from the
        // store's picture of the shard heads (kept from the shard channels)
        // as well as from reads.
        let ready = rrq_store::WorkerStore::subscribe_ready(&store).await.expect("subscribe to the test cluster");
        let backend = Backend::Redis { client, _server: Server::Cluster(cluster), layout, _ready: Some(ready) };
        Harness { store: Arc::new(store), now, ns, backend }
    }

    /// The cluster under a [`Harness::cluster`] store.
    pub fn test_cluster(&self) -> &TestCluster {
        match &self.backend {
            Backend::Redis { _server: Server::Cluster(cluster), .. } => cluster,
            _ => panic!("only a cluster harness has a cluster"),
        }
    }

    /// The key layout of the Redis store (Redis only).
    pub fn layout(&self) -> &Layout {
        match &self.backend {
            Backend::Redis { layout, .. } => layout,
            Backend::Memory { .. } => panic!("a key layout exists only for the Redis store"),
        }
    }

    /// Whether this harness runs on Redis (else on the memory store).
    pub fn is_redis(&self) -> bool {
        matches!(self.backend, Backend::Redis { .. })
    }

    /// Whether this harness runs on a Redis Cluster (the sharded layout).
    pub fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Redis { _server: Server::Cluster(_), .. })
    }

    /// A raw client on the test server (Redis only).
    pub fn raw(&self) -> &Client {
        match &self.backend {
            Backend::Redis { client, .. } => client,
            Backend::Memory { .. } => panic!("raw access exists only for the Redis store"),
        }
    }

    /// `now` plus some seconds.
    pub fn at(&self, seconds: f64) -> DateTime<Utc> {
        self.now + TimeDelta::microseconds((seconds * 1e6) as i64)
    }

    /// A queue name unique to this test.
    pub fn queue(&self, name: &str) -> QueueName {
        QueueName::new(&format!("{name}-{}", self.ns))
    }

    /// A DLQ name unique to this test.
    pub fn dlq(&self, name: &str) -> DlqName {
        DlqName::new(&format!("{name}-{}", self.ns))
    }

    /// A job id unique to this test.
    pub fn id(&self, name: &str) -> JobId {
        JobId::new(format!("{name}-{}", self.ns))
    }

    /// A worker id unique to this test.
    pub fn worker(&self, name: &str) -> String {
        format!("{name}-{}", self.ns)
    }

    /// The store's job defaults: a queue and DLQ unique to this test.
    pub fn defaults(&self) -> JobDefaults {
        defaults_for(&self.ns)
    }

    /// A new job, ready at `now`, on `queue`.
    pub fn new_job(&self, id: &str, queue: &QueueName) -> NewJob {
        NewJob {
            id: self.id(id),
            function_name: "echo".into(),
            params: serde_json::json!({"msg": "hello", "n": 42}).as_object().unwrap().clone(),
            queue: queue.clone(),
            enqueue_time: self.now,
            scheduled_time: self.now,
            max_retries: 5,
            job_timeout_seconds: 30,
            result_ttl_seconds: 86_400,
            trace_context: [("traceparent".to_owned(), "00-4bf9-01".to_owned())].into(),
            correlation_context: Default::default(),
            unique_key: None,
        }
    }

    /// Claims up to `max` jobs of `queue` for `worker` at `now`.
    pub async fn claim(&self, queue: &QueueName, worker: &str, max: usize, now: DateTime<Utc>) -> ClaimBatch {
        let req = ClaimRequest {
            queue: queue.clone(),
            worker_id: worker.to_owned(),
            max,
            now,
            lease_ttl: LEASE,
            max_payload_bytes: usize::MAX,
        };
        self.store.claim(req).await.expect("claim")
    }

    /// The parsed job, which must exist and parse.
    pub async fn job(&self, id: &JobId) -> Job {
        self.store.job(id).await.expect("read job").expect("job exists").expect("job parses")
    }

    /// Makes the job's lock lapse, as if its lease had expired: the memory
    /// store's clock jumps past every lease; on Redis the key goes away (what
    /// its expiry would do).
    pub async fn expire_lock(&self, id: &JobId) {
        match &self.backend {
            Backend::Memory { clock } => clock.advance(LEASE + Duration::from_secs(1)),
            Backend::Redis { client, layout, .. } => {
                let removed: i64 = client.del(layout.lock(id)).await.unwrap();
                assert_eq!(removed, 1, "the lock of {id} should have existed");
            }
        }
    }
}

/// A plain client for inspecting and corrupting keys.
pub async fn raw_client(url: &str) -> Client {
    let client = Builder::from_config(Config::from_url(url).unwrap()).build().unwrap();
    client.init().await.expect("raw client connects");
    client
}

fn ns() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Job defaults whose queue and DLQ carry the test's suffix `ns`.
fn defaults_for(ns: &str) -> JobDefaults {
    JobDefaults {
        queue: QueueName::new(&format!("default-{ns}")),
        dlq: DlqName::new(&format!("default-{ns}")),
        ..JobDefaults::default()
    }
}
