//! How the token's sessions are shared out: one anchor session (it holds
//! the login), then the signing threads (`signing.threads` kept, up to
//! `signing.max_sessions` while signatures wait). A token that allows fewer
//! sessions than asked for is used within its limit, and the log says so
//! once.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::config::SigningConfig;
use crate::hsm::{Hsm, HsmError};

/// The sessions a link opens and may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Signing threads kept whatever the load.
    pub threads: usize,
    /// The most signing threads at once.
    pub cap: usize,
}

/// The budget for `hsm` under `signing`, within the token's session limit.
pub fn budget(hsm: &Hsm, signing: &SigningConfig) -> Result<Budget, HsmError> {
    let limit = hsm.max_sessions()?;
    let budget = share(limit, signing);
    if let Some(limit) = limit.filter(|_| budget.cap < signing.max_sessions) {
        static LOGGED: AtomicBool = AtomicBool::new(false);
        if !LOGGED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                token_limit = limit,
                signing_sessions = budget.cap,
                max_sessions = signing.max_sessions,
                "the token allows {limit} sessions at once, fewer than `signing.max_sessions` asks for: signing uses at most {} of them (one more holds the login)",
                budget.cap,
            );
        }
    }
    Ok(budget)
}

/// The rule, for a token that allows `limit` sessions (`None`: no limit
/// said): the anchor first, then `threads` (at least one), then growth up
/// to `max_sessions` in what is left.
pub fn share(limit: Option<u64>, signing: &SigningConfig) -> Budget {
    let threads = signing.threads();
    let Some(limit) = limit else {
        return Budget {
            threads,
            cap: signing.max_sessions,
        };
    };
    let available = usize::try_from(limit.saturating_sub(1)).unwrap_or(usize::MAX);
    let cap = signing.max_sessions.min(available).max(1);
    Budget {
        threads: threads.min(cap),
        cap,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (threads, cap) for a token allowing `limit` sessions.
    fn share_of(limit: Option<u64>, threads: usize, max_sessions: usize) -> (usize, usize) {
        let signing = SigningConfig {
            threads: Some(threads),
            max_sessions,
            ..SigningConfig::default()
        };
        let budget = share(limit, &signing);
        (budget.threads, budget.cap)
    }

    #[test]
    fn a_token_without_a_limit_gets_what_is_asked() {
        assert_eq!(share_of(None, 2, 32), (2, 32));
    }

    #[test]
    fn a_small_limit_keeps_the_anchor_and_the_threads() {
        // 6: the anchor and up to 5 signing sessions.
        assert_eq!(share_of(Some(6), 2, 32), (2, 5));
        // 3: the anchor and 2 threads.
        assert_eq!(share_of(Some(3), 2, 32), (2, 2));
        // 2: the anchor and one thread, fewer than asked.
        assert_eq!(share_of(Some(2), 2, 32), (1, 1));
        // 1: one thread all the same; opening it fails with CKR_SESSION_COUNT,
        // which names the cause.
        assert_eq!(share_of(Some(1), 2, 32), (1, 1));
    }

    #[test]
    fn max_sessions_caps_a_generous_token() {
        assert_eq!(share_of(Some(1000), 2, 8), (2, 8));
    }
}
