//! The operations commands against a Redis Cluster (`redis-cluster://`,
//! the sharded layout): jobs on every master are listed, shown, requeued,
//! purged and cleared, and a config with another `queue_shards` is refused.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use rrq_producer::{EnqueueOptions, Producer, ProducerConfig};
use rrq_protocol::{JobId, QueueName};
use rrq_store::{AttemptCount, ClaimRequest, Fence, InspectStore, RedisStore, WorkerHealth, WorkerStore, keys};
use rrq_test_support::cluster::TestCluster;
use rrq_test_support::resp::{self, Reply};
use serde_json::{Value, json};

use crate::{Run, Scratch, rrq_in};

/// A cluster, a directory holding `rrq.toml` pointing at it, and clients.
struct ClusterEnv {
    cluster: TestCluster,
    dir: Scratch,
    store: RedisStore,
    producer: Producer,
}

impl ClusterEnv {
    async fn new() -> ClusterEnv {
        let cluster = tokio::task::spawn_blocking(TestCluster::start).await.unwrap();
        let dir = Scratch::create();
        dir.write("rrq.toml", &format!("[rrq]\nredis_dsn = \"{}\"\n", cluster.dsn()));
        let store = RedisStore::connect(&cluster.dsn()).await.expect("connect to the test cluster");
        let producer = Producer::connect(&cluster.dsn(), ProducerConfig::default()).await.expect("producer connects");
        ClusterEnv { cluster, dir, store, producer }
    }

    fn rrq(&self, args: &[&str]) -> Run {
        self.rrq_with("rrq.toml", args)
    }

    fn rrq_with(&self, config: &str, args: &[&str]) -> Run {
        let config = self.dir.path(config);
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--config", config.to_str().expect("utf-8 path")]);
        rrq_in(self.dir.root(), &all, &[])
    }

    /// Claims every job of `queue` (`count` of them) and dead-letters it.
    async fn fail_all(&self, queue: &str, count: usize) {
        let req = ClaimRequest {
            queue: QueueName::new(queue),
            worker_id: "cli-test-worker".into(),
            max: count + 10,
            now: Utc::now(),
            lease_ttl: Duration::from_secs(60),
            max_payload_bytes: usize::MAX,
        };
        let batch = self.store.claim(req).await.unwrap();
        assert_eq!(batch.jobs.len(), count);
        for claimed in &batch.jobs {
            let fence = self.store.dead_letter(&claimed.lease, "disk full", AttemptCount::Counted, Utc::now()).await;
            assert_eq!(fence.unwrap(), Fence::Applied);
        }
    }

    /// Job hashes on each master.
    fn jobs_per_master(&self) -> Vec<i64> {
        let count = "return #redis.call('KEYS', ARGV[1])";
        self.cluster
            .masters()
            .iter()
            .map(|m| match resp::call(m.port, &["EVAL", count, "0", "rrq:{*}:job:*"]) {
                Ok(Reply::Int(n)) => n,
                other => panic!("counting job keys on {}: {other:?}", m.addr()),
            })
            .collect()
    }
}

