//! Quick signatures: a key that signs in under
//! [`QUICK_SIGNATURE`](crate::back::pace::QUICK_SIGNATURE) is signed with
//! the one quick session on the requesting I/O thread, saving the two
//! thread crossings of the queue.
//!
//! The signature runs as a task of its own, spawned on that thread: it runs
//! there right after the request yields (tokio's LIFO slot, no wake-up of
//! another thread), and should the HSM hang inside it, only that task and
//! its thread wait. No second quick signature can start while the first
//! holds the session, so one thread at most waits this way.
//!
//! A blocked I/O thread can stall the others, though: when it was the last
//! to watch the sockets and timers, the rest sleep until someone wakes them,
//! and the request's deadline never fires. So [`watch`] looks every
//! [`WATCH_INTERVAL`], and while a quick signature has gone unanswered that
//! long it hands the runtime an empty task, which wakes another I/O thread
//! to take over the sockets and timers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::job::{reopening, Job};
use super::shared::Shared;
use crate::sync::lock;

/// How often [`watch`] looks, and how long a quick signature may go
/// unanswered before it wakes the runtime: quick ones take under 1 ms.
pub const WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// The right to sign with the quick session; released when dropped, even
/// when its task is dropped unrun at shutdown.
pub struct QuickClaim(Arc<Shared>);

impl QuickClaim {
    /// Signs `job` on this thread's runtime when its key is quick and the
    /// quick session is free; otherwise hands it back for the queue.
    pub fn sign_if_quick(shared: &Arc<Shared>, job: Job) -> Option<Job> {
        if !job.key.pace.is_quick() {
            return Some(job);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Some(job);
        };
        let Some(claim) = QuickClaim::take(shared) else {
            // Held by another request: the job is queued rather than waited on.
            return Some(job);
        };
        let runtime = shared.runtime.get_or_init(|| runtime);
        runtime.spawn(async move { claim.sign(job) });
        None
    }

    fn take(shared: &Arc<Shared>) -> Option<QuickClaim> {
        shared
            .quick_busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| QuickClaim(Arc::clone(shared)))
    }

    fn sign(self, job: Job) {
        let shared = &self.0;
        let quick = lock(&shared.quick);
        match quick.as_ref() {
            Some(session) if !shared.closed.load(Ordering::Relaxed) => {
                shared.metrics.quick_signature();
                shared.sign(session, job, false);
            }
            _ => job.fail(reopening()),
        }
    }
}

impl Drop for QuickClaim {
    fn drop(&mut self) {
        self.0.quick_busy.store(false, Ordering::Release);
    }
}

/// The watch thread's loop: wakes the runtime whenever a quick signature
/// has gone unanswered for [`WATCH_INTERVAL`]; ends with the pool.
pub fn watch(shared: &Shared) {
    while !shared.closed.load(Ordering::Relaxed) {
        std::thread::sleep(WATCH_INTERVAL);
        let stuck = shared.quick_busy.load(Ordering::Acquire)
            && shared
                .answering
                .signing
                .silent_for()
                .is_some_and(|silent| silent >= WATCH_INTERVAL);
        if let (true, Some(runtime)) = (stuck, shared.runtime.get()) {
            // Scheduled from outside the runtime: a sleeping I/O thread wakes.
            drop(runtime.spawn(async {}));
        }
    }
}
