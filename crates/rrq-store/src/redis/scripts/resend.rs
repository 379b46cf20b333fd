//! A re-sent enqueue call (what fred does after a redirection) answers as
//! its first run did, and only that call: the sharded layout's call mark.
#![cfg(test)]

use rrq_protocol::JobId;

use super::{BatchJob, Enqueue, EnqueueBatch, LuaScript, NewJobCall, eval};
use crate::job::NewJob;
use crate::keys::Layout;
use crate::redis::RedisStore;

/// A job of a fresh id (the slot tests' job, under another id).
fn new_job(id: &str) -> NewJob {
    super::slots::new_job(&JobId::new(id))
}

async fn status(store: &RedisStore, call: Enqueue) -> Vec<fred::prelude::Value> {
    match eval(&store.inner.client, call).await.expect("the script runs") {
        fred::prelude::Value::Array(v) => v,
        other => panic!("unexpected reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_call_sent_again_is_created_and_another_call_under_its_id_is_not() {
    let redis = rrq_test_support::TestRedis::private();
    let store = RedisStore::connect(redis.url()).await.unwrap();
    // The sharded layout's scripts run on one server as on a cluster.
    let layout = Layout::sharded(4).unwrap();
    let job = new_job(&format!("resend-{}", uuid::Uuid::new_v4()));
    let call = NewJobCall::new(&layout, &job, 0, true);
    let first = status(&store, Enqueue { job: call.clone(), idempotency_key: None }).await;
    let again = status(&store, Enqueue { job: call, idempotency_key: None }).await;
    assert_eq!(first, again, "a re-sent call answers as its first run");
    assert_eq!(first[0], fred::prelude::Value::Integer(1));
    let other = status(&store, Enqueue { job: NewJobCall::new(&layout, &job, 0, true), idempotency_key: None }).await;
    assert_eq!(other[0], fred::prelude::Value::Integer(-1), "another call under the same id is refused");

    // In a batch, per job.
    let second = new_job(&format!("resend-{}", uuid::Uuid::new_v4()));
    let batch = |jobs: Vec<BatchJob>| EnqueueBatch { channel: layout.ready_channel(layout.shard_of(&second.id)), jobs };
    let jobs = vec![BatchJob::new(&layout, &second)];
    let decode = |v| <EnqueueBatch as LuaScript>::decode(v).unwrap();
    let once = decode(eval(&store.inner.client, batch(jobs.clone())).await.unwrap());
    let twice = decode(eval(&store.inner.client, batch(jobs)).await.unwrap());
    assert_eq!((once, twice), (vec![true], vec![true]));
    let fresh = decode(eval(&store.inner.client, batch(vec![BatchJob::new(&layout, &second)])).await.unwrap());
    assert_eq!(fresh, vec![false]);

    // The single layout (rrq 0.11.1's fields) carries no mark: a second run
    // of the same call reports the id as taken, as before.
    let single = Layout::single();
    let third = new_job(&format!("resend-{}", uuid::Uuid::new_v4()));
    let call = NewJobCall::new(&single, &third, 0, true);
    let first = status(&store, Enqueue { job: call.clone(), idempotency_key: None }).await;
    let again = status(&store, Enqueue { job: call, idempotency_key: None }).await;
    assert_eq!(
        (first[0].clone(), again[0].clone()),
        (fred::prelude::Value::Integer(1), fred::prelude::Value::Integer(-1))
    );
}
