//! Wake-ups for every producer: Redis keyspace notifications on the queue
//! sorted sets, next to RRQ's own `rrq:ready` and `rrq:cancel` channels.
//!
//! RRQ's producer publishes on `rrq:ready`, but the reference's Python
//! client, `redis-cli` and deferred jobs coming due publish nothing. With
//! keyspace notifications (`notify-keyspace-events` holding `K` and `z`, or
//! `K` and `A`), every `ZADD` to `rrq:queue:*` reaches the subscriber as a
//! message on `__keyspace@{db}__:rrq:queue:{name}` with the payload `zadd`,
//! whoever made it. The store adds only the two flags it needs to what the
//! operator set; where `CONFIG` is refused (managed Redis, ACLs, a renamed
//! command) it says so once and the worker keeps its regular poll.

use fred::prelude::*;
use fred::types::KeyspaceEvent;
use rrq_protocol::{JobId, QueueName};
use tracing::warn;

use crate::keys::{self, Layout, Shard};
use crate::store::{ReadySignals, Signal};

/// The configuration parameter that turns keyspace notifications on.
pub(super) const PARAMETER: &str = "notify-keyspace-events";

/// The `[rrq]` key that turns the use of keyspace notifications off.
pub(super) const CONFIG_KEY: &str = "keyspace_notifications";

/// The pattern that matches keyspace events of every queue of database `db`.
pub(super) fn pattern(db: u8) -> String {
    format!("__keyspace@{db}__:{}*", QueueName::PREFIX)
}

/// The flags to set so that `current` also delivers keyspace events of
/// sorted sets, keeping every flag already there; `None` when `current`
/// already does.
pub(super) fn merged_flags(current: &str) -> Option<String> {
    let keyspace = current.contains('K');
    // `A` is the alias of every type class, `z` included.
    let zset = current.contains('z') || current.contains('A');
    if keyspace && zset {
        return None;
    }
    let mut flags = current.to_owned();
    if !keyspace {
        flags.push('K');
    }
    if !zset {
        flags.push('z');
    }
    Some(flags)
}

/// Makes the server deliver keyspace events of sorted sets, adding to what
/// is configured. Returns the signals the worker can count on.
pub(super) async fn enable(client: &Client) -> ReadySignals {
    let refused = |e: Error| {
        let reason = format!(
            "keyspace notifications are unavailable ({}: {e}); jobs enqueued without an RRQ ready signal \
             (Python client, redis-cli, deferred jobs) are picked up by the regular poll; \
             set `{PARAMETER}` to include `Kz` on the server, or set `[rrq] {CONFIG_KEY} = false` to silence this",
            if e.details().contains("NOPERM") { "CONFIG is not permitted" } else { "CONFIG failed" }
        );
        warn!("{reason}");
        ReadySignals::Partial { reason }
    };
    let current: Value = match client.custom(config(), vec!["GET", PARAMETER]).await {
        Ok(v) => v,
        Err(e) => return refused(e),
    };
    let current = flags_of(&current);
    if let Some(flags) = merged_flags(&current)
        && let Err(e) = client.custom::<Value, _>(config(), vec!["SET", PARAMETER, &flags]).await
    {
        return refused(e);
    }
    ReadySignals::Complete
}

fn config() -> fred::types::CustomCommand {
    fred::types::CustomCommand::new_static("CONFIG", fred::types::ClusterHash::Random, false)
}

/// The value of the parameter in a `CONFIG GET` reply (a map in RESP3, a
/// flat `[name, value]` array in RESP2).
fn flags_of(reply: &Value) -> String {
    match reply {
        Value::Map(map) => map.clone().inner().into_values().next().and_then(|v| v.as_string()).unwrap_or_default(),
        Value::Array(items) => items.get(1).and_then(Value::as_string).unwrap_or_default(),
        _ => String::new(),
    }
}

