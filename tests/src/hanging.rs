//! An HSM that stops answering, through the slow module: a call blocks while
//! a file exists, as a network HSM's would on a dead link. What the
//! `hsm_faults` tests share: an agent whose calls hang on demand, and the
//! whole hang-and-resume story for one key type.

use std::path::PathBuf;
use std::time::Duration;

use crate::daemon::{body_of, log_tail, status_of, threads, ttd_token, Daemon};
use crate::http::{get, raw_exchange};
use crate::slow_hsm::{route_through_slow_hsm, SlowHsm};
use crate::TestToken;

/// Seconds a signature may take: short, so the tests wait little. Two
/// signing threads, and room for two more while signatures wait.
const SIGNING: &str = "[signing]\ntimeout_seconds = 2\nthreads = 2\nmax_sessions = 4\n";
/// Threads the pool may add beyond those it keeps.
const GROWTH: usize = 2;

/// An agent on a `key_type` token through the slow module, whose `calls`
/// hang while the returned file exists (it does not yet).
pub fn hanging_agent(key_type: &str, calls: &str, extra: &str) -> (TestToken, Daemon, PathBuf) {
    let token = ttd_token(key_type, &format!("[token]\ncache = false\n{SIGNING}"));
    route_through_slow_hsm(&token);
    let hang = token.path().join("hang");
    let slow = SlowHsm::new().hang_while(&hang, calls);
    let daemon = Daemon::spawn(&token, |command| {
        let mut command = slow.apply(command);
        if !extra.is_empty() {
            command.env("WATCHDOG_USEC", extra);
        }
        command
    })
    .ready(&token);
    (token, daemon, hang)
}

pub fn request_token(daemon: &Daemon) -> String {
    // Ten seconds: an answer that waited for the HSM would not come in time.
    raw_exchange(
        &daemon.socket,
        &get("/v1/token?issuer=ttd&app=a", &["Connection: close"]),
        Duration::from_secs(10),
    )
}

pub fn assert_unavailable(answer: &str) {
    assert_eq!(status_of(answer), 503, "{answer}");
    assert!(body_of(answer).contains("hsm-unavailable"), "{answer}");
}

/// A `key_type` agent whose C_Sign hangs: the first request, and forty more
/// while it hangs, get 503 at the deadline, `/readyz` says so, the threads
/// stay within the pool's bound, and tokens flow again once it answers.
pub fn hang_and_resume(key_type: &str) {
    let (token, daemon, hang) = hanging_agent(key_type, "C_Sign", "");
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("a token before the hang");
    let before = threads(daemon.pid());

    std::fs::write(&hang, "").unwrap();
    let first = request_token(&daemon);
    assert_unavailable(&first);
    assert!(
        body_of(&first).contains("signing.timeout_seconds"),
        "answered at the deadline: {first}"
    );
    let not_ready = daemon.wait_status(&token, "/readyz", 503);
    assert!(
        body_of(&not_ready).contains("has not answered a signature"),
        "{not_ready}"
    );
    // Many more requests while it hangs: each answered, and the threads
    // stay within what the pool may ever have, however many ask.
    for round in 1..=2 {
        let answers: Vec<String> = std::thread::scope(|scope| {
            let clients: Vec<_> = (0..20)
                .map(|_| scope.spawn(|| request_token(&daemon)))
                .collect();
            clients.into_iter().map(|c| c.join().unwrap()).collect()
        });
        answers.iter().for_each(|answer| assert_unavailable(answer));
        let during = threads(daemon.pid());
        assert!(
            during <= before + GROWTH,
            "threads: {before} before the hang, {during} after {} requests during it",
            20 * round
        );
    }
    assert_eq!(
        status_of(&daemon.get("/healthz", &[])),
        200,
        "alive all along"
    );

    std::fs::remove_file(&hang).unwrap();
    daemon.wait_status(&token, "/readyz", 200);
    daemon
        .client()
        .token(Some("ttd"), Some("b"))
        .unwrap_or_else(|e| panic!("served again without a restart: {e}\n{}", log_tail(&token)));
    assert!(
        threads(daemon.pid()) <= before + GROWTH,
        "no thread left over"
    );
    assert!(daemon.metric("access_token_agent_signing_timeouts_total") >= 1.0);
}
