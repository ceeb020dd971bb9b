//! Bounded exponential backoff between reconnection attempts.

use std::time::Duration;

/// Waits that double from `first` up to `max`.
#[derive(Debug, Clone)]
pub struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { max, next: first }
    }

    /// The wait before the next attempt; each call doubles the one after.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_bound() {
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(2));
        let waits: Vec<u64> = (0..6)
            .map(|_| backoff.next_wait().as_millis() as u64)
            .collect();
        assert_eq!(waits, [250, 500, 1000, 2000, 2000, 2000]);
    }
}
