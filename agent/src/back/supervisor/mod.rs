//! The HSM supervisor: the one thread that owns the connection to the token.
//!
//! It opens and closes the link, probes it, reacts to faults the
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
//!
//! An HSM that stops answering is not a fault: its calls may still come
//! back. The supervisor never waits on it for long: a signing thread makes
//! the probe and the supervisor waits for its answer only so long, and a
//! link whose signatures are still
//! inside the module is kept aside until they return ([`retire()`]) before
//! the module is reset, or left to the process's exit at shutdown.
//!
//! `schedule` says when it probes, checks keys and retries; `guard` keeps
//! a panic of this thread from leaving a stale, ready-looking snapshot.

mod guard;
mod retire;
mod schedule;

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use guard::supervise;

use self::retire::{finish, retire};
use self::schedule::{
    key_check_wait, BACKOFF_FIRST, BACKOFF_MAX, KEY_CHECK_INTERVAL, PROBE_INTERVAL, PROBE_WAIT,
};
use super::backoff::Backoff;
use super::cache::Cache;
use super::error::ConnectError;
use super::link::Link;
use super::pool::FaultReport;
use super::settings::Settings;
use super::snapshot::{Latest, Serving, Snapshot};
use crate::clock::unix_now;
use crate::hsm::{self, Access, Hsm, HsmError};

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

enum LinkState {
    Up {
        link: Link,
        generation: u64,
    },
    /// Lost; reconnecting with backoff.
    Down {
        first_error: String,
        last_error: Option<String>,
        attempts: u32,
        backoff: Backoff,
        /// The lost link, while signatures it started are still inside the
        /// module: the module is reset only once they have returned.
        retiring: Option<Link>,
    },
    /// The token refused the PIN on a new login. Retrying could lock the
    /// PIN, so the supervisor waits for a reload (a fixed PIN file).
    Refused {
        reason: String,
    },
}

pub struct Supervisor {
    latest: Arc<Latest>,
    settings: Arc<Settings>,
    cache: Arc<Cache>,
    link: LinkState,
    generation: u64,
    commands: Receiver<Command>,
    /// Handed to the signing threads for their fault reports.
    sender: Sender<Command>,
    next_tick: Instant,
    next_key_check: Instant,
    /// Whether the HSM answered at the last tick, so that a hang and its
    /// end are logged once each.
    answering: bool,
}

