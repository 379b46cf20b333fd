//! The JSON API on a Redis Cluster (the sharded layout): the overview's
//! counts, the queue and DLQ pages and the DLQ actions over jobs on every
//! shard.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rrq_dashboard::{Dashboard, Options};
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_store::{AttemptCount, ClaimRequest, Fence, RedisStore, Store};
use rrq_test_support::cluster::TestCluster;
use serde_json::{Value, json};

use crate::{get, post};

fn ids(v: &Value) -> Vec<String> {
    v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_counts_pages_and_acts_over_every_shard_of_a_cluster() {
    let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
    let (settings, _) = rrq_config::parse(&format!("[rrq]\nredis_dsn = \"{}\"\n", cluster.dsn())).expect("settings");
    let store: Arc<dyn Store> = Arc::new(RedisStore::connect(&cluster.dsn()).await.expect("connect"));
    let producer = Producer::with_store(store.clone(), ProducerConfig::from_settings(&settings));
    let enqueue = async |queue: &str, defer: Option<u64>| -> JobId {
        let options = EnqueueOptions { defer_by: defer.map(Duration::from_secs), ..EnqueueOptions::queue(queue) };
        producer.enqueue("work", json!({}), options).await.expect("enqueue")
    };
    for _ in 0..150 {
        enqueue("bulk", None).await;
    }
    for _ in 0..70 {
        enqueue("bulk", Some(3600)).await;
    }
    let mut failed = BTreeSet::new();
    for _ in 0..30 {
        failed.insert(enqueue("doomed", None).await.to_string());
    }
    let req = ClaimRequest {
        queue: QueueName::new("doomed"),
        worker_id: "dashboard-test".to_owned(),
        max: 100,
        now: Utc::now(),
        lease_ttl: Duration::from_secs(60),
        max_payload_bytes: usize::MAX,
    };
    for claimed in store.claim(req).await.unwrap().jobs {
        let fence = store.dead_letter(&claimed.lease, "boom", AttemptCount::Counted, Utc::now()).await;
        assert_eq!(fence.unwrap(), Fence::Applied);
    }

    let d = Dashboard::new(&settings, store.clone(), Options::new("127.0.0.1:0".parse().unwrap())).expect("dashboard");
    d.refresh().await.unwrap();
    let o = get(&d, "/api/overview").await.json();
    let queues: Vec<&Value> = o["queues"].as_array().unwrap().iter().collect();
    let bulk = queues.iter().find(|q| q["name"] == "bulk").unwrap_or_else(|| panic!("bulk in {o}"));
    assert_eq!((bulk["ready"].as_u64(), bulk["scheduled"].as_u64()), (Some(150), Some(70)), "{o}");
    assert!(queues.iter().all(|q| q["name"] != "doomed"), "an emptied queue is not listed: {o}");
    assert_eq!(o["dlq"]["len"], 30);

    // The queue pages follow the ready order across shards and add up.
    let all: Vec<String> = store
        .queue_entries(&QueueName::new("bulk"), 0, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.0.to_string())
        .collect();
    assert_eq!(all.len(), 220);
    let mut paged = Vec::new();
    for offset in (0..220).step_by(50) {
        paged.extend(ids(&get(&d, &format!("/api/queue?name=bulk&offset={offset}&limit=50")).await.json()));
    }
    assert_eq!(paged, all);

    // The DLQ pages list every failed job once; the actions reach every shard.
    let mut listed = Vec::new();
    for offset in (0..30).step_by(7) {
        listed.extend(ids(&get(&d, &format!("/api/dlq?offset={offset}&limit=7")).await.json()));
    }
    assert_eq!(listed.len(), 30, "no repeats: {listed:?}");
    assert_eq!(listed.iter().cloned().collect::<BTreeSet<_>>(), failed);
    let r = post(&d, "/api/dlq/requeue", json!({"ids": [listed[0].as_str(), listed[29].as_str()]})).await.json();
    assert_eq!(r["requeued"], 2, "{r}");
    let preview = post(&d, "/api/dlq/purge", json!({"all_matching": true})).await.json();
    assert_eq!(preview["would_purge"], 28, "{preview}");
    let ids: Vec<&str> = preview["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    let done = post(&d, "/api/dlq/purge", json!({"ids": ids, "confirm": true})).await.json();
    assert_eq!(done["purged"], 28, "{done}");
    assert_eq!(store.dlq_len(&DlqName::new("default")).await.unwrap(), 0);
    assert_eq!(store.queue_len(&QueueName::new("doomed")).await.unwrap(), 2);
}
