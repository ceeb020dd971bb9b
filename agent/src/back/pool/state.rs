//! What the pool's threads and its submitters share.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use super::queue::Queue;
use crate::back::answering::Answering;
use crate::hsm::{HsmError, SlotHandle};
use crate::metrics::Metrics;

/// How long a session beyond `signing.threads` may stay idle before it closes.
pub const IDLE_CLOSE: Duration = Duration::from_secs(5);

/// Called on the thread that signed when the HSM fails in a way that
/// reopening the connection may cure.
pub type FaultReport = Arc<dyn Fn(&HsmError) + Send + Sync>;

/// What the pool's threads and its submitters share.
pub struct PoolState {
    pub queue: Queue,
    /// Where threads started beyond the first open their sessions.
    pub slot: SlotHandle,
    /// Sessions kept whatever the load: `signing.threads`.
    pub base: usize,
    /// The most sessions: `signing.max_sessions` within the token's limit,
    /// lowered should the token refuse a session.
    pub cap: AtomicUsize,
    /// Signing threads with a session open or being opened: the pool's size.
    pub workers: AtomicUsize,
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
    /// Set when a signing thread met a connection fault (and reported it),
    /// before its job is answered: the requester then knows the link is
    /// being reopened, and waits for it within its deadline.
    pub faulted: AtomicBool,
    pub answering: Arc<Answering>,
    pub metrics: Arc<Metrics>,
    pub on_fault: FaultReport,
}
