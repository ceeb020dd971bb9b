//! Each uid's rate of cache misses and of refusals
//! (`server.cache_misses_per_uid`, `server.refusals_per_uid`). Past its
//! burst, a uid's further misses and refusals are spaced at the steady
//! rate: the request waits for its turn and is then answered. A client that
//! asks again the moment it is answered (a new app name each time, or a
//! request it is not granted) so costs the agent a timer per request, not
//! the cores that the other users' requests need.
//!
//! The rule is GCRA (a token bucket kept as one instant per uid): each
//! request moves the uid's "theoretical arrival time" one interval on, and
//! may go once that time is no more than the burst ahead of now.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{PerUidRate, ServerConfig};
use crate::sync::lock;

/// Past this many uids, those back to their full burst are forgotten.
const REMEMBERED_UIDS: usize = 1024;

/// The two rates each uid is held to.
#[derive(Debug)]
pub struct Rates {
    pub misses: Rate,
    pub refusals: Rate,
}

impl Rates {
    pub fn new(config: &ServerConfig) -> Rates {
        Rates {
            misses: Rate::new(&config.cache_misses_per_uid),
            refusals: Rate::new(&config.refusals_per_uid),
        }
    }
}

/// One rate, kept per uid.
#[derive(Debug)]
pub struct Rate {
    interval: Duration,
    /// How far ahead of now a uid's arrival time may run: its burst.
    tolerance: Duration,
    arrivals: Mutex<HashMap<u32, Instant>>,
}

impl Rate {
    pub fn new(rate: &PerUidRate) -> Rate {
        let interval = Duration::from_secs_f64(1.0 / rate.per_second);
        Rate {
            interval,
            tolerance: interval.saturating_mul(rate.burst.saturating_sub(1)),
            arrivals: Mutex::new(HashMap::new()),
        }
    }

    /// Waits for `uid`'s turn: at once within its burst.
    /// Returns whether it had to wait.
    pub async fn turn(&self, uid: u32) -> bool {
        let now = Instant::now();
        let at = self.take(uid, now);
        if at == now {
            return false;
        }
        tokio::time::sleep_until(at).await;
        true
    }

    /// Books `uid`'s next request arriving `now`; the instant it may go.
    fn take(&self, uid: u32, now: Instant) -> Instant {
        let mut arrivals = lock(&self.arrivals);
        if arrivals.len() >= REMEMBERED_UIDS && !arrivals.contains_key(&uid) {
            // An arrival time in the past is a full burst, as if unknown.
            arrivals.retain(|_, arrival| *arrival > now);
        }
        let arrival = arrivals.entry(uid).or_insert(now);
        let start = (*arrival).max(now);
        *arrival = start + self.interval;
        start
            .checked_sub(self.tolerance)
            .map_or(now, |at| at.max(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(per_second: f64, burst: u32) -> Rate {
        Rate::new(&PerUidRate { per_second, burst })
    }

    #[test]
    fn a_burst_goes_at_once_then_the_rest_are_spaced() {
        let rate = rate(10.0, 3);
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(rate.take(1, now), now);
        }
        assert_eq!(rate.take(1, now), now + Duration::from_millis(100));
        assert_eq!(rate.take(1, now), now + Duration::from_millis(200));
        // Another uid has its own burst.
        assert_eq!(rate.take(2, now), now);
    }

    #[test]
    fn time_without_requests_gives_the_burst_back() {
        let rate = rate(10.0, 2);
        let now = Instant::now();
        rate.take(1, now);
        rate.take(1, now);
        assert!(rate.take(1, now) > now, "the burst is spent");
        let later = now + Duration::from_secs(1);
        assert_eq!(rate.take(1, later), later);
        assert_eq!(rate.take(1, later), later);
        assert!(rate.take(1, later) > later);
    }

    #[test]
    fn many_uids_are_forgotten_once_back_to_their_burst() {
        let rate = rate(1000.0, 1);
        let now = Instant::now();
        for uid in 0..REMEMBERED_UIDS as u32 {
            rate.take(uid, now);
        }
        let later = now + Duration::from_secs(1);
        rate.take(u32::MAX, later);
        assert_eq!(lock(&rate.arrivals).len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_over_the_rate_waits_for_its_turn() {
        let rate = rate(2.0, 1);
        let start = Instant::now();
        assert!(!rate.turn(7).await, "the first goes at once");
        assert!(rate.turn(7).await, "the second waits");
        assert!(Instant::now() - start >= Duration::from_millis(500));
    }
}
