//! The pool's work: a token to sign and where its result goes, or a probe
//! of the token.

use std::sync::mpsc::SyncSender;
use std::sync::Arc;
use std::time::Instant;

use crate::back::active_key::ActiveKey;
use crate::hsm::sign::SignedToken;
use crate::hsm::HsmError;
use crate::issue::IssueError;
use crate::token::Lifetime;

/// Where a signature's result goes; called exactly once, on a signing thread
/// or on the requesting thread (a refused job). Dropping
/// it uncalled must tell the requester the job was abandoned.
pub type Reply = Box<dyn FnOnce(Result<SignedToken, IssueError>) + Send>;

/// One token to sign.
pub struct Job {
    pub key: Arc<ActiveKey>,
    pub app: Box<str>,
    pub lifetime: Arc<Lifetime>,
    /// When the requester stops waiting: a job still queued then is dropped.
    pub deadline: Instant,
    /// The memory the token is written into: allocated by a requester that
    /// frees the token itself ([`crate::token::max_len`]), so that it is
    /// freed on the thread that allocated it; empty for the cache, which
    /// copies the token on the signing thread.
    pub buffer: String,
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

/// What a signing thread takes from the queue.
pub enum Work {
    Sign(Job),
    /// Ask the token whether it is still there (`C_GetTokenInfo`); the
    /// answer goes to the sender, which is dropped unanswered if the pool
    /// stops first.
    Probe(ProbeReply),
}

/// A probe's answer: the token answered, or how it failed.
pub type ProbeAnswer = Result<(), Arc<HsmError>>;

/// Where a probe's answer goes.
pub type ProbeReply = SyncSender<ProbeAnswer>;
