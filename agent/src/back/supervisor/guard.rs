//! The supervisor thread fails safe: a panic leaves the agent not ready,
//! with the reason, instead of a stale snapshot that says ready.

use crate::back::snapshot::Latest;

/// Runs the supervisor. Should it panic, nothing would probe, reconnect or
/// reload any more while the last snapshot kept saying ready; instead the
/// agent says it is not ready and why, and the watchdog, whose probes now go
/// unanswered, lets systemd restart it.
pub fn supervise(latest: &Latest, run: impl FnOnce()) {
    let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) else {
        return;
    };
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    tracing::error!(panic = %message, "the HSM supervisor stopped; no more tokens are signed");
    latest.fail(format!(
        "the HSM supervisor stopped after an internal error ({message}); restart the agent (systemctl restart access-token-agent)"
    ));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::back::snapshot::Snapshot;

    fn latest() -> Arc<Latest> {
        Arc::new(Latest::new(
            Snapshot::unserved("starting", None),
            Arc::default(),
        ))
    }

    #[test]
    fn a_panicking_supervisor_leaves_the_agent_not_ready_and_says_why() {
        let latest = latest();
        let watched = Arc::clone(&latest);
        std::thread::spawn(move || {
            supervise(&watched, || panic!("certificate times are comparable"))
        })
        .join()
        .expect("the panic does not escape the thread");
        let reason = match &latest.current().serving {
            Ok(_) => panic!("a stopped supervisor must not leave the agent ready"),
            Err(reason) => reason.to_string(),
        };
        assert!(
            reason.contains("certificate times are comparable"),
            "{reason}"
        );
        assert!(reason.contains("restart the agent"), "{reason}");
    }

    #[test]
    fn a_supervisor_that_returns_changes_nothing() {
        let latest = latest();
        supervise(&latest, || {});
        assert!(matches!(&latest.current().serving, Err(reason) if &**reason == "starting"));
    }
}
