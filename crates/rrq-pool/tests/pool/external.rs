//! External mode against in-process fake runners: the connection protocol,
//! its faults, multiplexing, timeouts and cancellation.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use rrq_pool::{PoolError, ProcessPool, Runner};
use rrq_protocol::{Envelope, ExecutionOutcome, OutcomeError, OutcomeStatus, error_types};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::support::{Fake, eventually, request, success, within};

type Call = JoinHandle<Result<ExecutionOutcome, PoolError>>;

async fn start(fake: &Fake, max_in_flight: usize, tune: impl FnOnce(&mut rrq_pool::PoolConfig)) -> Arc<ProcessPool> {
    let mut config = fake.config();
    config.max_in_flight = NonZeroUsize::new(max_in_flight).unwrap();
    tune(&mut config);
    Arc::new(ProcessPool::start(config).await.expect("pool starts"))
}

fn call(pool: &Arc<ProcessPool>, job: &str, timeout: Duration) -> Call {
    let pool = Arc::clone(pool);
    let req = request(job, "f", json!({"job": job}));
    tokio::spawn(async move { pool.execute(req, timeout).await })
}

async fn outcome(call: Call) -> Result<ExecutionOutcome, PoolError> {
    within("the execute call", call).await.expect("execute task")
}

/// The transport error's message followed by its causes.
fn transport(result: Result<ExecutionOutcome, PoolError>) -> String {
    match result {
        Err(e @ PoolError::Transport { .. }) => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text = format!("{text}: {c}");
                cause = c.source();
            }
            text
        }
        other => panic!("expected a transport error, got {other:?}"),
    }
}

const LONG: Duration = Duration::from_secs(10);

#[tokio::test]
async fn round_trips_reuse_one_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    assert_eq!(pool.capacity(), 1);
    assert_eq!(pool.health().ready, 1);
    let mut peer = fake.accept().await;
    for job in ["a", "b", "c"] {
        let pending = call(&pool, job, LONG);
        let req = peer.request().await;
        assert_eq!((req.job_id.as_str(), req.protocol_version.as_str()), (job, "2"));
        assert_eq!(req.params["job"], json!(job));
        peer.respond(success(&req, json!({"ok": job}))).await;
        let got = outcome(pending).await.expect("outcome");
        assert_eq!((got.status, got.result), (OutcomeStatus::Success, Some(json!({"ok": job}))));
    }
    assert_eq!(pool.health().in_flight, 0);
    pool.shutdown(Duration::ZERO).await;
    peer.expect_closed().await;
}

#[tokio::test]
async fn requests_are_multiplexed_and_matched_out_of_order() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let first = call(&pool, "one", LONG);
    let second = call(&pool, "two", LONG);
    let a = peer.request().await;
    let b = peer.request().await;
    // Answer the later one first.
    peer.respond(success(&b, json!(b.job_id))).await;
    peer.respond(success(&a, json!(a.job_id))).await;
    assert_eq!(outcome(first).await.unwrap().result, Some(json!("one")));
    assert_eq!(outcome(second).await.unwrap().result, Some(json!("two")));
}

#[tokio::test]
async fn at_most_max_in_flight_requests_reach_the_runner() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let calls: Vec<_> = ["a", "b", "c"].iter().map(|j| call(&pool, j, LONG)).collect();
    let first = peer.request().await;
    let _second = peer.request().await;
    eventually("three calls in progress", || (pool.health().in_flight == 3).then_some(())).await;
    // The third is held back until a slot frees up.
    assert!(tokio::time::timeout(Duration::from_millis(100), peer.recv()).await.is_err(), "a third request was sent");
    peer.respond(success(&first, json!(1))).await;
    let third = peer.request().await;
    peer.respond(success(&third, json!(3))).await;
    let mut calls = calls.into_iter();
    assert!(outcome(calls.next().unwrap()).await.is_ok());
    assert!(outcome(calls.nth(1).unwrap()).await.is_ok());
}

#[tokio::test]
async fn unknown_request_ids_are_dropped() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let req = peer.request().await;
    let mut stray = success(&req, json!("stray"));
    stray.request_id = Some("nobody-asked".into());
    peer.respond(stray).await;
    peer.respond(success(&req, json!("real"))).await;
    assert_eq!(outcome(pending).await.unwrap().result, Some(json!("real")));
}

