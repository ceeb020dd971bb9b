//! The HSM supervisor: the one thread that owns the connection to the token.
//!
//! It opens and closes the connection, probes it, reacts to faults the
//! signing threads report, reloads keys, and publishes a snapshot that
//! the request path reads without ever touching the HSM itself.
//!
//! Recovery, as measured with SoftHSM 2.6: once a token's directory is moved
//! away or the token deleted, `C_SignInit` answers CKR_OBJECT_HANDLE_INVALID
//! and `C_GetTokenInfo` CKR_GENERAL_ERROR, while `C_GetSessionInfo` still
//! reports a logged-in session. Restoring the token does not help the running
//! process: the old slot keeps failing, new sessions see no objects, and
//! `C_Login` says the user is already logged in. Only `C_Finalize` +
//! `C_Initialize` make the module find the token again, so every reconnection
//! attempt closes all sessions, re-initialises the module, and starts over:
//! find the token by label, log in with the PIN read afresh, find and
//! self-test the keys, open the signing sessions.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::backoff::Backoff;
use super::connection::{ConnectError, Connection};
use super::pool::FaultReport;
use super::{Serving, Settings, Shared, Snapshot};
use crate::cache::Cache;
use crate::clock::unix_now;
use crate::hsm::{self, Access, Hsm, HsmError};

