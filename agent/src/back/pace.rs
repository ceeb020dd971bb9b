//! How long a key's signatures take, and whether that is quick enough to
//! sign on the requesting thread.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The longest signing time ([`Pace`]) for which a request signs on its own
/// (async I/O) thread: about what tokio allows a task between awaits, so the
/// other connections on that thread barely notice.
pub const QUICK_SIGNATURE: Duration = Duration::from_micros(200);

/// How long a key's signatures take when the thread is not preempted: it
/// follows a faster signature at once and a slower one by 1/16 of the
/// difference, because on a busy machine the wall-clock time of many
/// signatures includes waiting for a core. Unknown until the first one.
#[derive(Debug)]
pub struct Pace(AtomicU32);

impl Default for Pace {
    fn default() -> Self {
        Pace(AtomicU32::new(u32::MAX))
    }
}

impl Pace {
    /// Takes one signature's time into account.
    pub fn record(&self, elapsed: Duration) {
        let sample = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX - 1);
        let pace = self.0.load(Ordering::Relaxed);
        let next = if sample <= pace {
            sample
        } else {
            // Rounded up, so that a steady slower time is reached in the end.
            pace + (sample - pace).div_ceil(16)
        };
        self.0.store(next, Ordering::Relaxed);
    }

    /// Whether signatures are known to take less than [`QUICK_SIGNATURE`].
    pub fn is_quick(&self) -> bool {
        u128::from(self.0.load(Ordering::Relaxed)) < QUICK_SIGNATURE.as_micros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    /// A pace after one signature of `first` µs and `count` of `then` µs.
    fn pace_after(first: u64, then: u64, count: usize) -> Pace {
        let pace = Pace::default();
        pace.record(micros(first));
        for _ in 0..count {
            pace.record(micros(then));
        }
        pace
    }

    #[test]
    fn a_key_is_not_quick_before_its_first_signature() {
        assert!(!Pace::default().is_quick());
    }

    #[test]
    fn one_signature_under_the_limit_makes_a_key_quick() {
        assert!(pace_after(60, 0, 0).is_quick());
        let limit = QUICK_SIGNATURE.as_micros() as u64;
        assert!(
            !pace_after(limit, 0, 0).is_quick(),
            "the limit itself is not quick"
        );
    }

    #[test]
    fn a_preempted_signature_does_not_make_a_quick_key_slow() {
        assert!(
            pace_after(60, 2_000, 1).is_quick(),
            "one slow sample moves the pace 1/16 of the way"
        );
    }

    #[test]
    fn a_key_just_under_the_limit_that_turns_slightly_slower_leaves_the_quick_path() {
        assert!(!pace_after(190, 205, 200).is_quick());
    }

    #[test]
    fn a_key_that_stays_slow_leaves_the_quick_path_until_a_fast_signature() {
        let pace = pace_after(60, 1_500, 40);
        assert!(!pace.is_quick());
        pace.record(micros(50));
        assert!(pace.is_quick());
    }
}
