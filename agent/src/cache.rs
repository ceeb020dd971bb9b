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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::watch;

use crate::hsm::sign::SignedToken;
use crate::issue::{IssueError, Issued};
use crate::sync::{lock, read, write};

/// How many (issuer, app) entries are kept at most. A peer granted every app
/// (`apps = ["*"]`) could otherwise grow the cache without bound; past this,
/// stale entries are swept and, if that is not enough, tokens are signed
/// without being cached.
pub const MAX_ENTRIES: usize = 10_000;

/// Where the cache reads the time from; tests move it by hand.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch.
    fn now_millis(&self) -> i64;
}

/// The system's wall clock, the one token claims are written in.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> i64 {
        crate::clock::unix_millis()
    }
}

/// What a request gets from the cache, or the reason it got nothing.
pub type Outcome = Result<Issued, IssueError>;

/// The cache of signed tokens for one configuration.
pub struct Cache<C: Clock = SystemClock> {
    clock: C,
    /// A cached token is served until its `exp` is this close, in milliseconds:
    /// `cache_refresh_remaining` × lifetime.
    refresh_margin_ms: i64,
    entries: RwLock<Entries>,
}

#[derive(Default)]
struct Entries {
    /// issuer → app → entry, so that a lookup by `&str` needs no allocation.
    by_issuer: HashMap<Box<str>, HashMap<Box<str>, Arc<Entry>>>,
    len: usize,
}

/// One (issuer, app): the token last signed for it and the signature under way.
#[derive(Default)]
struct Entry {
    current: RwLock<Option<Fresh>>,
    /// Set while a signature is under way; later requests wait on it.
    flight: Mutex<Option<watch::Receiver<Option<Outcome>>>>,
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

impl Cache<SystemClock> {
    /// A cache for tokens that live `lifetime_seconds`, served while more than
    /// `refresh_remaining` (0..1) of that lifetime is left.
    pub fn new(lifetime_seconds: i64, refresh_remaining: f64) -> Cache {
        Cache::with_clock(SystemClock, lifetime_seconds, refresh_remaining)
    }
}

impl<C: Clock> Cache<C> {
    /// As [`Cache::new`], reading the time from `clock`.
    pub fn with_clock(clock: C, lifetime_seconds: i64, refresh_remaining: f64) -> Cache<C> {
        Cache {
            clock,
            refresh_margin_ms: (lifetime_seconds as f64 * 1000.0 * refresh_remaining).round()
                as i64,
            entries: RwLock::default(),
        }
    }

    /// The cached token for `issuer` and `app` signed by `kid`, or one signed
    /// now by `sign`. `sign` is called at most once per entry at a time; it
    /// must hand the [`Completion`] to whatever signs, which completes it (or
    /// drops it, which fails every waiter).
    pub async fn get_or_sign(
        &self,
        issuer: &str,
        app: &str,
        kid: &Arc<str>,
        sign: impl FnOnce(Completion),
    ) -> Outcome {
        if let Some(hit) = self.lookup(issuer, app, kid) {
            return Ok(hit);
        }
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

    /// Drops every entry whose token is no longer served and that has no
    /// signature under way.
    pub fn sweep(&self) {
        let now = self.clock.now_millis();
        let mut entries = write(&self.entries);
        let mut removed = 0;
        for apps in entries.by_issuer.values_mut() {
            apps.retain(|_, entry| {
                let keep = lock(&entry.flight).is_some()
                    || read(&entry.current)
                        .as_ref()
                        .is_some_and(|fresh| now < fresh.refresh_at_ms);
                removed += usize::from(!keep);
                keep
            });
        }
        entries.by_issuer.retain(|_, apps| !apps.is_empty());
        entries.len -= removed;
    }

    /// How many (issuer, app) entries are held.
    pub fn len(&self) -> usize {
        read(&self.entries).len
    }

    /// Whether the cache holds no entry.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lookup(&self, issuer: &str, app: &str, kid: &str) -> Option<Issued> {
        let entries = read(&self.entries);
        let entry = entries.by_issuer.get(issuer)?.get(app)?;
        self.fresh(entry, kid)
    }

    fn fresh(&self, entry: &Entry, kid: &str) -> Option<Issued> {
        let current = read(&entry.current);
        let fresh = current.as_ref()?;
        fresh
            .serves(kid, self.clock.now_millis())
            .then(|| fresh.issued.clone())
    }

