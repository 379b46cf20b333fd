//! The dashboard against a private `redis-server`: the JSON API through the
//! router (no socket), and the web UI in headless Chromium driven through
//! ChromeDriver; and the JSON API on a Redis Cluster (`cluster.rs`).

mod api;
mod browser;
mod cluster;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use chrono::Utc;
use rrq_config::Settings;
use rrq_dashboard::{Dashboard, Options};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{ClaimRequest, Fence, RedisStore, Store};
use rrq_test_support::TestRedis;
use serde_json::Value;
use tower::ServiceExt;

/// A Redis, the settings naming it, a store and a producer on it.
#[derive(Debug)]
pub struct Env {
    pub redis: TestRedis,
    pub settings: Settings,
    pub store: Arc<dyn Store>,
    pub producer: Producer,
}

impl Env {
    /// A fresh server; `extra` is appended to the `[rrq]` table.
    pub async fn new(extra: &str) -> Env {
        let redis = TestRedis::private();
        Self::on(redis, None, extra).await
    }

    /// Settings whose DSN is `dsn` (default: the server's URL); the store
    /// connects to the server's URL either way.
    pub async fn on(redis: TestRedis, dsn: Option<String>, extra: &str) -> Env {
        let dsn = dsn.unwrap_or_else(|| redis.url().to_owned());
        let (settings, _) = rrq_config::parse(&format!("[rrq]\nredis_dsn = \"{dsn}\"\n{extra}\n")).expect("settings");
        let store: Arc<dyn Store> = Arc::new(RedisStore::connect(redis.url()).await.expect("connect"));
        let producer = Producer::with_store(store.clone(), ProducerConfig::from_settings(&settings));
        Env { redis, settings, store, producer }
    }

    /// A dashboard on this store with `options` (loopback port 0 by default).
    pub fn dashboard(&self, configure: impl FnOnce(&mut Options)) -> Dashboard {
        let mut options = Options::new("127.0.0.1:0".parse().unwrap());
        configure(&mut options);
        Dashboard::new(&self.settings, self.store.clone(), options).expect("dashboard")
    }

    /// Enqueues `function` on `queue` with `options` adjusted.
    pub async fn enqueue_with(
        &self,
        function: &str,
        params: Value,
        queue: &str,
        adjust: impl FnOnce(&mut EnqueueOptions),
    ) -> JobId {
        let mut options = EnqueueOptions::queue(queue);
        adjust(&mut options);
        self.producer.enqueue(function, params, options).await.expect("enqueue")
    }

    /// Enqueues `function` on `queue`, ready now.
    pub async fn enqueue(&self, function: &str, queue: &str) -> JobId {
        self.enqueue_with(function, serde_json::json!({}), queue, |_| {}).await
    }

    /// A job of `queue` moved to the default DLQ with `error`, as a worker
    /// leaves it when its attempts are used up (the queue holds only it).
    pub async fn failed(&self, function: &str, queue: &str, error: &str) -> JobId {
        let id = self.enqueue(function, queue).await;
        let req = ClaimRequest {
            queue: QueueName::new(queue),
            worker_id: "dashboard-test".to_owned(),
            max: 1,
            now: Utc::now(),
            lease_ttl: Duration::from_secs(60),
            max_payload_bytes: usize::MAX,
        };
        let lease = self.store.claim(req).await.expect("claim").jobs.pop().expect("a ready job").lease;
        assert_eq!(lease.job_id, id);
        let fence = self.store.dead_letter(&lease, error, rrq_store::AttemptCount::Counted, Utc::now()).await;
        assert_eq!(fence.expect("dead_letter"), Fence::Applied);
        id
    }
}

/// An answer of the router.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: String,
}

impl Answer {
    /// The body as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends one request through the router.
pub async fn call(dashboard: &Dashboard, req: Request<Body>) -> Answer {
    let resp = dashboard.router().oneshot(req).await.expect("router answers");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 16 << 20).await.expect("body");
    Answer { status, body: String::from_utf8_lossy(&bytes).into_owned() }
}

/// `GET uri`.
pub async fn get(dashboard: &Dashboard, uri: &str) -> Answer {
    call(dashboard, Request::get(uri).header("host", "127.0.0.1:8080").body(Body::empty()).unwrap()).await
}

/// `POST uri` with a JSON body and the dashboard's CSRF header.
pub async fn post(dashboard: &Dashboard, uri: &str, body: Value) -> Answer {
    let req = Request::post(uri)
        .header("host", "127.0.0.1:8080")
        .header("origin", "http://127.0.0.1:8080")
        .header("content-type", "application/json")
        .header("x-rrq-csrf", dashboard.csrf_secret())
        .body(Body::from(body.to_string()))
        .unwrap();
    call(dashboard, req).await
}
