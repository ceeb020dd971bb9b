//! The signing threads: dedicated OS threads, each owning one PKCS#11
//! session, fed by one bounded queue; and the quick path that lets a request
//! sign on its own thread with a session no signing thread is using.
//!
//! `C_Sign` blocks (RSA-2048 takes about 0.6 ms in SoftHSM), so a slow
//! signature never runs on the async workers (a quick one does: should the
//! HSM hang inside it, that worker hangs with it, as a signing thread
//! would). A session is `Send` but not `Sync`, and sharing one behind a
//! lock halves throughput, so every thread has its own. A full queue refuses at once ([`IssueError::Overloaded`])
//! instead of letting latency grow without bound.
//!
//! Handing a job to a signing thread and the result back costs two thread
//! wake-ups, which on two cores took more time than a P-256 signature in
//! SoftHSM (about 45 µs): ES256 reached 0.6 of the HSM's own rate. So each
//! key keeps an estimate of its signing time ([`Pace`]), and a key that
//! signs in under [`QUICK_SIGNATURE`] is signed on the requesting thread,
//! with a session kept for that, whenever that session is idle; otherwise
//! the job is queued as any other. `make profile` shows the share each way.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use cryptoki::session::Session;

use super::active_key::ActiveKey;
use crate::hsm::sign::{sign_token, SignedToken};
use crate::hsm::HsmError;
use crate::issue::IssueError;
use crate::metrics::Metrics;
use crate::sync::{lock, try_lock};
use crate::token::Lifetime;

/// Where a signature's result goes; called exactly once, on a signing thread
/// or on the requesting thread (a quick signature, or a refused job). Dropping
/// it uncalled must tell the requester the job was abandoned.
pub type Reply = Box<dyn FnOnce(Result<SignedToken, IssueError>) + Send>;

/// Called on the thread that signed when the HSM fails in a way that
/// reopening the connection may cure.
pub type FaultReport = Arc<dyn Fn(&HsmError) + Send + Sync>;

/// One token to sign.
pub struct Job {
    pub key: Arc<ActiveKey>,
    pub app: Box<str>,
    pub lifetime: Arc<Lifetime>,
    pub reply: Reply,
}

impl Job {
    fn fail(self, error: IssueError) {
        (self.reply)(Err(error));
    }
}

enum Message {
    Job(Job),
    Stop,
}

/// The threads and their sessions, owned by the HSM supervisor.
pub struct Pool {
    handle: PoolHandle,
    threads: Vec<JoinHandle<()>>,
}

/// The submitting side of a [`Pool`], cheap to clone into request paths.
#[derive(Clone)]
pub struct PoolHandle {
    queue: SyncSender<Message>,
    shared: Arc<Shared>,
}

/// What the signing threads and the quick path share.
struct Shared {
    /// The session for quick signatures, used by one requesting thread at a
    /// time; emptied at shutdown, so that it does not outlive the pool
    /// whoever still holds a handle. One, because two threads signing at once
    /// contend inside SoftHSM: on two cores ES256 went from about 17,500 to
    /// 15,500 tokens/s with one per I/O thread.
    quick: Mutex<Option<Session>>,
    /// Set when the pool is being torn down: jobs are refused rather than
    /// signed with sessions that are about to close.
    closed: AtomicBool,
    metrics: Arc<Metrics>,
    on_fault: FaultReport,
}

