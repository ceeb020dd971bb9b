//! The socket front: HTTP/1.1 + JSON over a Unix stream socket. It never
//! touches the HSM: tokens come from a [`TokenSource`] (the seam,
//! [`crate::issue`]).
//!
//! Entry points used by the daemon: [`Listener::open`] (bind, or take the
//! socket systemd passed), [`Front::new`], [`Front::replace_policy`] on
//! reload, and [`Front::serve`] until shutdown. A request goes, in order:
//!
//! | file | its one job |
//! |---|---|
//! | `listener` | the listening socket: systemd's, or bound with mode and group |
//! | `limits` | all that limits a uid: connections, rates of misses and refusals, share of signing |
//! | `connection` | one accepted connection: keep-alive and deadlines, or 503 past a cap |
//! | [`peer`] | who is on the other end: credentials, groups, unit, pod, executable |
//! | [`kubernetes`] | pods as callers: the projected service-account token verified, and bound to the caller's pod |
//! | `deadlines` | header and idle deadlines per connection |
//! | `stream` | the stream hyper sees: activity for the deadlines, problem+json in place of hyper's own refusals |
//! | `routes` | the routes; the token route reads: parse, judge, cached?, the uid's turn, sign, audit, answer |
//! | [`query`] | parsing and checking `issuer` and `app` |
//! | [`policy`] | grants: which peer may have which issuer and app |
//! | [`audit`] | one line per issued or refused request |
//! | `problem` | RFC 9457 problem+json bodies with a stable `type` each |

pub mod audit;
mod connection;
mod deadlines;
pub mod kubernetes;
mod limits;
mod listener;
pub mod peer;
pub mod policy;
mod problem;
pub mod query;
mod routes;
mod stream;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::io;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hyper::server::conn::http1;
use tokio::sync::watch;

use self::audit::Audit;
use self::connection::Refusals;
use self::deadlines::Timeouts;
use self::kubernetes::Kubernetes;
use self::limits::Limits;
use self::policy::Policy;
use crate::config::ServerConfig;
use crate::issue::TokenSource;
use crate::metrics::Metrics;

pub use listener::Listener;
pub use problem::{ProblemKind, TYPE_PREFIX};

/// How long accepting pauses after an error such as running out of descriptors.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The per-connection deadlines `[server]` sets.
fn timeouts(config: &ServerConfig) -> Timeouts {
    Timeouts {
        header_read: Duration::from_secs_f64(config.header_read_timeout_seconds),
        idle: Duration::from_secs_f64(config.idle_timeout_seconds),
    }
}

/// hyper's HTTP/1.1 settings for `[server]`'s limits.
fn http(config: &ServerConfig) -> http1::Builder {
    let mut http = http1::Builder::new();
    http.keep_alive(true)
        .half_close(true)
        .max_header_size(config.max_header_bytes)
        .max_buf_size(config.max_header_bytes.max(8192))
        // Deadlines are kept by `deadlines`, which tells idle from slow.
        .header_read_timeout(None);
    http
}

/// How much of a new configuration a reload put in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reloaded {
    /// All of it.
    Whole,
    /// The grants, and not the rest, for the reason given.
    GrantsOnly(String),
    /// Nothing: the file or its grants are wrong.
    Refused(String),
}

