//! The paths that give up on a sent request: abandoning it after a timeout
//! (cancel frame, or terminating the process), and retiring or terminating
//! the process that carries it.

use super::*;

impl Inner {
    /// After a timeout: forget the request, send a cancel frame when the
    /// process is shared or hints are on, and terminate the process unless it
    /// is shared and the cancel was delivered (SEMANTICS §11).
    pub(super) fn abandon(&self, track: &mut Tracking<'_>, reason: String) {
        let Some(sent) = track.sent.take() else { return };
        self.abandon_sent(sent, &track.job_id, &track.request_id, reason);
    }

    /// [`Inner::abandon`] for a request known by where it was sent. Without
    /// a runtime (a future dropped outside one) no cancel can be sent: the
    /// process is retired.
    pub(super) fn abandon_sent(&self, sent: Sent, job_id: &str, request_id: &str, reason: String) {
        if !sent.conn.abandon(request_id) {
            // Answered (or failed with its connection) at the last moment:
            // nothing is left running that needs stopping.
            return;
        }
        let shared = sent.conn.in_flight() > 0;
        let hints = self.config.cancel_hints;
        let has_runtime = tokio::runtime::Handle::try_current().is_ok();
        if (!shared && !hints) || !has_runtime {
            sent.slot.retire(sent.generation, reason);
            return;
        }
        let job_id = job_id.to_owned();
        let request_id = request_id.to_owned();
        let max = self.config.max_frame_bytes;
        if !shared {
            // Terminated whatever happens to the cancel: keep new requests
            // away from it right now.
            sent.slot.retire(sent.generation, reason);
            self.background.spawn(async move {
                send_cancel_fresh(&sent.addrs, &job_id, Some(&request_id), max, CANCEL_DELIVERY).await;
            });
            return;
        }
        self.background.spawn(async move {
            let delivered = send_cancel_fresh(&sent.addrs, &job_id, Some(&request_id), max, CANCEL_DELIVERY).await;
            if delivered {
                debug!(%job_id, %request_id, "cancel delivered; the shared runner process is kept");
            } else {
                sent.slot.retire(sent.generation, reason);
            }
        });
    }

    /// Stops the process (managed) or connection (external) that carries a
    /// sent request; returns once a managed process has exited.
    /// After a transport error on a sent request (managed mode): retires
    /// the process that held it and waits (at most its term grace and a
    /// second) until it has exited.
    pub(super) async fn retire_after_transport_error(&self, track: &Tracking<'_>, job_id: &str, error: &PoolError) {
        let (PoolMode::Managed, Some(sent)) = (self.config.mode, track.sent.as_ref()) else { return };
        let exited = sent.slot.exited(sent.generation);
        tokio::pin!(exited);
        // A process that died (the usual cause) is reaped within moments;
        // leave it to the supervisor, whose crash accounting (backoff) a
        // retire would reset.
        if tokio::time::timeout(REAP_WINDOW, &mut exited).await.is_ok() {
            return;
        }
        sent.slot
            .retire(sent.generation, format!("transport error on job {job_id}: {}", crate::error::with_causes(error)));
        if tokio::time::timeout(self.config.term_grace + Duration::from_secs(1), exited).await.is_err() {
            warn!(runner = %self.config.name, %job_id, "runner process did not exit after a transport error");
        }
    }

    pub(super) async fn terminate_sent(&self, sent: &Sent, request_id: &str, reason: String) {
        if !sent.conn.is_pending(request_id) && !sent.conn.is_closed() {
            // Answered, or abandoned and dealt with by the timeout policy.
            debug!(%request_id, "terminate: the request is no longer in flight");
            return;
        }
        match self.config.mode {
            PoolMode::Managed => {
                let exited = sent.slot.exited(sent.generation);
                sent.slot.retire(sent.generation, reason);
                exited.await;
            }
            PoolMode::External => {
                info!(runner = %self.config.name, %reason, "dropping the connection to the external runner");
                sent.conn.close(&Failure::transport(format!("runner connection dropped: {reason}")));
            }
        }
    }
}