#[tokio::test]
async fn a_job_id_mismatch_fails_the_request() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let req = peer.request().await;
    let mut wrong = success(&req, json!(1));
    wrong.job_id = "someone-else".into();
    peer.respond(wrong).await;
    let message = transport(outcome(pending).await);
    assert!(message.contains("someone-else") && message.contains("'a'"), "{message}");
    // The connection is still good.
    let next = call(&pool, "b", LONG);
    let req = peer.request().await;
    peer.respond(success(&req, json!(2))).await;
    assert!(outcome(next).await.is_ok());
}

#[tokio::test]
async fn a_response_without_request_id_fails_the_only_pending_request() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let req = peer.request().await;
    let mut anonymous = success(&req, json!(1));
    anonymous.request_id = None;
    peer.respond(anonymous).await;
    assert!(transport(outcome(pending).await).contains("request_id"));
    let next = call(&pool, "b", LONG);
    let req = peer.request().await;
    peer.respond(success(&req, json!(2))).await;
    assert!(outcome(next).await.is_ok(), "the connection survives");
}

#[tokio::test]
async fn a_response_without_request_id_among_several_closes_the_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let (a, b) = (call(&pool, "a", LONG), call(&pool, "b", LONG));
    let req = peer.request().await;
    let _ = peer.request().await;
    let mut anonymous = success(&req, json!(1));
    anonymous.request_id = None;
    peer.respond(anonymous).await;
    assert!(transport(outcome(a).await).contains("without request_id"));
    assert!(transport(outcome(b).await).contains("without request_id"));
    peer.expect_closed().await;
    // The next request opens a new connection.
    let next = call(&pool, "c", LONG);
    let mut fresh = fake.accept().await;
    let req = fresh.request().await;
    fresh.respond(success(&req, json!(3))).await;
    assert!(outcome(next).await.is_ok());
}

/// What the fake runner does wrong.
enum Fault {
    /// Writes these bytes and keeps the connection open.
    Bytes(Vec<u8>),
    /// Writes these bytes, then closes the connection.
    BytesThenClose(Vec<u8>),
}

/// A fault injected by the fake runner fails the pending request with a
/// transport error containing `expect`, and the pool reconnects afterwards.
async fn fault_then_recovery(max_frame_bytes: usize, fault: Fault, expect: &str) {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |c| c.max_frame_bytes = max_frame_bytes).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let _ = peer.request().await;
    let _kept = match fault {
        Fault::Bytes(bytes) => {
            peer.write_raw(&bytes).await;
            Some(peer)
        }
        Fault::BytesThenClose(bytes) => {
            peer.write_raw(&bytes).await;
            drop(peer);
            None
        }
    };
    let message = transport(outcome(pending).await);
    assert!(message.contains(expect), "{message:?} should mention {expect:?}");
    let next = call(&pool, "b", LONG);
    let mut fresh = fake.accept().await;
    let req = fresh.request().await;
    fresh.respond(success(&req, json!("recovered"))).await;
    assert_eq!(outcome(next).await.unwrap().result, Some(json!("recovered")));
}

#[tokio::test]
async fn a_non_json_frame_fails_the_connection() {
    fault_then_recovery(1024, Fault::Bytes(b"\x00\x00\x00\x05hello".to_vec()), "invalid frame").await;
}

#[tokio::test]
async fn an_oversize_frame_fails_the_connection() {
    fault_then_recovery(1024, Fault::Bytes(4096_u32.to_be_bytes().to_vec()), "exceeds the maximum").await;
}

#[tokio::test]
async fn a_truncated_frame_fails_the_connection() {
    let partial = b"\x00\x00\x00\x64{\"type\":".to_vec();
    fault_then_recovery(1024, Fault::BytesThenClose(partial), "closed inside a frame").await;
}

#[tokio::test]
async fn a_closed_socket_fails_the_connection() {
    fault_then_recovery(1024, Fault::BytesThenClose(Vec::new()), "runner connection closed").await;
}

