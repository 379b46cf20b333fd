//! The client's life cycle: DSN parsing, connecting, the connections opened
//! on first use (blocking reads, the subscription), closing, and how a
//! client error becomes a [`StoreError`].

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fred::clients::{ExclusivePool, SubscriberClient};
use fred::prelude::*;
use tokio::sync::{OnceCell, mpsc};

use super::follow::{self, Follow};
use super::options::ConnectOptions;
use super::{DEFAULT_EVENTS_TTL, Inner, RedisStore, batch, notify};
use crate::error::{BoxError, StoreError, mask_dsn};
use crate::job::JobDefaults;
use crate::keys;
use crate::store::ReadySignals;

/// How long [`RedisStore::connect`] waits for the first `PING` answer.
const CONNECT_DEADLINE: Duration = Duration::from_secs(5);
/// Timeout of every ordinary command (blocking reads get their own).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Dedicated connections for blocking reads.
const BLOCKING_CONNECTIONS: usize = 4;

impl RedisStore {
    /// Connects to the server named by `dsn` and checks that it answers.
    ///
    /// Accepted forms: `redis://[user:password@]host[:port][/db]`,
    /// `rediss://…` (TLS, only with the crate feature `tls`), Sentinel as
    /// `redis-sentinel://[user:password@]sentinel[:port][/db]?sentinelServiceName=NAME[&node=host:port…]`
    /// (`rediss-sentinel://` for TLS to the sentinels and the data nodes;
    /// the user and password are the data nodes', the sentinels take
    /// `sentinelUsername` / `sentinelPassword`), and the `valkey` spellings
    /// of each. Behind Sentinel every connection (commands, blocking reads,
    /// the subscription) asks the sentinels for the master whenever it
    /// reconnects, so all of them follow a failover. Redis Cluster as
    /// `redis-cluster://[user:password@]host[:port][?node=host:port…]`
    /// (`rediss-cluster://` for TLS; any node of the cluster, the client
    /// learns the rest): the store then uses the sharded key layout
    /// ([`Layout::sharded`](crate::keys::Layout::sharded), with
    /// [`ConnectOptions::with_queue_shards`] shards per queue), which the
    /// rrq 0.11.1 Python client cannot read (see `docs/cluster.md`).
    ///
    /// TLS trusts the system's root certificates; use
    /// [`RedisStore::connect_with`] to trust a private CA's PEM file too.
    ///
    /// # Errors
    ///
    /// [`StoreError::InvalidDsn`] for a DSN that cannot be used,
    /// [`StoreError::Tls`] when TLS cannot be set up or the server's
    /// certificate is not trusted, and [`StoreError::Unavailable`] when the
    /// server does not answer `PING` within five seconds (wrong address,
    /// refused credentials, ...).
    pub async fn connect(dsn: &str) -> Result<RedisStore, StoreError> {
        RedisStore::connect_with(dsn, ConnectOptions::default()).await
    }

