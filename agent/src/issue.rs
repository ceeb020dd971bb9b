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

/// What the back holds for an issuer and app, found without waiting.
pub enum Found<M> {
    /// A cached token, still fresh, from the issuer's current key.
    Cached(Issued),
    /// Nothing cached: a fresh signature is needed, and counts against the
    /// requester's rate of cache misses.
    Missing(M),
    /// The cache is off: every request signs, by the operator's choice.
    Uncached(M),
}

/// Where the front gets tokens and readiness from. A token request asks
/// [`TokenSource::find`] first and, on a miss, waits for the requester's
/// turn (the front's business) before [`TokenSource::sign`].
pub trait TokenSource: Send + Sync + 'static {
    /// What a fresh signature needs: the issuer's key, found once.
    type Miss: Send;

    /// The cached token for `issuer` and `app` (empty app: no app claim),
    /// or what a fresh one needs, or why there is none. Never waits.
    fn find(&self, issuer: &str, app: &str) -> Result<Found<Self::Miss>, IssueError>;

    /// A fresh token for `miss`, or the one a request for the same token
    /// already under way gets; bounded by `signing.timeout_seconds`.
    fn sign(&self, miss: Self::Miss) -> impl Future<Output = Result<Issued, IssueError>> + Send;

    /// How many fresh signatures the source takes at once; more wait in
    /// the front for a place, where each uid gets its share.
    fn signing_places(&self) -> usize;

    /// `Ok` when logged in and every configured issuer has a usable key;
    /// otherwise the reason, for `/readyz`.
    fn readiness(&self) -> Result<(), String>;

    /// What an operator should act on though the agent is ready (an active
    /// certificate about to expire), one line each, for `/readyz`.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

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
