//! Whether the HSM answers: calls into it that may never come back, counted
//! as they go in and out, so that the request path, `/readyz` and the
//! watchdog see a hang without making a call of their own.
//!
//! The HSM counts as not answering once calls are in flight and none has
//! come back for `signing.timeout_seconds`. One slow signature among others
//! that do come back is no hang: only its session is out of use meanwhile.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Signatures and probes, kept apart: a token that answers C_GetTokenInfo
/// but not C_Sign still signs nothing.
#[derive(Debug)]
pub struct Answering {
    timeout: Duration,
    pub signing: Calls,
    pub probing: Calls,
}

impl Answering {
    /// Calls count as unanswered after `timeout`.
    pub fn new(timeout: Duration) -> Answering {
        Answering {
            timeout,
            signing: Calls::default(),
            probing: Calls::default(),
        }
    }

    /// How long the HSM may leave a call unanswered.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Why the HSM counts as not answering, or `None` while it answers.
    pub fn not_answering(&self) -> Option<String> {
        let (what, silent) = [
            ("a signature", &self.signing),
            ("C_GetTokenInfo", &self.probing),
        ]
        .into_iter()
        .find_map(|(what, calls)| Some((what, calls.silent_for()?)))
        .filter(|(_, silent)| *silent >= self.timeout)?;
        Some(format!(
            "the HSM has not answered {what} for {} s (`signing.timeout_seconds` = {}); requests for new tokens get 503 until it answers, and the agent resumes by itself when it does",
            silent.as_secs(),
            self.timeout.as_secs()
        ))
    }
}

/// One kind of call: how many are in flight, and when the last came back.
#[derive(Debug, Default)]
pub struct Calls {
    in_flight: AtomicUsize,
    /// When `in_flight` last went from 0 to 1 (nanoseconds since the first [`now`]).
    busy_since: AtomicU64,
    /// When a call last came back.
    answered: AtomicU64,
}

impl Calls {
    /// Counts a call in flight until the returned guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        self.enter_at(now());
        InFlight(self)
    }

    /// How long calls have been in flight without any coming back; `None`
    /// when none is in flight.
    pub fn silent_for(&self) -> Option<Duration> {
        self.silent_at(now())
    }

    fn enter_at(&self, now: u64) {
        if self.in_flight.fetch_add(1, Ordering::AcqRel) == 0 {
            self.busy_since.store(now, Ordering::Release);
        }
    }

    fn answer_at(&self, now: u64) {
        self.answered.store(now, Ordering::Release);
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }

    fn silent_at(&self, now: u64) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) == 0 {
            return None;
        }
        let since = self
            .busy_since
            .load(Ordering::Acquire)
            .max(self.answered.load(Ordering::Acquire));
        Some(Duration::from_nanos(now.saturating_sub(since)))
    }
}

/// A call in flight; dropping it counts the call as answered.
pub struct InFlight<'a>(&'a Calls);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.answer_at(now());
    }
}

/// Nanoseconds since the first call, on the monotonic clock.
fn now() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    // Plus one, so that no instant reads as "never".
    EPOCH.get_or_init(Instant::now).elapsed().as_nanos() as u64 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_call_in_flight_is_never_silence() {
        let answering = Answering::new(Duration::ZERO);
        assert_eq!(answering.signing.silent_for(), None);
        drop(answering.signing.enter());
        assert_eq!(answering.not_answering(), None, "the call came back");
    }

    #[test]
    fn a_call_that_does_not_come_back_is_named_after_the_timeout() {
        let answering = Answering::new(Duration::ZERO);
        let _hung = answering.signing.enter();
        let reason = answering.not_answering().expect("not answering");
        assert!(reason.contains("a signature"), "{reason}");
        assert!(reason.contains("`signing.timeout_seconds` = 0"), "{reason}");
        let patient = Answering::new(Duration::from_secs(60));
        let _slow = patient.probing.enter();
        assert_eq!(patient.not_answering(), None, "slow, not hung");
    }

    #[test]
    fn another_call_coming_back_means_the_hsm_answers() {
        let calls = Calls::default();
        let second = |n: u64| n * 1_000_000_000;
        calls.enter_at(second(1));
        calls.enter_at(second(2));
        assert_eq!(calls.silent_at(second(5)), Some(Duration::from_secs(4)));
        calls.answer_at(second(6));
        assert_eq!(
            calls.silent_at(second(7)),
            Some(Duration::from_secs(1)),
            "one still in flight, silent since the other came back"
        );
        calls.answer_at(second(8));
        assert_eq!(calls.silent_at(second(9)), None);
    }
}
