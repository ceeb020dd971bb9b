//! The socket front: HTTP/1.1 + JSON over a Unix stream socket.
//!
//! Entry points used by the daemon: [`Listener::open`] (bind, or take the
//! socket systemd passed), [`Front::new`], [`Front::replace_policy`] on
//! reload, and [`Front::serve`] until shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use crate::audit::Audit;
use crate::issue::TokenSource;
use crate::metrics::Metrics;
use crate::policy::Policy;

/// `[server]`: where and how the socket listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub socket: PathBuf,
    pub socket_mode: String,
    pub socket_group: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            socket: PathBuf::from("/run/access-token-agent/agent.sock"),
            socket_mode: "0660".into(),
            socket_group: None,
        }
    }
}

/// The listening socket: bound by the agent, or inherited from systemd.
pub struct Listener {
    pub listener: tokio::net::UnixListener,
    /// Set when the agent bound the socket itself and must remove it on exit.
    pub bound_path: Option<PathBuf>,
}

impl Listener {
    /// Takes the socket from `LISTEN_FDS`/`LISTEN_PID`, else binds `config.socket`.
    pub fn open(config: &ServerConfig) -> std::io::Result<Listener> {
        let _ = config;
        Err(std::io::Error::other("not built yet"))
    }
}

/// The HTTP front: routes, limits, peer checks, audit.
pub struct Front<S: TokenSource> {
    source: Arc<S>,
    policy: std::sync::RwLock<Arc<Policy>>,
    audit: Audit,
    metrics: Arc<Metrics>,
    config: ServerConfig,
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
            policy: std::sync::RwLock::new(Arc::new(policy)),
            audit,
            metrics,
            config: config.clone(),
        }
    }

    /// Swaps in new grants (SIGHUP) without touching open connections.
    pub fn replace_policy(&self, policy: Policy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// Serves until `shutdown` resolves, then stops accepting and lets
    /// in-flight requests finish (bounded).
    pub async fn serve(
        self: Arc<Self>,
        listener: Listener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> std::io::Result<()> {
        let _ = (
            &self.source,
            &self.audit,
            &self.metrics,
            &self.config,
            listener,
        );
        shutdown.await;
        Ok(())
    }
}
