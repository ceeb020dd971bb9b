//! `access-token-agent serve`: the daemon's life cycle.
//!
//! Start: config, HSM, login (one attempt), every issuer's key with a
//! self-test token verified against its certificate, then the socket, then
//! `READY=1`. Nothing listens before the HSM has answered, so systemd and
//! clients never see a ready agent that cannot sign.
//!
//! SIGHUP reopens the audit file (for log rotation), reloads the
//! configuration (grants, issuers, key pins, token settings, `[kubernetes]`
//! and its JWKS file) and re-selects the active keys, without touching
//! connections. The new grants take
//! effect first and on their own, so that revoking one never waits for the
//! HSM; issuers, keys and token settings that cannot be applied whole leave
//! the old ones serving, and the partial reload shows in the log, STATUS=,
//! `/readyz` and `/metrics`. SIGTERM, SIGINT and SIGQUIT stop accepting, let requests in flight
//! finish, close the sessions, finalize the module, remove a socket the agent
//! bound itself, and exit 0.

pub mod notify;
mod signals;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use self::notify::Notifier;
use self::signals::{Asked, Signals};
use crate::back::{ConnectError, Signer};
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::front::audit::{Audit, Log as AuditLog};
use crate::front::kubernetes::Kubernetes;
use crate::front::peer::userns;
use crate::front::policy::Policy;
use crate::front::{Front, Listener, Reloaded};
use crate::metrics::Metrics;

/// Runs the agent until SIGTERM, SIGINT or SIGQUIT.
pub fn serve(config_path: &Path, config: Config, json_on_stderr: bool) -> Result<(), Failure> {
    // First, while this is the only thread: every later one inherits the mask.
    let signals = Signals::take()
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot take signals: {e}")))?;
    if let Some(note) = userns::note(userns::overflow_ids()) {
        tracing::warn!("{note}");
    }
    let policy = policy(config_path, &config)?;
    let kubernetes = kubernetes(config_path, &config, None)?;
    let log = match json_on_stderr {
        true => AuditLog::Stderr,
        false => AuditLog::Tracing,
    };
    let audit = audit(config_path, &config, log)?;
    open_files(&config);
    let metrics = Arc::new(Metrics::with_audit(audit.counters()));
    let signer = Arc::new(Signer::start(&config, Arc::clone(&metrics)).map_err(start_failure)?);
    tracing::info!(status = %signer.status(), "HSM ready: logged in, keys found, self-test passed");
    let daemon = Daemon {
        config_path: config_path.to_path_buf(),
        config,
        signer: Arc::clone(&signer),
        notifier: Arc::new(Notifier::from_env()),
    };
    let served = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("access-token-agent-io")
        .build()
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot start the runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(daemon.run(signals, (policy, kubernetes), audit, metrics))
        });
    signer.shutdown();
    if served.is_ok() {
        tracing::info!("stopped: sessions closed, module finalized");
    }
    served
}

/// The grants, checked before the HSM is touched: `serve` needs at least
/// one issuer, and every grant must make sense, here too: none may name
/// the id that every peer outside the agent's user namespace shows as.
fn policy(config_path: &Path, config: &Config) -> Result<Policy, Failure> {
    if config.issuers.is_empty() {
        return Err(bad_config(config_path, "no `[[issuer]]` is configured; `serve` signs for at least one: add `[[issuer]]` with `name = \"<org code>\"`".into()));
    }
    Policy::for_namespace(&config.grants, userns::overflow_ids())
        .map_err(|message| bad_config(config_path, message))
}

/// Descriptors a full house needs: a socket per connection, and a margin
/// for the HSM, the audit file, the log and the pidfd and /proc files each
/// accept opens for a moment. systemd's default soft limit (1024) is below
/// that with the default `max_connections`, so the soft limit is raised.
fn open_files(config: &Config) {
    let needed = (config.server.max_connections + 64) as u64;
    match crate::hardening::raise_open_files_limit() {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open-files limit is below what `server.max_connections` needs; raise LimitNOFILE= or lower `server.max_connections`"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!("cannot raise the open-files limit: {e}"),
    }
}

