//! The signing back: where the socket front gets its tokens.
//!
//! | part | its one job |
//! |---|---|
//! | [`Signer`] | the [`TokenSource`]: cache first, then the signing threads |
//! | `supervisor` | the thread that owns the HSM connection: probes, faults, recovery, reloads |
//! | `connection` | opening the token: login, keys, self-test, sessions |
//! | `pool` | the signing threads, one PKCS#11 session each, behind a bounded queue; quick signatures on the requesting thread |
//! | `selftest` | a token signed through the HSM and verified against the certificate |
//! | `backoff` | waits between reconnection attempts |
//!
//! The request path never calls the HSM and never waits on the supervisor:
//! it reads the latest snapshot (keys, signing queue, or the reason there
//! are none), answers from the cache, or queues a signature.

mod backoff;
mod connection;
mod pool;
mod selftest;
mod supervisor;

use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;

use serde::Deserialize;
use tokio::sync::oneshot;

pub use connection::ConnectError;

use self::connection::Connection;
use self::pool::{Job, PoolHandle, Reply};
use self::supervisor::{Command, Supervisor};
use crate::cache::Cache;
use crate::cert::Certificate;
use crate::config::{Config, HsmConfig, IssuerConfig};
use crate::hsm::keys::SigningKey;
use crate::issue::{IssueError, Issued, TokenSource};
use crate::metrics::Metrics;
use crate::sync::{lock, read, write};
use crate::token::Lifetime;

/// `[signing]`: the signing threads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SigningConfig {
    /// Signing threads, each with its own session [default: number of cores];
    /// capped so that they fit the token's session limit.
    pub threads: Option<usize>,
    /// Signatures that may wait for a thread; more are refused as overloaded.
    pub queue_size: usize,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            threads: None,
            queue_size: 256,
        }
    }
}

impl SigningConfig {
    /// The configured thread count, else the number of cores.
    pub fn threads(&self) -> usize {
        self.threads.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        })
    }

    pub(crate) fn validate(&self) -> Result<(), String> {
        if let Some(threads) = self.threads {
            if !(1..=256).contains(&threads) {
                return Err(format!(
                    "`signing.threads` = {threads} must be between 1 and 256; leave it out to use one thread per core"
                ));
            }
        }
        if self.queue_size == 0 {
            return Err(
                "`signing.queue_size` = 0 must be at least 1 (signatures that may wait for a thread)"
                    .into(),
            );
        }
        Ok(())
    }
}

/// The part of the configuration the signing back works from.
#[derive(Debug, Clone)]
struct Settings {
    hsm: HsmConfig,
    issuers: Vec<IssuerConfig>,
    lifetime: Arc<Lifetime>,
    cache: bool,
    cache_refresh_remaining: f64,
    signing: SigningConfig,
}

impl Settings {
    fn from_config(config: &Config) -> Settings {
        Settings {
            hsm: config.hsm.clone(),
            issuers: config.issuers.clone(),
            lifetime: Arc::new(config.token.lifetime()),
            cache: config.token.cache,
            cache_refresh_remaining: config.token.cache_refresh_remaining,
            signing: config.signing.clone(),
        }
    }

    fn new_cache(&self) -> Cache {
        Cache::new(self.lifetime.lifetime_seconds, self.cache_refresh_remaining)
    }

    fn has_issuer(&self, name: &str) -> bool {
        self.issuers.iter().any(|issuer| issuer.name == name)
    }
}

/// An issuer's key in service: the handle to sign with and the certificate
/// its signatures verify against.
#[derive(Debug)]
struct ActiveKey {
    pub signing: SigningKey,
    pub certificate: Certificate,
    /// The kid, shared by every token issued with this key.
    pub kid: Arc<str>,
    /// How long its signatures take: quick ones are made on the requesting
    /// thread.
    pub pace: pool::Pace,
}

/// What the request path sees: published by the supervisor, replaced whole.
struct Snapshot {
    settings: Arc<Settings>,
    cache: Arc<Cache>,
    /// The keys and the signing queue, or why there are none.
    serving: Result<Serving, Arc<str>>,
}

