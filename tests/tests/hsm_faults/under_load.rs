//! Under load: four clients without retries ask all along while the HSM
//! goes away and comes back. They get 503 hsm-unavailable meanwhile, tokens
//! again after, and never a wrong one; the agent is not restarted.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use access_token_client::{blocking, Client, Error, Retry};
use integration_tests::daemon::{exported_cert, log_tail, ttd_token, Daemon};
use integration_tests::{verify_all, wait_count};

#[test]
fn hsm_away_and_back_under_load_gives_503_then_tokens_and_never_a_wrong_one() {
    hsm_away_and_back_under_load("rsa2048");
}

#[test]
fn hsm_away_and_back_under_load_with_p256() {
    hsm_away_and_back_under_load("p256");
}

fn hsm_away_and_back_under_load(key_type: &str) {
    // No cache: every request reaches the HSM.
    let token = ttd_token(key_type, "[token]\ncache = false\n");
    let mut daemon = Daemon::start(&token);
    let pid = daemon.pid();
    let pem = String::from_utf8(exported_cert(&token, "pem")).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let tokens = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let unavailable = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let socket = daemon.socket.clone();
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let (stop, tokens, served, unavailable, failures) = (
                stop.clone(),
                tokens.clone(),
                served.clone(),
                unavailable.clone(),
                failures.clone(),
            );
            let socket = socket.clone();
            std::thread::spawn(move || {
                // No retries: every answer is seen as the agent gave it.
                let client = Client::new(&socket).with_retry(Retry {
                    attempts: 1,
                    ..Retry::default()
                });
                let client = blocking::Client::wrap(client).unwrap();
                let app = format!("app{t}");
                while !stop.load(Ordering::Relaxed) {
                    match client.token(Some("ttd"), Some(&app)) {
                        Ok(issued) => {
                            tokens.lock().unwrap().push(issued.token);
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(Error::Unavailable { problem, .. })
                            if problem.kind.ends_with(":hsm-unavailable") =>
                        {
                            unavailable.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                        Err(e) => failures.lock().unwrap().push(e.to_string()),
                    }
                }
            })
        })
        .collect();

    wait_count(&served, 200, "tokens before the HSM goes");
    token.move_away();
    let away = Instant::now();
    wait_count(&unavailable, 50, "503 answers while the HSM is away");
    daemon.wait_status(&token, "/readyz", 503);
    // The clients go on meeting the absent HSM for a second on purpose.
    std::thread::sleep(Duration::from_secs(1));
    let served_while_away = served.load(Ordering::Relaxed);
    token.bring_back();
    let away_for = away.elapsed();
    let back = Instant::now();
    daemon.wait_status(&token, "/readyz", 200);
    wait_count(
        &served,
        served_while_away + 200,
        "tokens once the HSM is back",
    );
    let recovered_in = back.elapsed();
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.join().unwrap();
    }

    let failures = failures.lock().unwrap();
    assert!(
        failures.is_empty(),
        "{} failures, e.g. {:?}",
        failures.len(),
        failures.first()
    );
    let tokens = tokens.lock().unwrap();
    let distinct = verify_all(&tokens, pem.as_bytes(), "ttd");
    eprintln!(
        "{} tokens ({distinct} distinct, all verified), {} answers 503 hsm-unavailable; HSM away {:.1} s, ready again {:.1} s after it was back",
        tokens.len(),
        unavailable.load(Ordering::Relaxed),
        away_for.as_secs_f64(),
        recovered_in.as_secs_f64()
    );
    assert!(
        daemon.process.try_wait().unwrap().is_none(),
        "{}",
        log_tail(&token)
    );
    assert_eq!(daemon.pid(), pid, "no restart");
}