/// The signal a message on RRQ's own channels stands for, if any, with the
/// one shard it names (`None`: every shard of the queue, or no queue).
///
/// In the sharded layout a ready message carries a shard's ready key: on
/// the shard's own channel it names that shard; on the broadcast channel
/// (a resumed queue) it stands for every shard of its queue.
pub(super) fn signal(channel: &str, value: &Value, layout: &Layout) -> Option<(Signal, Option<Shard>)> {
    if channel == keys::CANCEL_CHANNEL {
        return value.as_string().filter(|id| !id.is_empty()).map(|id| (Signal::Cancel(JobId::new(id)), None));
    }
    let key = value.as_string()?;
    if !layout.is_sharded() {
        return (channel == keys::READY_CHANNEL).then(|| (Signal::Ready(QueueName::new(&key)), None));
    }
    let (queue, shard) = layout.queue_of(&key)?;
    if channel == keys::READY_CHANNEL {
        return Some((Signal::Ready(queue), None));
    }
    (layout.ready_channel_shard(channel) == Some(shard)).then_some((Signal::Ready(queue), Some(shard)))
}

/// The signal a keyspace event stands for, if any (fred hands keyspace
/// messages to their own receiver, already parsed): `db` is the database
/// whose events are subscribed.
pub(super) fn keyspace_signal(event: &KeyspaceEvent, db: u8) -> Option<Signal> {
    let key = event.key.as_str()?;
    // Only additions wake a worker: removals (claims, cancels) do not.
    (event.db == db && event.operation == "zadd" && key.starts_with(QueueName::PREFIX))
        .then(|| Signal::Ready(QueueName::new(key)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_operators_flags_are_kept_and_only_missing_ones_added() {
        assert_eq!(merged_flags("").as_deref(), Some("Kz"));
        assert_eq!(merged_flags("Ex").as_deref(), Some("ExKz"));
        assert_eq!(merged_flags("Kg").as_deref(), Some("Kgz"));
        assert_eq!(merged_flags("Ez").as_deref(), Some("EzK"));
        assert_eq!(merged_flags("Kz"), None);
        assert_eq!(merged_flags("KEA"), None);
        assert_eq!(merged_flags("zxK"), None);
    }

    fn event(db: u8, operation: &str, key: &str) -> KeyspaceEvent {
        KeyspaceEvent { db, operation: operation.to_owned(), key: key.into() }
    }

    #[test]
    fn only_zadd_events_of_queues_in_the_subscribed_db_are_ready_signals() {
        assert_eq!(
            keyspace_signal(&event(0, "zadd", "rrq:queue:jobs"), 0),
            Some(Signal::Ready(QueueName::new("jobs")))
        );
        assert_eq!(keyspace_signal(&event(0, "zrem", "rrq:queue:jobs"), 0), None);
        assert_eq!(keyspace_signal(&event(1, "zadd", "rrq:queue:jobs"), 0), None);
        assert_eq!(keyspace_signal(&event(0, "zadd", "rrq:active:jobs:w"), 0), None);
    }

    #[test]
    fn a_sharded_ready_key_signals_its_queue_and_shard() {
        let layout = Layout::sharded(8).unwrap();
        let queue = QueueName::new("emails");
        let (shard, other) = (layout.shards().nth(5).unwrap(), layout.shards().nth(6).unwrap());
        let key = Value::from(layout.queue(&queue, shard));
        let ready = Signal::Ready(queue.clone());
        assert_eq!(signal(&layout.ready_channel(shard), &key, &layout), Some((ready.clone(), Some(shard))));
        // The broadcast channel (a resume) names every shard.
        assert_eq!(signal(keys::READY_CHANNEL, &key, &layout), Some((ready, None)));
        // A key of another shard on a shard's channel, or a foreign key, is nothing.
        assert_eq!(signal(&layout.ready_channel(other), &key, &layout), None);
        assert_eq!(signal(keys::READY_CHANNEL, &Value::from("rrq:{x}:queue:a"), &layout), None);
        assert_eq!(signal("rrq:{x}:ready", &key, &layout), None);
    }

    #[test]
    fn rrq_channels_carry_queues_and_job_ids() {
        let single = Layout::single();
        let signal = |channel: &str, value: &str| signal(channel, &Value::from(value), &single).map(|(s, _)| s);
        assert_eq!(signal(keys::READY_CHANNEL, "rrq:queue:a"), Some(Signal::Ready(QueueName::new("a"))));
        assert_eq!(signal(keys::CANCEL_CHANNEL, "j1"), Some(Signal::Cancel(JobId::new("j1"))));
        assert_eq!(signal(keys::CANCEL_CHANNEL, ""), None);
        assert_eq!(signal("other", "x"), None);
    }
}
