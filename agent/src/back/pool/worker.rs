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
use super::sizing::{kept, IDLE_CLOSE};
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
        // Counted before the thread runs, so that /metrics shows the session
        // as soon as the pool is ready.
        shared.metrics.signing_sessions(1);
        let worker = Worker {
            session,
            shared: Arc::clone(shared),
        };
        spawn(shared, move || worker.run()).inspect_err(|_| shared.metrics.signing_sessions(-1))
    }

    /// After taking a job: starts another thread when jobs wait behind it
    /// and one more session can sign faster. Returns how many threads the
    /// pool should keep once this job is done (this one leaves above that):
    /// the target and a margin ([`kept`]). It never grows once its own
    /// signatures keep the cores busy
    /// ([`Sizing::fills_the_cores`](super::sizing::Sizing::fills_the_cores)): more
    /// could only wait for a core.
    fn resize(shared: &Arc<Shared>) -> usize {
        let sizing = &shared.sizing;
        let target = sizing.target();
        let workers = shared.workers.load(Ordering::Acquire);
        if workers < target && !sizing.fills_the_cores(workers) && shared.queue.is_behind() {
            Worker::grow(shared, target);
        }
        kept(target)
    }

    /// Starts one more thread, which opens its own session, unless that
    /// would make more than `target`.
    fn grow(shared: &Arc<Shared>, target: usize) {
        let reserved = shared
            .workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < target).then_some(n + 1)
            });
        if reserved.is_err() {
            return;
        }
        shared.live.fetch_add(1, Ordering::AcqRel);
        let (waiting, cpu) = shared.sizing.estimates_micros();
        tracing::debug!(
            waiting_us = waiting,
            cpu_us = cpu,
            target,
            "signatures wait on the HSM: one more signing session"
        );
        let opener = Arc::clone(shared);
        let _ = spawn(shared, move || match opener.token.open_session() {
            Ok(session) => {
                opener.metrics.signing_sessions(1);
                Worker {
                    session,
                    shared: opener,
                }
                .run()
            }
            Err(error) => {
                opener.session_refused(&error);
                opener.workers.fetch_sub(1, Ordering::AcqRel);
                opener.live.fetch_sub(1, Ordering::AcqRel);
            }
        });
    }

    fn run(self) {
        let leaving = loop {
            match self.shared.queue.pop(IDLE_CLOSE) {
                Popped::Job(job) => {
                    let keep = Worker::resize(&self.shared);
                    self.handle(job);
                    if self.leave_above(keep) {
                        break true;
                    }
                }
                Popped::Idle if self.leave_above(self.shared.sizing.base()) => break true,
                Popped::Idle => {}
                Popped::Closed => break false,
            }
        };
        let Worker { session, shared } = self;
        // Closed before the supervisor may finalize the module, and before
        // it stops counting, so that the pool never holds more sessions
        // than its cap, not even for a moment.
        drop(session);
        shared.metrics.signing_sessions(-1);
        shared.workers.fetch_sub(1, Ordering::AcqRel);
        if leaving {
            shared.leaving.fetch_sub(1, Ordering::AcqRel);
        }
        shared.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Decides to leave the pool when it keeps more than `keep` threads not
    /// already leaving.
    fn leave_above(&self, keep: usize) -> bool {
        let shared = &self.shared;
        shared
            .leaving
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |leaving| {
                let staying = shared
                    .workers
                    .load(Ordering::Acquire)
                    .saturating_sub(leaving);
                (staying > keep).then_some(leaving + 1)
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

/// Starts thread `signer-<n>` running `run`; should that fail, takes back
/// the `workers` and `live` counts the caller added (other counts, such as
/// the metrics' gauge, are the caller's to undo).
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