    /// [`RedisStore::connect`] with explicit [`ConnectOptions`] (a CA file).
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`].
    pub async fn connect_with(dsn: &str, options: ConnectOptions) -> Result<RedisStore, StoreError> {
        let masked = mask_dsn(dsn);
        let (config, mode) = parse_dsn(dsn, &masked, &options)?;
        let layout = match mode {
            Mode::Server => keys::Layout::single(),
            Mode::Cluster => keys::Layout::sharded(options.queue_shards().unwrap_or(keys::DEFAULT_QUEUE_SHARDS))?,
        };
        let db = config.database.unwrap_or(0);
        let builder = builder(config, mode);
        let client = builder
            .build()
            .map_err(|e| StoreError::InvalidDsn { dsn: masked.clone(), reason: e.details().to_owned() })?;
        let ready = async {
            client.init().await?;
            client.ping::<String>(None).await
        };
        let failure = match tokio::time::timeout(CONNECT_DEADLINE, ready).await {
            Ok(Ok(_)) => {
                if let Err(refused) = super::fanout::check_shard_count(&client, &layout, &masked).await {
                    tokio::spawn(async move { tokio::time::timeout(CONNECT_DEADLINE, client.quit()).await });
                    return Err(refused);
                }
                let (completions, pending) = mpsc::unbounded_channel();
                let follow = Arc::new(Follow::new(mode == Mode::Cluster));
                if mode == Mode::Cluster {
                    follow::spawn(client.clone(), &follow);
                }
                // Ends when the last handle is dropped (the sender goes with `Inner`).
                tokio::spawn(batch::complete_batches(client.clone(), masked.clone(), pending, follow.clone()));
                return Ok(RedisStore {
                    inner: Arc::new(Inner {
                        client,
                        builder,
                        blocking: OnceCell::new(),
                        subscriber: OnceCell::new(),
                        signals: Arc::new(Mutex::new(ReadySignals::NotSubscribed)),
                        db,
                        dsn: masked,
                        completions,
                        rotation: AtomicUsize::new(0),
                        suspects: Mutex::new(std::collections::HashMap::new()),
                        heads: Arc::default(),
                        alive: tokio::sync::watch::channel(()).0,
                        follow,
                    }),
                    defaults: Arc::new(JobDefaults::default()),
                    layout,
                    keyspace: true,
                    events_ttl: DEFAULT_EVENTS_TTL,
                });
            }
            Ok(Err(e)) => connect_error(e, masked),
            Err(_) => StoreError::Unavailable {
                dsn: masked,
                source: format!("no answer to PING within {}s", CONNECT_DEADLINE.as_secs()).into(),
            },
        };
        // Stop the reconnect loop of the client we are giving up on, without
        // making the caller wait for a server that does not answer.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CONNECT_DEADLINE, client.quit()).await;
        });
        Err(failure)
    }

    /// Closes every connection. Calls made afterwards fail.
    pub async fn close(&self) {
        let _ = self.inner.client.quit().await;
        if let Some(pool) = self.inner.blocking.get() {
            let _ = pool.quit().await;
        }
        if let Some(sub) = self.inner.subscriber.get() {
            let _ = sub.quit().await;
        }
    }

    pub(super) fn error(&self, op: &'static str, e: Error) -> StoreError {
        self.inner.follow.saw(&e);
        classify(&self.inner.dsn, op, e)
    }

    pub(super) fn unavailable(&self, what: &str) -> StoreError {
        StoreError::Unavailable { dsn: self.inner.dsn.clone(), source: what.to_owned().into() }
    }

    /// The connections for blocking reads, opened on first use.
    pub(super) async fn blocking(&self) -> Result<&ExclusivePool, StoreError> {
        self.inner
            .blocking
            .get_or_try_init(|| async {
                let pool = self
                    .inner
                    .builder
                    .build_exclusive_pool(BLOCKING_CONNECTIONS)
                    .map_err(|e| self.error("connect", e))?;
                match tokio::time::timeout(CONNECT_DEADLINE, pool.init()).await {
                    Ok(Ok(_)) => Ok(pool),
                    Ok(Err(e)) => Err(self.error("connect", e)),
                    Err(_) => Err(self.unavailable("blocking connections did not open")),
                }
            })
            .await
    }

    /// The subscription to the ready and cancel channels (and keyspace
    /// notifications), opened on first use.
    pub(super) async fn subscriber(&self) -> Result<&SubscriberClient, StoreError> {
        self.inner
            .subscriber
            .get_or_try_init(|| async {
                let sub = self.inner.builder.build_subscriber_client().map_err(|e| self.error("subscribe_ready", e))?;
                let opened = async {
                    sub.init().await?;
                    // A detached task that re-subscribes after every reconnect.
                    drop(sub.manage_subscriptions());
                    sub.subscribe(vec![keys::READY_CHANNEL, keys::CANCEL_CHANNEL]).await?;
                    if self.layout.is_sharded() {
                        // One shard channel per call: a call's channels
                        // must share a slot.
                        for shard in self.layout.shards() {
                            sub.ssubscribe(self.layout.ready_channel(shard)).await?;
                        }
                    }
                    if self.keyspace && !self.layout.is_sharded() {
                        sub.psubscribe(notify::pattern(self.inner.db)).await?;
                    }
                    // fred sends (P)SUBSCRIBE without waiting for a reply: an
                    // answered PING on the same connection shows the server
                    // has processed them, so no signal sent from now on is lost.
                    sub.ping::<Value>(None).await.map(drop)
                };
                match tokio::time::timeout(CONNECT_DEADLINE, opened).await {
                    Ok(Ok(())) => {
                        self.watch_keyspace_config(&sub).await;
                        Ok(sub)
                    }
                    Ok(Err(e)) => Err(self.error("subscribe_ready", e)),
                    Err(_) => Err(self.unavailable("the ready-channel subscription did not open")),
                }
            })
            .await
    }

    /// Turns keyspace notifications on (now and after every reconnect of the
    /// subscriber, as a restarted server forgets `CONFIG SET`) and records
    /// which signals the subscription delivers.
    async fn watch_keyspace_config(&self, sub: &SubscriberClient) {
        let signals = self.inner.signals.clone();
        if self.layout.is_sharded() {
            // Keyspace notifications are not used on a cluster (each node
            // reports only its own keys): only RRQ writes the sharded
            // layout, and every write that adds a job to a shard's ready set
            // says so on the shard's channel, subscribed above.
            *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ReadySignals::Complete;
            // The task ends with the store (its `alive` sender dropped).
            let (heads, mut reconnects) = (Arc::downgrade(&self.inner.heads), sub.reconnect_rx());
            let (sub, layout, mut alive) = (sub.clone(), self.layout.clone(), self.inner.alive.subscribe());
            let follow = Arc::downgrade(&self.inner.follow);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(FOLLOW_TICK);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                let (mut ticks, mut seen_sync) = (0u32, None);
                loop {
                    let forget = || heads.upgrade().map(|heads| heads.forget()).is_some();
                    tokio::select! {
                        _ = alive.changed() => break,
                        reconnect = reconnects.recv() => match reconnect {
                            // Messages may have been missed while the
                            // connection was down: every head is read again
                            // at the next claim.
                            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                                if !forget() {
                                    break;
                                }
                            }
                            // The subscriber was closed.
                            Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                        },
                        _ = tick.tick() => {
                            ticks = ticks.wrapping_add(1);
                            let Some(follow) = follow.upgrade() else { break };
                            let synced = follow.last_sync();
                            if synced != seen_sync {
                                // The command client followed a new layout (a
                                // master stopped answering and a replica took
                                // over): the subscriber follows it too, and
                                // what its old connections missed is forgotten.
                                seen_sync = synced;
                                let _ = tokio::time::timeout(RESUBSCRIBE_TIMEOUT, sub.sync_cluster()).await;
                                forget();
                            } else if ticks % RESUBSCRIBE_TICKS != 0 {
                                continue;
                            }
                        }
                    }
                    // After a reconnect (fred's own re-subscription stops at
                    // its first failure, and it first sends a PSUBSCRIBE
                    // with no pattern, which a server refuses), a layout
                    // sync, and every RESUBSCRIBE_TICKS (a master that hands
                    // a slot to another, in a resharding or a failover, drops
                    // the slot's shard subscriptions without the client
                    // knowing): subscribing to a channel already subscribed
                    // is a no-op.
                    tokio::select! {
                        _ = alive.changed() => break,
                        () = subscribe_shards(&sub, &layout) => {}
                    }
                }
            });
            return;
        }
        if !self.keyspace {
            *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = ReadySignals::Partial {
                reason: format!("keyspace notifications are turned off (`[rrq] {} = false`)", notify::CONFIG_KEY),
            };
            return;
        }
        let state = notify::enable(&self.inner.client).await;
        *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
        let (client, mut reconnects) = (self.inner.client.clone(), sub.reconnect_rx());
        tokio::spawn(async move {
            // Ends when the subscriber is closed (its sender goes with it).
            while let Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) = reconnects.recv().await {
                let state = notify::enable(&client).await;
                *signals.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = state;
            }
        });
    }
}

impl Drop for Inner {
    /// Closes the connections once the last handle is gone; otherwise their
    /// tasks would keep reconnecting for the rest of the process.
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let client = self.client.clone();
        let blocking = self.blocking.take();
        let subscriber = self.subscriber.take();
        runtime.spawn(async move {
            let _ = client.quit().await;
            if let Some(pool) = blocking {
                let _ = pool.quit().await;
            }
            if let Some(sub) = subscriber {
                let _ = sub.quit().await;
            }
        });
    }
}

/// A client error as a [`StoreError`]: connection trouble is `Unavailable`.
pub(super) fn classify(dsn: &str, op: &'static str, e: Error) -> StoreError {
    // A call fred could not write again (after a redirection or a broken
    // connection) may have run: as unknown as a lost reply.
    let kind = if super::scripts::outcome_unknown(&e) { ErrorKind::IO } else { e.kind().clone() };
    classify_cause(dsn, op, &kind, Box::new(e))
}

/// [`classify`] for a cause already boxed (one error shared by several
/// callers stays their common source).
pub(super) fn classify_cause(dsn: &str, op: &'static str, kind: &ErrorKind, source: BoxError) -> StoreError {
    match kind {
        ErrorKind::IO | ErrorKind::Timeout | ErrorKind::Canceled | ErrorKind::Backpressure => {
            StoreError::Unavailable { dsn: dsn.to_owned(), source }
        }
        _ => StoreError::Command { op, source },
    }
}

/// What a DSN connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// One server, directly or behind Sentinel: the single layout.
    Server,
    /// A Redis Cluster: the sharded layout.
    Cluster,
}

/// Parses a DSN into a client configuration, refusing what we cannot serve.
fn parse_dsn(dsn: &str, masked: &str, options: &ConnectOptions) -> Result<(Config, Mode), StoreError> {
    let invalid = |reason: &str| StoreError::InvalidDsn { dsn: masked.to_owned(), reason: reason.to_owned() };
    let (scheme, rest) = dsn.split_once("://").ok_or_else(|| invalid("missing scheme"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (base, sentinel, cluster) = if let Some(base) = scheme.strip_suffix("-sentinel") {
        (base, true, false)
    } else if let Some(base) = scheme.strip_suffix("-cluster") {
        (base, false, true)
    } else {
        (scheme.as_str(), false, false)
    };
    let tls = match base {
        "redis" | "valkey" => false,
        "rediss" | "valkeys" => {
            if !cfg!(feature = "tls") {
                return Err(invalid("TLS needs rrq-store's `tls` feature"));
            }
            true
        }
        _ => {
            return Err(invalid(
                "the scheme must be redis://, rediss:// (TLS), redis-sentinel:// or rediss-sentinel:// (Sentinel), \
                 or redis-cluster:// or rediss-cluster:// (Redis Cluster)",
            ));
        }
    };
    let query = rest.split_once('?').map_or("", |(_, q)| q);
    let has = |name: &str| query.split('&').any(|p| p.split_once('=').map_or(p, |(k, _)| k) == name);
    if sentinel && !has("sentinelServiceName") {
        return Err(invalid(
            "a Sentinel DSN needs `?sentinelServiceName=NAME`, the name the sentinels monitor the master under",
        ));
    }
    if cluster && has("sentinelServiceName") {
        return Err(invalid(
            "`sentinelServiceName` is only read with the redis-sentinel:// scheme, not redis-cluster://",
        ));
    }
    if !sentinel
        && !cluster
        && let Some(name) = ["sentinelServiceName", "node"].into_iter().find(|n| has(n))
    {
        return Err(invalid(&format!(
            "`{name}` is only read with the redis-sentinel:// (or rediss-sentinel://) scheme; \
             a redis:// DSN names a single server"
        )));
    }
    // The client parses the plain form: TLS is set up below, not with the
    // client's default (system roots only, and an error on any unreadable
    // one). Its messages never contain the URL, so no password leaks. With
    // Sentinel, the credentials before `@` are the data nodes'; the
    // sentinels get `sentinelUsername` / `sentinelPassword`, or none.
    let plain = if sentinel {
        format!("redis-sentinel://{rest}")
    } else if cluster {
        format!("redis-cluster://{rest}")
    } else {
        format!("redis://{rest}")
    };
    #[cfg_attr(not(feature = "tls"), expect(unused_mut))]
    let mut config = Config::from_url(&plain).map_err(|e| invalid(e.details()))?;
    #[cfg(feature = "tls")]
    if tls {
        let tls = super::tls::config(options.ca_file())
            .map_err(|reason| StoreError::Tls { dsn: masked.to_owned(), reason })?;
        config.tls = Some(tls);
    }
    #[cfg(not(feature = "tls"))]
    let _ = (tls, options);
    Ok((config, if cluster { Mode::Cluster } else { Mode::Server }))
}

/// Why the first connection failed: a TLS handshake the client refused, or
/// an unreachable server.
fn connect_error(e: Error, dsn: String) -> StoreError {
    #[cfg(feature = "tls")]
    if let Some(reason) = super::tls::handshake_failure(&e) {
        return StoreError::Tls { dsn, reason };
    }
    StoreError::Unavailable { dsn, source: Box::new(e) }
}

/// Writes fred may make of one command on a cluster, and the redirections
/// it may follow. fred counts the write after a `MOVED` or `ASK` as an
/// attempt, and an `ASK` that arrives with no attempt left ends fred's
/// connection task for good (every later command of the client times out).
/// With more attempts than redirections, a command runs out of
/// redirections first, and that only fails the command. The price: after a
/// broken connection fred may send a command again, so every script is
/// safe to run twice on a cluster (outcomes are fenced and recognise their
/// own earlier run, enqueues carry a call mark, claims always look for the
/// jobs their token already took).
pub(super) const CLUSTER_ATTEMPTS: u32 = 8;
/// How often a store on a cluster looks whether its command client followed
/// a new layout (then the subscriber follows too; see `follow.rs` and
/// `watch_keyspace_config`).
const FOLLOW_TICK: Duration = Duration::from_secs(1);
/// Every how many [`FOLLOW_TICK`]s the shard channels are subscribed again
/// (10 s): a message lost in between costs a worker about
/// `heads::FRESH_FOR` of delay.
const RESUBSCRIBE_TICKS: u32 = 10;
/// How long one shard channel's subscription may take when made again.
const RESUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Subscribes to every shard's ready channel again, one call per channel
/// (fred follows a `MOVED` of an `SSUBSCRIBE` only when they are not
/// pipelined); stops at the first call that does not answer in time (a
/// master unreachable: the next round tries again).
async fn subscribe_shards(sub: &SubscriberClient, layout: &keys::Layout) {
    for shard in layout.shards() {
        match tokio::time::timeout(RESUBSCRIBE_TIMEOUT, sub.ssubscribe(layout.ready_channel(shard))).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, shard = shard.index(), "subscribing to a shard channel again failed; tried again later");
            }
            Err(_) => {
                tracing::debug!(
                    shard = shard.index(),
                    "subscribing to a shard channel again timed out; tried again later"
                );
                return;
            }
        }
    }
}
/// How long fred may take to open a connection to one cluster node and
/// set it up (`HELLO`, `CLUSTER SLOTS` on its side connection). When it
/// syncs the layout, fred asks the nodes it knows one after the other, in
/// address order, and a master cut off the network (or frozen) may come
/// first: every call waits for that sync, so the wait for a silent node
/// is kept short.
const CLUSTER_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const CLUSTER_REDIRECTIONS: u32 = 5;

fn builder(config: Config, mode: Mode) -> Builder {
    let mut builder = Builder::from_config(config);
    builder
        // Reconnection is off unless a policy is set; retry forever, 100 ms to 2 s apart.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
        .with_connection_config(|c| {
            c.connection_timeout = CONNECT_DEADLINE;
            c.internal_command_timeout = CONNECT_DEADLINE;
            // A reply lost with the connection must surface as an error,
            // never as a silent second run of a script (on one server).
            c.max_command_attempts = 1;
            if mode == Mode::Cluster {
                c.max_command_attempts = CLUSTER_ATTEMPTS;
                c.max_redirections = CLUSTER_REDIRECTIONS;
                c.connection_timeout = CLUSTER_CONNECT_TIMEOUT;
                c.internal_command_timeout = CLUSTER_CONNECT_TIMEOUT;
            }
        })
        .with_performance_config(|p| {
            p.default_command_timeout = COMMAND_TIMEOUT;
        });
    builder
}

#[cfg(test)]
mod tests {
    use fred::types::config::ServerConfig;

    use super::*;

    fn parse(dsn: &str) -> Result<Config, StoreError> {
        parse_dsn(dsn, &mask_dsn(dsn), &ConnectOptions::default()).map(|(config, _)| config)
    }

    fn refusal(dsn: &str) -> String {
        match parse(dsn) {
            Err(StoreError::InvalidDsn { reason, .. }) => reason,
            other => panic!("{dsn}: expected InvalidDsn, got {other:?}"),
        }
    }

    #[test]
    fn a_sentinel_dsn_names_the_sentinels_the_service_and_the_data_nodes_credentials() {
        let config = parse(
            "redis-sentinel://rrq:s3cret@10.0.0.1:26380/2?sentinelServiceName=jobs&node=10.0.0.2:26381\
             &sentinelUsername=watch&sentinelPassword=w4tch",
        )
        .unwrap();
        assert_eq!((config.username.as_deref(), config.password.as_deref()), (Some("rrq"), Some("s3cret")));
        assert_eq!(config.database, Some(2));
        let ServerConfig::Sentinel { hosts, service_name, username, password } = config.server else {
            panic!("not a Sentinel configuration: {:?}", config.server)
        };
        assert_eq!(service_name, "jobs");
        let mut ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [26380, 26381]);
        assert_eq!((username.as_deref(), password.as_deref()), (Some("watch"), Some("w4tch")));
        // Without sentinel credentials the sentinels get none (not the data nodes').
        let config = parse("valkey-sentinel://u:p@h/0?sentinelServiceName=jobs").unwrap();
        let ServerConfig::Sentinel { hosts, username, password, .. } = config.server else { panic!("not Sentinel") };
        assert_eq!(hosts[0].port, 26379, "the sentinels' default port");
        assert_eq!((username, password), (None, None));
        #[cfg(feature = "tls")]
        assert!(config.tls.is_none());
    }

    #[cfg(feature = "tls")]
    #[test]
    fn rediss_sentinel_uses_tls_for_every_connection() {
        let config = parse("rediss-sentinel://h:26379/0?sentinelServiceName=jobs").unwrap();
        assert!(matches!(config.server, ServerConfig::Sentinel { .. }));
        assert!(config.tls.is_some());
    }

    #[test]
    fn sentinel_parameters_need_the_sentinel_scheme_and_the_service_name() {
        assert!(refusal("redis-sentinel://h:26379/0").contains("sentinelServiceName=NAME"));
        assert!(refusal("redis-sentinel://h:26379/0?node=h:2").contains("sentinelServiceName=NAME"));
        let reason = refusal("redis://h:6379/0?sentinelServiceName=jobs");
        assert!(reason.contains("`sentinelServiceName` is only read with the redis-sentinel://"), "{reason}");
        assert!(refusal("redis://h:6379/0?node=h:1").contains("`node` is only read"));
        assert!(refusal("memcached://h").contains("redis-sentinel://"));
    }

    #[test]
    fn cluster_dsns_name_every_node_and_select_the_sharded_layout() {
        let dsn = "redis-cluster://rrq:s3cret@10.0.0.1:7000?node=10.0.0.2:7001&node=10.0.0.3:7002";
        let (config, mode) = parse_dsn(dsn, &mask_dsn(dsn), &ConnectOptions::default()).unwrap();
        assert_eq!(mode, Mode::Cluster);
        assert_eq!((config.username.as_deref(), config.password.as_deref()), (Some("rrq"), Some("s3cret")));
        let ServerConfig::Clustered { hosts, .. } = config.server else {
            panic!("not a cluster configuration: {:?}", config.server)
        };
        let mut ports: Vec<u16> = hosts.iter().map(|h| h.port).collect();
        ports.sort_unstable();
        assert_eq!(ports, [7000, 7001, 7002]);
        for dsn in ["redis://h:1", "redis-sentinel://h:1/0?sentinelServiceName=jobs"] {
            assert_eq!(parse_dsn(dsn, dsn, &ConnectOptions::default()).unwrap().1, Mode::Server, "{dsn}");
        }
        let reason = refusal("valkey-cluster://h:1?sentinelServiceName=jobs");
        assert!(reason.contains("`sentinelServiceName` is only read with the redis-sentinel://"), "{reason}");
        #[cfg(feature = "tls")]
        assert!(parse("rediss-cluster://h:1").unwrap().tls.is_some());
    }
}
