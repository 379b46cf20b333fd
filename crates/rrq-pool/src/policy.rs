//! Pure decisions of the pool: respawn backoff, crash-loop accounting, which
//! process takes the next request.

use std::time::Duration;

/// First respawn delay after a failure; doubles per consecutive failure.
pub(crate) const RESPAWN_INITIAL: Duration = Duration::from_millis(100);

/// Longest respawn delay.
pub(crate) const RESPAWN_MAX: Duration = Duration::from_secs(10);

/// Consecutive failures from which a process counts as crash-looping.
pub(crate) const CRASH_LOOP_THRESHOLD: u32 = 3;

/// A process that ran at least this long before exiting was healthy: its
/// exit starts a new failure streak.
pub(crate) const STABLE_UPTIME: Duration = Duration::from_secs(10);

/// Delay before the next start after `failures` consecutive failures
/// (0 → none; then 100 ms, 200 ms, 400 ms, … capped at 10 s).
pub(crate) fn respawn_delay(failures: u32) -> Duration {
    match failures {
        0 => Duration::ZERO,
        n => RESPAWN_INITIAL.saturating_mul(1_u32.checked_shl(n - 1).unwrap_or(u32::MAX)).min(RESPAWN_MAX),
    }
}

/// Consecutive failures of one slot: failed starts and early exits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CrashCounter {
    consecutive: u32,
}

impl CrashCounter {
    /// A start failed; returns the new streak length.
    pub(crate) fn record_failed_start(&mut self) -> u32 {
        self.consecutive = self.consecutive.saturating_add(1);
        self.consecutive
    }

    /// A ready process exited on its own after `uptime`; returns the new
    /// streak length.
    pub(crate) fn record_exit(&mut self, uptime: Duration) -> u32 {
        self.consecutive = if uptime >= STABLE_UPTIME { 1 } else { self.consecutive.saturating_add(1) };
        self.consecutive
    }
}

/// What the dispatcher knows about one process when picking.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SlotView {
    /// Ready to take requests now.
    pub(crate) ready: bool,
    /// Requests assigned to it (waiting or in flight).
    pub(crate) load: usize,
}

/// Picks the process for the next request: among processes with room
/// (`load < max_in_flight`), ready ones first, then the least loaded; ties go
/// to the first at or after `cursor`, so equal processes take turns. When
/// nothing has room, the least loaded overall.
pub(crate) fn choose(slots: &[SlotView], max_in_flight: usize, cursor: usize) -> usize {
    let n = slots.len();
    assert!(n > 0, "a pool has at least one process");
    (0..n)
        .map(|k| (cursor + k) % n)
        .min_by_key(|&i| {
            let s = slots[i];
            (s.load >= max_in_flight, !s.ready, s.load)
        })
        .expect("non-empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = |n| respawn_delay(n).as_millis();
        assert_eq!([ms(0), ms(1), ms(2), ms(3), ms(4)], [0, 100, 200, 400, 800]);
        assert_eq!(respawn_delay(8), RESPAWN_MAX);
        assert_eq!(respawn_delay(u32::MAX), RESPAWN_MAX);
    }

    #[test]
    fn crash_streaks_reset_after_a_stable_run() {
        let mut c = CrashCounter::default();
        assert_eq!(c.record_exit(Duration::from_millis(5)), 1);
        assert_eq!(c.record_failed_start(), 2);
        assert_eq!(c.record_exit(Duration::from_secs(1)), 3);
        assert!(c.record_exit(Duration::ZERO) >= CRASH_LOOP_THRESHOLD);
        assert_eq!(c.record_exit(STABLE_UPTIME), 1, "a long healthy run starts over");
    }

    fn v(ready: bool, load: usize) -> SlotView {
        SlotView { ready, load }
    }

    #[test]
    fn least_loaded_ready_process_wins() {
        assert_eq!(choose(&[v(true, 2), v(true, 0), v(true, 1)], 4, 0), 1);
        // Ready beats idle-but-restarting.
        assert_eq!(choose(&[v(false, 0), v(true, 3)], 4, 0), 1);
        // ...unless the ready one is full.
        assert_eq!(choose(&[v(false, 0), v(true, 4)], 4, 0), 0);
        // Nothing has room: least loaded overall.
        assert_eq!(choose(&[v(true, 5), v(true, 4)], 4, 0), 1);
    }

    #[test]
    fn ties_take_turns_from_the_cursor() {
        let idle = [v(true, 0), v(true, 0), v(true, 0)];
        assert_eq!(choose(&idle, 1, 0), 0);
        assert_eq!(choose(&idle, 1, 1), 1);
        assert_eq!(choose(&idle, 1, 2), 2);
        assert_eq!(choose(&idle, 1, 3), 0);
    }
}
