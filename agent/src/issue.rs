//! The contract between the socket front (server, policy) and the signing
//! back (cache, signer pool): what a request for a token gets back.

use std::future::Future;
use std::sync::Arc;

/// A token handed out, with what the response and the audit line need.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The compact JWS. Never logged.
    pub token: Arc<str>,
    pub kid: Arc<str>,
    /// The `exp` claim, Unix seconds.
    pub expires_at: i64,
    /// Whether the token came from the cache rather than a fresh signature.
    pub cache_hit: bool,
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

    /// `Ok` when logged in and every configured issuer has a usable key;
    /// otherwise the reason, for `/readyz`.
    fn readiness(&self) -> Result<(), String>;
}
