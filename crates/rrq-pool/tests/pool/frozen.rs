//! A reply that reached the socket before the deadline wins over the timer,
//! even when the executor was frozen (a stopped or starved orchestrator) and
//! wakes up with both the reply and the expired timer ready.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use rrq_pool::{PoolConfig, ProcessPool, Runner};
use rrq_protocol::{DEFAULT_MAX_FRAME_BYTES, Envelope, FrameDecoder, encode_frame_to_vec};
use serde_json::json;

use crate::support::{request, success};

/// Rounds per runtime flavour: the race used to be lost in most of them.
const ROUNDS: usize = 12;
const TIMEOUT: Duration = Duration::from_millis(300);
const ANSWER_AFTER: Duration = Duration::from_millis(50);
const FROZEN_FOR: Duration = Duration::from_millis(700);

/// A fake external runner on its own OS thread (so it keeps running while
/// the executor is frozen): answers the first request `ANSWER_AFTER` after it
/// arrived, and reports the arrival on `arrived`.
fn runner_thread(
    listener: std::net::TcpListener,
    arrived: tokio::sync::oneshot::Sender<()>,
) -> std::thread::JoinHandle<std::net::TcpStream> {
    std::thread::spawn(move || {
        let decoder = FrameDecoder::default();
        let mut buf = BytesMut::new();
        // The pool's start-up connection is the one it keeps using.
        let (mut stream, _) = listener.accept().expect("accept");
        let req = loop {
            if let Some(Envelope::Request(req)) = decoder.decode(&mut buf).expect("a valid frame") {
                break req;
            }
            let mut chunk = [0_u8; 4096];
            let n = stream.read(&mut chunk).expect("read");
            assert!(n > 0, "the pool closed the connection");
            buf.extend_from_slice(&chunk[..n]);
        };
        let _ = arrived.send(());
        std::thread::sleep(ANSWER_AFTER); // sleep-ok: the fake handler's run time
        let frame = encode_frame_to_vec(&Envelope::Response(success(&req, json!("on time"))), DEFAULT_MAX_FRAME_BYTES)
            .expect("encode");
        stream.write_all(&frame).expect("write");
        stream
    })
}

/// One round: dispatch, freeze the executor past the deadline, resume.
async fn round(freeze: impl FnOnce()) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    let (arrived, arrival) = tokio::sync::oneshot::channel();
    let runner = runner_thread(listener, arrived);
    let mut config = PoolConfig::external("frozen", "127.0.0.1", port);
    config.connect_timeout = Duration::from_secs(2);
    let pool = std::sync::Arc::new(ProcessPool::start(config).await.expect("pool starts"));
    let pending = {
        let pool = std::sync::Arc::clone(&pool);
        tokio::spawn(async move { pool.execute(request("frozen", "f", json!({})), TIMEOUT).await })
    };
    arrival.await.expect("the request reached the runner");
    freeze();
    let outcome = pending.await.expect("execute task");
    let _kept_open = runner.join().expect("runner thread");
    match outcome {
        Ok(outcome) => assert_eq!(outcome.result, Some(json!("on time"))),
        Err(e) => panic!("the reply sent {ANSWER_AFTER:?} into a {TIMEOUT:?} timeout lost to the timer: {e}"),
    }
    pool.shutdown(Duration::ZERO).await;
}

#[test]
fn a_reply_in_the_socket_beats_the_timer_on_a_frozen_current_thread_runtime() {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    for _ in 0..ROUNDS {
        // The test task runs on the runtime's only thread: blocking it
        // freezes every task, the pool's reader and timers included.
        runtime.block_on(round(|| std::thread::sleep(FROZEN_FOR))); // sleep-ok: freezing the executor is the test
    }
}

#[test]
fn a_reply_in_the_socket_beats_the_timer_on_a_frozen_worker_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let handle = runtime.handle().clone();
    for _ in 0..ROUNDS {
        runtime.block_on(round(|| {
            // Block the only worker thread (where the pool's tasks run).
            let (done, thawed) = std::sync::mpsc::channel();
            handle.spawn(async move {
                std::thread::sleep(FROZEN_FOR); // sleep-ok: freezing the executor is the test
                let _ = done.send(());
            });
            // This thread is not a worker: waiting here freezes nothing.
            thawed.recv().expect("the freeze ended");
        }));
    }
}
