//! The signing back: where the socket front gets its tokens. It never sees
//! a request, only an issuer and an app ([`crate::issue`]).
//!
//! | part | its one job |
//! |---|---|
//! | [`Signer`] | the [`TokenSource`]: cache first, then the signing pool |
//! | `snapshot` | what the request path reads: keys, the pool, or why there are none |
//! | [`cache`] | signed tokens per issuer, app and kid until their refresh point; one signature per key at a time |
//! | `pool` | the signing threads, one PKCS#11 session each, behind a bounded queue |
//! | `answering` | whether the HSM answers: its calls in flight, and how long none has come back |
//! | `supervisor` | the thread that owns the link to the token: probes, faults, recovery, reloads |
//! | `link` | the token brought into service: login, keys, self-test, sessions |
//! | `sessions` | how the token's sessions are latest out: login, signing threads |
//! | `active_key` | an issuer's key in service |
//! | `selftest` | a token signed through the HSM and verified against the certificate |
//! | `settings` | the part of the config the back works from |
//! | `error`, `backoff` | why the token could not be brought into service; waits between attempts |
//!
//! The request path never calls the HSM and never waits on the supervisor
//! beyond its own deadline: it reads the latest snapshot (keys, signing
//! queue, or the reason there are none), answers from the cache, or queues
//! a signature, and waits for that at most `signing.timeout_seconds`. When
//! the link is lost under a signature, or is being reopened when a request
//! arrives, the request waits within that deadline for the supervisor's
//! first attempt to reconnect, and signs then; a refused PIN, an HSM that
//! does not answer, or an attempt that failed refuse it at once.

mod active_key;
mod answering;
mod backoff;
pub mod cache;
mod error;
mod link;
mod pool;
mod selftest;
mod sessions;
mod settings;
mod snapshot;
mod supervisor;

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::sync::oneshot;

pub use error::ConnectError;

use self::link::Link;
use self::settings::Settings;
pub use self::snapshot::Miss;
use self::snapshot::{Latest, Snapshot};
use self::supervisor::{supervise, Command, Supervisor};
use crate::config::Config;
use crate::issue::{Found, IssueError, Issued, TokenSource};
use crate::metrics::Metrics;
use crate::sync::lock;

/// The signing back: cache, signing threads, and the supervisor that keeps
/// the HSM connection alive.
pub struct Signer {
    latest: Arc<Latest>,
    commands: mpsc::Sender<Command>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Signer {
    /// Opens the token, logs in (one attempt), finds and self-tests every
    /// configured issuer's active key, and starts the signing threads.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Signer, ConnectError> {
        let settings = Arc::new(Settings::from_config(config));
        let (commands, receiver) = mpsc::channel();
        let connection = Link::open(
            &settings,
            &metrics,
            Supervisor::fault_report(commands.clone(), 1),
        )
        .inspect_err(|_| {
            let _ = crate::hsm::finalize();
        })?;
        let latest = Arc::new(Latest::new(
            Snapshot {
                cache: Arc::new(settings.new_cache()),
                settings: Arc::clone(&settings),
                serving: Err("starting".into()),
                reconnect_at: None,
            },
            metrics,
        ));
        let supervisor = Supervisor::new(
            Arc::clone(&latest),
            settings,
            connection,
            receiver,
            commands.clone(),
        );
        let watched = Arc::clone(&latest);
        let thread = std::thread::Builder::new()
            .name("hsm-supervisor".into())
            .spawn(move || supervise(&watched, || supervisor.run()))
            .map_err(ConnectError::Threads)?;
        Ok(Signer {
            latest,
            commands,
            supervisor: Mutex::new(Some(thread)),
        })
    }

    /// Applies a new configuration's issuers, key pins and token settings.
    /// Every issuer must have a key whose self-test passes, or nothing
    /// changes. The cache starts empty.
    pub async fn reload(&self, config: &Config) -> Result<(), String> {
        let settings = Arc::new(Settings::from_config(config));
        self.ask(|reply| Command::Reload { settings, reply }).await
    }

    /// Whether the HSM answers a cheap call (the watchdog's condition).
    pub async fn probe(&self) -> Result<(), String> {
        self.ask(|reply| Command::Probe { reply }).await
    }