struct Serving {
    keys: connection::Keys,
    /// Issuers that cannot sign, though the HSM answers.
    unavailable: connection::Unavailable,
    pool: PoolHandle,
    threads: usize,
}

/// State shared by the request path and the supervisor.
struct Shared {
    snapshot: RwLock<Arc<Snapshot>>,
    metrics: Arc<Metrics>,
}

impl Shared {
    fn current(&self) -> Arc<Snapshot> {
        Arc::clone(&read(&self.snapshot))
    }

    fn publish(&self, snapshot: Snapshot) {
        *write(&self.snapshot) = Arc::new(snapshot);
    }

    /// Nothing will be signed any more, for `reason`.
    fn fail(&self, reason: String) {
        let current = self.current();
        self.publish(Snapshot {
            settings: Arc::clone(&current.settings),
            cache: Arc::clone(&current.cache),
            serving: Err(reason.into()),
        });
    }
}

/// Runs the supervisor. Should it panic, nothing would probe, reconnect or
/// reload any more while the last snapshot kept saying ready; instead the
/// agent says it is not ready and why, and the watchdog, whose probes now go
/// unanswered, lets systemd restart it.
fn supervise(shared: &Shared, run: impl FnOnce()) {
    let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) else {
        return;
    };
    let message = panic
        .downcast_ref::<&str>()
        .map(|text| text.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into());
    tracing::error!(panic = %message, "the HSM supervisor stopped; no more tokens are signed");
    shared.fail(format!(
        "the HSM supervisor stopped after an internal error ({message}); restart the agent (systemctl restart access-token-agent)"
    ));
}

