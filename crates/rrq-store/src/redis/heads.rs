//! What a store on a cluster knows of each shard's head, per queue, so that
//! a claim asks only the shards that may hold a due job.
//!
//! Without it every claim asks every shard's head first (one `ZRANGE` per
//! shard, 64 by default): an idle worker polling ten times a second, or a
//! busy one claiming after each finished batch, keeps every master busy for
//! nothing. With the shard channels subscribed (every RRQ write that adds a
//! job to a shard's ready set `SPUBLISH`es the set's key on the shard's own
//! channel, see `Layout::ready_channel`), a store keeps what it last learnt
//! of each shard: empty, a job due at some time, or "ask" (a message named
//! the shard, or nothing is known). A claim then runs the claim script only
//! on the shards that are "ask" or due, and each reply tells the shard's new
//! head. A claim that took nothing from the picture reads every head before
//! it answers empty (see `worker.rs`), so an empty answer is as true as a
//! read of every shard. Everything is asked again once the picture is
//! [`FRESH_FOR`] old, so
//! a message lost to a reconnect, a slot moving to another master, or a
//! write no RRQ code made costs at most that long; the picture is trusted
//! only while a subscription is live.
//!
//! A message may arrive while a claim's reads are on their way: each shard
//! has a generation, bumped by every message, and a read is recorded only
//! when its shard's generation is the one seen before the read was sent.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rrq_protocol::QueueName;

use crate::keys::Shard;

/// How long a picture of a queue's shards is trusted before every head is
/// asked again.
pub(super) const FRESH_FOR: Duration = Duration::from_secs(1);

/// How long an empty answer may rest on the picture alone after every head
/// was read: a job another process added this little while before the
/// claim, its message still on the way, waits for that message (this
/// process's own writes mark their shard at once, see [`Heads::touched`]).
pub(super) const EMPTY_TRUSTED_FOR: Duration = Duration::from_millis(250);

/// One shard's head, as last learnt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Head {
    /// Ask it: a message named it, or its read did not come.
    Ask,
    /// No job.
    Empty,
    /// The queue is paused there (not claimed from; a resume is signalled
    /// on the broadcast channel).
    Paused,
    /// The first job is due at this epoch ms.
    At(i64),
}

impl Head {
    /// Whether a claim should run on the shard at `now_ms`.
    pub(super) fn due(self, now_ms: i64) -> bool {
        match self {
            Head::Ask => true,
            Head::Empty | Head::Paused => false,
            Head::At(at) => at <= now_ms,
        }
    }
}

/// What a claim works from: each shard's head and the generations its
/// later records are checked against.
pub(super) struct Picture {
    pub heads: Vec<Head>,
    generations: Vec<u64>,
    /// The view's epoch when taken (see [`Heads::forget`]).
    epoch: u64,
    /// When every head was last read (`None`: being read now).
    pub read_at: Option<Instant>,
}

struct View {
    heads: Vec<Head>,
    generations: Vec<u64>,
    /// When every head was last read (`None`: to be read).
    read_at: Option<Instant>,
    /// Bumped when everything is forgotten: a read begun before is not
    /// recorded.
    epoch: u64,
}

/// The pictures of every queue a store has claimed from.
#[derive(Default)]
pub(super) struct Heads {
    views: Mutex<HashMap<QueueName, View>>,
    /// Live subscriptions to the shard channels (each ready subscription's
    /// task counts itself while it runs).
    live: AtomicUsize,
}

