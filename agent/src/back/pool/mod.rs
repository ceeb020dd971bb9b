//! The signing pool: OS threads, each owning one PKCS#11 session, fed by
//! one bounded queue.
//!
//! The rule: the pool keeps `signing.threads` sessions; it opens another
//! for each job that waits with no thread free to take it, up to
//! `signing.max_sessions` and the token's own limit; a session beyond
//! `signing.threads` that has been idle for [`IDLE_CLOSE`](state::IDLE_CLOSE) closes.
//!
//! `C_Sign` blocks (RSA-2048 takes about 0.6 ms in SoftHSM, a network HSM
//! milliseconds), so no signature runs on the async workers. A session is
//! `Send` but not `Sync`, so every thread has its own. A full queue refuses
//! at once ([`IssueError::Overloaded`]) instead of letting latency grow
//! without bound.
//!
//! A signature the HSM never returns holds its thread and session, and
//! nothing else: the request is answered at its deadline (by the caller),
//! a queued job whose deadline has passed is dropped unsigned, and once no
//! signature has come back for `signing.timeout_seconds` ([`Answering`])
//! new jobs are refused at once instead of joining the wait.
//!
//! | module | what it is |
//! |---|---|
//! | [`job`] | the work: one token to sign and where its result goes, or a probe of the token |
//! | [`queue`] | the bounded queue the signing threads take jobs from |
//! | [`state`] | what the threads and the submitters share |
//! | [`worker`] | a signing thread and its session: it signs and probes, opens another when jobs wait, and leaves when idle |

mod job;
mod queue;
mod state;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cryptoki::session::Session;

pub use self::job::{Job, ProbeAnswer, ProbeReply, Reply};
pub use self::state::FaultReport;

use self::job::reopening;
use self::queue::{Queue, Refused};
use self::state::PoolState;
use self::worker::Worker;
use super::answering::Answering;
use crate::hsm::SlotHandle;
use crate::issue::IssueError;
use crate::metrics::Metrics;

/// The threads and their sessions, owned by the HSM supervisor.
pub struct Pool {
    handle: PoolHandle,
}

/// The sessions a pool starts with, and where it opens more.
pub struct Sessions {
    /// One per signing thread kept whatever the load (`signing.threads`).
    pub opened: Vec<Session>,
    /// The HSM's slot, for the sessions of threads started beyond `opened`.
    pub slot: SlotHandle,
    /// The most signing sessions at once.
    pub cap: usize,
}

/// The submitting side of a [`Pool`], cheap to clone into request paths.
#[derive(Clone)]
pub struct PoolHandle {
    state: Arc<PoolState>,
}

impl Pool {
    /// Starts one thread per opened session; `queue_size` jobs may wait
    /// per `signing.threads` sessions. Signatures count in `answering`.
    pub fn start(
        sessions: Sessions,
        queue_size: usize,
        answering: Arc<Answering>,
        metrics: Arc<Metrics>,
        on_fault: FaultReport,
    ) -> std::io::Result<Pool> {
        let base = sessions.opened.len();
        let state = Arc::new(PoolState {
            queue: Queue::new(queue_size),
            slot: sessions.slot,
            base,
            cap: AtomicUsize::new(sessions.cap.max(base)),
            workers: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            names: AtomicUsize::new(0),
            refusal_logged: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            faulted: AtomicBool::new(false),
            answering,
            metrics,
            on_fault,
        });
        let mut pool = Pool {
            handle: PoolHandle { state },
        };
        for session in sessions.opened {
            if let Err(error) = Worker::start(&pool.handle.state, session) {
                pool.shutdown();
                return Err(error);
            }
        }
        Ok(pool)
    }

    /// The submitting side.
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Signing threads kept whatever the load, and the most there may be.
    pub fn threads(&self) -> (usize, usize) {
        let state = &self.handle.state;
        (state.base, state.cap.load(Ordering::Relaxed))
    }

    /// Refuses new jobs and fails the queued ones; the threads stop once
    /// their signature (if any) is done. Does not wait.
    pub fn stop(&self) {
        let state = &self.handle.state;
        state.closed.store(true, Ordering::SeqCst);
        for job in state.queue.close() {
            job.fail(reopening());
        }
    }

    /// Whether every thread has stopped and closed its session: nothing of
    /// the pool is inside the module any more.
    pub fn is_stopped(&self) -> bool {
        self.handle.state.live.load(Ordering::Acquire) == 0
    }

    /// [`Pool::stop`], then waits up to `patience` for [`Pool::is_stopped`];
    /// says whether it came.
    pub fn stop_within(&self, patience: Duration) -> bool {
        self.stop();
        let deadline = Instant::now() + patience;
        while !self.is_stopped() {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Stops the pool and waits until nothing of it is inside the module.
    pub fn shutdown(&mut self) {
        while !self.stop_within(Duration::from_secs(1)) {}
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolHandle {
    /// Queues `job` for a signing thread; when it cannot be queued its
    /// reply gets the reason at once.
    pub fn submit(&self, job: Job) {
        let state = &self.state;
        if state.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
        }
        if let Some(reason) = state.answering.not_answering() {
            return job.fail(IssueError::Unavailable(reason));
        }
        let sessions = state.workers.load(Ordering::Relaxed);
        match state.queue.push(job, sessions, state.base) {
            Ok(()) => {}
            Err(Refused::Full(job)) => job.fail(IssueError::Overloaded),
            Err(Refused::Closed(job)) => job.fail(reopening()),
        }
    }

    /// Asks a signing thread to probe the token; the answer goes to
    /// `reply`, which is dropped unanswered if the pool stops first.
    pub fn probe(&self, reply: ProbeReply) {
        self.state.queue.push_probe(reply);
    }

    /// Whether the link under this pool was lost: a signing thread met a
    /// connection fault, or the pool is being torn down.
    pub fn is_lost(&self) -> bool {
        self.state.faulted.load(Ordering::Acquire) || self.state.closed.load(Ordering::Acquire)
    }

    /// Why the HSM counts as not answering, if it does.
    pub fn not_answering(&self) -> Option<String> {
        self.state.answering.not_answering()
    }
}