/// `[kubernetes]` at work: its JWKS file read now (a file that cannot be
/// used is a config error), or `current`, the one in force, kept when the
/// section did not change, with its keys read again.
fn kubernetes(
    config_path: &Path,
    config: &Config,
    current: Option<Arc<Kubernetes>>,
) -> Result<Option<Arc<Kubernetes>>, Failure> {
    let Some(section) = &config.kubernetes else {
        return Ok(None);
    };
    if let Some(current) = current.filter(|current| current.config() == section) {
        current.reload_keys();
        return Ok(Some(current));
    }
    let kubernetes =
        Kubernetes::new(section).map_err(|message| bad_config(config_path, message))?;
    Ok(Some(Arc::new(kubernetes)))
}

fn audit(config_path: &Path, config: &Config, log: AuditLog) -> Result<Audit, Failure> {
    Audit::open(&config.audit, log).map_err(|e| {
        bad_config(
            config_path,
            format!("cannot open the audit log ({e}); check `audit.file`"),
        )
    })
}

fn bad_config(config_path: &Path, message: String) -> Failure {
    Failure::new(
        exit::CONFIG,
        format!("config {}: {message}", config_path.display()),
    )
}

fn start_failure(error: ConnectError) -> Failure {
    let code = match &error {
        ConnectError::Hsm(error) => error.exit_code(),
        ConnectError::Pin(_) => exit::CONFIG,
        ConnectError::SelfTest(_) => exit::UNAVAILABLE,
        ConnectError::Threads(_) => exit::FAILURE,
    };
    Failure::new(code, error.to_string())
}

/// What the running daemon needs to reload and to stop.
struct Daemon {
    config_path: PathBuf,
    /// The configuration in force; a reload is compared against it.
    config: Config,
    signer: Arc<Signer>,
    notifier: Arc<Notifier>,
}

impl Daemon {
    async fn run(
        self,
        signals: Signals,
        (policy, kubernetes): (Policy, Option<Arc<Kubernetes>>),
        audit: Audit,
        metrics: Arc<Metrics>,
    ) -> Result<(), Failure> {
        let socket = self.config.server.socket.clone();
        let listener = Listener::open(&self.config.server).map_err(|e| {
            Failure::new(
                exit::FAILURE,
                format!("cannot listen on {}: {e}", socket.display()),
            )
        })?;
        let front = Arc::new(Front::new(
            Arc::clone(&self.signer),
            policy,
            audit,
            metrics,
            &self.config.server,
        ));
        front.replace_kubernetes(kubernetes);
        let status = self.signer.status();
        self.notifier.ready(&status);
        tracing::info!(socket = %socket.display(), %status, "ready");
        let watchdog = notify::watchdog_interval().map(|interval| {
            tokio::spawn(watchdog(
                Arc::clone(&self.notifier),
                Arc::clone(&self.signer),
                interval,
            ))
        });
        let served = Arc::clone(&front)
            .serve(listener, self.until_stopped(signals, front))
            .await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        served.map_err(|e| Failure::new(exit::FAILURE, format!("serving failed: {e}")))
    }

    /// Reloads on SIGHUP; resolves on SIGTERM, SIGINT or SIGQUIT ([`signals`]).
    async fn until_stopped(mut self, mut signals: Signals, front: Arc<Front<Signer>>) {
        while signals.next().await == Asked::Reload {
            self.reload(&front).await;
        }
        tracing::info!("stopping: no new connections, finishing requests in flight");
        self.notifier.stopping();
    }

    async fn reload(&mut self, front: &Front<Signer>) {
        self.notifier.reloading();
        // Log rotation sends SIGHUP too: the audit file moves on even if
        // the new configuration is refused.
        if let Err(e) = front.audit().reopen() {
            tracing::error!(
                error = %e,
                "the audit file was not reopened; audit lines keep going to the file open before"
            );
        }
        let outcome = self.apply(front).await;
        match &outcome {
            Reloaded::Whole => {
                tracing::info!(status = %self.signer.status(), "configuration reloaded")
            }
            Reloaded::GrantsOnly(reason) => {
                tracing::error!(error = %reason, "reload partly applied: the new grants are in force; the issuers, keys and token settings from before keep serving")
            }
            Reloaded::Refused(reason) => {
                tracing::error!(error = %reason, "reload refused; the previous configuration keeps serving")
            }
        }
        front.reloaded(&outcome);
        let status = match front.reload_note() {
            Some(note) => format!("{}; {note}", self.signer.status()),
            None => self.signer.status(),
        };
        self.notifier.ready(&status);
    }