impl Heads {
    fn views(&self) -> std::sync::MutexGuard<'_, HashMap<QueueName, View>> {
        self.views.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The picture of `queue` if it can be trusted at `now` (`None`: every
    /// head must be read, see [`Heads::reading`]).
    pub(super) fn picture(&self, queue: &QueueName, now: Instant) -> Option<Picture> {
        if self.live.load(Ordering::Acquire) == 0 {
            return None;
        }
        let views = self.views();
        let view =
            views.get(queue).filter(|v| v.read_at.is_some_and(|at| now.saturating_duration_since(at) < FRESH_FOR))?;
        Some(Picture {
            heads: view.heads.clone(),
            generations: view.generations.clone(),
            epoch: view.epoch,
            read_at: view.read_at,
        })
    }

    /// Starts reading every head of `queue` (of `shards` shards): the
    /// generations the reads will be recorded against.
    pub(super) fn reading(&self, queue: &QueueName, shards: usize) -> Picture {
        let mut views = self.views();
        let view = views.entry(queue.clone()).or_insert_with(|| View::new(shards));
        Picture {
            heads: vec![Head::Ask; shards],
            generations: view.generations.clone(),
            epoch: view.epoch,
            read_at: None,
        }
    }

    /// Records every head read for `picture` (begun at `began`), except
    /// those of shards a message named since.
    pub(super) fn read(&self, queue: &QueueName, picture: &Picture, began: Instant) {
        let mut views = self.views();
        let Some(view) = views.get_mut(queue).filter(|v| v.epoch == picture.epoch) else { return };
        for (i, head) in picture.heads.iter().enumerate() {
            if view.generations.get(i) == picture.generations.get(i) {
                view.heads[i] = *head;
            }
        }
        view.read_at = Some(began);
    }

    /// Records `shard`'s head as a claim's reply told it, unless a message
    /// named the shard since `picture` was taken.
    pub(super) fn claimed(&self, queue: &QueueName, picture: &Picture, shard: Shard, head: Head) {
        let i = usize::from(shard.index());
        let mut views = self.views();
        let Some(view) = views.get_mut(queue) else { return };
        if view.generations.get(i) == picture.generations.get(i)
            && let Some(slot) = view.heads.get_mut(i)
        {
            *slot = head;
        }
    }

    /// A message said `queue` gained a job on `shard` (every shard: `None`).
    pub(super) fn signalled(&self, queue: &QueueName, shard: Option<Shard>) {
        let mut views = self.views();
        let Some(view) = views.get_mut(queue) else { return };
        let n = view.heads.len();
        let range = match shard {
            Some(s) if usize::from(s.index()) < n => usize::from(s.index())..usize::from(s.index()) + 1,
            Some(_) => return,
            None => 0..n,
        };
        for i in range {
            view.heads[i] = Head::Ask;
            view.generations[i] = view.generations[i].wrapping_add(1);
        }
    }

    /// This process added a job to `shard` (any queue: the job's own queue
    /// is known only in the script): asked at the next claim, without
    /// waiting for the message.
    pub(super) fn touched(&self, shard: Shard) {
        let i = usize::from(shard.index());
        for view in self.views().values_mut() {
            if let (Some(head), Some(generation)) = (view.heads.get_mut(i), view.generations.get_mut(i)) {
                *head = Head::Ask;
                *generation = generation.wrapping_add(1);
            }
        }
    }

    /// Forgets every picture (the subscription reconnected: messages may
    /// have been missed).
    pub(super) fn forget(&self) {
        for view in self.views().values_mut() {
            view.read_at = None;
            view.epoch = view.epoch.wrapping_add(1);
            view.heads.iter_mut().for_each(|h| *h = Head::Ask);
            view.generations.iter_mut().for_each(|g| *g = g.wrapping_add(1));
        }
    }

    /// A ready subscription starts listening; the guard stops counting it.
    pub(super) fn listening(self: &std::sync::Arc<Self>) -> Listening {
        if self.live.fetch_add(1, Ordering::AcqRel) == 0 {
            // Reads made while no one listened missed the messages since.
            self.forget();
        }
        Listening(self.clone())
    }
}

impl View {
    fn new(shards: usize) -> View {
        View { heads: vec![Head::Ask; shards], generations: vec![0; shards], read_at: None, epoch: 0 }
    }
}

/// Counts one live subscription while held.
pub(super) struct Listening(std::sync::Arc<Heads>);

impl Drop for Listening {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::AcqRel);
        self.0.forget();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Records a read of `q`'s four shards, all empty, begun at `began`.
    fn read_empty(heads: &Heads, q: &QueueName, began: Instant) {
        let mut p = heads.reading(q, 4);
        p.heads = vec![Head::Empty; 4];
        heads.read(q, &p, began);
    }

    fn shard(i: u16) -> Shard {
        crate::keys::Layout::sharded(4).unwrap().shards().nth(usize::from(i)).unwrap()
    }

    #[test]
    fn without_a_live_subscription_nothing_is_trusted() {
        let heads = Arc::new(Heads::default());
        let q = QueueName::new("q");
        let live = heads.listening();
        read_empty(&heads, &q, Instant::now());
        assert_eq!(heads.picture(&q, Instant::now()).unwrap().heads, vec![Head::Empty; 4]);
        drop(live);
        assert!(heads.picture(&q, Instant::now()).is_none());
    }

