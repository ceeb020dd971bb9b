//! The signing queue: work waiting for a signing thread, bounded, and closed
//! at once for every thread when the pool is torn down.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use super::job::{Job, ProbeReply, Work};
use crate::sync::lock;

/// Jobs waiting for a signing thread.
pub struct Queue {
    state: Mutex<State>,
    /// Signalled when a job arrives (one thread) or the queue closes (all).
    available: Condvar,
    /// Jobs that may wait per `threads` signing threads (`signing.queue_size`).
    capacity: usize,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Work>,
    /// Threads waiting in [`Queue::pop`]: only they need a wake-up.
    waiting: usize,
    closed: bool,
}

/// What [`Queue::pop`] found.
pub enum Popped {
    Work(Work),
    /// No job came within the idle time.
    Idle,
    Closed,
}

/// Why [`Queue::push`] handed a job back.
pub enum Refused {
    Full(Job),
    Closed(Job),
}

impl Queue {
    /// A queue holding `capacity` jobs per `threads` signing threads.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::default(),
            available: Condvar::new(),
            capacity,
        }
    }

    /// Queues `job` unless the queue is full or closed. It holds
    /// `capacity × sessions / threads` jobs, so that a job waits about as
    /// long in a full queue whether `threads` sessions sign or more.
    pub fn push(&self, job: Job, sessions: usize, threads: usize) -> Result<(), Refused> {
        let limit = self.capacity * sessions.max(threads) / threads.max(1);
        let mut state = lock(&self.state);
        if state.closed {
            return Err(Refused::Closed(job));
        }
        if state.jobs.len() >= limit {
            return Err(Refused::Full(job));
        }
        state.jobs.push_back(Work::Sign(job));
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.available.notify_one();
        }
        Ok(())
    }

    /// Puts a probe first in line, whatever the queue holds: it is one
    /// call, and no more than one is asked at a time. Dropped if closed.
    pub fn push_probe(&self, reply: ProbeReply) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.jobs.push_front(Work::Probe(reply));
        let wake = state.waiting > 0;
        drop(state);
        if wake {
            self.available.notify_one();
        }
    }

    /// The next work, waiting up to `idle` for some.
    pub fn pop(&self, idle: Duration) -> Popped {
        let deadline = Instant::now() + idle;
        let mut state = lock(&self.state);
        loop {
            if state.closed {
                return Popped::Closed;
            }
            if let Some(job) = state.jobs.pop_front() {
                return Popped::Work(job);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Popped::Idle;
            }
            state.waiting += 1;
            state = self
                .available
                .wait_timeout(state, left)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(state, _)| state);
            state.waiting -= 1;
        }
    }

    /// How many jobs wait beyond the threads waiting to take them: how far
    /// signing is behind.
    pub fn behind(&self) -> usize {
        let state = lock(&self.state);
        state.jobs.len().saturating_sub(state.waiting)
    }

    /// Refuses further jobs, wakes every waiting thread, and hands back
    /// the jobs that were still waiting.
    pub fn close(&self) -> Vec<Job> {
        let mut state = lock(&self.state);
        state.closed = true;
        let jobs = state
            .jobs
            .drain(..)
            .filter_map(|work| match work {
                Work::Sign(job) => Some(job),
                Work::Probe(_) => None,
            })
            .collect();
        drop(state);
        self.available.notify_all();
        jobs
    }
}
