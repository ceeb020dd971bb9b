//! When the supervisor probes the token, chooses keys again and retries a
//! lost connection.

use std::time::Duration;

/// How often the supervisor asks an idle token whether it is still there, so
/// that a removed token shows in `/readyz` before a request trips over it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How long the supervisor waits for a probe's answer before moving on; a
/// probe still unanswered counts against the HSM only once it has been in
/// flight for `signing.timeout_seconds`.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);
/// How often the active keys are chosen again, so that a key enrolled ahead
/// of time takes over once its certificate's not-before has passed. An
/// active certificate's expiry is checked the moment it passes, and while an
/// issuer has no usable key the check runs at every probe, so that a newly
/// enrolled key serves within seconds.
pub const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// First and longest wait between reconnection attempts.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// How long until the keys are chosen again: at the latest after
/// [`KEY_CHECK_INTERVAL`], at the second the first of the active
/// certificates (`not_after`, Unix seconds) has expired, at the second a
/// certificate enrolled ahead of time becomes valid (`takeover`), and after
/// one probe while an issuer waits for a usable key.
pub fn key_check_wait(
    not_after: impl Iterator<Item = i64>,
    takeover: Option<i64>,
    waiting_for_a_key: bool,
    now: i64,
) -> Duration {
    if waiting_for_a_key {
        return PROBE_INTERVAL;
    }
    let soonest = not_after
        .map(|not_after| not_after + 1)
        .chain(takeover)
        .map(|at| Duration::from_secs(u64::try_from(at - now).unwrap_or(0)))
        .min();
    soonest.map_or(KEY_CHECK_INTERVAL, |wait| wait.min(KEY_CHECK_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_the_second_an_active_certificate_expires() {
        let now = 1_000;
        assert_eq!(
            key_check_wait([now + 5, now + 900].into_iter(), None, false, now),
            Duration::from_secs(6)
        );
        assert_eq!(
            key_check_wait([now - 1].into_iter(), None, false, now),
            Duration::ZERO
        );
        assert_eq!(
            key_check_wait([now + 900].into_iter(), None, false, now),
            KEY_CHECK_INTERVAL
        );
        assert_eq!(
            key_check_wait(std::iter::empty(), None, false, now),
            KEY_CHECK_INTERVAL
        );
    }

    #[test]
    fn keys_are_checked_the_second_a_certificate_enrolled_ahead_becomes_valid() {
        let now = 1_000;
        assert_eq!(
            key_check_wait([now + 900].into_iter(), Some(now + 7), false, now),
            Duration::from_secs(7)
        );
        assert_eq!(
            key_check_wait([now + 5].into_iter(), Some(now + 7), false, now),
            Duration::from_secs(6),
            "the expiry comes first"
        );
        assert_eq!(
            key_check_wait(std::iter::empty(), Some(now + 3_600), false, now),
            KEY_CHECK_INTERVAL
        );
    }

    #[test]
    fn keys_are_checked_at_every_probe_while_an_issuer_waits_for_one() {
        assert_eq!(
            key_check_wait([5_000].into_iter(), Some(1_001), true, 1_000),
            PROBE_INTERVAL
        );
    }
}
