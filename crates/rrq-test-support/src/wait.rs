//! Polling with a deadline, for fixtures that wait for a state no event
//! announces (a cluster agreeing on its slots, a sentinel failover).

use std::time::{Duration, Instant};

/// Pause between two probes.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Calls `probe` until it returns `Ok`, and returns that value. When
/// `deadline` passes first, panics with `what` and the probe's last reason.
pub(crate) fn until<T>(what: &str, deadline: Duration, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let end = Instant::now() + deadline;
    loop {
        match probe() {
            Ok(value) => return value,
            Err(why) if Instant::now() >= end => panic!("{what}: not done within {deadline:?}; last state: {why}"),
            Err(_) => std::thread::sleep(POLL_INTERVAL), // sleep-ok: state poll, bounded by `deadline`
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut calls = 0;
        let got = until("counting", Duration::from_secs(5), || {
            calls += 1;
            if calls == 3 { Ok(calls) } else { Err(format!("only {calls}")) }
        });
        assert_eq!(got, 3);
    }

    #[test]
    #[should_panic(expected = "never: not done within 50ms; last state: still no")]
    fn panics_with_the_last_reason_after_the_deadline() {
        until::<()>("never", Duration::from_millis(50), || Err("still no".to_owned()));
    }
}
