//! Client for the access-token-agent: get an Altinn `PlatformAccessToken`
//! from the local agent's Unix socket, without ever holding the signing key.
//!
//! ```no_run
//! # async fn example() -> Result<(), access_token_client::Error> {
//! let client = access_token_client::Client::from_env();
//! let token = client.token(Some("ttd"), Some("my-app")).await?;
//! // Send it to Altinn Platform as the raw header value, without "Bearer ".
//! let header = ("PlatformAccessToken", token.token.as_str());
//! # let _ = header;
//! # Ok(())
//! # }
//! ```
//!
//! Code without an async runtime uses [`blocking::Client`]:
//!
//! ```no_run
//! let client = access_token_client::blocking::Client::from_env()?;
//! let token = client.token(Some("ttd"), Some("my-app"))?;
//! println!("expires at {}", token.expires_at);
//! # Ok::<(), access_token_client::Error>(())
//! ```
//!
//! Failures are typed ([`Error`]) and carry the agent's problem document
//! ([`Error::problem`]). Requests are retried for about 3 s while the agent
//! restarts or answers 503 ([`Retry`]), each attempt waits at most 10 s
//! ([`Client::with_timeout`]), one kept-alive connection serves a client's
//! requests, and [`Client::with_cache`] keeps tokens in process until a
//! margin before they expire. In a Kubernetes pod the client sends the
//! pod's projected service-account token with each request
//! ([`Client::with_kubernetes_token_file`]).
//!
//! ## Layout
//!
//! | module | its one job |
//! |---|---|
//! | [`client`] | the async [`Client`]: requests, retries, the optional cache |
//! | [`connection`] | kept-alive HTTP/1.1 connections over the Unix socket |
//! | `kubernetes` | the pod's projected service-account token, read for each request |
//! | [`error`] | typed failures carrying the agent's problem document |
//! | [`inspect`] | decode and verify tokens as Platform does (feature `cli`) |
//! | [`blocking`] | the same API for code without an async runtime |

pub mod blocking;
#[cfg(feature = "cli")]
pub mod cli;
pub mod client;
pub mod connection;
pub mod error;
#[cfg(feature = "cli")]
pub mod inspect;
mod kubernetes;

pub use client::{Client, Grant, Grants, Retry, Token};
pub use error::{Error, Problem};

/// The variable naming the agent's socket for [`Client::from_env`].
pub const SOCKET_ENV: &str = "ACCESS_TOKEN_AGENT_SOCKET";
/// Where the agent listens when [`SOCKET_ENV`] is not set.
pub const DEFAULT_SOCKET: &str = "/run/access-token-agent/agent.sock";
/// Where an app's pod mounts its projected service-account token for the
/// agent (a `serviceAccountToken` volume with audience `access-token-agent`,
/// deploy/kubernetes/app-example.yaml). A client sends it when the file
/// exists ([`Client::with_kubernetes_token_file`]).
pub const DEFAULT_KUBERNETES_TOKEN_FILE: &str = "/var/run/secrets/access-token-agent/token";
