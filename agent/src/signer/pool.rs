//! The signing threads: dedicated OS threads, each owning one PKCS#11
//! session, fed by one bounded queue.
//!
//! `C_Sign` blocks (RSA-2048 takes about 0.6 ms in SoftHSM), so it never runs
//! on the async workers. A session is `Send` but not `Sync`, and sharing one
//! behind a lock halves throughput, so every thread has its own. A full queue
//! refuses at once ([`IssueError::Overloaded`]) instead of letting latency
//! grow without bound.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use cryptoki::session::Session;

use super::ActiveKey;
use crate::hsm::sign::{sign_token, SignedToken};
use crate::hsm::HsmError;
use crate::issue::IssueError;
use crate::metrics::Metrics;
use crate::sync::lock;
use crate::token::Lifetime;

/// Where a signature's result goes; called exactly once, on a signing thread
/// (or on the submitting thread when the job is refused). Dropping it
/// uncalled must tell the requester the job was abandoned.
pub type Reply = Box<dyn FnOnce(Result<SignedToken, IssueError>) + Send>;

/// Called on a signing thread when the HSM fails in a way that reopening the
/// connection may cure.
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
    /// Set when the pool is being torn down: jobs are refused rather than
    /// signed with sessions that are about to close.
    closed: Arc<AtomicBool>,
}

impl Pool {
    /// Starts one thread per session; `queue_size` jobs may wait.
    pub fn start(
        sessions: Vec<Session>,
        queue_size: usize,
        metrics: Arc<Metrics>,
        on_fault: FaultReport,
    ) -> std::io::Result<Pool> {
        let (queue, receiver) = mpsc::sync_channel(queue_size);
        let receiver = Arc::new(Mutex::new(receiver));
        let handle = PoolHandle {
            queue,
            closed: Arc::new(AtomicBool::new(false)),
        };
        let mut pool = Pool {
            handle,
            threads: Vec::with_capacity(sessions.len()),
        };
        for (index, session) in sessions.into_iter().enumerate() {
            let worker = Worker {
                session,
                receiver: Arc::clone(&receiver),
                closed: Arc::clone(&pool.handle.closed),
                metrics: Arc::clone(&metrics),
                on_fault: Arc::clone(&on_fault),
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

    /// Refuses new jobs, fails the queued ones, and waits until every thread
    /// has closed its session.
    pub fn shutdown(&mut self) {
        self.handle.closed.store(true, Ordering::SeqCst);
        for _ in &self.threads {
            // Blocks only while the queue is full; the threads drain it fast
            // because they no longer sign.
            let _ = self.handle.queue.send(Message::Stop);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl PoolHandle {
    /// Queues `job`; when it cannot be queued its reply gets the reason at once.
    pub fn submit(&self, job: Job) {
        if self.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
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

struct Worker {
    session: Session,
    receiver: Arc<Mutex<Receiver<Message>>>,
    closed: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    on_fault: FaultReport,
}

impl Worker {
    fn run(self) {
        loop {
            let message = {
                let receiver = lock(&self.receiver);
                receiver.recv()
            };
            match message {
                Ok(Message::Job(job)) if self.closed.load(Ordering::Relaxed) => {
                    job.fail(reopening())
                }
                Ok(Message::Job(job)) => self.sign(job),
                Ok(Message::Stop) | Err(_) => break,
            }
        }
        // The session closes here, before the supervisor finalizes the module.
    }

    fn sign(&self, job: Job) {
        self.metrics.sessions_busy(1);
        let started = Instant::now();
        let result = sign_token(
            &self.session,
            &job.key.signing,
            &job.app,
            crate::clock::unix_now(),
            &job.lifetime,
        );
        self.metrics.sessions_busy(-1);
        match result {
            Ok(signed) => {
                self.metrics.signed(started.elapsed());
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
