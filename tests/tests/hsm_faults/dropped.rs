//! A network HSM drops its sessions in normal life: an appliance restart,
//! a fail-over, an idle timeout. The slow module drops every open session
//! when a file appears (C_SignInit and C_Sign on them answer
//! CKR_SESSION_HANDLE_INVALID; new sessions work). A drop the agent
//! recovers from within the signing deadline must cost no request: with
//! the cache on and off, with signatures at 0 and 2 ms.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use access_token_client::{blocking, Client, Retry};
use integration_tests::daemon::{add_server_settings, log, ttd_token, Daemon, UNPACED};
use integration_tests::slow_hsm::{route_through_slow_hsm, SlowHsm};
use integration_tests::{wait_count, PATIENCE};

/// Four clients without retries ask for fresh tokens (new app names, or
/// the cache off); the sessions are dropped twice under that load. Every
/// answer must be a token.
fn a_drop_costs_no_request(cache: bool, delay: Duration) {
    let token = ttd_token("p256", &format!("[token]\ncache = {cache}\n"));
    add_server_settings(&token, UNPACED);
    route_through_slow_hsm(&token);
    let drop_file = token.path().join("drop-sessions");
    let slow = SlowHsm::new().sign_delay(delay).drop_when(&drop_file);
    let daemon = Daemon::spawn(&token, |command| slow.apply(command)).ready(&token);

    let (stop, served) = (AtomicBool::new(false), AtomicUsize::new(0));
    let failures = Mutex::new(Vec::<String>::new());
    std::thread::scope(|scope| {
        for index in 0..4 {
            let (stop, served, failures, daemon) = (&stop, &served, &failures, &daemon);
            scope.spawn(move || {
                let client = Client::new(&daemon.socket).with_retry(Retry {
                    attempts: 1,
                    ..Retry::default()
                });
                let client = blocking::Client::wrap(client).unwrap();
                for n in 0.. {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match client.token(Some("ttd"), Some(&format!("c{index}-{n}"))) {
                        Ok(_) => served.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            failures.lock().unwrap().push(e.to_string());
                            0
                        }
                    };
                }
            });
        }
        for drop in 1..=2 {
            wait_count(&served, 100 * drop, "tokens before the sessions drop");
            std::fs::write(&drop_file, "").unwrap();
            let deadline = std::time::Instant::now() + PATIENCE;
            while drop_file.exists() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the module never dropped them"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let after = served.load(Ordering::Relaxed) + 100;
        wait_count(&served, after, "tokens after the drops");
        stop.store(true, Ordering::Relaxed);
    });

    let failures = failures.into_inner().unwrap();
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        served.load(Ordering::Relaxed) + failures.len(),
        failures.first()
    );
    let renewed = log(&token)
        .matches("the HSM dropped a signing session")
        .count();
    assert!(
        renewed >= 2,
        "the drops reached the agent: {renewed} sessions renewed"
    );
}

#[test]
fn dropped_sessions_cost_no_request_cache_off_at_0_ms() {
    a_drop_costs_no_request(false, Duration::ZERO);
}

#[test]
fn dropped_sessions_cost_no_request_cache_off_at_2_ms() {
    a_drop_costs_no_request(false, Duration::from_millis(2));
}

#[test]
fn dropped_sessions_cost_no_request_cache_on_at_0_ms() {
    a_drop_costs_no_request(true, Duration::ZERO);
}

#[test]
fn dropped_sessions_cost_no_request_cache_on_at_2_ms() {
    a_drop_costs_no_request(true, Duration::from_millis(2));
}
