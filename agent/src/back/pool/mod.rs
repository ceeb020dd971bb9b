//! The signing threads: dedicated OS threads, each owning one PKCS#11
//! session, fed by one bounded queue; and the quick path that lets a request
//! sign on its own I/O thread with a session no signing thread is using.
//!
//! `C_Sign` blocks (RSA-2048 takes about 0.6 ms in SoftHSM), so a slow
//! signature never runs on the async workers. A session is `Send` but not
//! `Sync`, and sharing one behind a lock halves throughput, so every thread
//! has its own. A full queue refuses at once ([`IssueError::Overloaded`])
//! instead of letting latency grow without bound.
//!
//! Handing a job to a signing thread and the result back costs two thread
//! wake-ups, which on two cores took more time than a P-256 signature in
//! SoftHSM (about 45 µs): ES256 reached 0.6 of the HSM's own rate. So each
//! key keeps an estimate of its signing time ([`Pace`]), and a key that
//! signs in under [`QUICK_SIGNATURE`] is signed on the requesting I/O thread
//! ([`quick`]) whenever its one session is idle; otherwise the job is queued
//! as any other. `make profile` shows the share each way.
//!
//! How many threads sign is [`sizing`]'s to say: the cores for signatures
//! that compute, more for signatures that wait on a network HSM.
//!
//! A signature the HSM never returns holds its thread and session, and
//! nothing else: the request is answered at its deadline (by the caller),
//! a queued job whose deadline has passed is dropped unsigned, and once no
//! signature has come back for `signing.timeout_seconds` ([`Answering`])
//! new jobs are refused at once instead of joining the wait.
//!
//! | module | what it is |
//! |---|---|
//! | [`job`] | one token to sign, and where its result goes |
//! | [`queue`] | the bounded queue the signing threads take jobs from |
//! | [`worker`] | a signing thread and its session; it grows and shrinks the pool |
//! | [`sizing`] | how many sessions the HSM in use needs |
//! | [`quick`] | quick signatures on the requesting thread, and their watch |
//! | [`shared`] | what threads and quick path share, and signing itself |
//! | [`thread_clock`] | a thread's CPU time and preemptions around a signature |
//!
//! [`Pace`]: super::pace::Pace
//! [`QUICK_SIGNATURE`]: super::pace::QUICK_SIGNATURE

mod job;
mod queue;
mod quick;
mod shared;
mod sizing;
mod thread_clock;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use cryptoki::session::Session;

pub use self::job::{Job, Reply};
pub use self::shared::FaultReport;

use self::job::reopening;
use self::queue::{Queue, Refused};
use self::quick::QuickClaim;
use self::shared::Shared;
use self::sizing::Sizing;
use self::worker::Worker;
use super::answering::Answering;
use crate::hsm::TokenHandle;
use crate::issue::IssueError;
use crate::metrics::Metrics;
use crate::sync::lock;

/// The threads and their sessions, owned by the HSM supervisor.
pub struct Pool {
    handle: PoolHandle,
}

/// The sessions a pool starts with, and where it opens more.
pub struct Sessions {
    /// One per signing thread kept whatever the load (`signing.threads`).
    pub opened: Vec<Session>,
    /// For quick signatures, if the token allows one more.
    pub quick: Option<Session>,
    /// The token, for the sessions of threads started beyond `opened`.
    pub token: TokenHandle,
    /// The most signing sessions at once.
    pub cap: usize,
}

/// The submitting side of a [`Pool`], cheap to clone into request paths.
#[derive(Clone)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

impl Pool {
    /// Starts one thread per opened session; `queue_size` jobs may wait.
    /// Signatures count in `answering`.
    pub fn start(
        sessions: Sessions,
        queue_size: usize,
        answering: Arc<Answering>,
        metrics: Arc<Metrics>,
        on_fault: FaultReport,
    ) -> std::io::Result<Pool> {
        let shared = Arc::new(Shared {
            queue: Queue::new(queue_size),
            quick: Mutex::new(sessions.quick),
            quick_busy: AtomicBool::new(false),
            runtime: OnceLock::new(),
            sizing: Sizing::new(sessions.opened.len(), sessions.cap),
            token: sessions.token,
            workers: AtomicUsize::new(0),
            leaving: AtomicUsize::new(0),
            live: AtomicUsize::new(0),
            names: AtomicUsize::new(0),
            refusal_logged: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            answering,
            metrics,
            on_fault,
        });
        let mut pool = Pool {
            handle: PoolHandle { shared },
        };
        if lock(&pool.handle.shared.quick).is_some() {
            let watched = Arc::clone(&pool.handle.shared);
            let watch = std::thread::Builder::new()
                .name("quick-watch".into())
                .spawn(move || quick::watch(&watched));
            if let Err(error) = watch {
                pool.shutdown();
                return Err(error);
            }
        }
        for session in sessions.opened {
            if let Err(error) = Worker::start(&pool.handle.shared, session) {
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
        let sizing = &self.handle.shared.sizing;
        (sizing.base(), sizing.cap())
    }

    /// Refuses new jobs and fails the queued ones; the threads stop once
    /// their signature (if any) is done. Does not wait.
    pub fn stop(&self) {
        let shared = &self.handle.shared;
        shared.closed.store(true, Ordering::SeqCst);
        for job in shared.queue.close() {
            job.fail(reopening());
        }
    }

    /// Whether every thread has stopped and closed its session, and no
    /// quick signature is under way: nothing of the pool is inside the
    /// module any more.
    pub fn is_stopped(&self) -> bool {
        let shared = &self.handle.shared;
        shared.live.load(Ordering::Acquire) == 0 && !shared.quick_busy.load(Ordering::Acquire)
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

    /// Stops the pool, waits until nothing of it is inside the module, and
    /// closes the quick session.
    pub fn shutdown(&mut self) {
        while !self.stop_within(Duration::from_secs(1)) {}
        drop(lock(&self.handle.shared.quick).take());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolHandle {
    /// Signs `job` on the requesting thread when its key signs quickly and
    /// the quick session is idle; otherwise queues it. When it cannot be
    /// queued its reply gets the reason at once.
    pub fn submit(&self, job: Job) {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
        }
        if let Some(reason) = shared.answering.not_answering() {
            return job.fail(IssueError::Unavailable(reason));
        }
        let job = match QuickClaim::sign_if_quick(shared, job) {
            Some(job) => job,
            None => return,
        };
        // The sessions there are, or are about to be: a crowd arriving
        // while the pool grows is queued, not refused.
        let sessions = shared
            .workers
            .load(Ordering::Relaxed)
            .max(shared.sizing.target());
        match shared.queue.push(job, sessions, shared.sizing.base()) {
            Ok(()) => {}
            Err(Refused::Full(job)) => job.fail(IssueError::Overloaded),
            Err(Refused::Closed(job)) => job.fail(reopening()),
        }
    }

    /// Why the HSM counts as not answering, if it does.
    pub fn not_answering(&self) -> Option<String> {
        self.shared.answering.not_answering()
    }
}