    /// The entry for `issuer` and `app`, created if need be. When the cache
    /// is full even after a sweep, a detached entry is returned: the token is
    /// signed but not kept.
    fn entry(&self, issuer: &str, app: &str) -> Arc<Entry> {
        if let Some(entry) = read(&self.entries)
            .by_issuer
            .get(issuer)
            .and_then(|apps| apps.get(app))
        {
            return Arc::clone(entry);
        }
        if self.len() >= MAX_ENTRIES {
            self.sweep();
        }
        let mut entries = write(&self.entries);
        if entries.len >= MAX_ENTRIES {
            return Arc::default();
        }
        let Entries { by_issuer, len } = &mut *entries;
        let entry = by_issuer
            .entry(issuer.into())
            .or_default()
            .entry(app.into())
            .or_insert_with(|| {
                *len += 1;
                Arc::default()
            });
        Arc::clone(entry)
    }
}

/// The right to finish one signature for a cache entry. Completing it stores
/// the token and wakes every request waiting on it; dropping it unfinished
/// (the signer went away) fails them, so no request waits forever and the
/// next one starts a new signature.
pub struct Completion {
    entry: Arc<Entry>,
    sender: watch::Sender<Option<Outcome>>,
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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

    /// A clock the test moves by hand.
    #[derive(Clone, Default)]
    struct TestClock(Arc<AtomicI64>);

    impl TestClock {
        fn at(seconds: f64) -> TestClock {
            let clock = TestClock::default();
            clock.set(seconds);
            clock
        }
        fn set(&self, seconds: f64) {
            self.0.store((seconds * 1000.0) as i64, Ordering::SeqCst);
        }
        fn seconds(&self) -> i64 {
            self.0.load(Ordering::SeqCst).div_euclid(1000)
        }
    }

