//! A signing thread: takes jobs from the queue and signs them with its own
//! session, which it closes before it leaves.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use cryptoki::session::Session;

use super::job::{reopening, Job};
use super::shared::Shared;
use crate::issue::IssueError;

pub struct Worker {
    session: Session,
    shared: Arc<Shared>,
}

impl Worker {
    /// Starts thread `signer-<index>` with `session`.
    pub fn spawn(shared: &Arc<Shared>, session: Session, index: usize) -> std::io::Result<()> {
        let worker = Worker {
            session,
            shared: Arc::clone(shared),
        };
        shared.live.fetch_add(1, Ordering::AcqRel);
        std::thread::Builder::new()
            .name(format!("signer-{index}"))
            .spawn(move || worker.run())
            .map(drop)
            .inspect_err(|_| {
                // The closure, and the session with it, was dropped unrun.
                shared.live.fetch_sub(1, Ordering::AcqRel);
            })
    }

    fn run(self) {
        while let Some(job) = self.shared.queue.pop() {
            self.handle(job);
        }
        let Worker { session, shared } = self;
        // Closed before the supervisor may finalize the module.
        drop(session);
        shared.live.fetch_sub(1, Ordering::AcqRel);
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
        self.shared.sign(&self.session, job);
    }
}
