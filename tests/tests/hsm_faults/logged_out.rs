//! A network HSM that restarts or fails over behind the same address
//! forgets the agent's login: every signature answers
//! CKR_USER_NOT_LOGGED_IN until the agent reconnects (re-initialise, log
//! in, keys, sessions). The slow module forgets the login when a file
//! appears. A reconnect the agent completes within the signing deadline
//! must cost no request: the signature that met the fault is signed again
//! once the link is back, and requests that arrive meanwhile wait for it.
//! Cache off, P-256, at 0 and 2 ms per signature.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Retry};
use integration_tests::daemon::{add_server_settings, log, ttd_token, Daemon, UNPACED};
use integration_tests::slow_hsm::{route_through_slow_hsm, SlowHsm};
use integration_tests::{wait_count, PATIENCE};

/// Four clients without retries ask for fresh tokens; the token forgets
/// the login twice under that load, and the agent reconnects each time.
/// Every answer must be a token.
fn a_lost_login_costs_no_request(delay: Duration) {
    let token = ttd_token("p256", "[token]\ncache = false\n");
    add_server_settings(&token, UNPACED);
    route_through_slow_hsm(&token);
    let logout_file = token.path().join("logout");
    let slow = SlowHsm::new().sign_delay(delay).logout_when(&logout_file);
    let daemon = Daemon::spawn(&token, |command| slow.apply(command)).ready(&token);

    let (stop, served) = (AtomicBool::new(false), AtomicUsize::new(0));
    let failures = Mutex::new(Vec::<String>::new());
    let mut longest = Duration::ZERO;
    std::thread::scope(|scope| {
        let mut clients = Vec::new();
        for index in 0..4 {
            let (stop, served, failures, daemon) = (&stop, &served, &failures, &daemon);
            clients.push(scope.spawn(move || {
                let client = Client::new(&daemon.socket).with_retry(Retry {
                    attempts: 1,
                    ..Retry::default()
                });
                let client = blocking::Client::wrap(client).unwrap();
                let mut longest = Duration::ZERO;
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let asked = Instant::now();
                    match client.token(Some("ttd"), Some(&format!("c{index}-{n}"))) {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            0
                        }
                    };
                    longest = longest.max(asked.elapsed());
                }
                longest
            }));
        }
        for logout in 1..=2 {
            wait_count(&served, 100 * logout, "tokens before the login is lost");
            std::fs::write(&logout_file, "").unwrap();
            let deadline = Instant::now() + PATIENCE;
            while logout_file.exists() {
                assert!(Instant::now() < deadline, "the module never saw the file");
                std::thread::sleep(Duration::from_millis(5));
            }
            // The next logout only once this one's reconnect is done.
            let reconnects = logout;
            while log(&token).matches("the HSM connection is back").count() < reconnects {
                assert!(Instant::now() < deadline, "the agent never reconnected");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let after = served.load(Ordering::Relaxed) + 100;
        wait_count(&served, after, "tokens after the reconnects");
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            longest = longest.max(client.join().unwrap());
        }
    });

    let failures = failures.into_inner().unwrap();
    let served = served.load(Ordering::Relaxed);
    eprintln!(
        "{served} tokens, {} failures, longest request {longest:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        served + failures.len(),
        failures.first()
    );
    let log = log(&token);
    let lost = log.matches("the HSM connection failed").count();
    let back = log.matches("the HSM connection is back").count();
    assert!(
        lost >= 2 && back >= 2,
        "the agent went through its reconnect twice: {lost} lost, {back} back"
    );
}

#[test]
fn a_lost_login_costs_no_request_at_0_ms() {
    a_lost_login_costs_no_request(Duration::ZERO);
}

#[test]
fn a_lost_login_costs_no_request_at_2_ms() {
    a_lost_login_costs_no_request(Duration::from_millis(2));
}
