//! One connection to the token: opened, logged in, every configured issuer's
//! active key found and self-tested, and the signing threads started.
//!
//! The same steps serve the first start and every recovery, so a recovered
//! agent is in exactly the state a freshly started one would be.

use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cryptoki::session::Session;

use super::active_key::{ActiveKey, Keys, Unavailable};
use super::answering::Answering;
use super::error::ConnectError;
use super::pool::{FaultReport, Pool, PoolHandle, ProbeAnswer, Sessions};
use super::selftest;
use super::sessions;
use super::settings::Settings;
use crate::clock::{rfc3339, unix_now};
use crate::config::IssuerConfig;
use crate::hsm::pin;
use crate::hsm::{key_pairs, Access, Hsm, HsmError};
use crate::metrics::Metrics;
use crate::sync::lock;

/// The open token, its keys, and the signing threads.
/// Dropping it stops the threads and closes every session, the anchor
/// session last; it waits for signatures still inside the module, so a link
/// whose HSM may not answer is stopped first ([`Link::stop_within`]).
pub struct Link {
    /// Declared before `hsm` so that the threads close their sessions before
    /// the anchor session closes.
    pool: Pool,
    /// The probe asked and not yet answered: no second one is asked
    /// meanwhile, so a token that never answers holds one thread with it.
    probe: Mutex<Option<Receiver<ProbeAnswer>>>,
    answering: Arc<Answering>,
    hsm: Hsm,
    keys: Keys,
    unavailable: Unavailable,
    /// When a certificate enrolled ahead of time next becomes valid.
    next_takeover: Option<i64>,
}

impl Link {
    /// Opens the token, logs in (one attempt, with the PIN read afresh and
    /// dropped right after), finds and self-tests every issuer's key, and
    /// starts the signing threads.
    pub fn open(
        settings: &Settings,
        metrics: &Arc<Metrics>,
        on_fault: FaultReport,
    ) -> Result<Link, ConnectError> {
        let config = &settings.hsm;
        let hsm = Hsm::open(&config.module, &config.token_label, Access::ReadOnly)?;
        login(&hsm, settings)?;
        let (keys, unavailable) = first_keys(&hsm, &settings.issuers, &settings.lifetime)?;
        let next_takeover = next_takeover(&hsm.anchor(), &settings.issuers, unix_now())?;
        let budget = sessions::budget(&hsm, &settings.signing)?;
        let sessions = Sessions {
            opened: open_sessions(&hsm, budget.threads)?,
            slot: hsm.handle(),
            cap: budget.cap,
        };
        let answering = Arc::new(Answering::new(settings.signing.timeout()));
        let pool = Pool::start(
            sessions,
            settings.signing.queue_size,
            Arc::clone(&answering),
            Arc::clone(metrics),
            on_fault,
        )
        .map_err(ConnectError::Threads)?;
        Ok(Link {
            pool,
            probe: Mutex::new(None),
            answering,
            hsm,
            keys,
            unavailable,
            next_takeover,
        })
    }

    /// Finds the active keys for `settings`, self-testing those that
    /// changed; the current keys stay if any issuer has none. Says whether
    /// any issuer's key changed.
    pub fn reload_keys(&mut self, settings: &Settings) -> Result<bool, ConnectError> {
        let keys = find_keys(
            &self.hsm,
            &settings.issuers,
            &settings.lifetime,
            Some(&self.keys),
        )?;
        self.next_takeover = next_takeover(&self.hsm.anchor(), &settings.issuers, unix_now())?;
        Ok(self.replace(keys, Unavailable::new()))
    }