    /// A one-line summary for systemd's STATUS=.
    pub fn status(&self) -> String {
        self.latest.current().status()
    }

    /// Closes every session and finalizes the module; waits for it.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        let thread = lock(&self.supervisor).take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    async fn ask(
        &self,
        command: impl FnOnce(oneshot::Sender<Result<(), String>>) -> Command,
    ) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(command(reply))
            .map_err(|_| "the agent is shutting down".to_owned())?;
        answer
            .await
            .unwrap_or_else(|_| Err("the agent is shutting down".into()))
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Shutdown);
    }
}

impl Signer {
    /// Signs `miss`; when the link under it is lost, or was being reopened
    /// when it was found, waits for the supervisor's next snapshot and
    /// finds and signs again there. The caller bounds it by `deadline`; a
    /// reconnect whose next attempt comes after that is not waited for.
    async fn sign_through_reconnects(
        &self,
        mut miss: Miss,
        deadline: Instant,
    ) -> Result<Issued, IssueError> {
        // Taken before anything is read of the snapshots after `miss`'s.
        let mut published = self.latest.subscribe();
        loop {
            if miss.key().is_some() {
                match miss.sign().await {
                    Err(IssueError::Unavailable(_)) if miss.snapshot().link_lost() => {
                        tracing::debug!("a signature met the HSM connection lost; signing again once it is back");
                    }
                    issued => return issued,
                }
            }
            miss = loop {
                let current = self.latest.current();
                if !Arc::ptr_eq(&current, miss.snapshot()) {
                    break Miss::find(current, miss.issuer(), miss.app(), deadline)?;
                }
                if published.changed().await.is_err() {
                    return miss.sign().await;
                }
            };
        }
    }
}

impl TokenSource for Signer {
    type Miss = Miss;

    fn find(&self, issuer: &str, app: &str) -> Result<Found<Miss>, IssueError> {
        let snapshot = self.latest.current();
        let cache = snapshot.settings.cache;
        if let (true, Ok(key)) = (cache, snapshot.key(issuer)) {
            if let Some(hit) = snapshot.cache.cached(issuer, app, &key.kid) {
                self.latest.metrics.cache_hit();
                return Ok(Found::Cached(hit));
            }
        }
        // A miss, or the link is being reopened: the signature waits for it.
        let deadline = Instant::now() + snapshot.settings.signing.timeout();
        let miss = Miss::find(snapshot, issuer, app, deadline)?;
        Ok(match cache {
            true => Found::Missing(miss),
            false => Found::Uncached(miss),
        })
    }

    async fn sign(&self, miss: Miss) -> Result<Issued, IssueError> {
        let timeout = miss.timeout();
        let deadline = Instant::now() + timeout;
        let issued = tokio::time::timeout(timeout, self.sign_through_reconnects(miss, deadline))
            .await
            .unwrap_or_else(|_| {
                self.latest.metrics.signing_timeout();
                Err(IssueError::Unavailable(match &self.latest.current().serving {
                    Err(reason) => format!(
                        "{reason}; not back within {} s (`signing.timeout_seconds`); try again later",
                        timeout.as_secs()
                    ),
                    Ok(_) => format!(
                        "the HSM did not sign within {} s (`signing.timeout_seconds`); try again later",
                        timeout.as_secs()
                    ),
                }))
            });
        // A miss is a token signed for this request; one that joined a
        // signature under way for the same token counts as a hit.
        match &issued {
            Ok(issued) if issued.cache_hit => self.latest.metrics.cache_hit(),
            Ok(_) => self.latest.metrics.cache_miss(),
            Err(_) => {}
        }
        issued
    }

    /// The pool's cap: `signing.max_sessions` within the token's limit.
    fn signing_places(&self) -> usize {
        let snapshot = self.latest.current();
        match &snapshot.serving {
            Ok(serving) => serving.threads.1,
            Err(_) => snapshot.settings.signing.max_sessions,
        }
    }

    fn readiness(&self) -> Result<(), String> {
        match &self.latest.current().serving {
            Ok(serving) => serving.not_ready(),
            Err(reason) => Err(reason.to_string()),
        }
    }

    fn warnings(&self) -> Vec<String> {
        self.latest
            .current()
            .expiry_warnings(crate::clock::unix_now())
    }
}