impl Supervisor {
    /// Supervises `link`, opened as generation 1 with
    /// [`Supervisor::fault_report`]`(sender, 1)`.
    pub fn new(
        latest: Arc<Latest>,
        settings: Arc<Settings>,
        link: Link,
        commands: Receiver<Command>,
        sender: Sender<Command>,
    ) -> Supervisor {
        let mut supervisor = Supervisor {
            latest,
            cache: Arc::new(settings.new_cache()),
            settings,
            link: LinkState::Up {
                link,
                generation: 1,
            },
            generation: 1,
            commands,
            sender,
            next_tick: Instant::now() + PROBE_INTERVAL,
            next_key_check: Instant::now() + KEY_CHECK_INTERVAL,
            answering: true,
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
        let link = std::mem::replace(
            &mut self.link,
            LinkState::Refused {
                reason: "the agent is shutting down".into(),
            },
        );
        self.publish();
        let quiet = match link {
            LinkState::Up { link, .. } => finish(link),
            LinkState::Down { retiring, .. } => retiring.is_none_or(finish),
            LinkState::Refused { .. } => true,
        };
        // A module with calls still inside it is left to the process's exit.
        if quiet {
            if let Err(error) = hsm::finalize() {
                tracing::warn!(%error, "finalizing the PKCS#11 module failed");
            }
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Fault { generation, error } => {
                if matches!(self.link, LinkState::Up { generation: up, .. } if up == generation) {
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

    /// Time-driven work: probe a live link, retry a lost one.
    fn tick(&mut self) {
        match &self.link {
            LinkState::Up { link, .. } => {
                self.next_tick = Instant::now() + PROBE_INTERVAL;
                let answer = link.probe(PROBE_WAIT);
                let silence = link.not_answering();
                self.note_answering(silence.as_deref());
                match answer {
                    Some(Err(error)) => {
                        self.record(&error);
                        if error.is_connection_fault() {
                            self.lose(error.to_string());
                        }
                    }
                    // Keys are looked up only while the HSM answers, so
                    // that the look-up cannot hang this thread.
                    Some(Ok(())) if silence.is_none() => {
                        if Instant::now() >= self.next_key_check {
                            self.check_keys();
                        }
                        // A key that takes over at a given second is chosen
                        // then, not at the probe after it.
                        if matches!(self.link, LinkState::Up { .. }) {
                            self.next_tick = self.next_tick.min(self.next_key_check);
                        }
                    }
                    _ => {}
                }
            }
            LinkState::Down { .. } => self.reconnect(),
            LinkState::Refused { .. } => {
                self.next_tick = Instant::now() + Duration::from_secs(86_400)
            }
        }
    }

    /// Chooses the active keys again; a change is published and logged.
    fn check_keys(&mut self) {
        let LinkState::Up { link, .. } = &mut self.link else {
            return;
        };
        match link.check_keys(&self.settings) {
            Ok(false) => {}
            Ok(true) if link.unavailable().is_empty() => {
                self.publish();
                tracing::info!(status = %self.latest.current().status(), "another key became active");
            }
            Ok(true) => {
                self.publish();
                tracing::error!(status = %self.latest.current().status(), "an issuer has no usable key; its requests are refused until one is enrolled");
            }
            Err(error) => self.lose(error.to_string()),
        }
        self.schedule_key_check();
    }

    /// When to choose the keys again: see [`KEY_CHECK_INTERVAL`].
    fn schedule_key_check(&mut self) {
        if let LinkState::Up { link, .. } = &self.link {
            let not_after = link.keys().values().map(|key| key.certificate.not_after);
            let waiting = !link.unavailable().is_empty();
            let wait = key_check_wait(not_after, link.next_takeover(), waiting, unix_now());
            self.next_key_check = Instant::now() + wait;
        }
    }

    /// Logs the moment the HSM stops answering, and the moment it answers again.
    fn note_answering(&mut self, silence: Option<&str>) {
        match (silence, self.answering) {
            (Some(reason), true) => {
                tracing::error!(%reason, "the HSM does not answer; new tokens are refused until it does");
            }
            (None, false) => tracing::info!("the HSM answers again; signing resumed"),
            _ => return,
        }
        self.answering = silence.is_none();
    }

    /// Whether the HSM answers: no call unanswered for longer than the
    /// signing timeout, and the probe not refused. A probe that has not come
    /// back yet, but within the timeout, counts as an answer to come.
    fn probe(&self) -> Result<(), String> {
        match &self.link {
            LinkState::Up { link, .. } => {
                if let Some(reason) = link.not_answering() {
                    return Err(reason);
                }
                match link.probe(PROBE_WAIT) {
                    Some(Err(error)) => {
                        self.record(&error);
                        Err(error.to_string())
                    }
                    Some(Ok(())) | None => Ok(()),
                }
            }
            // Not logged in, but the module and the token answer.
            LinkState::Refused { .. } => {
                let hsm = &self.settings.hsm;
                Hsm::open(&hsm.module, &hsm.token_label, Access::ReadOnly)
                    .and_then(|hsm| hsm.probe())
                    .map_err(|error| error.to_string())
            }
            LinkState::Down { .. } => Err(self.reason()),
        }
    }

    /// Drops the connection after a fault and schedules reconnection.
    fn lose(&mut self, error: String) {
        tracing::warn!(%error, "the HSM connection failed; closing its sessions and reconnecting");
        let placeholder = LinkState::Refused {
            reason: String::new(),
        };
        let retiring = match std::mem::replace(&mut self.link, placeholder) {
            LinkState::Up { link, .. } => retire(link),
            LinkState::Down { retiring, .. } => retiring,
            LinkState::Refused { .. } => None,
        };
        let mut backoff = Backoff::new(BACKOFF_FIRST, BACKOFF_MAX);
        self.next_tick = Instant::now() + backoff.next_wait();
        self.link = LinkState::Down {
            first_error: error,
            last_error: None,
            attempts: 0,
            backoff,
            retiring,
        };
        self.publish();
    }

    /// One reconnection attempt: re-initialise the module and open afresh.
    fn reconnect(&mut self) {
        if let LinkState::Down { retiring, .. } = &mut self.link {
            if retiring.as_ref().is_some_and(|link| !link.is_stopped()) {
                self.retry_later("signatures the HSM has not answered are still inside the module; the connection is reopened once they return".into());
                self.publish();
                return;
            }
            // Stopped: dropping it closes its sessions before the reset.
            *retiring = None;
        }
        let generation = self.generation + 1;
        let opened = hsm::reset().map_err(ConnectError::from).and_then(|()| {
            Link::open(
                &self.settings,
                &self.latest.metrics,
                Supervisor::fault_report(self.sender.clone(), generation),
            )
        });
        match opened {
            Ok(link) => {
                tracing::info!(
                    threads = link.threads().0,
                    "the HSM connection is back; serving tokens again"
                );
                self.generation = generation;
                self.link = LinkState::Up { link, generation };
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
                    self.retry_later(error.to_string());
                }
            }
        }
        self.publish();
    }

    /// The PIN was refused: stay down, and try again only on a reload.
    fn refuse(&mut self, error: &ConnectError) {
        tracing::error!(%error, "logging in again failed; no further attempt is made until the agent is reloaded with a corrected PIN");
        self.link = LinkState::Refused {
            reason: format!("{error} (on logging in again after an HSM fault; fix the PIN and reload the agent: systemctl reload access-token-agent)"),
        };
    }

    fn retry_later(&mut self, error: String) {
        let LinkState::Down {
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
        if let LinkState::Up { link, .. } = &mut self.link {
            if let Some(reason) = link.not_answering() {
                return Err(format!("{reason}; reload once it answers"));
            }
            if let Err(error) = link.reload_keys(&settings) {
                if error.is_connection_fault() {
                    self.lose(error.to_string());
                }
                return Err(error.to_string());
            }
        }
        self.cache = Arc::new(settings.new_cache());
        self.settings = settings;
        self.schedule_key_check();
        if matches!(self.link, LinkState::Refused { .. }) {
            self.reconnect();
            if let LinkState::Refused { reason } = &self.link {
                return Err(reason.clone());
            }
        }
        self.publish();
        Ok(())
    }

    fn record(&self, error: &HsmError) {
        if let Some(ckr) = error.ckr() {
            self.latest.metrics.hsm_error(&ckr.name());
        }
    }

    /// Why no token can be signed right now, for `/readyz` and 503s.
    fn reason(&self) -> String {
        match &self.link {
            LinkState::Up { .. } => String::new(),
            LinkState::Down {
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
            LinkState::Refused { reason } => reason.clone(),
        }
    }

    /// Makes the current state visible to the request path.
    fn publish(&self) {
        let serving = match &self.link {
            LinkState::Up { link, .. } => {
                let keys = link.keys();
                self.latest.metrics.set_active_certificates(
                    keys.iter().map(|(issuer, key)| {
                        (
                            issuer.to_string(),
                            key.kid.to_string(),
                            key.certificate.not_after,
                        )
                    }),
                    self.settings.expiry_warning_seconds,
                );
                Ok(Serving {
                    keys: keys.clone(),
                    unavailable: link.unavailable().clone(),
                    pool: link.pool(),
                    threads: link.threads(),
                })
            }
            LinkState::Down { .. } | LinkState::Refused { .. } => Err(Arc::from(self.reason())),
        };
        // Requests wait for the first attempt to reconnect, which a blip
        // (a network HSM's restart or fail-over) passes. Not once an
        // attempt has failed (the HSM is away: they are refused at once, as
        // clients may go elsewhere), nor for a refused PIN (a reload), nor
        // while signatures the HSM has not answered keep the module from
        // being reset.
        let reconnect_at = match &self.link {
            LinkState::Down {
                retiring: None,
                attempts: 0,
                ..
            } => Some(self.next_tick),
            _ => None,
        };
        self.latest.publish(Snapshot {
            settings: Arc::clone(&self.settings),
            cache: Arc::clone(&self.cache),
            serving,
            reconnect_at,
        });
    }
}
