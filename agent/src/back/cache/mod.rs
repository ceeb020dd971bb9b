//! The token cache: one signed token per (issuer, app, kid), served again
//! while enough of its lifetime is left.
//!
//! The hit path takes two read locks and clones two `Arc`s: no HSM call, no
//! allocation. A miss is single-flight: the first request for an entry starts
//! one signature and every request that arrives meanwhile waits for that same
//! signature, so a burst at the refresh point costs the HSM one `C_Sign`.
//!
//! Entries are keyed by issuer and app and remember the kid they were signed
//! with; a token whose kid is not the issuer's active one is never served, so
//! the effective key is (issuer, app, kid) and a new key takes over at once.
//!
//! A full cache makes room the way a clock makes pages: a hand goes round the
//! entries in the order they came, and takes the first one that is stale or
//! was not asked for again since the hand last passed; one that was gets a
//! second chance. It looks at no more than [`EVICTION_LOOKS`] entries per
//! miss, then takes the one under the hand, so a miss costs the same however
//! full the cache is, and entries that are asked for again outlast a flood of
//! names asked for once.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::hsm::sign::SignedToken;
use crate::issue::{IssueError, Issued};
use crate::sync::{lock, read, write};

/// How many (issuer, app) entries are kept at most. A peer granted every app
/// (`apps = ["*"]`) could otherwise grow the cache without bound; past this,
/// an entry makes room for the new one.
pub const MAX_ENTRIES: usize = 10_000;

/// Entries the hand looks at, at most, to make room for one.
pub const EVICTION_LOOKS: usize = 8;

/// Where the cache reads the time from; tests move it by hand.
pub trait TimeSource: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
}

/// The system's wall clock, the one token claims are written in.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallTime;

impl TimeSource for WallTime {
    fn now_millis(&self) -> i64 {
        crate::clock::unix_millis()
    }
}

/// What a request gets from the cache, or the reason it got nothing.
pub type IssueResult = Result<Issued, IssueError>;

/// The cache of signed tokens for one configuration.
pub struct Cache<C: TimeSource = WallTime> {
    clock: C,
    /// A cached token is served until its `exp` is this close, in milliseconds:
    /// `cache_refresh_remaining` × lifetime.
    refresh_margin_ms: i64,
    entries: RwLock<Entries>,
    /// Entries the hand has looked at, for the tests' bound.
    looked_at: AtomicUsize,
}

#[derive(Default)]
struct Entries {
    /// issuer → app → entry, so that a lookup by `&str` needs no allocation.
    by_issuer: HashMap<Box<str>, HashMap<Box<str>, Arc<Entry>>>,
    /// Every entry's (issuer, app), in the order the hand visits them.
    hand: VecDeque<(Box<str>, Box<str>)>,
}

/// One (issuer, app): the token last signed for it and the signature under way.
#[derive(Default)]
struct Entry {
    current: RwLock<Option<Fresh>>,
    /// Set while a signature is under way; later requests wait on it.
    flight: Mutex<Option<watch::Receiver<Option<IssueResult>>>>,
    /// Served from the cache since the hand last passed it.
    asked_again: AtomicBool,
}

/// A cached token and the instant it stops being served.
struct Fresh {
    issued: Issued,
    refresh_at_ms: i64,
}

impl Fresh {
    fn serves(&self, kid: &str, now_ms: i64) -> bool {
        now_ms < self.refresh_at_ms && *self.issued.kid == *kid
    }
}

impl Cache<WallTime> {
    /// A cache for tokens that live `lifetime_seconds`, served while more than
    /// `refresh_remaining` (0..1) of that lifetime is left.
    pub fn new(lifetime_seconds: i64, refresh_remaining: f64) -> Cache {
        Cache::with_time_source(WallTime, lifetime_seconds, refresh_remaining)
    }
}

impl<C: TimeSource> Cache<C> {
    /// As [`Cache::new`], reading the time from `clock`.
    pub fn with_time_source(clock: C, lifetime_seconds: i64, refresh_remaining: f64) -> Cache<C> {
        Cache {
            clock,
            refresh_margin_ms: (lifetime_seconds as f64 * 1000.0 * refresh_remaining).round()
                as i64,
            entries: RwLock::default(),
            looked_at: AtomicUsize::new(0),
        }
    }