    /// Chooses every issuer's key again, as time passes: an issuer whose
    /// key's certificate has expired, and that has no other key valid now,
    /// becomes unavailable until one is enrolled. A new key that fails its
    /// self-test leaves the current one in service while it is valid. Only
    /// a connection fault is an error. Says whether anything changed.
    pub fn check_keys(&mut self, settings: &Settings) -> Result<bool, ConnectError> {
        let session = self.hsm.anchor();
        let now = unix_now();
        let mut keys = Keys::new();
        let mut unavailable = Unavailable::new();
        for issuer in &settings.issuers {
            let name = issuer.name.as_str();
            let current = self.keys.get(name);
            match find_key(&session, issuer, &settings.lifetime, current, now) {
                Ok(key) => {
                    keys.insert(name.into(), key);
                }
                Err(error) if error.is_connection_fault() => return Err(error),
                Err(error) => match current {
                    Some(key) if key.certificate.is_valid_at(now) && !is_missing(&error) => {
                        tracing::warn!(issuer = name, %error, "the issuer's new key cannot be used; its current key keeps signing");
                        keys.insert(name.into(), Arc::clone(key));
                    }
                    _ => {
                        // An expired key's reason says when it expired; keep it
                        // while the issuer simply has no key.
                        let kept = self.unavailable.get(name).filter(|_| is_missing(&error));
                        let reason = kept.cloned().unwrap_or_else(|| {
                            unusable(issuer, current.map(AsRef::as_ref), &error, now).into()
                        });
                        unavailable.insert(name.into(), reason);
                    }
                },
            }
        }
        self.next_takeover = next_takeover(&session, &settings.issuers, now)?;
        drop(session);
        Ok(self.replace(keys, unavailable))
    }

    /// Puts `keys` and `unavailable` in service; says whether that changes
    /// which key an issuer signs with, or whether it can sign at all.
    fn replace(&mut self, keys: Keys, unavailable: Unavailable) -> bool {
        let changed = keys.len() != self.keys.len()
            || keys
                .iter()
                .any(|(issuer, key)| self.keys.get(issuer).is_none_or(|old| old.kid != key.kid))
            || unavailable.keys().ne(self.unavailable.keys());
        self.keys = keys;
        self.unavailable = unavailable;
        changed
    }

    /// Asks the token whether it is still there, on a signing thread, and
    /// waits up to `wait`: `None` when it has not answered yet (the probe
    /// stays asked, and a later call waits for the same answer).
    pub fn probe(&self, wait: Duration) -> Option<ProbeAnswer> {
        let mut asked = lock(&self.probe);
        let answer = asked.get_or_insert_with(|| {
            let (reply, answer) = sync_channel(1);
            self.pool.handle().probe(reply);
            answer
        });
        match answer.recv_timeout(wait) {
            Ok(result) => {
                *asked = None;
                Some(result)
            }
            Err(RecvTimeoutError::Timeout) => None,
            // The pool stopped before a thread took it.
            Err(RecvTimeoutError::Disconnected) => {
                *asked = None;
                None
            }
        }
    }

    /// Why the HSM counts as not answering, if it does.
    pub fn not_answering(&self) -> Option<String> {
        self.answering.not_answering()
    }

    /// How long the HSM may leave a call unanswered.
    pub fn timeout(&self) -> Duration {
        self.answering.timeout()
    }

    /// Refuses new signatures and waits up to `patience` until no thread of
    /// this link is inside the module; says whether that came. Until it
    /// has, the module must be neither reset nor finalized.
    pub fn stop_within(&self, patience: Duration) -> bool {
        self.pool.stop_within(patience)
    }

