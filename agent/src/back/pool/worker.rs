//! A signing thread: takes jobs from the queue and signs them with its own
//! session, which it closes before it leaves; it also answers the
//! supervisor's probes. One that takes a job while more wait and no
//! thread is free starts a thread for each of them (up to the cap); one
//! idle for [`IDLE_CLOSE`] leaves while the pool has more than
//! `signing.threads`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cryptoki::error::RvError;
use cryptoki::session::Session;

use super::job::{reopening, Job, ProbeReply, Work};
use super::queue::Popped;
use super::state::{PoolState, IDLE_CLOSE};
use crate::hsm::sign::{sign_token, SignedToken};
use crate::hsm::{Ckr, HsmError};
use crate::issue::IssueError;

pub struct Worker {
    session: Session,
    state: Arc<PoolState>,
}

impl Worker {
    /// Starts a thread with `session`, one of the pool's first.
    pub fn start(state: &Arc<PoolState>, session: Session) -> std::io::Result<()> {
        state.workers.fetch_add(1, Ordering::AcqRel);
        state.live.fetch_add(1, Ordering::AcqRel);
        // Counted before the thread runs, so that /metrics shows the session
        // as soon as the pool is ready.
        state.metrics.signing_sessions(1);
        let worker = Worker {
            session,
            state: Arc::clone(state),
        };
        spawn(state, move || worker.run()).inspect_err(|_| state.metrics.signing_sessions(-1))
    }

    fn run(mut self) {
        // Idle counts from the last signature: the supervisor's probes,
        // every few seconds, would otherwise keep every thread open.
        let mut busy_at = Instant::now();
        let counted_out = loop {
            match self
                .state
                .queue
                .pop(IDLE_CLOSE.saturating_sub(busy_at.elapsed()))
            {
                Popped::Work(work) => {
                    // One more thread for each job no thread waits for, so
                    // that a burst meets its sessions at once, not one by one.
                    for _ in 0..self.state.queue.behind() {
                        if !grow(&self.state) {
                            break;
                        }
                    }
                    match work {
                        Work::Sign(job) => {
                            self.handle(job);
                            busy_at = Instant::now();
                        }
                        Work::Probe(reply) => self.probe(reply),
                    }
                }
                Popped::Idle if self.leaves() => break true,
                Popped::Idle => busy_at = Instant::now(),
                Popped::Closed => break false,
            }
        };
        let Worker { session, state } = self;
        // Closed before it stops counting as live, so that the pool never
        // holds more sessions than its cap, not even for a moment, and
        // none once the supervisor finalizes the module.
        drop(session);
        state.metrics.signing_sessions(-1);
        if !counted_out {
            state.workers.fetch_sub(1, Ordering::AcqRel);
        }
        state.live.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether this idle thread leaves: while the pool has more than
    /// `signing.threads`. It counts itself out at once, so that two idle
    /// threads cannot both take the last place above that.
    fn leaves(&self) -> bool {
        let state = &self.state;
        state
            .workers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n > state.base).then_some(n - 1)
            })
            .is_ok()
    }

    fn handle(&mut self, job: Job) {
        if self.state.closed.load(Ordering::Relaxed) {
            return job.fail(reopening());
        }
        if Instant::now() >= job.deadline {
            // Its requester has been answered already; nobody waits for it.
            return job.fail(IssueError::Unavailable(
                "the signature waited past its deadline".into(),
            ));
        }
        self.sign(job);
    }

    /// Signs `job`'s token in its buffer (a retry gets a new one).
    fn sign_once(&self, job: &mut Job) -> Result<SignedToken, HsmError> {
        let _in_flight = self.state.answering.signing.enter();
        sign_token(
            &self.session,
            &job.key.signing,
            &job.app,
            crate::clock::unix_now(),
            &job.lifetime,
            std::mem::take(&mut job.buffer),
        )
    }

    /// Opens a session in place of one the HSM dropped (a network HSM's
    /// restart, fail-over or idle timeout); the old one is closed.
    fn renew_session(&mut self) -> Result<(), HsmError> {
        let state = &self.state;
        let session = state.slot.open_session()?;
        tracing::info!("the HSM dropped a signing session; signing again on a new one");
        self.session = session;
        state.metrics.signing_sessions(-1);
        state.metrics.signing_sessions(1);
        Ok(())
    }

    fn probe(&self, reply: ProbeReply) {
        let answer = {
            let _in_flight = self.state.answering.probing.enter();
            self.state.slot.probe()
        };
        let _ = reply.try_send(answer.map_err(Arc::new));
    }

    /// Signs `job` and replies. A session the HSM dropped is replaced and
    /// the signature tried once more, within the job's deadline; a fault
    /// that reopening the connection may cure is reported to the supervisor.
    fn sign(&mut self, mut job: Job) {
        let state = Arc::clone(&self.state);
        state.metrics.sessions_busy(1);
        let started = Instant::now();
        let mut result = self.sign_once(&mut job);
        if result.as_ref().is_err_and(is_session_lost) && Instant::now() < job.deadline {
            result = self.renew_session().and_then(|()| self.sign_once(&mut job));
        }
        state.metrics.sessions_busy(-1);
        match result {
            Ok(signed) => {
                state.metrics.signed(started.elapsed());
                (job.reply)(Ok(signed));
            }
            Err(error) => {
                if let Some(ckr) = error.ckr() {
                    state.metrics.hsm_error(&ckr.name());
                }
                if error.is_connection_fault() {
                    // Before the reply, so that its requester sees the link
                    // lost and waits for the reconnect.
                    state.faulted.store(true, Ordering::Release);
                    (state.on_fault)(&error);
                }
                job.fail(IssueError::Unavailable(error.to_string()));
            }
        }
    }
}

