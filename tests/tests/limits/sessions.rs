//! Signing sessions: as many as the load needs. Signatures that wait on the
//! HSM (the slow module, 2 ms each) get more sessions than `threads` under
//! load, within the token's own session limit, and the extra ones stay open
//! while the load lasts and close again when it is gone.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use integration_tests::daemon::{log, log_tail, ttd_token, Daemon};
use integration_tests::slow_hsm::{route_through_slow_hsm, SlowHsm};
use integration_tests::{poll_until, TestToken, PATIENCE};

/// Signing threads kept whatever the load.
const THREADS: f64 = 2.0;
const SESSIONS: &str = "access_token_agent_signing_sessions";
const OPENED: &str = "access_token_agent_signing_sessions_opened_total";

/// A `key` ("p256" or "rsa2048"), no cache (every request signs), two
/// threads kept.
fn token(key: &str) -> TestToken {
    ttd_token(key, "[token]\ncache = false\n[signing]\nthreads = 2\n")
}

fn slow_agent(token: &TestToken, slow: SlowHsm) -> Daemon {
    route_through_slow_hsm(token);
    Daemon::spawn(token, |command| slow.apply(command)).ready(token)
}

/// Runs `clients` threads asking for tokens without pause while `watch`
/// samples the agent; returns the tokens served and what `watch` returned.
fn under_load<T>(daemon: &Daemon, clients: usize, watch: impl FnOnce() -> T) -> (usize, T) {
    let stop = AtomicBool::new(false);
    let served = AtomicUsize::new(0);
    let seen = std::thread::scope(|scope| {
        for index in 0..clients {
            let (stop, served) = (&stop, &served);
            scope.spawn(move || {
                let client = daemon.client();
                let app = format!("app{index}");
                while !stop.load(Ordering::Relaxed) {
                    if client.token(Some("ttd"), Some(&app)).is_ok() {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        let seen = watch();
        stop.store(true, Ordering::Relaxed);
        seen
    });
    (served.into_inner(), seen)
}

/// Samples `SESSIONS` every 50 ms until it reaches `at_least` or
/// [`PATIENCE`] passes; returns the highest value seen.
fn peak_sessions(daemon: &Daemon, at_least: f64) -> f64 {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut peak: f64 = 0.0;
    while peak < at_least && std::time::Instant::now() < deadline {
        peak = peak.max(daemon.metric(SESSIONS));
        std::thread::sleep(Duration::from_millis(50));
    }
    peak
}

#[test]
fn signatures_that_wait_get_more_sessions_than_threads_which_close_again() {
    let token = token("p256");
    let daemon = slow_agent(&token, SlowHsm::new().sign_delay(Duration::from_millis(2)));
    assert_eq!(daemon.metric(SESSIONS), THREADS, "idle: the threads kept");
    let (served, peak) = under_load(&daemon, 24, || peak_sessions(&daemon, THREADS + 4.0));
    assert!(
        peak >= THREADS + 4.0,
        "at most {peak} sessions for 24 clients on a 2 ms HSM ({served} tokens)\n{}",
        log_tail(&token)
    );
    assert!(served > 0);
    poll_until("return to the threads' sessions with no load", || {
        daemon.metric(SESSIONS) <= THREADS
    });
}

#[test]
fn steady_load_keeps_its_sessions_open() {
    // RSA: each signature is also ~0.6 ms of SoftHSM's CPU, contended, so
    // the rule's count moves with it by a session or two.
    let token = token("rsa2048");
    let daemon = slow_agent(&token, SlowHsm::new().sign_delay(Duration::from_millis(2)));
    let (served, (opened, open)) = under_load(&daemon, 24, || {
        peak_sessions(&daemon, THREADS + 4.0);
        // Time passes on purpose: a second for the pool to settle under the
        // load, then 3 s of steady load whose openings are counted.
        std::thread::sleep(Duration::from_secs(1));
        let before = daemon.metric(OPENED);
        std::thread::sleep(Duration::from_secs(3));
        (daemon.metric(OPENED) - before, daemon.metric(SESSIONS))
    });
    // A pool still growing opens sessions it keeps; one that churns opens
    // more than it has.
    assert!(
        opened <= open,
        "{opened} sessions opened in 3 s of steady load with {open} open at its end ({served} tokens)"
    );
}

#[test]
fn a_token_that_allows_few_sessions_is_used_within_its_limit_and_the_log_says_so_once() {
    let token = token("p256");
    // The anchor, and room for 5 signing sessions.
    let slow = SlowHsm::new()
        .sign_delay(Duration::from_millis(2))
        .max_sessions(6);
    let daemon = slow_agent(&token, slow);
    let (_, peak) = under_load(&daemon, 24, || {
        let reached = peak_sessions(&daemon, 5.0);
        // Go on a while at the limit (time passes on purpose): it must hold.
        std::thread::sleep(Duration::from_millis(500));
        reached.max(daemon.metric(SESSIONS))
    });
    assert_eq!(peak, 5.0, "the 5 sessions the token leaves for signing");
    let metrics = daemon.get("/metrics", &[]);
    assert!(!metrics.contains("CKR_SESSION_COUNT"), "{metrics}");
    let said = log(&token).matches("the token allows 6 sessions").count();
    assert_eq!(said, 1, "{}", log_tail(&token));
}