#[tokio::test]
async fn a_message_the_runner_must_not_send_fails_the_connection() {
    let cancel = Envelope::Cancel(rrq_protocol::CancelRequest::new("a", None));
    let frame = rrq_protocol::encode_frame_to_vec(&cancel, DEFAULT_FRAME).unwrap();
    fault_then_recovery(DEFAULT_FRAME, Fault::Bytes(frame), "unexpected cancel message").await;
}

const DEFAULT_FRAME: usize = rrq_protocol::DEFAULT_MAX_FRAME_BYTES;

#[tokio::test]
async fn a_request_from_the_runner_fails_the_connection() {
    let wrong_way = Envelope::Request(request("a", "f", json!({})));
    let frame = rrq_protocol::encode_frame_to_vec(&wrong_way, DEFAULT_FRAME).unwrap();
    fault_then_recovery(DEFAULT_FRAME, Fault::Bytes(frame), "unexpected request message").await;
}

#[tokio::test]
async fn a_zero_length_frame_fails_the_connection() {
    fault_then_recovery(1024, Fault::Bytes(vec![0, 0, 0, 0]), "empty payload").await;
}

#[tokio::test]
async fn an_unknown_message_type_fails_the_connection() {
    let body = br#"{"type":"hello","payload":{}}"#;
    let mut frame = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    fault_then_recovery(1024, Fault::Bytes(frame), "invalid frame").await;
}

#[tokio::test]
async fn a_broken_frame_fails_every_request_pending_on_the_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 3, |_| {}).await;
    let mut peer = fake.accept().await;
    let calls = [call(&pool, "a", LONG), call(&pool, "b", LONG), call(&pool, "c", LONG)];
    for _ in 0..3 {
        let _ = peer.request().await;
    }
    peer.write_raw(b"\x00\x00\x00\x05hello").await;
    for pending in calls {
        assert!(transport(outcome(pending).await).contains("invalid frame"));
    }
    peer.expect_closed().await;
    assert_eq!(pool.health().in_flight, 0);
}

#[tokio::test]
async fn a_response_timeout_is_a_transport_error_and_drops_the_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |c| c.response_timeout = Some(Duration::from_millis(150))).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let _ = peer.request().await;
    assert_eq!(transport(outcome(pending).await), "runner response timeout");
    // Not shared and no hints: no cancel, the "process" (connection) is dropped.
    peer.expect_closed().await;
}

#[tokio::test]
async fn a_response_timeout_on_a_shared_connection_cancels_on_a_fresh_one_and_keeps_it() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |c| c.response_timeout = Some(Duration::from_millis(1_000))).await;
    let mut peer = fake.accept().await;
    let slow = call(&pool, "slow", LONG);
    let slow_req = peer.request().await;
    // sleep-ok: the two response timers must be staggered, so that only the
    // first expires while the second request is still in flight.
    tokio::time::sleep(Duration::from_millis(600)).await; // sleep-ok: staggers the timers
    let other = call(&pool, "other", LONG);
    let other_req = peer.request().await;
    assert_eq!(transport(outcome(slow).await), "runner response timeout");
    let mut side = fake.accept().await;
    match side.recv().await {
        Some(Envelope::Cancel(c)) => {
            assert_eq!((c.job_id.as_str(), c.request_id.as_deref()), ("slow", Some(slow_req.request_id.as_str())));
        }
        other => panic!("expected a cancel frame on a fresh connection, got {other:?}"),
    }
    // The connection (and so the process) carrying the other request is kept.
    peer.respond(success(&other_req, json!("kept"))).await;
    assert_eq!(outcome(other).await.unwrap().result, Some(json!("kept")));
    pool.shutdown(Duration::ZERO).await;
}

#[tokio::test]
async fn a_timeout_on_a_shared_connection_sends_a_cancel_on_a_fresh_one() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let slow = call(&pool, "slow", Duration::from_millis(200));
    let other = call(&pool, "other", LONG);
    let slow_req = peer.request().await;
    let other_req = peer.request().await;
    assert!(matches!(outcome(slow).await, Err(PoolError::Timeout(_))));
    let mut side = fake.accept().await;
    match side.recv().await {
        Some(Envelope::Cancel(c)) => {
            assert_eq!((c.job_id.as_str(), c.request_id.as_deref()), ("slow", Some(slow_req.request_id.as_str())));
            assert!(!c.hard_kill);
        }
        other => panic!("expected a cancel frame, got {other:?}"),
    }
    side.expect_closed().await;
    // The late answer is dropped; the shared connection keeps working.
    peer.respond(success(&slow_req, json!("late"))).await;
    peer.respond(success(&other_req, json!("fine"))).await;
    assert_eq!(outcome(other).await.unwrap().result, Some(json!("fine")));
}

