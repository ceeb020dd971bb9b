//! The cache against a clock moved by hand and a signer that counts.

use super::*;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

/// A clock the test moves by hand.
#[derive(Clone, Default)]
struct TestTime(Arc<AtomicI64>);

impl TestTime {
    fn at(seconds: f64) -> TestTime {
        let clock = TestTime::default();
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

impl TimeSource for TestTime {
    fn now_millis(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

const LIFETIME: i64 = 300;

/// Signs synchronously: the token text names the signature's sequence
/// number, and `exp` follows the clock the way the real signer's does.
struct CountingSigner {
    clock: TestTime,
    count: AtomicUsize,
}

impl CountingSigner {
    fn new(clock: &TestTime) -> CountingSigner {
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

/// As the back asks: the cached token, or else one signed.
async fn get(cache: &Cache<TestTime>, signer: &CountingSigner, app: &str, k: &str) -> Issued {
    if let Some(hit) = cache.cached("ttd", app, k) {
        return hit;
    }
    cache
        .get_or_sign("ttd", app, &kid(k), |c| signer.sign(c))
        .await
        .unwrap()
}

#[tokio::test]
async fn same_token_until_half_the_lifetime_is_gone_then_a_new_one() {
    let clock = TestTime::at(1000.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
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
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.9);
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
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
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
    let clock = TestTime::at(0.0);
    let cache = Arc::new(Cache::with_time_source(clock.clone(), LIFETIME, 0.5));
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
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
    let failed = cache
        .get_or_sign("ttd", "app", &kid("K1"), |c| {
            c.complete(Err(IssueError::Unavailable("token removed".into())))
        })
        .await;
    assert!(matches!(failed, Err(IssueError::Unavailable(reason)) if reason == "token removed"));
    let signer = CountingSigner::new(&clock);
    assert!(!get(&cache, &signer, "app", "K1").await.cache_hit);
    assert_eq!(signer.count(), 1);
}

#[tokio::test]
async fn a_dropped_completion_fails_the_request_instead_of_hanging() {
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
    let outcome = cache.get_or_sign("ttd", "app", &kid("K1"), drop).await;
    assert!(matches!(outcome, Err(IssueError::Unavailable(_))));
    let signer = CountingSigner::new(&clock);
    assert!(!get(&cache, &signer, "app", "K1").await.cache_hit);
}

/// Fills the cache with `MAX_ENTRIES` entries, each asked for once, after
/// `first` (asked for twice).
async fn fill(cache: &Cache<TestTime>, signer: &CountingSigner, first: &str) {
    get(cache, signer, first, "K1").await;
    assert!(get(cache, signer, first, "K1").await.cache_hit);
    for n in 1..MAX_ENTRIES {
        get(cache, signer, &format!("flood-{n}"), "K1").await;
    }
    assert_eq!(cache.len(), MAX_ENTRIES);
}

#[tokio::test]
async fn a_full_cache_keeps_a_new_key_in_place_of_one_nobody_asked_for_again() {
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
    let signer = CountingSigner::new(&clock);
    fill(&cache, &signer, "kept").await;
    let new = get(&cache, &signer, "new", "K1").await;
    assert!(!new.cache_hit);
    assert!(get(&cache, &signer, "new", "K1").await.cache_hit, "cached");
    assert_eq!(cache.len(), MAX_ENTRIES);
    // The entry asked for again had its second chance; a flood entry went.
    assert!(get(&cache, &signer, "kept", "K1").await.cache_hit);
    let before = signer.count();
    assert!(!get(&cache, &signer, "flood-1", "K1").await.cache_hit);
    assert_eq!(signer.count(), before + 1);
}

#[tokio::test]
async fn a_miss_in_a_full_cache_looks_at_a_bounded_number_of_entries() {
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
    let signer = CountingSigner::new(&clock);
    // The worst case for the hand: every entry asked for again.
    for n in 0..MAX_ENTRIES {
        let app = format!("busy-{n}");
        get(&cache, &signer, &app, "K1").await;
        assert!(get(&cache, &signer, &app, "K1").await.cache_hit);
    }
    for n in 0..1000 {
        let looked_at = cache.looked_at();
        get(&cache, &signer, &format!("new-{n}"), "K1").await;
        let this_miss = cache.looked_at() - looked_at;
        assert!(this_miss <= EVICTION_LOOKS, "{this_miss} entries looked at");
        assert!(
            get(&cache, &signer, &format!("new-{n}"), "K1")
                .await
                .cache_hit
        );
    }
    assert_eq!(cache.len(), MAX_ENTRIES);
}

#[tokio::test]
async fn stale_entries_make_room_first() {
    let clock = TestTime::at(0.0);
    let cache = Cache::with_time_source(clock.clone(), LIFETIME, 0.5);
    let signer = CountingSigner::new(&clock);
    fill(&cache, &signer, "old").await;
    // Past every entry's refresh point: any of them can go.
    clock.set(200.0);
    for n in 0..10 {
        get(&cache, &signer, &format!("later-{n}"), "K1").await;
        assert!(
            get(&cache, &signer, &format!("later-{n}"), "K1")
                .await
                .cache_hit
        );
    }
    assert_eq!(cache.len(), MAX_ENTRIES);
}
