//! The JSON API: what it reports, how it pages, and what it refuses.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use rrq_dashboard::{BindError, Dashboard, Options};
use rrq_protocol::{DlqName, JobId, QueueName};
use rrq_test_support::TestRedis;
use serde_json::{Value, json};

use crate::{Env, call, get, post};

fn queue<'a>(overview: &'a Value, name: &str) -> &'a Value {
    overview["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == name)
        .unwrap_or_else(|| panic!("queue {name} in {overview}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overview_counts_ready_scheduled_failed_and_paused() {
    let env = Env::new("").await;
    env.failed("boom", "default", "it broke").await;
    for _ in 0..3 {
        env.enqueue("work", "default").await;
    }
    for _ in 0..2 {
        env.enqueue_with("later", json!({}), "default", |o| o.defer_by = Some(Duration::from_secs(3600))).await;
    }
    env.enqueue("send", "emails").await;
    env.store.pause(&QueueName::new("emails")).await.unwrap();
    env.store.pause(&QueueName::new("idle")).await.unwrap();

    let d = env.dashboard(|_| {});
    d.refresh().await.unwrap();
    let o = get(&d, "/api/overview").await;
    assert_eq!(o.status, StatusCode::OK);
    let o = o.json();
    let default = queue(&o, "default");
    assert_eq!((default["ready"].as_u64(), default["scheduled"].as_u64()), (Some(3), Some(2)), "{o}");
    assert_eq!(default["paused"], false);
    let emails = queue(&o, "emails");
    assert_eq!((emails["ready"].as_u64(), emails["paused"].as_bool()), (Some(1), Some(true)));
    let idle = queue(&o, "idle");
    assert_eq!((idle["ready"].as_u64(), idle["paused"].as_bool()), (Some(0), Some(true)), "a paused empty queue shows");
    assert_eq!(o["dlq"]["len"], 1);
    assert_eq!(o["dlq"]["name"], "rrq:dlq:default");
    assert_eq!(o["workers_alive"], 0);

    // A second sample makes a point of the chart: one more failure.
    env.failed("boom", "other", "again").await;
    d.refresh().await.unwrap();
    let o = get(&d, "/api/overview").await.json();
    let points = o["series"]["points"].as_array().unwrap();
    assert_eq!(points.len(), 1, "{o}");
    assert!(points[0]["failed"].as_f64().unwrap() > 0.0, "{o}");
    assert_eq!(points[0]["completed"], Value::Null, "no completion count in a standalone dashboard");
    assert_eq!(o["series"]["capacity"], 1800, "an hour of 2-second samples");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_and_dlq_pages_follow_the_sorted_set_and_the_list() {
    let env = Env::new("").await;
    let mut ids = Vec::new();
    for i in 0..120 {
        let at = chrono::Utc::now() - chrono::Duration::seconds(1000 - i);
        ids.push(env.enqueue_with("bulk", json!({"i": i}), "bulk", |o| o.enqueue_time = Some(at)).await);
    }
    let entries: Vec<JobId> =
        env.store.queue_entries(&QueueName::new("bulk"), 0, 200).await.unwrap().into_iter().map(|e| e.0).collect();
    let d = env.dashboard(|_| {});
    let page = |v: &Value| -> Vec<String> {
        v["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap().to_owned()).collect()
    };
    let first = get(&d, "/api/queue?name=bulk&offset=0&limit=50").await.json();
    assert_eq!(first["counts"]["ready"], 120);
    let first = page(&first);
    assert_eq!(first.len(), 50);
    let want: Vec<String> = entries[..50].iter().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(first, want, "ready order");
    let last = page(&get(&d, "/api/queue?name=rrq:queue:bulk&offset=100&limit=50").await.json());
    let want: Vec<String> = entries[100..].iter().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(last, want);
    let huge = get(&d, "/api/queue?name=bulk&limit=100000").await.json();
    assert_eq!(huge["limit"], rrq_dashboard::MAX_PAGE, "pages are bounded");
    assert_eq!(get(&d, "/api/queue").await.status, StatusCode::BAD_REQUEST);
    let beyond = get(&d, &format!("/api/queue?name=bulk&offset={}", usize::MAX)).await;
    assert_eq!((beyond.status, beyond.json()["jobs"].as_array().map(Vec::len)), (StatusCode::OK, Some(0)));
    let beyond = get(&d, &format!("/api/dlq?offset={}&function=x", usize::MAX)).await;
    assert_eq!(beyond.status, StatusCode::OK, "{}", beyond.body);
    assert_eq!(get(&d, "/api/queue?name=bulk&offset=-1").await.status, StatusCode::BAD_REQUEST);

    // The DLQ, newest first, filtered by function and error text.
    let mut failed = Vec::new();
    for i in 0..7 {
        let function = if i % 2 == 0 { "even_job" } else { "odd_job" };
        failed.push(env.failed(function, "dq", &format!("error number {i}")).await);
    }
    let all = get(&d, "/api/dlq?offset=2&limit=3").await.json();
    assert_eq!(all["total"], 7);
    let newest_first: Vec<String> = failed.iter().rev().map(|i| i.as_str().to_owned()).collect();
    assert_eq!(page(&all), newest_first[2..5].to_vec());
    let even = get(&d, "/api/dlq?function=EVEN&limit=2&offset=1").await.json();
    assert_eq!(even["matched"], 4, "{even}");
    assert_eq!(page(&even), vec![failed[4].as_str().to_owned(), failed[2].as_str().to_owned()]);
    let by_error = get(&d, "/api/dlq?error=number%203").await.json();
    assert_eq!(page(&by_error), vec![failed[3].as_str().to_owned()]);
    let by_queue = get(&d, "/api/dlq?queue=elsewhere").await.json();
    assert_eq!(by_queue["matched"], 0);

    // Requeue all matching, then purge with a confirmation step.
    let r = post(&d, "/api/dlq/requeue", json!({"all_matching": true, "filter": {"function": "odd"}})).await;
    assert_eq!(r.json()["requeued"], 3, "{}", r.body);
    assert_eq!(env.store.queue_len(&QueueName::new("dq")).await.unwrap(), 3);
    let preview = post(&d, "/api/dlq/purge", json!({"all_matching": true})).await.json();
    assert_eq!((preview["would_purge"].as_u64(), preview["purged"].as_u64()), (Some(4), Some(0)));
    assert_eq!(preview["ids"].as_array().unwrap().len(), 4, "the preview names what a confirmation purges");
    assert_eq!(env.store.dlq_len(&DlqName::new("default")).await.unwrap(), 4, "nothing purged before confirming");
    let done = post(&d, "/api/dlq/purge", json!({"ids": [failed[0].as_str()], "confirm": true})).await.json();
    assert_eq!(done["purged"], 1);
    assert_eq!(env.store.dlq_len(&DlqName::new("default")).await.unwrap(), 3);
    let r = post(&d, "/api/dlq/requeue", json!({"ids": [failed[2].as_str()]})).await.json();
    assert_eq!(r["requeued"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_job_page_shows_every_field_and_the_actions_act() {
    let env = Env::new("").await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = env
        .enqueue_with("send_mail", json!({"to": "a@example.org", "n": [1, 2]}), "mail", |o| {
            o.trace_context.insert("traceparent".into(), traceparent.into());
        })
        .await;
    let d = env.dashboard(|_| {});
    let j = get(&d, &format!("/api/job?id={id}")).await.json();
    assert_eq!(j["status"], "PENDING");
    assert_eq!(j["function"], "send_mail");
    assert_eq!(j["queue"], "rrq:queue:mail");
    assert_eq!(j["params"], json!({"to": "a@example.org", "n": [1, 2]}));
    assert_eq!(j["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(j["timeline"][0]["event"], "Enqueued");
    assert_eq!(j["fields"]["function_name"], "send_mail", "every stored field is listed");
    assert_eq!(j["actions"], json!({"retry": false, "cancel": true, "replay": true}));

    // Replay enqueues a copy; cancel cancels the pending original.
    let r = post(&d, "/api/job/replay", json!({"id": id.as_str()})).await.json();
    let copy = JobId::new(r["new_job_id"].as_str().unwrap());
    assert_ne!(copy, id);
    let c = get(&d, &format!("/api/job?id={copy}")).await.json();
    assert_eq!((c["function"].as_str(), &c["params"]), (Some("send_mail"), &j["params"]));
    let r = post(&d, "/api/job/cancel", json!({"id": id.as_str()})).await;
    assert_eq!(r.json()["result"], "cancelled", "{}", r.body);
    assert_eq!(get(&d, &format!("/api/job?id={id}")).await.json()["status"], "CANCELLED");
    let again = post(&d, "/api/job/cancel", json!({"id": id.as_str()})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{}", again.body);

    // Retry puts a FAILED job back on its queue.
    let failed = env.failed("flaky", "work", "Job timed out after 1s.").await;
    let f = get(&d, &format!("/api/job?id={failed}")).await.json();
    assert_eq!((f["status"].as_str(), f["last_error"].as_str()), (Some("FAILED"), Some("Job timed out after 1s.")));
    assert_eq!(f["actions"]["retry"], true);
    let r = post(&d, "/api/job/retry", json!({"id": failed.as_str()})).await.json();
    assert_eq!(r["queue"], "rrq:queue:work");
    assert_eq!(get(&d, &format!("/api/job?id={failed}")).await.json()["status"], "PENDING");
    let not_failed = post(&d, "/api/job/retry", json!({"id": failed.as_str()})).await;
    assert_eq!(not_failed.status, StatusCode::CONFLICT);
    assert_eq!(get(&d, "/api/job?id=nope").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_loopback_address_needs_a_token_and_requests_must_carry_it() {
    let env = Env::new("").await;
    let public = |token: Option<&str>| {
        let mut o = Options::new("0.0.0.0:0".parse().unwrap());
        o.token = token.map(str::to_owned);
        o
    };
    let e = Dashboard::new(&env.settings, env.store.clone(), public(None)).unwrap_err();
    assert!(matches!(e, BindError::TokenRequired(_)));
    assert!(e.to_string().contains("--token") && e.to_string().contains("RRQ_DASHBOARD_TOKEN"), "{e}");

    let d = Dashboard::new(&env.settings, env.store.clone(), public(Some("open-sesame"))).unwrap();
    let no = get(&d, "/api/overview").await;
    assert_eq!(no.status, StatusCode::UNAUTHORIZED);
    let page = get(&d, "/").await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert!(page.body.contains("access token") && !page.body.contains(d.csrf_secret()), "the login form only");
    let bearer = |t: &str| {
        Request::get("/api/overview").header("authorization", format!("Bearer {t}")).body(Body::empty()).unwrap()
    };
    assert_eq!(call(&d, bearer("open-sesame")).await.status, StatusCode::OK);
    assert_eq!(call(&d, bearer("open-sesamE")).await.status, StatusCode::UNAUTHORIZED);
    // The login form sets the cookie the browser then sends.
    let login = |t: &str| {
        Request::post("/login")
            .header("host", "h:1")
            .header("content-type", "application/x-www-form-urlencoded")
            .body(Body::from(format!("token={t}")))
            .unwrap()
    };
    assert_eq!(call(&d, login("wrong")).await.status, StatusCode::UNAUTHORIZED);
    let resp = d.router().clone();
    let ok = tower::ServiceExt::oneshot(resp, login("open-sesame")).await.unwrap();
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let cookie = ok.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_owned();
    let with_cookie = Request::get("/api/overview").header("cookie", cookie).body(Body::empty()).unwrap();
    assert_eq!(call(&d, with_cookie).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_without_the_csrf_secret_or_from_another_origin_are_refused() {
    let env = Env::new("").await;
    let d = env.dashboard(|_| {});
    let q = QueueName::new("default");
    let send = |csrf: Option<&str>, origin: Option<&str>| {
        let mut b = Request::post("/api/queue/pause")
            .header("host", "127.0.0.1:8080")
            .header("content-type", "application/json");
        if let Some(c) = csrf {
            b = b.header("x-rrq-csrf", c);
        }
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(Body::from(r#"{"name":"default"}"#)).unwrap()
    };
    let csrf = d.csrf_secret().to_owned();
    for (req, why) in [
        (send(None, None), "no CSRF header"),
        (send(Some("guess"), None), "a wrong secret"),
        (send(Some(&csrf), Some("http://evil.example")), "another origin"),
    ] {
        let a = call(&d, req).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{why}: {}", a.body);
        assert!(env.store.paused().await.unwrap().is_empty(), "{why}: nothing was paused");
    }
    let ok = call(&d, send(Some(&csrf), Some("http://127.0.0.1:8080"))).await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    assert_eq!(env.store.paused().await.unwrap(), vec![q]);
    // Without a token, a page that rebinds its DNS name to 127.0.0.1 is
    // refused: its requests name another host.
    let rebound = Request::get("/api/overview").header("host", "evil.example:8080").body(Body::empty()).unwrap();
    assert_eq!(call(&d, rebound).await.status, StatusCode::FORBIDDEN);
    // A GET never changes anything: the action routes answer only POST.
    assert_eq!(get(&d, "/api/queue/resume?name=default").await.status, StatusCode::METHOD_NOT_ALLOWED);
    // The page embeds the secret the front end sends.
    assert!(get(&d, "/").await.body.contains(&csrf));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_every_action() {
    let env = Env::new("").await;
    let id = env.enqueue("work", "default").await;
    let failed = env.failed("boom", "other", "x").await;
    let d = env.dashboard(|o| o.read_only = true);
    for (uri, body) in [
        ("/api/queue/pause", json!({"name": "default"})),
        ("/api/job/cancel", json!({"id": id.as_str()})),
        ("/api/job/retry", json!({"id": failed.as_str()})),
        ("/api/job/replay", json!({"id": id.as_str()})),
        ("/api/dlq/requeue", json!({"all_matching": true})),
        ("/api/dlq/purge", json!({"all_matching": true, "confirm": true})),
    ] {
        let a = post(&d, uri, body).await;
        assert_eq!(a.status, StatusCode::FORBIDDEN, "{uri}: {}", a.body);
    }
    assert!(env.store.paused().await.unwrap().is_empty());
    assert_eq!(env.store.queue_len(&QueueName::new("default")).await.unwrap(), 1);
    assert_eq!(env.store.dlq_len(&DlqName::new("default")).await.unwrap(), 1);
    let s = get(&d, "/api/session").await.json();
    assert_eq!(s["read_only"], true);
    assert!(get(&d, "/").await.body.contains(r#"name="rrq-read-only" content="true""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_answer_carries_the_redis_password_or_dsn() {
    let password = "pw-that-must-not-leak-7f3a";
    // The settings carry a DSN with a password (the store itself connects
    // to the test server without one).
    let redis = TestRedis::private();
    let dsn = format!("redis://rrq:{password}@127.0.0.1:{}/0", redis.port());
    let env =
        Env::on(redis, Some(dsn), "[[rrq.cron_jobs]]\nfunction_name = \"nightly\"\nschedule = \"0 3 * * *\"").await;
    let id = env.enqueue("work", "default").await;
    let failed = env.failed("boom", "other", "x").await;
    let d = env.dashboard(|_| {});
    d.refresh().await.unwrap();
    let mut seen = 0;
    for uri in [
        "/".to_owned(),
        "/assets/app.js".to_owned(),
        "/api/session".to_owned(),
        "/api/overview".to_owned(),
        "/api/queue?name=default".to_owned(),
        format!("/api/job?id={id}"),
        format!("/api/job?id={failed}"),
        "/api/dlq".to_owned(),
        "/api/workers".to_owned(),
        "/api/cron".to_owned(),
    ] {
        let a = get(&d, &uri).await;
        assert_eq!(a.status, StatusCode::OK, "{uri}: {}", a.body);
        assert!(!a.body.contains(password), "{uri} leaks the password");
        assert!(!a.body.contains("redis://"), "{uri} shows the DSN");
        seen += 1;
    }
    assert_eq!(seen, 10);
    let cron = get(&d, "/api/cron").await.json();
    assert_eq!(cron["entries"][0]["function"], "nightly", "the store behind the password answered: {cron}");
    assert_eq!(cron["entries"][0]["name"], "nightly (0 3 * * *)", "an unnamed entry shows its derived name");
    assert_eq!(cron["entries"][0]["next_runs"].as_array().map(Vec::len), Some(3), "{cron}");
    assert_eq!(cron["invalid"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answer_from_the_background_sample_not_from_a_scan() {
    let env = Env::new("").await;
    let d = env.dashboard(|_| {});
    d.refresh().await.unwrap();
    env.enqueue("work", "fresh").await;
    let health = rrq_store::WorkerHealth {
        active_jobs: 2,
        concurrency_limit: 8,
        queues: vec!["rrq:queue:fresh".to_owned()],
        status: "running".to_owned(),
        timestamp: json!(chrono::Utc::now().to_rfc3339()),
        worker_id: "w-dash-1".to_owned(),
        completed_jobs: None,
        failed_jobs: None,
        active_by_queue: None,
    };
    env.store.heartbeat(&health, Duration::from_secs(60)).await.unwrap();
    // Neither the new queue nor the new worker is seen before the next
    // discovery: no request ran a scan.
    let o = get(&d, "/api/overview").await.json();
    assert!(o["queues"].as_array().unwrap().iter().all(|q| q["name"] != "fresh"), "{o}");
    assert_eq!(get(&d, "/api/workers").await.json()["workers"], json!([]));
    d.refresh().await.unwrap();
    let o = get(&d, "/api/overview").await.json();
    assert_eq!(queue(&o, "fresh")["ready"], 1);
    assert_eq!((o["workers_alive"].as_u64(), o["active"].as_u64()), (Some(1), Some(2)));
    let w = get(&d, "/api/workers").await.json();
    let w = &w["workers"][0];
    assert_eq!((w["worker_id"].as_str(), w["status"].as_str()), (Some("w-dash-1"), Some("running")));
    assert_eq!((w["active_jobs"].as_u64(), w["concurrency_limit"].as_u64()), (Some(2), Some(8)));
    assert_eq!(w["queues"], json!(["rrq:queue:fresh"]));
    assert!(w["ttl_seconds"].as_u64().unwrap() > 50);
}

/// A health record written by a worker at `at` with these cumulative counts.
fn counted_health(id: &str, at: chrono::DateTime<chrono::Utc>, completed: u64, failed: u64) -> rrq_store::WorkerHealth {
    rrq_store::WorkerHealth {
        active_jobs: 3,
        concurrency_limit: 8,
        queues: vec!["rrq:queue:busy".to_owned(), "rrq:queue:calm".to_owned()],
        status: "running".to_owned(),
        timestamp: json!(rrq_store::format_timestamp(at)),
        worker_id: id.to_owned(),
        completed_jobs: Some(completed),
        failed_jobs: Some(failed),
        active_by_queue: Some([("rrq:queue:busy".to_owned(), 2), ("rrq:queue:calm".to_owned(), 1)].into()),
    }
}

/// A dashboard running apart from any worker charts completions and
/// failures from two heartbeats of each worker, and shows the jobs running
/// per queue from the same records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standalone_dashboard_charts_rates_and_per_queue_activity_from_heartbeats() {
    let env = Env::new("").await;
    env.enqueue("work", "busy").await;
    let t0 = chrono::Utc::now() - chrono::Duration::seconds(20);
    env.store.heartbeat(&counted_health("w-1", t0, 100, 4), Duration::from_secs(60)).await.unwrap();
    let d = env.dashboard(|_| {});
    d.refresh().await.unwrap();
    // The next heartbeat, ten seconds later: 50 more completed, 2 more failed.
    let t1 = t0 + chrono::Duration::seconds(10);
    env.store.heartbeat(&counted_health("w-1", t1, 150, 6), Duration::from_secs(60)).await.unwrap();
    // A worker seen for the first time, with large counts: no spike.
    env.store.heartbeat(&counted_health("w-2", t1, 1_000_000, 900), Duration::from_secs(60)).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let o = loop {
        d.refresh().await.unwrap();
        let o = get(&d, "/api/overview").await.json();
        if !o["series"]["points"].as_array().unwrap().is_empty() {
            break o;
        }
        // Two samples within the same millisecond make no point yet.
        assert!(std::time::Instant::now() < deadline, "no point was ever made: {o}");
    };
    let point = &o["series"]["points"][0];
    assert_eq!((point["completed"].as_f64(), point["failed"].as_f64()), (Some(5.0), Some(0.2)), "{o}");
    let (busy, calm) = (queue(&o, "busy"), queue(&o, "calm"));
    assert_eq!((busy["active"].as_u64(), calm["active"].as_u64()), (Some(4), Some(2)), "summed over workers: {o}");
    assert_eq!(busy["ready"], 1);
    assert_eq!(o["active"], 6);
    let page = get(&d, "/api/queue?name=busy").await.json();
    assert_eq!(page["counts"]["active"], 4, "{page}");
    let w = get(&d, "/api/workers").await.json();
    assert_eq!(w["workers"][0]["active_by_queue"], json!({"rrq:queue:busy": 2, "rrq:queue:calm": 1}));
    assert_eq!(w["workers"][0]["completed_jobs"], 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_does_not_parse_is_shown_with_its_problem() {
    let env = Env::new("").await;
    let id = JobId::new("odd-job");
    let fields = [("status", "PENDING"), ("enqueue_time", "not a time"), ("job_params", "[1,2")]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    env.store.put_job_fields(&id, &fields).await.unwrap();
    let d = env.dashboard(|_| {});
    let j = get(&d, "/api/job?id=odd-job").await;
    assert_eq!(j.status, StatusCode::OK, "{}", j.body);
    let j = j.json();
    assert!(j["problem"].as_str().unwrap().contains("function_name"), "{j}");
    assert_eq!(j["fields"]["job_params"], "[1,2", "the stored fields are still shown");
    assert_eq!(j["actions"], json!({"retry": false, "cancel": false, "replay": false}));
    let replay = post(&d, "/api/job/replay", json!({"id": "odd-job"})).await;
    assert_eq!(replay.status, StatusCode::CONFLICT, "{}", replay.body);
}

/// `GET path` over a real socket.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    (head.lines().next().unwrap_or_default().to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_dashboard_reports_redis_going_away_and_keeps_serving() {
    let mut env = Env::new("").await;
    env.enqueue("work", "default").await;
    let mut options = Options::new("127.0.0.1:0".parse().unwrap());
    options.sample_every = Duration::from_millis(100);
    options.discover_every = Duration::from_millis(100);
    let d = Dashboard::new(&env.settings, env.store.clone(), options).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let addr = d.serve(stop.clone()).await.unwrap();
    let overview = |want: &dyn Fn(&Value) -> bool| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (status, body) = http_get(addr, "/api/overview");
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            if status.contains("200") && want(&v) {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "{status} {body}");
            // sleep-ok: polling the served overview with a deadline.
            std::thread::sleep(Duration::from_millis(50)); // sleep-ok: deadline poll
        }
    };
    let o = overview(&|v| v["queues"].as_array().is_some_and(|q| q.iter().any(|q| q["ready"] == 1)));
    assert_eq!(o["error"], Value::Null);
    env.redis.stop();
    let o = overview(&|v| v["error"].is_string());
    assert!(o["error"].as_str().unwrap().contains("Redis"), "{o}");
    assert_eq!(queue(&o, "default")["ready"], 1, "the last good counts stay");
    let (status, body) = http_get(addr, "/api/job?id=x");
    assert!(status.contains("503"), "{status} {body}");
    // Redis back (empty: it keeps no data): the overview recovers.
    env.redis.start_again();
    let o = overview(&|v| {
        v["error"].is_null() && v["queues"].as_array().is_some_and(|q| q.iter().all(|q| q["ready"] == 0))
    });
    assert_eq!(queue(&o, "default")["ready"], 0);
    stop.cancel();
}
