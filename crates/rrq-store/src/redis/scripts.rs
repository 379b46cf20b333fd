//! The Lua scripts, one per multi-key step, each loaded once per process and
//! run by SHA (`EVALSHA`, reloaded on `NOSCRIPT`).
//!
//! Every script is `lua/common.lua` (shared helpers) followed by its own file.

use std::sync::LazyLock;

use fred::types::scripts::Script;

macro_rules! script {
    ($(#[$doc:meta])* $name:ident = $file:literal) => {
        $(#[$doc])*
        pub(super) static $name: LazyLock<Script> =
            LazyLock::new(|| Script::from_lua(concat!(include_str!("lua/common.lua"), include_str!($file))));
    };
}

script!(
    /// Standard enqueue, with an optional idempotency key.
    ENQUEUE = "lua/enqueue.lua"
);
script!(
    /// Rate-limited enqueue.
    ENQUEUE_RATE_LIMITED = "lua/enqueue_rate_limited.lua"
);
script!(
    /// Debounced enqueue.
    ENQUEUE_DEBOUNCED = "lua/enqueue_debounced.lua"
);
script!(
    /// Enqueue under the orchestrator unique lock.
    ENQUEUE_UNIQUE = "lua/enqueue_unique.lua"
);
script!(
    /// Many standard enqueues in one step.
    ENQUEUE_BATCH = "lua/enqueue_batch.lua"
);
script!(
    /// Claim of ready jobs from one queue.
    CLAIM = "lua/claim.lua"
);
script!(
    /// Lock renewal for a set of leases.
    RENEW = "lua/renew.lua"
);
script!(
    /// Success of an attempt.
    COMPLETE = "lua/complete.lua"
);
script!(
    /// Failed attempt with a next attempt scheduled.
    RETRY = "lua/retry.lua"
);
script!(
    /// Move to the dead letter queue.
    DEAD_LETTER = "lua/dead_letter.lua"
);
script!(
    /// Claimed job put back without counting an attempt.
    RELEASE = "lua/release.lua"
);
script!(
    /// End of a running job whose cancel was requested.
    FINISH_CANCELLED = "lua/finish_cancelled.lua"
);
script!(
    /// Orphan recovery through the lease index.
    RECOVER = "lua/recover.lua"
);
script!(
    /// Cancel of a waiting or running job.
    CANCEL = "lua/cancel.lua"
);
script!(
    /// DLQ requeue with a fresh attempt budget.
    DLQ_REQUEUE = "lua/dlq_requeue.lua"
);
script!(
    /// Sizes and score ranges of queues (read only).
    INSPECT_QUEUES = "lua/inspect_queues.lua"
);
script!(
    /// Health records and their expiry (read only).
    INSPECT_WORKERS = "lua/inspect_workers.lua"
);
script!(
    /// Fields of many job hashes (read only).
    INSPECT_JOBS = "lua/inspect_jobs.lua"
);
script!(
    /// Removal of the oldest DLQ entries and their failed jobs.
    DLQ_PURGE = "lua/dlq_purge.lua"
);
script!(
    /// The last handled tick of a cron entry, moved only forward.
    CRON_TICK = "lua/cron_tick.lua"
);
