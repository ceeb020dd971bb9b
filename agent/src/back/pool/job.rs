//! One token to sign, and where its result goes.

use std::sync::Arc;
use std::time::Instant;

use crate::back::active_key::ActiveKey;
use crate::hsm::sign::SignedToken;
use crate::issue::IssueError;
use crate::token::Lifetime;

/// Where a signature's result goes; called exactly once, on a signing thread
/// or on the requesting thread (a quick signature, or a refused job). Dropping
/// it uncalled must tell the requester the job was abandoned.
pub type Reply = Box<dyn FnOnce(Result<SignedToken, IssueError>) + Send>;

/// One token to sign.
pub struct Job {
    pub key: Arc<ActiveKey>,
    pub app: Box<str>,
    pub lifetime: Arc<Lifetime>,
    /// When the requester stops waiting: a job still queued then is dropped.
    pub deadline: Instant,
    pub reply: Reply,
}

impl Job {
    pub fn fail(self, error: IssueError) {
        (self.reply)(Err(error));
    }
}

/// Why a job is refused while the pool is torn down.
pub fn reopening() -> IssueError {
    IssueError::Unavailable("the HSM connection is being reopened".into())
}