fn ids_of(v: &Value, field: &str) -> BTreeSet<String> {
    v.as_array().expect("a JSON array").iter().map(|j| j[field].as_str().expect("an id").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_commands_see_jobs_on_every_master_of_a_cluster() {
    let env = ClusterEnv::new().await;
    let layout = keys::Layout::sharded(keys::DEFAULT_QUEUE_SHARDS).unwrap();
    // Enough random ids to cover every shard, so every master.
    let mut emails = Vec::new();
    for n in 0..240 {
        let options = EnqueueOptions { defer_by: Some(Duration::from_secs(600)), ..EnqueueOptions::queue("emails") };
        emails.push(env.producer.enqueue("send", json!({"n": n}), options).await.unwrap());
    }
    let mut failed = Vec::new();
    for n in 0..40 {
        failed.push(env.producer.enqueue("report", json!({"n": n}), EnqueueOptions::queue("reports")).await.unwrap());
    }
    let shards: BTreeSet<_> = emails.iter().map(|id| layout.shard_of(id)).collect();
    assert!(shards.len() > 50, "the jobs span most shards: {}", shards.len());
    assert!(env.jobs_per_master().iter().all(|n| *n > 0), "{:?}", env.jobs_per_master());

    // Every `reports` job fails for good.
    env.fail_all("reports", failed.len()).await;
    let health = WorkerHealth {
        active_jobs: 0,
        concurrency_limit: 8,
        queues: vec!["rrq:queue:emails".into()],
        status: "polling".into(),
        timestamp: json!(rrq_store::format_timestamp(Utc::now())),
        worker_id: "cluster-worker-1".into(),
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    };
    env.store.heartbeat(&health, Duration::from_secs(60)).await.unwrap();

    // `queue list`: one row per queue, summed over the shards.
    let list = env.rrq(&["queue", "list", "--json"]).ok().json();
    let rows = list.as_array().unwrap();
    assert_eq!(rows.len(), 1, "only emails holds jobs: {list}");
    assert_eq!((rows[0]["queue"].as_str(), rows[0]["pending"].as_u64()), (Some("rrq:queue:emails"), Some(240)));

    // `queue inspect`: a page in ready order across shards.
    let page = env.rrq(&["queue", "inspect", "emails", "--limit", "500", "--json"]).ok().json();
    assert_eq!(ids_of(&page, "job_id"), emails.iter().map(ToString::to_string).collect());
    let times: Vec<&str> = page.as_array().unwrap().iter().map(|r| r["scheduled"].as_str().unwrap()).collect();
    let parsed: Vec<_> = times.iter().map(|t| chrono::DateTime::parse_from_rfc3339(t).unwrap()).collect();
    assert!(parsed.windows(2).all(|w| w[0] <= w[1]), "ready order across shards");

    // `dlq list`: every failed job, wherever it is.
    let dlq = env.rrq(&["dlq", "list", "--limit", "100", "--json"]).ok().json();
    assert_eq!(ids_of(&dlq, "id"), failed.iter().map(ToString::to_string).collect());

    // `job show` and `job list` reach every master.
    for id in [&emails[0], &emails[120], &failed[7]] {
        let shown = env.rrq(&["job", "show", id.as_str(), "--json"]).ok().json();
        assert_eq!(shown["id"], id.as_str());
    }
    let listed = env.rrq(&["job", "list", "--limit", "1000", "--json"]).ok().json();
    assert_eq!(listed.as_array().unwrap().len(), emails.len() + failed.len());

    // `worker list`: the health record on `{global}`.
    let workers = env.rrq(&["worker", "list", "--json"]).ok().json();
    assert_eq!(ids_of(&workers, "worker_id"), BTreeSet::from(["cluster-worker-1".to_owned()]));

    // `dlq requeue --all` takes every shard's entries back to their queue;
    // then they fail again.
    let all = env.rrq(&["dlq", "requeue", "--all", "--yes", "--json"]).ok().json();
    assert_eq!(ids_of(&all["requeued"], "job_id"), failed.iter().map(ToString::to_string).collect());
    assert_eq!(all["skipped"], json!([]));
    assert_eq!(env.store.dlq_len(&rrq_protocol::DlqName::new("default")).await.unwrap(), 0);
    assert_eq!(env.store.queue_len(&QueueName::new("reports")).await.unwrap(), failed.len() as u64);
    env.fail_all("reports", failed.len()).await;

    // `dlq requeue` one by id, then `dlq purge` the rest.
    let one = failed[3].as_str();
    let run = env.rrq(&["dlq", "requeue", "--job-id", one, "--json"]).ok().json();
    assert_eq!(run["requeued"], json!([{"job_id": one, "queue": "rrq:queue:reports"}]));
    let purged = env.rrq(&["dlq", "purge", "--yes", "--json"]).ok().json();
    assert_eq!(purged, json!({"dlq": "rrq:dlq:default", "purged": failed.len() - 1}));
    assert_eq!(env.store.dlq_len(&rrq_protocol::DlqName::new("default")).await.unwrap(), 0);
    let kept = env.store.job_fields_batch(&failed).await.unwrap();
    let left: Vec<&JobId> = failed.iter().zip(&kept).filter(|(_, f)| f.is_some()).map(|(id, _)| id).collect();
    assert_eq!(left, [&failed[3]], "only the requeued job is left");

    // `debug clear`: the keys of every master, many slots at once.
    let cleared = env.rrq(&["debug", "clear", "--pattern", "rrq:*:job:*", "--confirm", "--json"]).ok().json();
    assert_eq!(cleared["matched"], cleared["deleted"]);
    assert!(cleared["deleted"].as_u64().unwrap() >= 241, "{cleared}");
    assert_eq!(env.jobs_per_master(), [0, 0, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_with_another_queue_shards_is_refused_naming_the_setting() {
    let env = ClusterEnv::new().await;
    env.dir.write("other.toml", &format!("[rrq]\nredis_dsn = \"{}\"\nqueue_shards = 32\n", env.cluster.dsn()));
    let run = env.rrq_with("other.toml", &["queue", "list", "--json"]).code(3);
    for part in ["queue_shards", "is 32", "64 shards per queue", "set `queue_shards = 64`"] {
        assert!(run.stderr.contains(part), "{part:?} missing from:\n{}", run.stderr);
    }
    assert!(run.stderr.contains("other.toml"), "names the file to fix:\n{}", run.stderr);
    assert_eq!(env.rrq(&["queue", "list", "--json"]).ok().json(), json!([]));

    // The documented way to change the count on an emptied cluster.
    let record = "rrq:{global}:layout";
    let cleared = env.rrq(&["debug", "clear", "--pattern", record, "--confirm", "--json"]).ok().json();
    assert_eq!(cleared, json!({"pattern": record, "matched": 1, "deleted": 1}));
    assert_eq!(env.rrq_with("other.toml", &["queue", "list", "--json"]).ok().json(), json!([]));
    let run = env.rrq(&["queue", "list", "--json"]).code(3);
    assert!(run.stderr.contains("is 64") && run.stderr.contains("32 shards per queue"), "{}", run.stderr);
}