    /// Reads the new configuration and applies its grants first, on their
    /// own, so that revoking one never waits for keys; then the rest, whole
    /// or not at all.
    async fn apply(&mut self, front: &Front<Signer>) -> Reloaded {
        let config = match Config::load(&self.config_path) {
            Ok(config) => config,
            Err(e) => return Reloaded::Refused(e.to_string()),
        };
        let judged = policy(&self.config_path, &config).and_then(|policy| {
            let kubernetes = kubernetes(&self.config_path, &config, front.kubernetes())?;
            Ok((policy, kubernetes))
        });
        match judged {
            Ok((policy, kubernetes)) => {
                front.replace_kubernetes(kubernetes);
                front.replace_policy(policy);
            }
            Err(failure) => return Reloaded::Refused(failure.message),
        }
        if let Some(setting) = restart_only_change(&self.config, &config) {
            return Reloaded::GrantsOnly(format!(
                "config {}: {setting} changed, which only a restart applies (systemctl restart access-token-agent)",
                self.config_path.display()
            ));
        }
        if let Err(reason) = self.signer.reload(&config).await {
            return Reloaded::GrantsOnly(reason);
        }
        self.config = config;
        Reloaded::Whole
    }
}

/// The first setting that a running agent cannot change, if one changed:
/// the module and token it is logged in to (and the module's environment),
/// anything in `[server]` (the socket and the limits its front was built
/// with), the audit sink, and `[signing]`.
fn restart_only_change(old: &Config, new: &Config) -> Option<&'static str> {
    let differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if old.hsm.module != new.hsm.module {
        Some("`hsm.module`")
    } else if old.hsm.token_label != new.hsm.token_label {
        Some("`hsm.token_label`")
    } else if old.hsm.environment != new.hsm.environment {
        Some("`hsm.environment`")
    } else if differs(&old.server, &new.server) {
        Some("`[server]`")
    } else if differs(&old.audit, &new.audit) {
        Some("`[audit]`")
    } else if old.signing != new.signing {
        Some("`[signing]`")
    } else {
        None
    }
}

/// Pings systemd's watchdog every `interval`, but only while the HSM
/// answers: a hung or lost HSM lets the watchdog fire and systemd restart
/// the agent.
async fn watchdog(notifier: Arc<Notifier>, signer: Arc<Signer>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    let mut answering = true;
    loop {
        ticks.tick().await;
        let probe = tokio::time::timeout(interval, signer.probe()).await;
        match probe {
            Ok(Ok(())) => {
                notifier.watchdog();
                if !answering {
                    tracing::info!("the HSM answers again; watchdog pings resumed");
                }
                answering = true;
            }
            Ok(Err(reason)) if answering => {
                tracing::warn!(%reason, "the HSM does not answer; watchdog pings paused");
                answering = false;
            }
            Err(_) if answering => {
                tracing::warn!("the HSM probe timed out; watchdog pings paused");
                answering = false;
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        let pin = dir.path().join("pin");
        std::fs::write(&pin, "1234").unwrap();
        let text = format!(
            "[hsm]\nmodule = \"/bin/sh\"\ntoken_label = \"t\"\npin_file = {pin:?}\n[[issuer]]\nname = \"ttd\"\n{extra}"
        );
        Config::parse(&text).unwrap()
    }

    #[test]
    fn settings_a_running_agent_cannot_change_are_named() {
        let old = config("");
        assert_eq!(restart_only_change(&old, &config("")), None);
        assert_eq!(
            restart_only_change(
                &old,
                &config("[[issuer]]\nname = \"digdir\"\n[token]\ncache = false\n")
            ),
            None
        );
        assert_eq!(
            restart_only_change(&old, &config("[server]\nsocket = \"/tmp/other.sock\"\n")),
            Some("`[server]`")
        );
        assert_eq!(
            restart_only_change(&old, &config("[signing]\nthreads = 1\n")),
            Some("`[signing]`")
        );
        let mut elsewhere = old.clone();
        let address = ("P11_KIT_SERVER_ADDRESS".into(), "unix:path=/run/p11".into());
        elsewhere.hsm.environment.extend([address]);
        assert_eq!(
            restart_only_change(&old, &elsewhere),
            Some("`hsm.environment`")
        );
    }

    #[test]
    fn serve_needs_an_issuer() {
        let mut config = config("");
        config.issuers.clear();
        let failure = policy(Path::new("/etc/agent.toml"), &config).unwrap_err();
        assert_eq!(failure.code, exit::CONFIG);
        assert!(
            failure.message.contains("[[issuer]]"),
            "{}",
            failure.message
        );
    }
}