impl Pool {
    /// Starts one thread per session in `sessions`; `queue_size` jobs may
    /// wait. `quick` is the session for quick signatures, if the token
    /// allows one more.
    pub fn start(
        sessions: Vec<Session>,
        quick: Option<Session>,
        queue_size: usize,
        metrics: Arc<Metrics>,
        on_fault: FaultReport,
    ) -> std::io::Result<Pool> {
        let (queue, receiver) = mpsc::sync_channel(queue_size);
        let receiver = Arc::new(Mutex::new(receiver));
        let shared = Arc::new(Shared {
            quick: Mutex::new(quick),
            closed: AtomicBool::new(false),
            metrics,
            on_fault,
        });
        let mut pool = Pool {
            handle: PoolHandle { queue, shared },
            threads: Vec::with_capacity(sessions.len()),
        };
        for (index, session) in sessions.into_iter().enumerate() {
            let worker = Worker {
                session,
                receiver: Arc::clone(&receiver),
                shared: Arc::clone(&pool.handle.shared),
            };
            let thread = std::thread::Builder::new()
                .name(format!("signer-{index}"))
                .spawn(move || worker.run());
            match thread {
                Ok(thread) => pool.threads.push(thread),
                Err(error) => {
                    pool.shutdown();
                    return Err(error);
                }
            }
        }
        Ok(pool)
    }

    /// The submitting side.
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// How many signing threads run.
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// Refuses new jobs, fails the queued ones, waits until every thread has
    /// stopped, and closes every session (after any quick signature under
    /// way).
    pub fn shutdown(&mut self) {
        let shared = &self.handle.shared;
        shared.closed.store(true, Ordering::SeqCst);
        for _ in &self.threads {
            // Blocks only while the queue is full; the threads drain it fast
            // because they no longer sign.
            let _ = self.handle.queue.send(Message::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        drop(lock(&shared.quick).take());
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolHandle {
    /// Signs `job` here and now when its key signs quickly and a session is
    /// idle; otherwise queues it. When it cannot be queued its reply gets the
    /// reason at once.
    pub fn submit(&self, job: Job) {
        if self.shared.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
        }
        if job.key.pace.is_quick() {
            // Held by another request: the job is queued rather than waited on.
            if let Some(quick) = try_lock(&self.shared.quick) {
                if let Some(session) = quick.as_ref() {
                    self.shared.metrics.quick_signature();
                    return self.shared.sign(session, job);
                }
            }
        }
        match self.queue.try_send(Message::Job(job)) {
            Ok(()) => {}
            Err(TrySendError::Full(Message::Job(job))) => job.fail(IssueError::Overloaded),
            Err(TrySendError::Disconnected(Message::Job(job))) => job.fail(reopening()),
            Err(_) => unreachable!("only jobs are submitted"),
        }
    }
}

fn reopening() -> IssueError {
    IssueError::Unavailable("the HSM connection is being reopened".into())
}

impl Shared {
    /// Signs `job` with `session` and replies; a fault that reopening may
    /// cure is reported to the supervisor.
    fn sign(&self, session: &Session, job: Job) {
        self.metrics.sessions_busy(1);
        let started = Instant::now();
        let result = sign_token(
            session,
            &job.key.signing,
            &job.app,
            crate::clock::unix_now(),
            &job.lifetime,
        );
        let elapsed = started.elapsed();
        self.metrics.sessions_busy(-1);
        match result {
            Ok(signed) => {
                job.key.pace.record(elapsed);
                self.metrics.signed(elapsed);
                (job.reply)(Ok(signed));
            }
            Err(error) => {
                if let Some(ckr) = error.ckr() {
                    self.metrics.hsm_error(&ckr.name());
                }
                if error.is_connection_fault() {
                    (self.on_fault)(&error);
                }
                job.fail(IssueError::Unavailable(error.to_string()));
            }
        }
    }
}

/// A signing thread: takes jobs from the queue and signs them with its own
/// session.
struct Worker {
    session: Session,
    receiver: Arc<Mutex<Receiver<Message>>>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        loop {
            let message = {
                let receiver = lock(&self.receiver);
                receiver.recv()
            };
            match message {
                Ok(Message::Job(job)) if self.shared.closed.load(Ordering::Relaxed) => {
                    job.fail(reopening())
                }
                Ok(Message::Job(job)) => self.shared.sign(&self.session, job),
                Ok(Message::Stop) | Err(_) => break,
            }
        }
        // The session closes here, before the supervisor finalizes the module.
    }
}
