//! One connection to the token: opened, logged in, every configured issuer's
//! active key found and self-tested, and the signing threads started.
//!
//! The same steps serve the first start and every recovery, so a recovered
//! agent is in exactly the state a freshly started one would be.

use std::collections::HashMap;
use std::sync::Arc;

use super::pool::{FaultReport, Pool, PoolHandle};
use super::{selftest, ActiveKey, Settings};
use crate::config::IssuerConfig;
use crate::hsm::{keys, Access, Hsm, HsmError};
use crate::metrics::Metrics;
use crate::pin::{self, PinError};

/// Why the token could not be brought into service.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("{0}")]
    SelfTest(String),
    #[error("cannot start the signing threads: {0}")]
    Threads(std::io::Error),
}

impl ConnectError {
    /// A refused or locked PIN: trying again could only burn the retry counter.
    pub fn is_pin_refused(&self) -> bool {
        matches!(
            self,
            ConnectError::Hsm(HsmError::WrongPin | HsmError::PinLocked)
        )
    }

    /// Whether reopening later may cure this (as opposed to a broken setup).
    pub fn is_connection_fault(&self) -> bool {
        matches!(self, ConnectError::Hsm(error) if error.is_connection_fault())
    }
}

/// Every configured issuer's active key, by issuer name.
pub type Keys = HashMap<Box<str>, Arc<ActiveKey>>;

/// The open token, its keys, and the signing threads. Dropping it stops the
/// threads and closes every session, the anchor session last.
pub struct Connection {
    /// Declared before `hsm` so that the threads close their sessions before
    /// the anchor session closes.
    pool: Pool,
    hsm: Hsm,
    keys: Keys,
}

impl Connection {
    /// Opens the token, logs in (one attempt, with the PIN read afresh and
    /// dropped right after), finds and self-tests every issuer's key, and
    /// starts the signing threads.
    pub fn open(
        settings: &Settings,
        metrics: &Arc<Metrics>,
        on_fault: FaultReport,
    ) -> Result<Connection, ConnectError> {
        let config = &settings.hsm;
        let hsm = Hsm::open(&config.module, &config.token_label, Access::ReadOnly)?;
        login(&hsm, settings)?;
        let keys = find_keys(&hsm, &settings.issuers, &settings.lifetime, None)?;
        let threads = thread_count(&hsm, settings.signing.threads())?;
        let sessions = (0..threads)
            .map(|_| hsm.open_session())
            .collect::<Result<Vec<_>, _>>()?;
        let pool = Pool::start(
            sessions,
            settings.signing.queue_size,
            Arc::clone(metrics),
            on_fault,
        )
        .map_err(ConnectError::Threads)?;
        Ok(Connection { pool, hsm, keys })
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
        let changed = keys.len() != self.keys.len()
            || keys
                .iter()
                .any(|(issuer, key)| self.keys.get(issuer).is_none_or(|old| old.kid != key.kid));
        self.keys = keys;
        Ok(changed)
    }

    /// Whether the token still answers.
    pub fn probe(&self) -> Result<(), HsmError> {
        self.hsm.probe()
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    pub fn pool(&self) -> PoolHandle {
        self.pool.handle()
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

fn login(hsm: &Hsm, settings: &Settings) -> Result<(), ConnectError> {
    let pin = pin::load(&settings.hsm)?;
    hsm.login(&pin)?;
    Ok(())
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
    let now = crate::clock::unix_now();
    let mut keys = Keys::new();
    for issuer in issuers {
        let (signing, certificate) =
            keys::active_key_pair(&session, &issuer.name, issuer.kid.as_deref(), now)?;
        let kid: Arc<str> = Arc::from(signing.id.kid.as_str());
        let tested = known
            .and_then(|known| known.get(issuer.name.as_str()))
            .is_some_and(|old| old.kid == kid && old.signing.handle == signing.handle);
        if !tested {
            selftest::run(&session, &signing, &certificate, lifetime)?;
        }
        keys.insert(
            issuer.name.as_str().into(),
            Arc::new(ActiveKey {
                signing,
                certificate,
                kid,
            }),
        );
    }
    Ok(keys)
}

/// The configured thread count, capped so that the threads and the anchor
/// session fit in the token's session limit.
fn thread_count(hsm: &Hsm, wanted: usize) -> Result<usize, HsmError> {
    Ok(match hsm.max_sessions()? {
        Some(max) => wanted.min(usize::try_from(max.saturating_sub(1)).unwrap_or(usize::MAX)),
        None => wanted,
    }
    .max(1))
}