/// The signing back: cache, signing threads, and the supervisor that keeps
/// the HSM connection alive.
pub struct Signer {
    shared: Arc<Shared>,
    commands: mpsc::Sender<Command>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl Signer {
    /// Opens the token, logs in (one attempt), finds and self-tests every
    /// configured issuer's active key, and starts the signing threads.
    pub fn start(config: &Config, metrics: Arc<Metrics>) -> Result<Signer, ConnectError> {
        let settings = Arc::new(Settings::from_config(config));
        let (commands, receiver) = mpsc::channel();
        let connection = Connection::open(
            &settings,
            &metrics,
            Supervisor::fault_report(commands.clone(), 1),
        )
        .inspect_err(|_| {
            let _ = crate::hsm::finalize();
        })?;
        let shared = Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot {
                cache: Arc::new(settings.new_cache()),
                settings: Arc::clone(&settings),
                serving: Err("starting".into()),
            })),
            metrics,
        });
        let supervisor = Supervisor::new(
            Arc::clone(&shared),
            settings,
            connection,
            receiver,
            commands.clone(),
        );
        let watched = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("hsm-supervisor".into())
            .spawn(move || supervise(&watched, || supervisor.run()))
            .map_err(ConnectError::Threads)?;
        Ok(Signer {
            shared,
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
        self.shared.current().status()
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

impl Snapshot {
    /// The issuers and their kids, or why nothing is signed.
    fn status(&self) -> String {
        match &self.serving {
            Ok(serving) => {
                let mut issuers: Vec<String> = serving
                    .keys
                    .iter()
                    .map(|(issuer, key)| format!("{issuer} (kid {})", key.kid))
                    .collect();
                issuers.sort();
                let signing = format!(
                    "signing for {} with {} thread(s)",
                    issuers.join(", "),
                    serving.threads
                );
                match serving.not_ready() {
                    Ok(()) => signing,
                    Err(reason) => format!("not ready: {reason}; {signing}"),
                }
            }
            Err(reason) => format!("not ready: {reason}"),
        }
    }

    /// The active key for `issuer`, or why there is none.
    fn key(&self, issuer: &str) -> Result<&Arc<ActiveKey>, IssueError> {
        match &self.serving {
            Ok(serving) => match serving.keys.get(issuer) {
                Some(key) => Ok(key),
                None => match serving.unavailable.get(issuer) {
                    Some(reason) => Err(IssueError::Unavailable(reason.to_string())),
                    None => Err(IssueError::UnknownIssuer(issuer.to_owned())),
                },
            },
            Err(_) if !self.settings.has_issuer(issuer) => {
                Err(IssueError::UnknownIssuer(issuer.to_owned()))
            }
            Err(reason) => Err(IssueError::Unavailable(reason.to_string())),
        }
    }

    fn submit(&self, key: &Arc<ActiveKey>, app: &str, reply: Reply) {
        let job = Job {
            key: Arc::clone(key),
            app: app.into(),
            lifetime: Arc::clone(&self.settings.lifetime),
            reply,
        };
        match &self.serving {
            Ok(serving) => serving.pool.submit(job),
            Err(reason) => (job.reply)(Err(IssueError::Unavailable(reason.to_string()))),
        }
    }

    async fn issue(&self, issuer: &str, app: &str) -> Result<Issued, IssueError> {
        let key = self.key(issuer)?;
        if self.settings.cache {
            return self
                .cache
                .get_or_sign(issuer, app, &key.kid, |completion| {
                    self.submit(
                        key,
                        app,
                        Box::new(move |result| completion.complete(result)),
                    )
                })
                .await;
        }
        let (reply, signed) = oneshot::channel();
        self.submit(
            key,
            app,
            Box::new(move |result| {
                let _ = reply.send(result);
            }),
        );
        let signed = signed.await.unwrap_or_else(|_| {
            Err(IssueError::Unavailable(
                "the signer stopped before signing; try again".into(),
            ))
        })?;
        Ok(Issued {
            token: signed.token.into(),
            kid: Arc::clone(&key.kid),
            expires_at: signed.expires_at,
            cache_hit: false,
        })
    }
}

impl Serving {
    /// Ready when every configured issuer can sign; otherwise the reasons.
    fn not_ready(&self) -> Result<(), String> {
        if self.unavailable.is_empty() {
            return Ok(());
        }
        let reasons: Vec<&str> = self.unavailable.values().map(AsRef::as_ref).collect();
        Err(reasons.join("; "))
    }
}

impl TokenSource for Signer {
    async fn issue(&self, issuer: &str, app: &str) -> Result<Issued, IssueError> {
        let snapshot = self.shared.current();
        let issued = snapshot.issue(issuer, app).await;
        // A miss is a token signed for this request (with or without cache).
        match &issued {
            Ok(issued) if issued.cache_hit => self.shared.metrics.cache_hit(),
            Ok(_) => self.shared.metrics.cache_miss(),
            Err(_) => {}
        }
        issued
    }

    fn readiness(&self) -> Result<(), String> {
        match &self.shared.current().serving {
            Ok(serving) => serving.not_ready(),
            Err(reason) => Err(reason.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared() -> Arc<Shared> {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let text = format!(
            "[hsm]\nmodule = \"/bin/sh\"\ntoken_label = \"t\"\npin_file = {pin:?}\n[[issuer]]\nname = \"ttd\"\n"
        );
        let settings = Settings::from_config(&Config::parse(&text).unwrap());
        Arc::new(Shared {
            snapshot: RwLock::new(Arc::new(Snapshot {
                cache: Arc::new(settings.new_cache()),
                settings: Arc::new(settings),
                serving: Err("starting".into()),
            })),
            metrics: Arc::default(),
        })
    }

    #[test]
    fn a_panicking_supervisor_leaves_the_agent_not_ready_and_says_why() {
        let shared = shared();
        let watched = Arc::clone(&shared);
        std::thread::spawn(move || {
            supervise(&watched, || panic!("certificate times are comparable"))
        })
        .join()
        .expect("the panic does not escape the thread");
        let reason = match &shared.current().serving {
            Ok(_) => panic!("a stopped supervisor must not leave the agent ready"),
            Err(reason) => reason.to_string(),
        };
        assert!(
            reason.contains("certificate times are comparable"),
            "{reason}"
        );
        assert!(reason.contains("restart the agent"), "{reason}");
    }

    #[test]
    fn a_supervisor_that_returns_changes_nothing() {
        let shared = shared();
        supervise(&shared, || {});
        assert!(matches!(&shared.current().serving, Err(reason) if &**reason == "starting"));
    }
}