    impl Clock for TestClock {
        fn now_millis(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    const LIFETIME: i64 = 300;

    /// Signs synchronously: the token text names the signature's sequence
    /// number, and `exp` follows the clock the way the real signer's does.
    struct CountingSigner {
        clock: TestClock,
        count: AtomicUsize,
    }

    impl CountingSigner {
        fn new(clock: &TestClock) -> CountingSigner {
            CountingSigner {
                clock: clock.clone(),
                count: AtomicUsize::new(0),
            }
        }
        fn sign(&self, completion: Completion) {
            let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
            completion.complete(Ok(SignedToken {
                token: format!("token-{n}"),
                expires_at: self.clock.seconds() + LIFETIME,
            }));
        }
        fn count(&self) -> usize {
            self.count.load(Ordering::SeqCst)
        }
    }

    fn kid(s: &str) -> Arc<str> {
        Arc::from(s)
    }

    async fn get(cache: &Cache<TestClock>, signer: &CountingSigner, app: &str, k: &str) -> Issued {
        cache
            .get_or_sign("ttd", app, &kid(k), |c| signer.sign(c))
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn same_token_until_half_the_lifetime_is_gone_then_a_new_one() {
        let clock = TestClock::at(1000.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let signer = CountingSigner::new(&clock);

        let first = get(&cache, &signer, "app", "K1").await;
        assert!(!first.cache_hit);
        assert_eq!(first.expires_at, 1300);
        assert_eq!(&*first.kid, "K1");

        // exp 1300, lifetime 300: served while more than 150 s are left.
        clock.set(1149.999);
        let again = get(&cache, &signer, "app", "K1").await;
        assert!(again.cache_hit);
        assert_eq!(again.token, first.token);
        assert_eq!(signer.count(), 1);

        clock.set(1150.0);
        let renewed = get(&cache, &signer, "app", "K1").await;
        assert!(!renewed.cache_hit);
        assert_ne!(renewed.token, first.token);
        assert_eq!(renewed.expires_at, 1450);
        assert_eq!(signer.count(), 2);
    }

    #[tokio::test]
    async fn refresh_point_follows_the_configured_fraction() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.9);
        let signer = CountingSigner::new(&clock);
        get(&cache, &signer, "app", "K1").await;
        // 90 % must be left: served for the first 30 s only.
        clock.set(29.9);
        assert!(get(&cache, &signer, "app", "K1").await.cache_hit);
        clock.set(30.0);
        assert!(!get(&cache, &signer, "app", "K1").await.cache_hit);
    }

    #[tokio::test]
    async fn apps_issuers_and_kids_do_not_share_tokens() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let signer = CountingSigner::new(&clock);
        let a = get(&cache, &signer, "a", "K1").await;
        let b = get(&cache, &signer, "b", "K1").await;
        let other_issuer = cache
            .get_or_sign("digdir", "a", &kid("K1"), |c| signer.sign(c))
            .await
            .unwrap();
        assert_ne!(a.token, b.token);
        assert_ne!(a.token, other_issuer.token);
        // A new active key for the issuer: the old kid's token is not served.
        let rotated = get(&cache, &signer, "a", "K2").await;
        assert!(!rotated.cache_hit);
        assert_eq!(&*rotated.kid, "K2");
        assert_eq!(signer.count(), 4);
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_signature() {
        let clock = TestClock::at(0.0);
        let cache = Arc::new(Cache::with_clock(clock.clone(), LIFETIME, 0.5));
        let started = Arc::new(AtomicUsize::new(0));
        let (release, parked) = std::sync::mpsc::channel::<Completion>();
        let mut requests = Vec::new();
        for _ in 0..50 {
            let cache = Arc::clone(&cache);
            let started = Arc::clone(&started);
            let release = release.clone();
            requests.push(tokio::spawn(async move {
                cache
                    .get_or_sign("ttd", "app", &kid("K1"), |c| {
                        started.fetch_add(1, Ordering::SeqCst);
                        release.send(c).unwrap();
                    })
                    .await
            }));
        }
        // Let every request reach the cache while the one signature is parked.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let completion = parked.recv().unwrap();
        // Every request holds a receiver on the one flight, plus the entry's own.
        assert_eq!(completion.sender.receiver_count(), 51);
        completion.complete(Ok(SignedToken {
            token: "shared".into(),
            expires_at: 300,
        }));
        let mut leaders = 0;
        for request in requests {
            let issued = request.await.unwrap().unwrap();
            assert_eq!(&*issued.token, "shared");
            leaders += usize::from(!issued.cache_hit);
        }
        assert_eq!(started.load(Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
    }

    #[tokio::test]
    async fn a_failed_signature_fails_its_waiters_and_the_next_request_retries() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let failed = cache
            .get_or_sign("ttd", "app", &kid("K1"), |c| {
                c.complete(Err(IssueError::Unavailable("token removed".into())))
            })
            .await;
        assert!(
            matches!(failed, Err(IssueError::Unavailable(reason)) if reason == "token removed")
        );
        let signer = CountingSigner::new(&clock);
        assert!(!get(&cache, &signer, "app", "K1").await.cache_hit);
        assert_eq!(signer.count(), 1);
    }

    #[tokio::test]
    async fn a_dropped_completion_fails_the_request_instead_of_hanging() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let outcome = cache.get_or_sign("ttd", "app", &kid("K1"), drop).await;
        assert!(matches!(outcome, Err(IssueError::Unavailable(_))));
        let signer = CountingSigner::new(&clock);
        assert!(!get(&cache, &signer, "app", "K1").await.cache_hit);
    }

    #[tokio::test]
    async fn sweep_drops_only_tokens_past_their_refresh_point() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let signer = CountingSigner::new(&clock);
        get(&cache, &signer, "old", "K1").await;
        clock.set(100.0);
        get(&cache, &signer, "new", "K1").await;
        clock.set(200.0);
        cache.sweep();
        assert_eq!(cache.len(), 1);
        assert!(get(&cache, &signer, "new", "K1").await.cache_hit);
    }

    #[tokio::test]
    async fn a_full_cache_still_signs_but_keeps_no_more_entries() {
        let clock = TestClock::at(0.0);
        let cache = Cache::with_clock(clock.clone(), LIFETIME, 0.5);
        let signer = CountingSigner::new(&clock);
        for n in 0..MAX_ENTRIES {
            get(&cache, &signer, &format!("app-{n}"), "K1").await;
        }
        assert_eq!(cache.len(), MAX_ENTRIES);
        let extra = get(&cache, &signer, "one-more", "K1").await;
        assert_eq!(cache.len(), MAX_ENTRIES);
        assert!(!extra.cache_hit);
        assert!(!get(&cache, &signer, "one-more", "K1").await.cache_hit);
        // Once the old entries are stale, the sweep makes room again.
        clock.set(200.0);
        get(&cache, &signer, "after-sweep", "K1").await;
        assert!(get(&cache, &signer, "after-sweep", "K1").await.cache_hit);
        assert_eq!(cache.len(), 1);
    }
}