#[tokio::test]
async fn a_timeout_whose_cancel_cannot_be_delivered_drops_the_shared_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    // No more connections can be opened: the cancel has no way in.
    drop(fake);
    let slow = call(&pool, "slow", Duration::from_millis(200));
    let other = call(&pool, "other", LONG);
    let _ = peer.request().await;
    let _ = peer.request().await;
    assert!(matches!(outcome(slow).await, Err(PoolError::Timeout(_))));
    // Shared, but the cancel failed: the "process" (connection) is given up,
    // with the other request on it.
    peer.expect_closed().await;
    assert!(outcome(other).await.is_err());
}

#[tokio::test]
async fn a_timeout_with_cancel_hints_cancels_then_drops_the_connection() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |c| c.cancel_hints = true).await;
    let mut peer = fake.accept().await;
    let slow = call(&pool, "slow", Duration::from_millis(150));
    let req = peer.request().await;
    assert!(matches!(outcome(slow).await, Err(PoolError::Timeout(_))));
    peer.expect_closed().await;
    let mut side = fake.accept().await;
    assert!(
        matches!(side.recv().await, Some(Envelope::Cancel(c)) if c.request_id.as_deref() == Some(req.request_id.as_str()))
    );
}

#[tokio::test]
async fn cancel_sends_a_cancel_frame_and_returns_the_runners_outcome() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let req = peer.request().await;
    pool.cancel("other-job", &req.request_id).await; // wrong job: ignored
    pool.cancel("a", &req.request_id).await;
    match peer.recv().await {
        Some(Envelope::Cancel(c)) => assert_eq!(c.request_id.as_deref(), Some(req.request_id.as_str())),
        other => panic!("expected a cancel frame on the same connection, got {other:?}"),
    }
    let cancelled = ExecutionOutcome::error(&req, OutcomeError::with_kind("Job cancelled", error_types::CANCELLED));
    peer.respond(cancelled).await;
    let got = outcome(pending).await.unwrap();
    assert_eq!(got.error_kind(), Some(error_types::CANCELLED));
}

#[tokio::test]
async fn a_request_cancelled_while_waiting_never_reaches_the_runner() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let busy = call(&pool, "busy", LONG);
    let busy_req = peer.request().await;
    let waiting = call(&pool, "waiting", LONG);
    eventually("the second call to wait", || (pool.health().in_flight == 2).then_some(())).await;
    pool.cancel("waiting", "waiting-r").await;
    let got = outcome(waiting).await.unwrap();
    assert_eq!((got.status, got.error_message()), (OutcomeStatus::Error, Some("Job cancelled")));
    peer.respond(success(&busy_req, json!(1))).await;
    assert!(outcome(busy).await.is_ok());
    let next = call(&pool, "next", LONG);
    assert_eq!(peer.request().await.job_id, "next", "the cancelled request was never sent");
    drop(next);
}

#[tokio::test]
async fn shutdown_refuses_new_work_waits_then_fails_the_rest() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |c| c.cancel_hints = true).await;
    let mut peer = fake.accept().await;
    let (done, stuck) = (call(&pool, "done", LONG), call(&pool, "stuck", LONG));
    let done_req = peer.request().await;
    let stuck_req = peer.request().await;
    let stopping = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.shutdown(Duration::from_millis(300)).await })
    };
    eventually("shutdown to begin", || {
        matches!(pool.health().in_flight, 2).then_some(())?;
        // New calls are refused as soon as shutdown starts.
        futures_ready(&pool)
    })
    .await;
    peer.respond(success(&done_req, json!("in time"))).await;
    assert_eq!(outcome(done).await.unwrap().result, Some(json!("in time")));
    // The other one outlives the grace: a cancel hint, then ShuttingDown.
    let mut side = fake.accept().await;
    assert!(
        matches!(side.recv().await, Some(Envelope::Cancel(c)) if c.request_id.as_deref() == Some(stuck_req.request_id.as_str()))
    );
    assert!(matches!(outcome(stuck).await, Err(PoolError::ShuttingDown)));
    within("shutdown", stopping).await.unwrap();
    peer.expect_closed().await;
    pool.shutdown(Duration::ZERO).await; // idempotent
    assert_eq!(pool.health().ready, 0);
}