    /// Whether a stopped link has nothing inside the module any more.
    pub fn is_stopped(&self) -> bool {
        self.pool.is_stopped()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn unavailable(&self) -> &Unavailable {
        &self.unavailable
    }

    /// When a certificate enrolled ahead of time (`--not-before`) next
    /// becomes valid and may take over, Unix seconds.
    pub fn next_takeover(&self) -> Option<i64> {
        self.next_takeover
    }

    pub fn pool(&self) -> PoolHandle {
        self.pool.handle()
    }

    /// Signing threads kept, and the most there may be.
    pub fn threads(&self) -> (usize, usize) {
        self.pool.threads()
    }
}

fn login(hsm: &Hsm, settings: &Settings) -> Result<(), ConnectError> {
    let pin = pin::load(&settings.hsm)?;
    hsm.login(&pin)?;
    Ok(())
}

/// The active key of every issuer that has one, and why the others have
/// none: one issuer's bad objects must not stop the others. Only when no
/// issuer can sign at all does the start fail, with the first reason.
fn first_keys(
    hsm: &Hsm,
    issuers: &[IssuerConfig],
    lifetime: &crate::token::Lifetime,
) -> Result<(Keys, Unavailable), ConnectError> {
    let session = hsm.anchor();
    let now = unix_now();
    let mut keys = Keys::new();
    let mut unavailable = Unavailable::new();
    let mut first_error = None;
    for issuer in issuers {
        match find_key(&session, issuer, lifetime, None, now) {
            Ok(key) => {
                keys.insert(issuer.name.as_str().into(), key);
            }
            Err(error) if error.is_connection_fault() => return Err(error),
            Err(error) => {
                tracing::error!(issuer = %issuer.name, %error, "the issuer has no usable key; its requests are refused until it has one");
                let reason = unusable(issuer, None, &error, now);
                unavailable.insert(issuer.name.as_str().into(), reason.into());
                first_error.get_or_insert(error);
            }
        }
    }
    match first_error {
        Some(error) if keys.is_empty() => Err(error),
        _ => Ok((keys, unavailable)),
    }
}

/// The active key of every issuer. Keys already known (same kid, from the
/// previous configuration) are not self-tested again.
fn find_keys(
    hsm: &Hsm,
    issuers: &[IssuerConfig],
    lifetime: &crate::token::Lifetime,
    known: Option<&Keys>,
) -> Result<Keys, ConnectError> {
    let session = hsm.anchor();
    let now = unix_now();
    let mut keys = Keys::new();
    for issuer in issuers {
        let name = issuer.name.as_str();
        let current = known.and_then(|known| known.get(name));
        keys.insert(
            name.into(),
            find_key(&session, issuer, lifetime, current, now)?,
        );
    }
    Ok(keys)
}

/// The active key of `issuer` at `now`, self-tested unless it is `current`.
fn find_key(
    session: &cryptoki::session::Session,
    issuer: &IssuerConfig,
    lifetime: &crate::token::Lifetime,
    current: Option<&Arc<ActiveKey>>,
    now: i64,
) -> Result<Arc<ActiveKey>, ConnectError> {
    let (signing, certificate) =
        key_pairs::active_key_pair(session, &issuer.name, issuer.kid.as_deref(), now)?;
    let kid: Arc<str> = Arc::from(signing.id.kid.as_str());
    let tested = current.is_some_and(|old| old.kid == kid && old.signing.handle == signing.handle);
    if !tested {
        selftest::run(session, &signing, &certificate, lifetime)?;
    }
    Ok(Arc::new(ActiveKey {
        signing,
        certificate,
        kid,
    }))
}

/// The earliest not-before after `now` of a complete pair of an issuer
/// without a pinned kid: the second its key may change.
fn next_takeover(
    session: &Session,
    issuers: &[IssuerConfig],
    now: i64,
) -> Result<Option<i64>, HsmError> {
    let mut next = None;
    for issuer in issuers.iter().filter(|issuer| issuer.kid.is_none()) {
        let pairs = key_pairs::list(session, Some(&issuer.name))?;
        let starts = pairs
            .iter()
            .filter(|pair| pair.is_complete())
            .filter_map(|pair| Some(pair.certificate.as_ref()?.1.not_before))
            .filter(|&not_before| not_before > now);
        next = next.into_iter().chain(starts).min();
    }
    Ok(next)
}

/// The token holds no key for the issuer that is complete and valid now.
fn is_missing(error: &ConnectError) -> bool {
    matches!(error, ConnectError::Hsm(HsmError::KeyNotFound { .. }))
}

/// Why `issuer` cannot sign any more, and what brings it back: with a pinned
/// kid only a new pin and a reload do; otherwise enrolling a key is enough.
fn unusable(
    issuer: &IssuerConfig,
    current: Option<&ActiveKey>,
    error: &ConnectError,
    now: i64,
) -> String {
    let cause = match current {
        Some(key) if now > key.certificate.not_after && is_missing(error) => format!(
            "the certificate of its key {} expired at {}",
            key.kid,
            rfc3339(key.certificate.not_after)
        ),
        _ => error.to_string(),
    };
    let remedy = match &issuer.kid {
        Some(kid) => format!(
            "enrol a new key (access-token-agent keys import or keys generate), replace the pinned kid {kid} in the config with its kid (or remove the pin) and reload the agent (systemctl reload access-token-agent)"
        ),
        None => "enrol a new key (access-token-agent keys import or keys generate); the agent uses it within seconds".into(),
    };
    format!(
        "issuer {:?} has no usable key ({cause}); {remedy}",
        issuer.name
    )
}

/// The sessions of the signing threads kept whatever the load.
fn open_sessions(hsm: &Hsm, count: usize) -> Result<Vec<Session>, HsmError> {
    (0..count).map(|_| hsm.open_session()).collect()
}
