//! What the signing threads and the quick path share: the queue, the quick
//! session, the pool's size, and signing itself.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use cryptoki::session::Session;

use super::job::Job;
use super::queue::Queue;
use super::sizing::Sizing;
use super::thread_clock::ThreadClock;
use crate::back::answering::Answering;
use crate::hsm::sign::sign_token;
use crate::hsm::{HsmError, TokenHandle};
use crate::issue::IssueError;
use crate::metrics::Metrics;

/// Called on the thread that signed when the HSM fails in a way that
/// reopening the connection may cure.
pub type FaultReport = Arc<dyn Fn(&HsmError) + Send + Sync>;

/// What the signing threads and the quick path share.
pub struct Shared {
    pub queue: Queue,
    /// The session for quick signatures, used by one requesting thread at a
    /// time; emptied at shutdown, so that it does not outlive the pool
    /// whoever still holds a handle. One, because two threads signing at once
    /// contend inside SoftHSM: on two cores ES256 went from about 17,500 to
    /// 15,500 tokens/s with one per I/O thread.
    pub quick: Mutex<Option<Session>>,
    /// Set while a quick signature is claimed ([`QuickClaim`](super::quick::QuickClaim)).
    pub quick_busy: AtomicBool,
    /// The runtime quick signatures run on, for [`watch`](super::quick::watch) to wake.
    pub runtime: OnceLock<tokio::runtime::Handle>,
    /// How many sessions signing needs, and may have.
    pub sizing: Sizing,
    /// Where threads started beyond the first open their sessions.
    pub token: TokenHandle,
    /// Signing threads with a session open or being opened: the pool's size.
    pub workers: AtomicUsize,
    /// Of those, the ones that decided to leave and are closing their session.
    pub leaving: AtomicUsize,
    /// Signing threads still running: counted until their session is
    /// closed, so that zero means none is inside the module.
    pub live: AtomicUsize,
    /// Numbers the threads' names.
    pub names: AtomicUsize,
    /// Whether a refused session was logged: once is enough.
    pub refusal_logged: AtomicBool,
    /// Set when the pool is being torn down: jobs are refused rather than
    /// signed with sessions that are about to close.
    pub closed: AtomicBool,
    pub answering: Arc<Answering>,
    pub metrics: Arc<Metrics>,
    pub on_fault: FaultReport,
}

impl Shared {
    /// Signs `job` with `session` and replies; a fault that reopening may
    /// cure is reported to the supervisor. With `measure`, the signature's
    /// wall and CPU time go to the sizing (signing threads; a quick
    /// signature says nothing about waiting).
    pub fn sign(&self, session: &Session, job: Job, measure: bool) {
        self.metrics.sessions_busy(1);
        let clock = measure.then(ThreadClock::now);
        let started = Instant::now();
        let result = {
            let _in_flight = self.answering.signing.enter();
            sign_token(
                session,
                &job.key.signing,
                &job.app,
                crate::clock::unix_now(),
                &job.lifetime,
            )
        };
        let elapsed = started.elapsed();
        if let Some(clock) = clock {
            let (cpu, preempted) = clock.since();
            self.sizing.record(elapsed, cpu, preempted);
        }
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
