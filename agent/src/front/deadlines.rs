//! Per-connection deadlines, so that slow or idle connections cannot tie
//! the agent up.
//!
//! A connection is in one of four phases. A fresh connection must deliver
//! its first request head within `header_read_timeout` of connecting.
//! Waiting for a further request (while its last answer goes out, and
//! after) it may stay idle for `idle_timeout`; once the first byte of that
//! request arrives the whole head must arrive within `header_read_timeout`.
//! While a request is being answered no deadline applies (the signing side
//! bounds its own waits).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// The per-connection deadlines.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Connected, nothing read yet.
const FRESH: u8 = 0;
/// Part of a request head read.
const HEAD: u8 = 1;
/// A request is being answered.
const BUSY: u8 = 2;
/// Waiting for the next request on a kept-alive connection.
const IDLE: u8 = 3;

/// Which phase a connection is in and since when.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Whether an answer hyper wrote itself (a request it could not read)
    /// went out: the connection then closes.
    refused_unread: AtomicBool,
    phase: AtomicU8,
    /// Milliseconds from `start` to the start of the phase.
    since: AtomicU64,
}

impl Activity {
    /// A fresh connection: its first request head is due within the header timeout.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            refused_unread: AtomicBool::new(false),
            phase: AtomicU8::new(FRESH),
            since: AtomicU64::new(0),
        })
    }

    /// A request head was read and is being answered.
    pub fn request_started(&self) {
        self.phase.store(BUSY, Ordering::Relaxed);
    }

    /// The answer is ready; the connection waits for the next request.
    pub fn request_finished(&self) {
        self.enter(IDLE);
    }

    /// Bytes arrived; on an idle connection they start a request head.
    pub(super) fn bytes_read(&self) {
        match self.phase.load(Ordering::Relaxed) {
            // The head's deadline still counts from the connection's start.
            FRESH => self.phase.store(HEAD, Ordering::Relaxed),
            IDLE => self.enter(HEAD),
            _ => {}
        }
    }

    /// An unreadable request was answered (and the connection will close).
    pub(super) fn refused_unreadable(&self) {
        self.refused_unread.store(true, Ordering::Relaxed);
    }

    /// Whether an unreadable request was answered on this connection.
    pub fn was_refused_unreadable(&self) -> bool {
        self.refused_unread.load(Ordering::Relaxed)
    }

    /// Whether nothing at all has arrived on the connection yet.
    pub fn is_fresh(&self) -> bool {
        self.phase.load(Ordering::Relaxed) == FRESH
    }

    fn enter(&self, phase: u8) {
        let since = self.start.elapsed().as_millis() as u64;
        self.since.store(since, Ordering::Relaxed);
        self.phase.store(phase, Ordering::Relaxed);
    }

    /// Resolves when the connection overstays its phase's deadline.
    pub async fn overdue(&self, timeouts: Timeouts) {
        loop {
            let phase = self.phase.load(Ordering::Relaxed);
            let since = Duration::from_millis(self.since.load(Ordering::Relaxed));
            let deadline = match phase {
                FRESH | HEAD => self.start + since + timeouts.header_read,
                IDLE => self.start + since + timeouts.idle,
                _ => Instant::now() + timeouts.header_read,
            };
            if phase != BUSY && Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        header_read: Duration::from_secs(5),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn fresh_connection_is_due_after_the_header_timeout() {
        let activity = Activity::new();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn first_bytes_keep_the_deadline_of_a_fresh_connection() {
        let activity = Activity::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        activity.bytes_read();
        assert!(!activity.is_fresh());
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_gets_the_idle_timeout() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 60);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_on_an_idle_connection_start_the_header_clock() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        tokio::time::sleep(Duration::from_secs(30)).await;
        activity.bytes_read();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn bytes_after_the_answer_start_a_head() {
        let activity = Activity::new();
        activity.request_started();
        activity.request_finished();
        activity.bytes_read();
        let begun = Instant::now();
        activity.overdue(TIMEOUTS).await;
        assert_eq!(begun.elapsed().as_secs(), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_being_answered_has_no_deadline() {
        let activity = Activity::new();
        activity.request_started();
        let overdue = tokio::time::timeout(Duration::from_secs(600), activity.overdue(TIMEOUTS));
        assert!(overdue.await.is_err());
    }
}
