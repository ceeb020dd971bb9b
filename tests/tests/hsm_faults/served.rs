//! Under a real `serve` process, end to end: its socket, its readiness and
//! its watchdog while SoftHSM's token directory is moved away and back.

use std::time::Duration;

use integration_tests::daemon::{body_of, status_of, ttd_token, Daemon};
use integration_tests::{verify_jwt, OutputExt};

#[test]
fn a_token_moved_away_gives_503_and_tokens_flow_again_when_it_is_back() {
    let token = ttd_token("rsa2048", "");
    let daemon = Daemon::start(&token);
    let pem = token
        .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", "pem"])
        .success()
        .stdout_text();
    daemon.client().token(Some("ttd"), Some("a")).unwrap();

    token.move_away();
    let not_ready = daemon.wait_status(&token, "/readyz", 503);
    assert!(
        body_of(&not_ready).contains("CKR_GENERAL_ERROR"),
        "{not_ready}"
    );
    let refused = daemon.get("/v1/token?issuer=ttd&app=a", &[]);
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(body_of(&refused).contains("hsm-unavailable"), "{refused}");
    assert_eq!(
        status_of(&daemon.get("/healthz", &[])),
        200,
        "alive all along"
    );

    token.bring_back();
    daemon.wait_status(&token, "/readyz", 200);
    let issued = daemon
        .client()
        .token(Some("ttd"), Some("b"))
        .expect("served again without a restart");
    verify_jwt(&issued.token, pem.as_bytes(), "ttd");
    let metrics = daemon.get("/metrics", &[]);
    assert!(
        metrics.contains("access_token_agent_hsm_errors_total{ckr=\"CKR_GENERAL_ERROR\"}"),
        "{metrics}"
    );
}

#[test]
fn watchdog_pings_stop_while_the_hsm_is_away_and_resume_after() {
    let token = ttd_token("rsa2048", "");
    let mut daemon = Daemon::spawn(&token, |mut command| {
        // 1 s: pings every 0.5 s.
        command.env("WATCHDOG_USEC", "1000000");
        command
    })
    .ready(&token);
    daemon.wait_for(&token, "WATCHDOG=1");
    daemon.wait_for(&token, "WATCHDOG=1");

    token.move_away();
    daemon.wait_status(&token, "/readyz", 503);
    // Drain what was sent before the HSM went (pings every 0.5 s); then
    // nothing for a while.
    let before = daemon.wait_watchdog_quiet(Duration::from_millis(700));
    let during = daemon.watchdog_pings(Duration::from_secs(2));
    assert_eq!(
        during, 0,
        "no pings while the HSM is away ({before} drained)"
    );

    token.bring_back();
    daemon.wait_status(&token, "/readyz", 200);
    assert!(
        daemon.watchdog_pings(Duration::from_secs(2)) > 0,
        "pings resume once the HSM answers"
    );
}
