//! The contract between the socket front (`front`: routes, policy, limits)
//! and the signing back (`back`: cache, snapshot, signing pool): what a
//! request for a token gets back.

use std::future::Future;
use std::sync::Arc;

/// A token handed out, with what the response and the audit line need.
/// Its `Debug` form leaves the token out: a bearer credential must not reach
/// a log through a `?issued` field.
#[derive(Clone)]
pub struct Issued {
    /// The compact JWS. Never logged.
    pub token: Arc<str>,
    pub kid: Arc<str>,
    /// The `exp` claim, Unix seconds.
    pub expires_at: i64,
    /// Whether the token came from the cache rather than a fresh signature.
    pub cache_hit: bool,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("token", &"<redacted>")
            .field("kid", &self.kid)
            .field("expires_at", &self.expires_at)
            .field("cache_hit", &self.cache_hit)
            .finish()
    }
}

/// Why no token was handed out by the signing side.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IssueError {
    /// The issuer is not configured on this agent (404).
    #[error("issuer {0:?} is not configured on this agent")]
    UnknownIssuer(String),
    /// The HSM or the issuer's key cannot be used right now (503).
    #[error("the HSM is unavailable: {0}")]
    Unavailable(String),
    /// Too many signatures are queued (503 with Retry-After).
    #[error("too many signing requests are waiting")]
    Overloaded,
}

/// Where the server gets tokens and readiness from.
pub trait TokenSource: Send + Sync + 'static {
    /// A token for `issuer` and `app` (empty app: no app claim).
    fn issue(
        &self,
        issuer: &str,
        app: &str,
    ) -> impl Future<Output = Result<Issued, IssueError>> + Send;

    /// As [`TokenSource::issue`], for a requester with a rate and a share
    /// of the signing queue ([`Turn`]). A source without a queue ignores it.
    fn issue_in_turn(
        &self,
        issuer: &str,
        app: &str,
        turn: Turn<impl Future<Output = ()> + Send, impl Future<Output = Place> + Send>,
    ) -> impl Future<Output = Result<Issued, IssueError>> + Send {
        drop(turn);
        self.issue(issuer, app)
    }

    /// `Ok` when logged in and every configured issuer has a usable key;
    /// otherwise the reason, for `/readyz`.
    fn readiness(&self) -> Result<(), String>;

    /// What an operator should act on though the agent is ready (an active
    /// certificate about to expire), one line each, for `/readyz`.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// What a requester waits for before a fresh signature is made for it.
/// Never awaited for a cache hit.
pub struct Turn<R, P> {
    /// Its rate of cache misses: awaited before every miss, also one that
    /// then joins a signature already under way; not with the cache off,
    /// where every request signs by the operator's choice.
    pub rate: R,
    /// Its share of the signing queue: awaited before any fresh signature;
    /// the back holds what it gives until the signature is done.
    pub place: P,
}

/// A place in a requester's share of the signing queue, given back when
/// dropped; `None` when the requester has no bound.
pub type Place = Option<tokio::sync::OwnedSemaphorePermit>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_token_out() {
        let issued = Issued {
            token: "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJ0dGQifQ.c2lnbmF0dXJl".into(),
            kid: "C5726728C38CFE6C16988454206B99CA29AE025E".into(),
            expires_at: 1_767_225_900,
            cache_hit: true,
        };
        let debug = format!("{issued:?}");
        assert!(!debug.contains("eyJ"), "{debug}");
        assert!(!debug.contains("c2lnbmF0dXJl"), "{debug}");
        assert!(debug.contains("token: \"<redacted>\""), "{debug}");
        assert!(
            debug.contains("C5726728C38CFE6C16988454206B99CA29AE025E"),
            "{debug}"
        );
        assert!(debug.contains("1767225900"), "{debug}");
    }
}
