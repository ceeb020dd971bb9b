//! The client for code without an async runtime: each call runs the async
//! client on a small runtime owned by this client.

use std::path::PathBuf;

use crate::{Error, Grants, Token};

/// Blocking twin of [`crate::Client`]: the same retries, kept-alive
/// connection and optional cache. Calling it from inside an async runtime
/// panics (a runtime cannot block on another); use [`crate::Client`] there.
///
/// ```no_run
/// use std::time::Duration;
/// use access_token_client::{blocking, Client};
///
/// let client = blocking::Client::wrap(Client::from_env().with_cache(Duration::from_secs(30)))?;
/// let token = client.token(Some("ttd"), Some("my-app"))?;
/// println!("PlatformAccessToken: {}", token.token);
/// # Ok::<(), access_token_client::Error>(())
/// ```
pub struct Client {
    runtime: tokio::runtime::Runtime,
    inner: crate::Client,
}

impl Client {
    /// A client for the agent listening on `socket`.
    pub fn new(socket: impl Into<PathBuf>) -> Result<Client, Error> {
        Client::wrap(crate::Client::new(socket))
    }

    /// A client for `$ACCESS_TOKEN_AGENT_SOCKET`, else the default socket.
    pub fn from_env() -> Result<Client, Error> {
        Client::wrap(crate::Client::from_env())
    }

    /// Wraps a configured async client (retry, cache).
    pub fn wrap(inner: crate::Client) -> Result<Client, Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::Protocol(format!("cannot start the client runtime: {e}")))?;
        Ok(Client { runtime, inner })
    }

    /// See [`crate::Client::token`].
    pub fn token(&self, issuer: Option<&str>, app: Option<&str>) -> Result<Token, Error> {
        self.runtime.block_on(self.inner.token(issuer, app))
    }

    /// See [`crate::Client::ready`].
    pub fn ready(&self) -> Result<(), Error> {
        self.runtime.block_on(self.inner.ready())
    }

    /// See [`crate::Client::grants`].
    pub fn grants(&self) -> Result<Grants, Error> {
        self.runtime.block_on(self.inner.grants())
    }

    /// The socket this client talks to.
    pub fn socket(&self) -> &std::path::Path {
        self.inner.socket()
    }

    /// See [`crate::Client::kubernetes_token_file`].
    pub fn kubernetes_token_file(&self) -> Option<&std::path::Path> {
        self.inner.kubernetes_token_file()
    }
}
