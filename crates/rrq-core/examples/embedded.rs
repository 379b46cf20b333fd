//! Embedding an RRQ worker in a Rust service.
//!
//! The worker runs on the service's own tokio runtime, executes handlers
//! registered in this process (no socket, no child process), and stops when
//! the service cancels its token. A socket runner pool could be added beside
//! the in-process one with `.runner("python", Arc::new(ProcessPool::start(..)))`.
//!
//! Run it with a Redis at hand:
//! `RRQ_REDIS_DSN=redis://127.0.0.1:6379/0 cargo run -p rrq-core --example embedded`

use std::sync::Arc;
use std::time::Duration;

use rrq_core::{InProcessRunner, Worker, WorkerConfig};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::QueueName;
use rrq_runner::{HandlerError, HandlerResult, JobContext, Registry};
use rrq_store::{RedisStore, Store};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

#[derive(Deserialize)]
struct Resize {
    image: String,
    width: u32,
}

async fn resize(p: Resize, ctx: JobContext) -> HandlerResult<String> {
    if p.width == 0 {
        return Err(HandlerError::failed("width must be positive"));
    }
    Ok(format!("{} resized to {}px (attempt {})", p.image, p.width, ctx.attempt))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dsn = std::env::var("RRQ_REDIS_DSN").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".to_owned());
    let queue = QueueName::new("embedded-example");

    // Handlers live in this process.
    let mut handlers = Registry::new();
    handlers.register("resize", resize);

    // The worker: configuration structs, a store, and runners by name.
    let mut config = WorkerConfig::new([queue.clone()]);
    config.routing.default_runner = "local".to_owned();
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&dsn).await?);
    let worker = Worker::new(config, store.clone()).runner("local", Arc::new(InProcessRunner::new(handlers, 8)));

    // Start it on this runtime; the token is the service's shutdown switch.
    let shutdown = CancellationToken::new();
    let running = tokio::spawn(worker.run(shutdown.clone()));

    let producer = Producer::with_store(store, ProducerConfig { queue, ..ProducerConfig::default() });
    let params = serde_json::json!({"image": "cat.png", "width": 640});
    let id = producer.enqueue("resize", params, EnqueueOptions::default()).await?;
    let done = producer.wait_for_completion(&id, Duration::from_secs(10)).await?;
    println!("job {id}: {:?}", done.and_then(|r| r.result));

    shutdown.cancel();
    let stats = running.await??;
    println!("worker stopped after {} completed job(s)", stats.completed);
    Ok(())
}
