//! Connections waiting for their next request hold their socket and little
//! else.
//!
//! hyper gives every connection a read and a write buffer of 8 KiB for as
//! long as it lives, and a server cannot make them smaller (`max_buf_size`
//! is at least 8 KiB, and the write buffer starts at that size). With its
//! request state, a kept-alive connection waiting for its next request cost
//! about 15 KiB, most of the agent's memory with thousands open. So once
//! hyper has owed a connection nothing for [`PARK_AFTER`]
//! ([`Activity::owed_nothing_since`]), hyper's side of it is taken apart
//! and freed, and a new one is made when the next bytes arrive. Bytes hyper
//! had read but not yet parsed (the start of a pipelined request) are
//! handed to the new one first ([`super::hyper_answers::Watched::replay`]).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};

use super::deadlines::Activity;

/// How long a connection waits for its next request before it is parked.
/// Rebuilding hyper's side costs about as much CPU as a cached token, so a
/// connection that asks again sooner keeps it.
pub(super) const PARK_AFTER: Duration = Duration::from_millis(100);

/// Whether the connection is to be parked now, when `timer` fires (hyper
/// having just said it has nothing to do); if not, `timer` is set to when
/// it may be.
pub(super) fn is_due(activity: &Activity, timer: Pin<&mut Sleep>) -> bool {
    let now = Instant::now();
    match activity.owed_nothing_since() {
        Some(since) if since + PARK_AFTER <= now => true,
        Some(since) => {
            timer.reset(since + PARK_AFTER);
            false
        }
        // Checked again a while from now, not at every request.
        None => {
            timer.reset(now + PARK_AFTER);
            false
        }
    }
}

/// Waits for bytes on a parked connection: true when they come (or the
/// peer closes, which hyper then reads), false when the connection
/// overstays its deadline or the agent stops (`stopped`), and should be
/// closed: nothing is in flight.
pub(super) async fn until_bytes(
    stream: &UnixStream,
    stopped: Pin<&mut impl Future<Output = ()>>,
    overdue: Pin<&mut impl Future<Output = ()>>,
) -> bool {
    tokio::select! {
        biased;
        () = stopped => false,
        readable = stream.readable() => readable.is_ok(),
        () = overdue => {
            tracing::debug!("closing a connection that overstayed its deadline");
            false
        }
    }
}
