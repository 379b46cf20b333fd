//! `/metrics` (Prometheus text format) and `/healthz` for a running worker.
//!
//! A deliberately small HTTP/1.1 responder: two GET routes on a loopback
//! address, one request per connection. Pulling in a web framework for that
//! would double the CLI's build time.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rrq_pool::Runner;
use rrq_protocol::QueueName;
use rrq_store::{ReadySignals, Store};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// What `/healthz` looks at.
#[derive(Clone, Debug)]
pub(crate) struct HealthSources {
    /// The store the worker uses (probed with a cheap read).
    pub store: Arc<dyn Store>,
    /// A queue to probe.
    pub probe_queue: QueueName,
    /// The worker's runners by name.
    pub runners: Vec<(String, Arc<dyn Runner>)>,
}

/// Installs the global Prometheus recorder (beside the OTLP one when
/// metrics are exported).
pub(crate) fn install_recorder() -> anyhow::Result<PrometheusHandle> {
    // Job durations from a millisecond to ten minutes.
    let buckets = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0];
    let recorder = PrometheusBuilder::new().set_buckets(&buckets)?.build_recorder();
    let handle = recorder.handle();
    crate::logging::install_metrics(Some(recorder))?;
    Ok(handle)
}

/// How often the Prometheus recorder folds recorded histogram samples into
/// its buckets. The recorder keeps every sample until then, so without this
/// a worker whose `/metrics` nobody scrapes would hold one per job forever.
pub(crate) const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs `upkeep` (the recorder's `run_upkeep`) every [`UPKEEP_INTERVAL`]
/// until `stop` is cancelled.
pub(crate) fn spawn_upkeep(upkeep: impl Fn() + Send + 'static, stop: CancellationToken) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => upkeep(),
            }
        }
    });
}

/// Binds `addr` and serves until `stop` is cancelled. Returns the bound
/// address (useful with port 0).
pub(crate) async fn spawn(
    addr: &str,
    handle: PrometheusHandle,
    health: HealthSources,
    stop: CancellationToken,
) -> anyhow::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot serve metrics on {addr}: {e}; choose a free metrics_listen address"))?;
    let local = listener.local_addr()?;
    if !local.ip().is_loopback() {
        warn!(%local, "metrics and health are served on a non-loopback address");
    }
    info!(%local, "serving /metrics and /healthz");
    let health = Arc::new(health);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        let (handle, health) = (handle.clone(), health.clone());
                        tokio::spawn(async move {
                            let _ = tokio::time::timeout(Duration::from_secs(10), respond(stream, &handle, &health)).await;
                        });
                    }
                    Err(e) => warn!(error = %e, "metrics listener accept failed"),
                },
            }
        }
    });
    Ok(local)
}

async fn respond(mut stream: TcpStream, handle: &PrometheusHandle, health: &HealthSources) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 8192 {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or_default().split_whitespace();
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let path = path.split('?').next().unwrap_or_default();
    let (status, content_type, body) = match (method, path) {
        ("GET", "/metrics") => {
            handle.run_upkeep();
            ("200 OK", "text/plain; version=0.0.4", handle.render())
        }
        ("GET", "/healthz") => {
            let (ok, report) = check(health).await;
            (if ok { "200 OK" } else { "503 Service Unavailable" }, "application/json", report)
        }
        ("GET", _) => ("404 Not Found", "text/plain", "not found: try /metrics or /healthz\n".to_owned()),
        _ => ("405 Method Not Allowed", "text/plain", "only GET is served\n".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// Ready only when Redis answers and every runner has a process up.
async fn check(health: &HealthSources) -> (bool, String) {
    let redis = match tokio::time::timeout(Duration::from_secs(2), health.store.queue_len(&health.probe_queue)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 2s".to_owned()),
    };
    let mut ok = redis.is_ok();
    let mut runners = serde_json::Map::new();
    for (name, runner) in &health.runners {
        let h = runner.health();
        ok &= h.is_up();
        runners.insert(
            name.clone(),
            json!({
                "up": h.is_up(),
                "ready": h.ready,
                "configured": h.configured,
                "in_flight": h.in_flight,
                "restarts": h.restarts,
                "crash_looping": h.crash_looping,
            }),
        );
    }
    // How new jobs reach the worker; a fallback to polling is reported, not
    // a failure (the worker still picks every job up).
    let pickup = match health.store.ready_signals() {
        ReadySignals::Complete => json!({"mode": "notified"}),
        ReadySignals::Partial { reason } => json!({"mode": "polling", "reason": reason}),
        _ => json!({"mode": "starting"}),
    };
    let report = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "redis": match &redis { Ok(()) => "ok".to_owned(), Err(e) => e.clone() },
        "pickup": pickup,
        "runners": runners,
    });
    (ok, report.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn upkeep_runs_every_interval_until_stopped() {
        let runs = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let counted = runs.clone();
        spawn_upkeep(move || _ = counted.fetch_add(1, Ordering::SeqCst), stop.clone());
        // sleep-ok: paused time; each advance lets the task see its next tick
        tokio::time::sleep(UPKEEP_INTERVAL * 3 + Duration::from_millis(1)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "at start, then every interval");
        stop.cancel();
        tokio::task::yield_now().await;
        // sleep-ok: paused time; nothing may run after the stop
        tokio::time::sleep(UPKEEP_INTERVAL * 3).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4, "no upkeep after the stop");
    }
}