    /// The cached token for `issuer` and `app` signed by `kid` (one that
    /// arrived since [`Cache::cached`] said there was none), or one signed
    /// now by `sign`. `sign` is called at most once per entry at a time; it
    /// must hand the [`Completion`] to whatever signs, which completes it (or
    /// drops it, which fails every waiter).
    pub async fn get_or_sign(
        &self,
        issuer: &str,
        app: &str,
        kid: &Arc<str>,
        sign: impl FnOnce(Completion),
    ) -> IssueResult {
        let entry = self.entry(issuer, app);
        let (mut receiver, leader) = {
            let mut flight = lock(&entry.flight);
            if let Some(hit) = self.fresh(&entry, kid) {
                return Ok(hit);
            }
            match flight.as_ref() {
                Some(receiver) => (receiver.clone(), false),
                None => {
                    let (sender, receiver) = watch::channel(None);
                    *flight = Some(receiver.clone());
                    let completion = Completion {
                        entry: Arc::clone(&entry),
                        sender,
                        kid: Arc::clone(kid),
                        refresh_margin_ms: self.refresh_margin_ms,
                        finished: false,
                    };
                    drop(flight);
                    sign(completion);
                    (receiver, true)
                }
            }
        };
        let outcome = match receiver.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone().expect("waited for a value"),
            Err(_) => Err(abandoned()),
        };
        // Only the request that started the signature counts as a miss.
        outcome.map(|issued| Issued {
            cache_hit: !leader,
            ..issued
        })
    }

    /// How many (issuer, app) entries are held.
    pub fn len(&self) -> usize {
        read(&self.entries).hand.len()
    }

    /// Entries the hand has looked at so far.
    pub fn looked_at(&self) -> usize {
        self.looked_at.load(Ordering::Relaxed)
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The cached token for `issuer` and `app` signed by `kid`, if one is
    /// served now; nothing is signed.
    pub fn cached(&self, issuer: &str, app: &str, kid: &str) -> Option<Issued> {
        let entries = read(&self.entries);
        let entry = entries.by_issuer.get(issuer)?.get(app)?;
        let hit = self.fresh(entry, kid)?;
        // Read first: most hits find it set and need not write the line.
        if !entry.asked_again.load(Ordering::Relaxed) {
            entry.asked_again.store(true, Ordering::Relaxed);
        }
        Some(hit)
    }

    fn fresh(&self, entry: &Entry, kid: &str) -> Option<Issued> {
        let current = read(&entry.current);
        let fresh = current.as_ref()?;
        fresh
            .serves(kid, self.clock.now_millis())
            .then(|| fresh.issued.clone())
    }

    /// The entry for `issuer` and `app`, created if need be, in place of
    /// one the hand takes when the cache is full. When the hand finds only
    /// entries with a signature under way, a detached entry is returned: the
    /// token is signed but not kept.
    fn entry(&self, issuer: &str, app: &str) -> Arc<Entry> {
        if let Some(entry) = read(&self.entries)
            .by_issuer
            .get(issuer)
            .and_then(|apps| apps.get(app))
        {
            return Arc::clone(entry);
        }
        let mut entries = write(&self.entries);
        if let Some(entry) = entries.by_issuer.get(issuer).and_then(|apps| apps.get(app)) {
            return Arc::clone(entry);
        }
        if entries.hand.len() >= MAX_ENTRIES && !self.make_room(&mut entries) {
            return Arc::default();
        }
        let entry = Arc::<Entry>::default();
        entries
            .by_issuer
            .entry(issuer.into())
            .or_default()
            .insert(app.into(), Arc::clone(&entry));
        entries.hand.push_back((issuer.into(), app.into()));
        entry
    }

    /// Takes one entry off the hand: the first stale one or one not asked
    /// for again, else the last one looked at; never one being signed.
    fn make_room(&self, entries: &mut Entries) -> bool {
        let now = self.clock.now_millis();
        for look in 1..=EVICTION_LOOKS {
            let Some((issuer, app)) = entries.hand.pop_front() else {
                return false;
            };
            self.looked_at.fetch_add(1, Ordering::Relaxed);
            let Some(apps) = entries.by_issuer.get_mut(&issuer) else {
                continue;
            };
            let Some(entry) = apps.get(&app) else {
                continue;
            };
            let signing = lock(&entry.flight).is_some();
            let live = read(&entry.current)
                .as_ref()
                .is_some_and(|fresh| now < fresh.refresh_at_ms);
            let second_chance = entry.asked_again.swap(false, Ordering::Relaxed);
            if signing || (live && second_chance && look < EVICTION_LOOKS) {
                entries.hand.push_back((issuer, app));
                continue;
            }
            apps.remove(&app);
            if apps.is_empty() {
                entries.by_issuer.remove(&issuer);
            }
            return true;
        }
        false
    }
}

/// The right to finish one signature for a cache entry. Completing it stores
/// the token and wakes every request waiting on it; dropping it unfinished
/// (the signer went away) fails them, so no request waits forever and the
/// next one starts a new signature.
pub struct Completion {
    entry: Arc<Entry>,
    sender: watch::Sender<Option<IssueResult>>,
    kid: Arc<str>,
    refresh_margin_ms: i64,
    finished: bool,
}

impl Completion {
    /// Hands the signature's result to everyone waiting for it.
    pub fn complete(mut self, result: Result<SignedToken, IssueError>) {
        self.finish(result);
    }

    fn finish(&mut self, result: Result<SignedToken, IssueError>) {
        self.finished = true;
        let outcome = result.map(|signed| Issued {
            token: signed.token.into(),
            kid: Arc::clone(&self.kid),
            expires_at: signed.expires_at,
            cache_hit: true,
        });
        if let Ok(issued) = &outcome {
            *write(&self.entry.current) = Some(Fresh {
                issued: issued.clone(),
                refresh_at_ms: issued.expires_at * 1000 - self.refresh_margin_ms,
            });
        }
        // Stored before the flight ends, so a request arriving in between
        // finds the new token instead of starting another signature.
        *lock(&self.entry.flight) = None;
        self.sender.send_replace(Some(outcome));
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Err(abandoned()));
        }
    }
}

fn abandoned() -> IssueError {
    IssueError::Unavailable("the signer stopped before signing; try again".into())
}

#[cfg(test)]
mod tests;