    #[test]
    fn a_picture_is_trusted_for_a_while_only() {
        let heads = Arc::new(Heads::default());
        let _live = heads.listening();
        let q = QueueName::new("q");
        let began = Instant::now();
        let mut p = heads.reading(&q, 4);
        p.heads = vec![Head::Empty, Head::At(5), Head::Empty, Head::Empty];
        heads.read(&q, &p, began);
        assert!(heads.picture(&q, began + FRESH_FOR / 2).is_some());
        assert!(heads.picture(&q, began + FRESH_FOR).is_none());
        assert!(heads.picture(&QueueName::new("other"), began).is_none());
    }

    #[test]
    fn a_message_during_a_read_is_not_overwritten_by_it() {
        let heads = Arc::new(Heads::default());
        let _live = heads.listening();
        let q = QueueName::new("q");
        let began = Instant::now();
        let mut p = heads.reading(&q, 4);
        // The read of shard 2 was sent, then a job came to shard 2 and its
        // message arrived, then the (older) read answered "empty".
        heads.signalled(&q, Some(shard(2)));
        p.heads = vec![Head::Empty; 4];
        heads.read(&q, &p, began);
        let now = heads.picture(&q, began).unwrap();
        assert_eq!(now.heads, vec![Head::Empty, Head::Empty, Head::Ask, Head::Empty]);
        // Same for a claim's reply: shard 1's message came after the
        // picture the claim worked from, shard 2's before it.
        heads.signalled(&q, Some(shard(1)));
        heads.claimed(&q, &now, shard(1), Head::Empty);
        heads.claimed(&q, &now, shard(2), Head::At(7));
        let after = heads.picture(&q, began).unwrap();
        assert_eq!(after.heads, vec![Head::Empty, Head::Ask, Head::At(7), Head::Empty]);
        // A claim from the newer picture records shard 1.
        heads.claimed(&q, &after, shard(1), Head::Empty);
        assert_eq!(heads.picture(&q, began).unwrap().heads[1], Head::Empty);
    }

    #[test]
    fn a_message_for_every_shard_or_a_reconnect_asks_everything_again() {
        let heads = Arc::new(Heads::default());
        let _live = heads.listening();
        let q = QueueName::new("q");
        let began = Instant::now();
        read_empty(&heads, &q, began);
        heads.signalled(&q, None);
        assert_eq!(heads.picture(&q, began).unwrap().heads, vec![Head::Ask; 4]);
        heads.signalled(&q, Some(shard(3)));
        heads.signalled(&QueueName::new("never-claimed"), None);
        heads.forget();
        assert!(heads.picture(&q, Instant::now()).is_none());
    }

    #[test]
    fn a_read_across_a_reconnect_or_made_before_anyone_listened_is_not_trusted() {
        let heads = Arc::new(Heads::default());
        let q = QueueName::new("q");
        // Read while no subscription listened: forgotten when one starts.
        read_empty(&heads, &q, Instant::now());
        let _live = heads.listening();
        assert!(heads.picture(&q, Instant::now()).is_none());
        // A read begun before a reconnect records nothing, not even its time.
        let mut p = heads.reading(&q, 4);
        heads.forget();
        p.heads = vec![Head::Empty; 4];
        heads.read(&q, &p, Instant::now());
        assert!(heads.picture(&q, Instant::now()).is_none());
        read_empty(&heads, &q, Instant::now());
        assert_eq!(heads.picture(&q, Instant::now()).unwrap().heads, vec![Head::Empty; 4]);
    }

    #[test]
    fn this_process_s_own_write_marks_its_shard_in_every_queue() {
        let heads = Arc::new(Heads::default());
        let _live = heads.listening();
        let (a, b) = (QueueName::new("a"), QueueName::new("b"));
        let began = Instant::now();
        for q in [&a, &b] {
            read_empty(&heads, q, began);
        }
        let before = heads.picture(&a, began).unwrap();
        heads.touched(shard(1));
        // A claim's reply from before the write does not undo the mark.
        heads.claimed(&a, &before, shard(1), Head::Empty);
        for q in [&a, &b] {
            assert_eq!(heads.picture(q, began).unwrap().heads, vec![Head::Empty, Head::Ask, Head::Empty, Head::Empty]);
        }
    }

    #[test]
    fn due_shards_are_those_to_ask_or_whose_head_has_come() {
        assert!(Head::Ask.due(0));
        assert!(!Head::Empty.due(i64::MAX));
        assert!(!Head::Paused.due(i64::MAX));
        assert!(Head::At(10).due(10) && !Head::At(11).due(10));
    }
}
