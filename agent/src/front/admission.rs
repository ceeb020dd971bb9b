//! Which accepted connections are served: each needs a place under
//! `server.max_connections` and one under its uid's
//! `server.max_connections_per_uid`; the others get 503 and are closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::over_cap;
use super::per_uid::{PerUid, UidSlot};
use crate::config::ServerConfig;

/// Connections past a cap whose request heads are read before their 503;
/// beyond these, the 503 is written at once, without reading, and the
/// connection closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// Reaching a cap is logged at most this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The caps, and the connections under them.
pub struct Admission {
    max: usize,
    slots: Arc<Semaphore>,
    occupancy: Occupancy,
    per_uid: Arc<PerUid>,
    refusals: Arc<Semaphore>,
    warned: [Option<Instant>; 2],
}

/// How many connections are open, and the most that were since
/// [`Occupancy::reset_peak`].
#[derive(Clone)]
pub struct Occupancy {
    max: usize,
    slots: Arc<Semaphore>,
    peak: Arc<AtomicUsize>,
}

impl Occupancy {
    pub fn open(&self) -> usize {
        self.max - self.slots.available_permits()
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::Relaxed)
    }

    /// Counts the peak from the connections open now.
    pub fn reset_peak(&self) {
        self.peak.store(self.open(), Ordering::Relaxed);
    }

    fn admitted(&self) {
        self.peak.fetch_max(self.open(), Ordering::Relaxed);
    }
}

/// A served connection's places under both caps, given back when dropped.
pub struct Places {
    _slot: OwnedSemaphorePermit,
    _uid: UidSlot,
}

impl Admission {
    pub fn new(config: &ServerConfig) -> Admission {
        let max = config.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        Admission {
            max,
            occupancy: Occupancy {
                max,
                slots: Arc::clone(&slots),
                peak: Arc::new(AtomicUsize::new(0)),
            },
            slots,
            per_uid: PerUid::new(config.max_connections_per_uid.min(max)),
            refusals: Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT)),
            warned: [None; 2],
        }
    }

    /// Places for `stream`'s connection; `None` when it was refused (503)
    /// or has no peer credentials.
    pub fn admit(&mut self, stream: UnixStream) -> Option<(UnixStream, Places)> {
        let uid = match stream.peer_cred() {
            Ok(cred) => cred.uid(),
            Err(e) => {
                tracing::debug!("dropping a connection without peer credentials: {e}");
                return None;
            }
        };
        let Ok(slot) = Arc::clone(&self.slots).try_acquire_owned() else {
            let max = self.max;
            self.warn(0, || {
                format!("{max} connections open (`server.max_connections`); refusing more with 503")
            });
            self.refuse(stream, over_cap::total(max));
            return None;
        };
        let Some(uid_slot) = self.per_uid.try_acquire(uid) else {
            let max = self.per_uid.max();
            self.warn(1, || format!("uid {uid} has {max} connections open (`server.max_connections_per_uid`); refusing more of its connections with 503"));
            self.refuse(stream, over_cap::per_uid(uid, max));
            return None;
        };
        let places = Places {
            _slot: slot,
            _uid: uid_slot,
        };
        self.occupancy.admitted();
        Some((stream, places))
    }

    pub fn occupancy(&self) -> Occupancy {
        self.occupancy.clone()
    }

    /// Resolves once every served connection has ended.
    pub async fn all_closed(&self) {
        let _ = self.slots.acquire_many(self.max as u32).await;
    }

    fn refuse(&self, stream: UnixStream, answer: over_cap::Refusal) {
        match Arc::clone(&self.refusals).try_acquire_owned() {
            Ok(turn) => {
                tokio::spawn(async move {
                    answer.after_reading(stream).await;
                    drop(turn);
                });
            }
            Err(_) => answer.at_once(&stream),
        }
    }

    fn warn(&mut self, cap: usize, message: impl FnOnce() -> String) {
        let warned = &mut self.warned[cap];
        if warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
            tracing::warn!("{}", message());
            *warned = Some(Instant::now());
        }
    }
}
