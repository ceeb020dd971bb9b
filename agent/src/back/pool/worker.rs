//! A signing thread: takes jobs from the queue and signs them with its own
//! session, which it closes before it leaves. The threads also size the
//! pool ([`Sizing`](super::sizing::Sizing)): one that finds jobs still
//! waiting behind the one it took starts another thread, while the sizing
//! allows; one beyond what the sizing wants, or idle for
//! [`IDLE_CLOSE`] beyond `threads`, leaves.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cryptoki::session::Session;

use super::job::{reopening, Job};
use super::queue::Popped;
use super::shared::Shared;
use super::sizing::IDLE_CLOSE;
use cryptoki::error::RvError;

use crate::hsm::{Ckr, HsmError};
use crate::issue::IssueError;

pub struct Worker {
    session: Session,
    shared: Arc<Shared>,
}

impl Worker {
    /// Starts a thread with `session`, one of the pool's first.
    pub fn start(shared: &Arc<Shared>, session: Session) -> std::io::Result<()> {
        shared.workers.fetch_add(1, Ordering::AcqRel);
        shared.live.fetch_add(1, Ordering::AcqRel);
        let worker = Worker {
            session,
            shared: Arc::clone(shared),
        };
        spawn(shared, move || worker.run())
    }

    /// Starts one more thread, which opens its own session, if the sizing
    /// wants more than there are and another session can sign faster.
    fn grow(shared: &Arc<Shared>) {
        let target = shared.sizing.target();
        let worth_it = shared.sizing.clearly_waiting() || shared.spare_cpu.has_spare();
        if shared.workers.load(Ordering::Acquire) >= target || !worth_it {
            return;
        }
        let reserved = shared
            .workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < target).then_some(n + 1)
            });
        if reserved.is_err() {
            return;
        }
        shared.live.fetch_add(1, Ordering::AcqRel);
        let (waiting, cpu) = shared.sizing.averages_micros();
        tracing::debug!(
            waiting_us = waiting,
            cpu_us = cpu,
            target,
            "signatures wait on the HSM: one more signing session"
        );
        let opener = Arc::clone(shared);
        let _ = spawn(shared, move || match opener.token.open_session() {
            Ok(session) => Worker {
                session,
                shared: opener,
            }
            .run(),
            Err(error) => {
                opener.session_refused(&error);
                opener.workers.fetch_sub(1, Ordering::AcqRel);
                opener.live.fetch_sub(1, Ordering::AcqRel);
            }
        });
    }

    fn run(self) {
        self.shared.metrics.signing_sessions(1);
        let mut counted = true;
        loop {
            match self.shared.queue.pop(IDLE_CLOSE) {
                Popped::Job(job) => {
                    if self.shared.queue.is_behind() {
                        Worker::grow(&self.shared);
                    }
                    self.handle(job);
                    if self.leave_above(self.shared.sizing.target()) {
                        counted = false;
                        break;
                    }
                }
                Popped::Idle if self.leave_above(self.shared.sizing.base()) => {
                    counted = false;
                    break;
                }
                Popped::Idle => {}
                Popped::Closed => break,
            }
        }
        let Worker { session, shared } = self;
        // Closed before the supervisor may finalize the module.
        drop(session);
        shared.metrics.signing_sessions(-1);
        if counted {
            shared.workers.fetch_sub(1, Ordering::AcqRel);
        }
        shared.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Leaves the pool (uncounts this thread) when it has more than `keep`.
    fn leave_above(&self, keep: usize) -> bool {
        self.shared
            .workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > keep).then(|| n - 1)
            })
            .is_ok()
    }

    fn handle(&self, job: Job) {
        if self.shared.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
        }
        if Instant::now() >= job.deadline {
            // Its requester has been answered already; nobody waits for it.
            return job.fail(IssueError::Unavailable(
                "the signature waited past its deadline".into(),
            ));
        }
        self.shared.sign(&self.session, job, true);
    }
}

/// Starts thread `signer-<n>` running `run`; the pool's counts are the
/// caller's to undo should that fail.
fn spawn(shared: &Arc<Shared>, run: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let index = shared.names.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(format!("signer-{index}"))
        .spawn(run)
        .map(drop)
        .inspect_err(|_| {
            shared.workers.fetch_sub(1, Ordering::AcqRel);
            shared.live.fetch_sub(1, Ordering::AcqRel);
        })
}

impl Shared {
    /// A new session was refused: the pool stays at the sessions it has
    /// when the token counts them out, and says so once.
    fn session_refused(&self, error: &HsmError) {
        if let Some(ckr) = error.ckr() {
            self.metrics.hsm_error(&ckr.name());
        }
        let open = self.workers.load(Ordering::Acquire).saturating_sub(1);
        if error.ckr() == Some(Ckr(RvError::SessionCount)) {
            self.sizing.limit_to(open);
        }
        if !self.refusal_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, sessions = open, "the token refused another signing session; signing goes on with the sessions it has");
        }
    }
}