/// The HTTP front: routes, limits, peer checks, audit.
pub struct Front<S: TokenSource> {
    source: Arc<S>,
    policy: RwLock<Arc<Policy>>,
    /// `[kubernetes]`: how pods' tokens are verified; none without it.
    kubernetes: RwLock<Option<Arc<Kubernetes>>>,
    /// What the last reload left out of force, for `/readyz`; never grants.
    reload_note: RwLock<Option<Arc<str>>>,
    audit: Audit,
    limits: Arc<Limits>,
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
            kubernetes: RwLock::new(None),
            reload_note: RwLock::new(None),
            audit,
            limits: Limits::new(config),
            metrics,
            config: config.clone(),
            timeouts: timeouts(config),
            http: http(config),
        }
    }

    /// Swaps in new grants (SIGHUP) without touching open connections;
    /// requests already being answered finish under the old grants.
    pub fn replace_policy(&self, policy: Policy) {
        *crate::sync::write(&self.policy) = Arc::new(policy);
    }

    /// Swaps in how pods' tokens are verified (at start, and on a reload
    /// that changed `[kubernetes]`); `None` verifies none.
    pub fn replace_kubernetes(&self, kubernetes: Option<Arc<Kubernetes>>) {
        *crate::sync::write(&self.kubernetes) = kubernetes;
    }

    /// How pods' tokens are verified now, if at all.
    pub fn kubernetes(&self) -> Option<Arc<Kubernetes>> {
        crate::sync::read(&self.kubernetes).clone()
    }

    /// Records how much of a reload took effect: `/readyz` answers 503 with
    /// what was left out until a reload applies whole, and `/metrics` counts it.
    pub fn reloaded(&self, outcome: &Reloaded) {
        let (label, note) = match outcome {
            Reloaded::Whole => ("whole", None),
            Reloaded::GrantsOnly(reason) => ("grants-only", Some(format!(
                "the last reload applied the new grants only ({reason}); the issuers, keys and token settings from before keep serving"
            ))),
            Reloaded::Refused(reason) => ("refused", Some(format!(
                "the last reload was refused ({reason}); the configuration from before keeps serving"
            ))),
        };
        self.metrics.reloaded(label, note.is_some());
        *crate::sync::write(&self.reload_note) = note.map(Arc::from);
    }

    /// What the last reload left out of force, if anything.
    pub fn reload_note(&self) -> Option<Arc<str>> {
        crate::sync::read(&self.reload_note).clone()
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
        let mut refusals = Refusals::new();
        let counts = tokio::spawn(Arc::clone(&self).flush_repeated_refusals());
        let (stop, stopped) = watch::channel(false);
        tokio::pin!(shutdown);
        let result = loop {
            let accepted = tokio::select! {
                () = &mut shutdown => break Ok(()),
                accepted = listener.listener.accept() => accepted,
            };
            let (stream, accepted_at) = match accepted {
                // The accept's time bounds when the peer's process started.
                Ok((stream, _)) => (stream, peer::since_boot()),
                Err(e) if is_fatal(&e) => break Err(e),
                Err(e) => {
                    tracing::warn!("accepting a connection failed: {e}; pausing briefly");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            };
            let uid = match stream.peer_cred() {
                Ok(cred) => cred.uid(),
                Err(e) => {
                    tracing::debug!("dropping a connection without peer credentials: {e}");
                    continue;
                }
            };
            match self.limits.connect(uid) {
                Ok(place) => {
                    let serve = connection::serve(
                        self.clone(),
                        stream,
                        accepted_at,
                        stopped.clone(),
                        place,
                    );
                    tokio::spawn(serve);
                }
                Err(full) => refusals.refuse(stream, full),
            }
        };
        drop(listener);
        counts.abort();
        let _ = stop.send(true);
        let grace = Duration::from_secs_f64(self.config.shutdown_timeout_seconds);
        if tokio::time::timeout(grace, self.limits.all_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                "connections still open after {grace:?} (`server.shutdown_timeout_seconds`); stopping anyway"
            );
        }
        self.audit.finish();
        result
    }

    /// Writes the counts of identical refusals as their windows end.
    async fn flush_repeated_refusals(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.audit.repeat_interval() / 10);
        loop {
            ticks.tick().await;
            self.audit.flush_repeats(false);
        }
    }
}

/// Accept errors that mean the listening socket itself is broken.
fn is_fatal(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBADF | libc::EINVAL | libc::ENOTSOCK | libc::EOPNOTSUPP)
    )
}
