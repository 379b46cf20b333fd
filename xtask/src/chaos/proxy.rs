//! A TCP proxy between the workers and Redis, on loopback, that the harness
//! controls: cut every connection, hold the bytes of one direction (or both)
//! with the sockets left open, resume.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::schedule::Direction;

/// Which directions are held: bit 0 to Redis, bit 1 to the client.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Held(u8);

const TO_REDIS: u8 = 1;
const TO_CLIENT: u8 = 2;

pub struct Proxy {
    pub port: u16,
    runtime: Option<tokio::runtime::Runtime>,
    held: watch::Sender<Held>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:target`.
    pub fn start(target: u16) -> Result<Proxy> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("chaos-proxy")
            .enable_all()
            .build()
            .context("start the proxy runtime")?;
        let listener = runtime.block_on(TcpListener::bind("127.0.0.1:0")).context("bind the proxy")?;
        let port = listener.local_addr()?.port();
        let (held, rx) = watch::channel(Held::default());
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let registry = Arc::clone(&links);
        let accept = runtime.spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let rx = rx.clone();
                let link = tokio::spawn(async move {
                    if let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let (ri, wi) = inbound.into_split();
                        let (ro, wo) = outbound.into_split();
                        tokio::select! {
                            () = pump(ri, wo, rx.clone(), TO_REDIS) => {}
                            () = pump(ro, wi, rx, TO_CLIENT) => {}
                        }
                    }
                });
                let mut links = registry.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                links.retain(|l| !l.is_finished());
                links.push(link.abort_handle());
            }
        });
        let accept = accept.abort_handle();
        Ok(Proxy { port, runtime: Some(runtime), held, links, accept })
    }

    /// Drops every open connection (both sides); returns how many.
    pub fn cut(&self) -> usize {
        let links = std::mem::take(&mut *self.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let open = links.iter().filter(|l| !l.is_finished()).count();
        for l in links {
            l.abort();
        }
        open
    }

    /// Holds the bytes going `dir` (sockets stay open) until [`Proxy::resume`].
    pub fn blackhole(&self, dir: Direction) {
        let bits = match dir {
            Direction::ToRedis => TO_REDIS,
            Direction::ToClient => TO_CLIENT,
            Direction::Both => TO_REDIS | TO_CLIENT,
        };
        self.held.send_modify(|h| h.0 |= bits);
    }

    /// Forwards everything again (held bytes are delivered, as TCP would after a partition).
    pub fn resume(&self) {
        self.held.send_replace(Held::default());
    }
}

/// Copies one direction, waiting while that direction is held.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<Held>,
    bit: u8,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bounded: the harness always resumes (heal), and the link is aborted at the end.
        if held.wait_for(|h| h.0 & bit == 0).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
