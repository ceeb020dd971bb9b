//! The socket front: HTTP/1.1 + JSON over a Unix stream socket.
//!
//! Entry points used by the daemon: [`Listener::open`] (bind, or take the
//! socket systemd passed), [`Front::new`], [`Front::replace_policy`] on
//! reload, and [`Front::serve`] until shutdown.
//!
//! | file | its one job |
//! |---|---|
//! | `listener` | the listening socket: systemd's, or bound with mode and group |
//! | `connection` | one connection: peer, keep-alive, deadlines, graceful end |
//! | `http` | the routes and what each answers |
//! | `query` | parsing and checking `issuer` and `app` |
//! | `problem` | RFC 9457 problem+json bodies with a stable `type` each |
//! | `limits` | header and idle deadlines, the answer past the connection cap |

mod connection;
mod http;
mod limits;
mod listener;
mod problem;
pub mod query;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use serde::Deserialize;
use tokio::sync::{watch, Semaphore};

use crate::audit::Audit;
use crate::issue::TokenSource;
use crate::metrics::Metrics;
use crate::policy::Policy;
use limits::Timeouts;

pub use listener::{parse_mode, Listener};
pub use problem::{ProblemKind, TYPE_PREFIX};

/// Connections past the cap whose request heads are read before their 503;
/// beyond these, the 503 is written at once, without reading, and the
/// connection closed.
const MAX_REFUSALS_IN_FLIGHT: usize = 64;

/// How long accepting pauses after an error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Reaching the connection cap is logged at most this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);

/// The largest `max_connections` accepted.
const MAX_CONNECTIONS_LIMIT: usize = 1_000_000;

/// `[server]`: where and how the socket listens, and its limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub socket: PathBuf,
    /// Octal permission bits of a socket the agent binds; never world-writable.
    pub socket_mode: String,
    /// Group that owns a socket the agent binds.
    pub socket_group: Option<String>,
    /// Connections served at once; more get 503 with Retry-After.
    pub max_connections: usize,
    /// Largest request head (request line and headers); larger gets 431.
    pub max_header_bytes: usize,
    /// Time a request head may take to arrive, from its first byte (or
    /// from the connection's start).
    pub header_read_timeout_seconds: f64,
    /// Time a keep-alive connection may wait for its next request.
    pub idle_timeout_seconds: f64,
    /// Time requests in flight get to finish when the agent stops.
    pub shutdown_timeout_seconds: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from("/run/access-token-agent/agent.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
            max_connections: 1024,
            max_header_bytes: 8192,
            header_read_timeout_seconds: 10.0,
            idle_timeout_seconds: 60.0,
            shutdown_timeout_seconds: 10.0,
        }
    }
}

impl ServerConfig {
    /// Checks the values; the error names the key and what to write instead.
    pub fn validate(&self) -> Result<(), String> {
        parse_mode(&self.socket_mode)?;
        if self.socket.as_os_str().is_empty() {
            return Err("`server.socket` is empty; set the socket's path".into());
        }
        self.socket_gid()?;
        if !(1..=MAX_CONNECTIONS_LIMIT).contains(&self.max_connections) {
            return Err(format!(
                "`server.max_connections` = {} must be between 1 and {MAX_CONNECTIONS_LIMIT}",
                self.max_connections
            ));
        }
        if !(1024..=1 << 20).contains(&self.max_header_bytes) {
            return Err(format!(
                "`server.max_header_bytes` = {} must be between 1024 and 1048576",
                self.max_header_bytes
            ));
        }
        for (key, value) in [
            (
                "header_read_timeout_seconds",
                self.header_read_timeout_seconds,
            ),
            ("idle_timeout_seconds", self.idle_timeout_seconds),
            ("shutdown_timeout_seconds", self.shutdown_timeout_seconds),
        ] {
            if !(value > 0.0 && value <= 86_400.0) {
                return Err(format!(
                    "`server.{key}` = {value} must be more than 0 and at most 86400 seconds"
                ));
            }
        }
        Ok(())
    }

    /// The gid of `socket_group`, if one is set; the error names the key.
    /// Resolved when the config is checked, so that a group missing on
    /// this host is a config error, not a failure to listen.
    pub fn socket_gid(&self) -> Result<Option<u32>, String> {
        match self.socket_group.as_deref() {
            None => Ok(None),
            Some("") => Err("`server.socket_group` is empty; name a group or leave it out".into()),
            Some(name) => crate::accounts::group_id(name).map(Some).map_err(|why| {
                format!("`server.socket_group` = {name:?}: {why}; create the group or fix the name")
            }),
        }
    }

    fn timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: Duration::from_secs_f64(self.header_read_timeout_seconds),
            idle: Duration::from_secs_f64(self.idle_timeout_seconds),
        }
    }

    fn http(&self) -> http1::Builder {
        let mut http = http1::Builder::new();
        http.keep_alive(true)
            .half_close(true)
            .max_header_size(self.max_header_bytes)
            .max_buf_size(self.max_header_bytes.max(8192))
            // Deadlines are kept by `limits`, which tells idle from slow.
            .header_read_timeout(None);
        http
    }
}