/// `Some` once the pool refuses new requests.
fn futures_ready(pool: &Arc<ProcessPool>) -> Option<()> {
    let probe = pool.execute(request("late", "f", json!({})), Duration::from_secs(1));
    match futures::FutureExt::now_or_never(probe) {
        Some(Err(PoolError::ShuttingDown)) => Some(()),
        _ => None,
    }
}

#[tokio::test]
async fn restart_all_lets_requests_finish_then_reconnects() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let pending = call(&pool, "a", LONG);
    let req = peer.request().await;
    let restarting = {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move { pool.restart_all(Duration::from_secs(5)).await })
    };
    peer.respond(success(&req, json!("finished"))).await;
    assert_eq!(outcome(pending).await.unwrap().result, Some(json!("finished")));
    within("restart", restarting).await.unwrap().expect("restart succeeds");
    peer.expect_closed().await;
    let next = call(&pool, "b", LONG);
    let mut fresh = fake.accept().await;
    let req = fresh.request().await;
    fresh.respond(success(&req, json!(2))).await;
    assert!(outcome(next).await.is_ok());
}

#[tokio::test]
async fn an_unreachable_external_runner_fails_start_up() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut config = rrq_pool::PoolConfig::external("gone", "127.0.0.1", port);
    config.connect_timeout = Duration::from_millis(300);
    match ProcessPool::start(config).await {
        Err(PoolError::Unavailable(message)) => assert!(message.contains("cannot connect"), "{message}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_loopback_host_must_be_allowed() {
    let config = rrq_pool::PoolConfig::external("far", "10.0.0.5", 9000);
    match ProcessPool::start(config).await {
        Err(PoolError::Config(e)) => assert_eq!(e.field, "tcp_host"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[tokio::test]
async fn terminate_closes_the_connection_carrying_the_request() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 2, |_| {}).await;
    let mut peer = fake.accept().await;
    let (target, sharing) = (call(&pool, "target", LONG), call(&pool, "sharing", LONG));
    let _ = peer.request().await;
    let _ = peer.request().await;
    within("terminate", pool.terminate("target", "target-r")).await;
    assert!(transport(outcome(target).await).contains("terminated"));
    assert!(transport(outcome(sharing).await).contains("terminated"), "requests sharing it fail the same way");
    peer.expect_closed().await;
    within("terminate again", pool.terminate("target", "target-r")).await; // idempotent
    let next = call(&pool, "next", LONG);
    let mut fresh = fake.accept().await;
    let req = fresh.request().await;
    fresh.respond(success(&req, json!("fresh"))).await;
    assert_eq!(outcome(next).await.unwrap().result, Some(json!("fresh")));
}

#[tokio::test]
async fn terminate_cancels_a_request_not_yet_sent_locally() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let busy = call(&pool, "busy", LONG);
    let busy_req = peer.request().await;
    let waiting = call(&pool, "waiting", LONG);
    eventually("the second call to wait", || (pool.health().in_flight == 2).then_some(())).await;
    within("terminate", pool.terminate("waiting", "waiting-r")).await;
    let got = outcome(waiting).await.unwrap();
    assert_eq!(got.error_kind(), Some(error_types::CANCELLED));
    // The connection carrying the other request was left alone.
    peer.respond(success(&busy_req, json!(1))).await;
    assert!(outcome(busy).await.is_ok());
}

#[tokio::test]
async fn a_dropped_execute_is_abandoned_and_its_connection_dropped() {
    let fake = Fake::bind().await;
    let pool = start(&fake, 1, |_| {}).await;
    let mut peer = fake.accept().await;
    let dropped = call(&pool, "dropped", LONG);
    let _ = peer.request().await;
    dropped.abort();
    assert!(within("the aborted call", dropped).await.unwrap_err().is_cancelled());
    // Not shared and no hints: treated like a timeout, the connection goes.
    peer.expect_closed().await;
    assert_eq!(pool.health().in_flight, 0);
}
