//! Taking a link out of service without waiting on an HSM that may never
//! answer: its threads stop once their calls return, and until then the
//! module stays as it is.

use std::time::Duration;

use crate::back::link::Link;

/// How long a lost link's signatures get to return before the supervisor
/// moves on (a module that failed answers its other calls at once).
const RETIRE_WAIT: Duration = Duration::from_secs(1);

/// Stops `link`: dropped (its sessions closed) when nothing of it is inside
/// the module within [`RETIRE_WAIT`], otherwise handed back to be kept until
/// [`Link::is_stopped`].
pub fn retire(link: Link) -> Option<Link> {
    if link.stop_within(RETIRE_WAIT) {
        return None;
    }
    tracing::warn!("signatures the HSM has not answered are still inside the module; its sessions close once they return");
    Some(link)
}

/// Stops `link` for good at shutdown, waiting up to the signing timeout.
/// Says whether it closed: if calls are still inside the module, the link
/// is left as it is (the process's exit ends them) and the module must not
/// be finalized.
pub fn finish(link: Link) -> bool {
    if link.stop_within(link.timeout()) {
        drop(link);
        return true;
    }
    tracing::error!(
        "the HSM has not answered calls still in flight; exiting without closing its sessions"
    );
    std::mem::forget(link);
    false
}
