//! The export side of each signal: the bounded queue spans and log records
//! are handed to, the task that sends them in batches, the outage log, and
//! the metrics collection loop.

use super::*;

/// The bounded hand-off from the code that produces items to the task that
/// exports them.
#[derive(Debug)]
pub(super) struct Queue<T> {
    pub(super) tx: mpsc::Sender<Msg<T>>,
    pub(super) dropped: Arc<AtomicU64>,
    pub(super) counter: &'static str,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue { tx: self.tx.clone(), dropped: self.dropped.clone(), counter: self.counter }
    }
}

pub(super) enum Msg<T> {
    Item(Box<T>),
    Flush(oneshot::Sender<()>),
}

impl<T> std::fmt::Debug for Msg<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Item(_) => write!(f, "Item"),
            Msg::Flush(_) => write!(f, "Flush"),
        }
    }
}

impl<T> Queue<T> {
    pub(super) fn new(counter: &'static str) -> (Queue<T>, mpsc::Receiver<Msg<T>>) {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        (Queue { tx, dropped: Arc::new(AtomicU64::new(0)), counter }, rx)
    }

    /// Hands `item` over without waiting; counts it when the queue is full.
    pub(super) fn offer(&self, item: T) {
        if self.tx.try_send(Msg::Item(Box::new(item))).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(self.counter).increment(1);
        }
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(super) async fn flush(&self, deadline: tokio::time::Instant) {
        let (done, wait) = oneshot::channel();
        if tokio::time::timeout_at(deadline, self.tx.send(Msg::Flush(done))).await.is_ok_and(|sent| sent.is_ok()) {
            let _ = tokio::time::timeout_at(deadline, wait).await;
        }
    }

    pub(super) fn report_drops(&self, signal: Signal) {
        let dropped = self.dropped();
        if dropped > 0 {
            warn!(dropped, "OTLP export dropped {} because its queue was full", signal.items());
        }
    }
}

/// Hands each finished span to the export task without waiting.
#[derive(Debug)]
pub(super) struct SpanQueue(pub(super) Queue<SpanData>);

impl SpanProcessor for SpanQueue {
    fn on_start(&self, _span: &mut opentelemetry_sdk::trace::Span, _cx: &opentelemetry::Context) {}

    fn on_end(&self, span: SpanData) {
        self.0.offer(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _timeout: Duration) -> OTelSdkResult {
        Ok(())
    }
}

/// Whether a signal's collector is failing: logs the start and the end of an
/// outage, never each failed request.
#[derive(Debug)]
pub(super) struct Outage {
    pub(super) signal: Signal,
    pub(super) endpoint: String,
    pub(super) failing: bool,
}

impl Outage {
    pub(super) fn new(signal: Signal, endpoint: &str) -> Outage {
        Outage { signal, endpoint: endpoint.to_owned(), failing: false }
    }

    pub(super) fn record(&mut self, result: OTelSdkResult, n: usize) {
        let items = self.signal.items();
        match result {
            Ok(()) if self.failing => {
                self.failing = false;
                info!(endpoint = %self.endpoint, "OTLP collector reachable again; exporting {items}");
            }
            Ok(()) => {}
            Err(e) if !self.failing => {
                self.failing = true;
                warn!(endpoint = %self.endpoint, error = %e, count = n,
                    "cannot export {items} to the OTLP collector; dropping them until it answers (logged once per outage)");
            }
            Err(_) => {}
        }
    }
}

/// Drains a queue in batches: a batch closes at a flush, when full, or
/// after [`BATCH_DELAY`].
pub(super) async fn batch_loop<T, F, Fut>(mut rx: mpsc::Receiver<Msg<T>>, mut outage: Outage, export: F)
where
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = OTelSdkResult>,
{
    let mut batch: Vec<T> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.recv().await {
        let mut flushed = Vec::new();
        take(first, &mut batch, &mut flushed);
        // The channel is FIFO: a flush arrives after every item queued
        // before it.
        let deadline = tokio::time::Instant::now() + BATCH_DELAY;
        while batch.len() < MAX_BATCH && flushed.is_empty() {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(msg)) => take(msg, &mut batch, &mut flushed),
                _ => break,
            }
        }
        if !batch.is_empty() {
            let n = batch.len();
            let result = export(std::mem::replace(&mut batch, Vec::with_capacity(MAX_BATCH))).await;
            outage.record(result, n);
        }
        for done in flushed {
            let _ = done.send(());
        }
    }
}

pub(super) fn take<T>(msg: Msg<T>, batch: &mut Vec<T>, flushed: &mut Vec<oneshot::Sender<()>>) {
    match msg {
        Msg::Item(item) => batch.push(*item),
        Msg::Flush(done) => flushed.push(done),
    }
}

/// The manual reader, shared between the meter provider (which owns its
/// reader) and the export task that collects from it.
#[derive(Debug, Clone)]
pub(super) struct SharedReader(pub(super) Arc<ManualReader>);

impl opentelemetry_sdk::metrics::reader::MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<opentelemetry_sdk::metrics::Pipeline>) {
        self.0.register_pipeline(pipeline);
    }

    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }

    fn temporality(&self, kind: opentelemetry_sdk::metrics::InstrumentKind) -> opentelemetry_sdk::metrics::Temporality {
        self.0.temporality(kind)
    }
}

/// Collects and sends the metrics every `interval`, and at each flush
/// request (the last one at exit).
pub(super) async fn metrics_loop(
    reader: SharedReader,
    exporter: opentelemetry_otlp::MetricExporter,
    interval: Duration,
    mut flush: mpsc::Receiver<oneshot::Sender<()>>,
    mut outage: Outage,
) {
    use opentelemetry_sdk::metrics::reader::MetricReader as _;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let done = tokio::select! {
            _ = tick.tick() => None,
            request = flush.recv() => match request {
                Some(done) => Some(done),
                None => return,
            },
        };
        let mut rm = ResourceMetrics::default();
        if reader.collect(&mut rm).is_ok() {
            let n = rm.scope_metrics().map(|s| s.metrics().count()).sum();
            if n > 0 {
                outage.record(exporter.export(&rm).await, n);
            }
        }
        if let Some(done) = done {
            let _ = done.send(());
        }
    }
}
