//! An in-process runner and a tiny protocol client.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use chrono::{SecondsFormat, Utc};
use rrq_protocol::{
    CancelRequest, DEFAULT_MAX_FRAME_BYTES, Envelope, ExecutionContext, ExecutionOutcome, ExecutionRequest,
    FrameDecoder, PROTOCOL_VERSION, encode_frame_to_vec,
};
use rrq_runner::{Registry, ServeOptions, Server};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Longest any single wait in these tests may take.
pub const PATIENCE: Duration = Duration::from_secs(5);

/// A server on 127.0.0.1:0 and the means to stop it.
pub struct Running {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Running {
    pub async fn start(registry: Registry) -> Self {
        Self::start_with(registry, ServeOptions::default()).await
    }

    pub async fn start_with(registry: Registry, options: ServeOptions) -> Self {
        let server = Server::bind(registry, "127.0.0.1:0".parse().unwrap()).await.expect("bind");
        let server = server.with_options(options);
        let addr = server.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run_until(async move {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    /// Signals shutdown and waits for the server to return.
    pub async fn stop(mut self) {
        let _ = self.stop.take().expect("stopped once").send(());
        let task = self.task.take().expect("stopped once");
        tokio::time::timeout(PATIENCE, task).await.expect("server stops in time").expect("server task");
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// One orchestrator-side connection.
pub struct Client {
    stream: TcpStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).await.expect("connect");
        Self { stream, buf: BytesMut::new(), decoder: FrameDecoder::default() }
    }

    pub async fn send(&mut self, message: &Envelope) {
        let frame = encode_frame_to_vec(message, DEFAULT_MAX_FRAME_BYTES).expect("encode");
        self.stream.write_all(&frame).await.expect("write");
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next message, or `None` when the runner closed the connection.
    pub async fn recv(&mut self) -> Option<Envelope> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                if let Some(msg) = self.decoder.decode(&mut self.buf).expect("runner sent a valid frame") {
                    return Some(msg);
                }
                let n = self.stream.read_buf(&mut self.buf).await.unwrap_or(0);
                if n == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("runner answered in time")
    }

    /// The next message, which must be a response.
    pub async fn outcome(&mut self) -> ExecutionOutcome {
        match self.recv().await {
            Some(Envelope::Response(outcome)) => outcome,
            other => panic!("expected a response, got {other:?}"),
        }
    }

    /// Sends a request and waits for its outcome (nothing else in flight).
    pub async fn call(&mut self, request: ExecutionRequest) -> ExecutionOutcome {
        let id = request.request_id.clone();
        self.send(&Envelope::Request(request)).await;
        let outcome = self.outcome().await;
        assert_eq!(outcome.request_id.as_deref(), Some(id.as_str()));
        outcome
    }

    pub async fn cancel(&mut self, job_id: &str, request_id: Option<&str>) {
        self.send(&Envelope::Cancel(CancelRequest::new(job_id, request_id.map(str::to_owned)))).await;
    }
}

/// A request for `function` with `params`, job id `job`, request id `job-r`.
pub fn request(job: &str, function: &str, params: Value) -> ExecutionRequest {
    ExecutionRequest {
        protocol_version: PROTOCOL_VERSION.to_owned(),
        request_id: format!("{job}-r"),
        job_id: job.to_owned(),
        function_name: function.to_owned(),
        params: params.as_object().cloned().expect("params are an object"),
        context: ExecutionContext {
            job_id: job.to_owned(),
            attempt: 1,
            enqueue_time: Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true),
            queue_name: "rrq:queue:default".to_owned(),
            deadline: None,
            trace_context: None,
            correlation_context: None,
            worker_id: Some("rrq_worker_test".to_owned()),
        },
    }
}

/// Sets the deadline to now + `offset_ms` (negative: in the past).
pub fn with_deadline(mut request: ExecutionRequest, offset_ms: i64) -> ExecutionRequest {
    let at = Utc::now() + chrono::TimeDelta::milliseconds(offset_ms);
    request.context.deadline = Some(at.to_rfc3339_opts(SecondsFormat::Nanos, true));
    request
}