/// Whether the HSM dropped the session itself, while a new one may work.
fn is_session_lost(error: &HsmError) -> bool {
    matches!(
        error.ckr().map(|c| c.0),
        Some(RvError::SessionHandleInvalid | RvError::SessionClosed)
    )
}

/// Starts one more thread, which opens its own session, unless the pool
/// is at its cap; says whether it did.
fn grow(state: &Arc<PoolState>) -> bool {
    // Reserved against the live threads, which include those still
    // closing their session on the way out.
    let cap = state.cap.load(Ordering::Relaxed);
    let reserved = state
        .live
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        });
    if reserved.is_err() {
        return false;
    }
    state.workers.fetch_add(1, Ordering::AcqRel);
    tracing::debug!(
        cap,
        "signatures wait for a session: one more signing session"
    );
    let opener = Arc::clone(state);
    let spawned = spawn(state, move || match opener.slot.open_session() {
        Ok(session) => {
            opener.metrics.signing_sessions(1);
            Worker {
                session,
                state: opener,
            }
            .run()
        }
        Err(error) => {
            opener.session_refused(&error);
            opener.workers.fetch_sub(1, Ordering::AcqRel);
            opener.live.fetch_sub(1, Ordering::AcqRel);
        }
    });
    spawned.is_ok()
}

/// Starts thread `signer-<n>` running `run`; should that fail, takes back
/// the `workers` and `live` counts the caller added (other counts, such as
/// the metrics' gauge, are the caller's to undo).
fn spawn(state: &Arc<PoolState>, run: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let index = state.names.fetch_add(1, Ordering::Relaxed);
    std::thread::Builder::new()
        .name(format!("signer-{index}"))
        .spawn(run)
        .map(drop)
        .inspect_err(|_| {
            state.workers.fetch_sub(1, Ordering::AcqRel);
            state.live.fetch_sub(1, Ordering::AcqRel);
        })
}

impl PoolState {
    /// A new session was refused: the pool stays at the sessions it has
    /// when the token counts them out, and says so once.
    fn session_refused(&self, error: &HsmError) {
        if let Some(ckr) = error.ckr() {
            self.metrics.hsm_error(&ckr.name());
        }
        let open = self.workers.load(Ordering::Acquire).saturating_sub(1);
        if error.ckr() == Some(Ckr(RvError::SessionCount)) {
            self.cap.fetch_min(open.max(self.base), Ordering::Relaxed);
        }
        if !self.refusal_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(%error, sessions = open, "the token refused another signing session; signing goes on with the sessions it has");
        }
    }
}