/// The HTTP front: routes, limits, peer checks, audit.
pub struct Front<S: TokenSource> {
    source: Arc<S>,
    policy: RwLock<Arc<Policy>>,
    audit: Audit,
    metrics: Arc<Metrics>,
    config: ServerConfig,
    timeouts: Timeouts,
    http: http1::Builder,
}

impl<S: TokenSource> Front<S> {
    pub fn new(
        source: Arc<S>,
        policy: Policy,
        audit: Audit,
        metrics: Arc<Metrics>,
        config: &ServerConfig,
    ) -> Front<S> {
        Front {
            source,
            policy: RwLock::new(Arc::new(policy)),
            audit,
            metrics,
            config: config.clone(),
            timeouts: config.timeouts(),
            http: config.http(),
        }
    }

    /// Swaps in new grants (SIGHUP) without touching open connections;
    /// requests already being answered finish under the old grants.
    pub fn replace_policy(&self, policy: Policy) {
        *crate::sync::write(&self.policy) = Arc::new(policy);
    }

    /// The audit sink, e.g. to [`Audit::reopen`] its file on SIGHUP.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    fn policy(&self) -> Arc<Policy> {
        crate::sync::read(&self.policy).clone()
    }

    /// Serves until `shutdown` resolves, then stops accepting (dropping the
    /// listener, which removes a socket file the agent bound), lets requests
    /// in flight finish for up to `shutdown_timeout_seconds`, and returns.
    /// Errs only if the listening socket itself fails.
    pub async fn serve(
        self: Arc<Self>,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        let max = self.config.max_connections;
        let slots = Arc::new(Semaphore::new(max));
        let refusals = Arc::new(Semaphore::new(MAX_REFUSALS_IN_FLIGHT));
        let (stop, stopped) = watch::channel(false);
        let mut cap_warned: Option<tokio::time::Instant> = None;
        tokio::pin!(shutdown);
        let result = loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_fatal(&e) => break Err(e),
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}; pausing briefly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(connection::serve(
                        self.clone(),
                        stream,
                        stopped.clone(),
                        slot,
                    ));
                }
                Err(_) => {
                    if cap_warned.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                        tracing::warn!("{max} connections open (`server.max_connections`); refusing more with 503");
                        cap_warned = Some(tokio::time::Instant::now());
                    }
                    match refusals.clone().try_acquire_owned() {
                        Ok(turn) => {
                            tokio::spawn(async move {
                                limits::refuse_over_cap(stream, max).await;
                                drop(turn);
                            });
                        }
                        Err(_) => limits::refuse_at_once(&stream, max),
                    }
                }
            }
        };
        drop(listener);
        let _ = stop.send(true);
        let grace = Duration::from_secs_f64(self.config.shutdown_timeout_seconds);
        let all_closed = slots.acquire_many(max as u32);
        if tokio::time::timeout(grace, all_closed).await.is_err() {
            tracing::warn!(
                "connections still open after {grace:?} (`server.shutdown_timeout_seconds`); stopping anyway"
            );
        }
        result
    }
}

/// Accept errors that mean the listening socket itself is broken.
fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
mod config_tests {
    use super::*;

    fn parse(text: &str) -> Result<ServerConfig, String> {
        let config: ServerConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map(|()| config)
    }

    #[test]
    fn defaults_are_valid() {
        let config = parse("").unwrap();
        assert_eq!(config.socket_mode, "0660");
        assert_eq!(config.max_connections, 1024);
        assert_eq!(config.timeouts().header_read, Duration::from_secs(10));
    }

    #[test]
    fn whole_and_fractional_seconds() {
        let config =
            parse("idle_timeout_seconds = 5\nheader_read_timeout_seconds = 0.25\n").unwrap();
        assert_eq!(config.timeouts().idle, Duration::from_secs(5));
        assert_eq!(config.timeouts().header_read, Duration::from_millis(250));
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("socket_mode = \"0666\"", "`server.socket_mode`"),
            ("max_connections = 0", "`server.max_connections` = 0"),
            ("max_header_bytes = 100", "`server.max_header_bytes` = 100"),
            (
                "idle_timeout_seconds = 0",
                "`server.idle_timeout_seconds` = 0",
            ),
            (
                "shutdown_timeout_seconds = -1",
                "`server.shutdown_timeout_seconds` = -1",
            ),
            (
                "header_read_timeout_seconds = nan",
                "`server.header_read_timeout_seconds` = NaN",
            ),
            ("socket_group = \"\"", "`server.socket_group` is empty"),
            (
                "socket_group = \"no-such-group-xq\"",
                "`server.socket_group` = \"no-such-group-xq\": no such name on this host",
            ),
            ("max_conections = 5", "unknown field `max_conections`"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