/// How often the supervisor asks an idle token whether it is still there, so
/// that a removed token shows in `/readyz` before a request trips over it.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
/// How often the active keys are chosen again, so that a key enrolled ahead
/// of time takes over once its certificate's not-before has passed. An
/// active certificate's expiry is checked the moment it passes, and while an
/// issuer has no usable key the check runs at every probe, so that a newly
/// enrolled key serves within seconds.
pub const KEY_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// First and longest wait between reconnection attempts.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What the rest of the process asks of the supervisor.
pub enum Command {
    /// A signing thread of connection `generation` hit a connection fault.
    Fault { generation: u64, error: String },
    /// Apply new settings; the reply says why they were refused.
    Reload {
        settings: Arc<Settings>,
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Does the HSM answer? (the watchdog's question)
    Probe {
        reply: oneshot::Sender<Result<(), String>>,
    },
    /// Close every session and finalize the module.
    Shutdown,
}

enum Link {
    Up {
        connection: Connection,
        generation: u64,
    },
    /// Lost; reconnecting with backoff.
    Down {
        first_error: String,
        last_error: Option<String>,
        attempts: u32,
        backoff: Backoff,
    },
    /// The token refused the PIN on a new login. Retrying could lock the
    /// PIN, so the supervisor waits for a reload (a fixed PIN file).
    Refused { reason: String },
}

pub struct Supervisor {
    shared: Arc<Shared>,
    settings: Arc<Settings>,
    cache: Arc<Cache>,
    link: Link,
    generation: u64,
    commands: Receiver<Command>,
    /// Handed to the signing threads for their fault reports.
    sender: Sender<Command>,
    next_tick: Instant,
    next_key_check: Instant,
}

impl Supervisor {
    /// Supervises `connection`, opened as generation 1 with
    /// [`Supervisor::fault_report`]`(sender, 1)`.
    pub fn new(
        shared: Arc<Shared>,
        settings: Arc<Settings>,
        connection: Connection,
        commands: Receiver<Command>,
        sender: Sender<Command>,
    ) -> Supervisor {
        let mut supervisor = Supervisor {
            shared,
            cache: Arc::new(settings.new_cache()),
            settings,
            link: Link::Up {
                connection,
                generation: 1,
            },
            generation: 1,
            commands,
            sender,
            next_tick: Instant::now() + PROBE_INTERVAL,
            next_key_check: Instant::now() + KEY_CHECK_INTERVAL,
        };
        supervisor.schedule_key_check();
        supervisor.publish();
        supervisor
    }

    /// How signing threads of connection `generation` report faults.
    pub fn fault_report(sender: Sender<Command>, generation: u64) -> FaultReport {
        Arc::new(move |error: &HsmError| {
            let _ = sender.send(Command::Fault {
                generation,
                error: error.to_string(),
            });
        })
    }

    /// Runs until [`Command::Shutdown`], then closes the connection and
    /// finalizes the module.
    pub fn run(mut self) {
        loop {
            let wait = self.next_tick.saturating_duration_since(Instant::now());
            match self.commands.recv_timeout(wait) {
                Ok(Command::Shutdown) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(command) => self.handle(command),
                Err(RecvTimeoutError::Timeout) => self.tick(),
            }
        }
        self.link = Link::Refused {
            reason: "the agent is shutting down".into(),
        };
        self.publish();
        if let Err(error) = hsm::finalize() {
            tracing::warn!(%error, "finalizing the PKCS#11 module failed");
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Fault { generation, error } => {
                if matches!(self.link, Link::Up { generation: up, .. } if up == generation) {
                    self.lose(error);
                }
            }
            Command::Probe { reply } => {
                let _ = reply.send(self.probe());
            }
            Command::Reload { settings, reply } => {
                let _ = reply.send(self.reload(settings));
            }
            Command::Shutdown => unreachable!("handled by run"),
        }
    }

    /// Time-driven work: probe a live connection, retry a lost one.
    fn tick(&mut self) {
        match &self.link {
            Link::Up { connection, .. } => {
                self.next_tick = Instant::now() + PROBE_INTERVAL;
                if let Err(error) = connection.probe() {
                    self.record(&error);
                    if error.is_connection_fault() {
                        self.lose(error.to_string());
                    }
                } else if Instant::now() >= self.next_key_check {
                    self.check_keys();
                }
            }
            Link::Down { .. } => self.reconnect(),
            Link::Refused { .. } => self.next_tick = Instant::now() + Duration::from_secs(86_400),
        }
    }

    /// Chooses the active keys again; a change is published and logged.
    fn check_keys(&mut self) {
        let Link::Up { connection, .. } = &mut self.link else {
            return;
        };
        match connection.check_keys(&self.settings) {
            Ok(false) => {}
            Ok(true) if connection.unavailable().is_empty() => {
                self.publish();
                tracing::info!(status = %self.shared.current().status(), "another key became active");
            }
            Ok(true) => {
                self.publish();
                tracing::error!(status = %self.shared.current().status(), "an issuer has no usable key; its requests are refused until one is enrolled");
            }
            Err(error) => self.lose(error.to_string()),
        }
        self.schedule_key_check();
    }

    /// When to choose the keys again: see [`KEY_CHECK_INTERVAL`].
    fn schedule_key_check(&mut self) {
        if let Link::Up { connection, .. } = &self.link {
            let not_after = connection
                .keys()
                .values()
                .map(|key| key.certificate.not_after);
            let wait = key_check_wait(not_after, !connection.unavailable().is_empty(), unix_now());
            self.next_key_check = Instant::now() + wait;
        }
    }

    fn probe(&self) -> Result<(), String> {
        match &self.link {
            Link::Up { connection, .. } => connection.probe().map_err(|error| {
                self.record(&error);
                error.to_string()
            }),
            // Not logged in, but the module and the token answer.
            Link::Refused { .. } => {
                let hsm = &self.settings.hsm;
                Hsm::open(&hsm.module, &hsm.token_label, Access::ReadOnly)
                    .and_then(|hsm| hsm.probe())
                    .map_err(|error| error.to_string())
            }
            Link::Down { .. } => Err(self.reason()),
        }
    }

    /// Drops the connection after a fault and schedules reconnection.
    fn lose(&mut self, error: String) {
        tracing::warn!(%error, "the HSM connection failed; closing its sessions and reconnecting");
        // Dropping the old link joins the signing threads and closes every session.
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        self.next_tick = Instant::now() + backoff.next_wait();
        self.link = Link::Down {
            first_error: error,
            last_error: None,
            attempts: 0,
            backoff,
        };
        self.publish();
    }

    /// One reconnection attempt: re-initialise the module and open afresh.
    fn reconnect(&mut self) {
        let generation = self.generation + 1;
        let opened = hsm::reset().map_err(ConnectError::from).and_then(|()| {
            Connection::open(
                &self.settings,
                &self.shared.metrics,
                Supervisor::fault_report(self.sender.clone(), generation),
            )
        });
        match opened {
            Ok(connection) => {
                tracing::info!(
                    threads = connection.threads(),
                    "the HSM connection is back; serving tokens again"
                );
                self.generation = generation;
                self.link = Link::Up {
                    connection,
                    generation,
                };
                self.next_tick = Instant::now() + PROBE_INTERVAL;
                self.schedule_key_check();
            }
            Err(error) => {
                if let ConnectError::Hsm(error) = &error {
                    self.record(error);
                }
                if error.is_pin_refused() {
                    self.refuse(&error);
                } else {
                    self.retry_later(error);
                }
            }
        }
        self.publish();
    }

    /// The PIN was refused: stay down, and try again only on a reload.
    fn refuse(&mut self, error: &ConnectError) {
        tracing::error!(%error, "logging in again failed; no further attempt is made until the agent is reloaded with a corrected PIN");
        self.link = Link::Refused {
            reason: format!("{error} (on logging in again after an HSM fault; fix the PIN and reload the agent: systemctl reload access-token-agent)"),
        };
    }

    fn retry_later(&mut self, error: ConnectError) {
        let error = error.to_string();
        let Link::Down {
            last_error,
            attempts,
            backoff,
            ..
        } = &mut self.link
        else {
            // A refused PIN fixed by a reload, failing for another reason now.
            self.lose(error);
            return;
        };
        *attempts += 1;
        let wait = backoff.next_wait();
        tracing::warn!(attempt = *attempts, %error, retry_in = ?wait, "reconnecting to the HSM failed");
        *last_error = Some(error);
        self.next_tick = Instant::now() + wait;
    }

    fn reload(&mut self, settings: Arc<Settings>) -> Result<(), String> {
        if let Link::Up { connection, .. } = &mut self.link {
            if let Err(error) = connection.reload_keys(&settings) {
                if error.is_connection_fault() {
                    self.lose(error.to_string());
                }
                return Err(error.to_string());
            }
        }
        self.cache = Arc::new(settings.new_cache());
        self.settings = settings;
        self.schedule_key_check();
        if matches!(self.link, Link::Refused { .. }) {
            self.reconnect();
            if let Link::Refused { reason } = &self.link {
                return Err(reason.clone());
            }
        }
        self.publish();
        Ok(())
    }

    fn record(&self, error: &HsmError) {
        if let Some(ckr) = error.ckr() {
            self.shared.metrics.hsm_error(&ckr.name());
        }
    }

    /// Why no token can be signed right now, for `/readyz` and 503s.
    fn reason(&self) -> String {
        match &self.link {
            Link::Up { .. } => String::new(),
            Link::Down {
                first_error,
                last_error,
                attempts,
                ..
            } => match last_error {
                None => format!("{first_error}; reconnecting"),
                Some(last) => format!(
                    "{first_error}; reconnecting, {attempts} attempt(s) failed, the last with: {last}"
                ),
            },
            Link::Refused { reason } => reason.clone(),
        }
    }

    /// Makes the current state visible to the request path.
    fn publish(&self) {
        let serving = match &self.link {
            Link::Up { connection, .. } => {
                let keys = connection.keys();
                self.shared
                    .metrics
                    .set_active_certificates(keys.iter().map(|(issuer, key)| {
                        (
                            issuer.to_string(),
                            key.kid.to_string(),
                            key.certificate.not_after,
                        )
                    }));
                Ok(Serving {
                    keys: keys.clone(),
                    unavailable: connection.unavailable().clone(),
                    pool: connection.pool(),
                    threads: connection.threads(),
                })
            }
            Link::Down { .. } | Link::Refused { .. } => Err(Arc::from(self.reason())),
        };
        self.shared.publish(Snapshot {
            settings: Arc::clone(&self.settings),
            cache: Arc::clone(&self.cache),
            serving,
        });
    }
}

/// How long until the keys are chosen again: at the latest after
/// [`KEY_CHECK_INTERVAL`], at the second the first of the active
/// certificates (`not_after`, Unix seconds) has expired, and after one
/// probe while an issuer waits for a usable key.
fn key_check_wait(
    not_after: impl Iterator<Item = i64>,
    waiting_for_a_key: bool,
    now: i64,
) -> Duration {
    if waiting_for_a_key {
        return PROBE_INTERVAL;
    }
    let until_expiry = not_after
        .map(|not_after| Duration::from_secs(u64::try_from(not_after + 1 - now).unwrap_or(0)))
        .min();
    until_expiry.map_or(KEY_CHECK_INTERVAL, |wait| wait.min(KEY_CHECK_INTERVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_the_second_an_active_certificate_expires() {
        let now = 1_000;
        assert_eq!(
            key_check_wait([now + 5, now + 900].into_iter(), false, now),
            Duration::from_secs(6)
        );
        assert_eq!(
            key_check_wait([now - 1].into_iter(), false, now),
            Duration::ZERO
        );
        assert_eq!(
            key_check_wait([now + 900].into_iter(), false, now),
            KEY_CHECK_INTERVAL
        );
        assert_eq!(
            key_check_wait(std::iter::empty(), false, now),
            KEY_CHECK_INTERVAL
        );
    }

    #[test]
    fn keys_are_checked_at_every_probe_while_an_issuer_waits_for_one() {
        assert_eq!(
            key_check_wait([5_000].into_iter(), true, 1_000),
            PROBE_INTERVAL
        );
    }
}
