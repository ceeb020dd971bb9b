//! An HSM that stops answering, through the slow module: a call blocks while
//! a file exists, as a network HSM's would on a dead link. Requests get 503
//! at their deadline, `/readyz` and the watchdog say the HSM does not
//! answer, the agent's threads stay as they were, and service resumes by
//! itself once the HSM answers again.

use std::time::Duration;

use integration_tests::daemon::{body_of, log_tail};
use integration_tests::hanging::{
    assert_unavailable, hang_and_resume, hanging_agent, request_token,
};

#[test]
fn a_signature_that_hangs_gets_503_at_the_deadline_and_service_resumes() {
    hang_and_resume("rsa2048");
}

#[test]
fn a_p256_signature_that_hangs_gets_503_at_the_deadline_and_service_resumes() {
    hang_and_resume("p256");
}

/// The supervisor's probe (C_GetTokenInfo) hangs: the agent says so on
/// `/readyz`, the watchdog stops, SIGTERM still ends it, and before that,
/// once the probe answers, everything resumes.
#[test]
fn a_probe_that_hangs_stops_readiness_and_the_watchdog_until_it_answers() {
    let (token, mut daemon, hang) = hanging_agent("rsa2048", "C_GetTokenInfo", "1000000");
    daemon.wait_for(&token, "WATCHDOG=1");

    std::fs::write(&hang, "").unwrap();
    let not_ready = daemon.wait_status(&token, "/readyz", 503);
    assert!(
        body_of(&not_ready).contains("C_GetTokenInfo"),
        "{not_ready}"
    );
    assert_unavailable(&request_token(&daemon));
    // Drain what was sent before it hung (pings every 0.5 s); then nothing
    // for a while.
    daemon.wait_watchdog_quiet(Duration::from_millis(700));
    assert_eq!(
        daemon.watchdog_pings(Duration::from_secs(2)),
        0,
        "no pings while it hangs"
    );

    std::fs::remove_file(&hang).unwrap();
    daemon.wait_status(&token, "/readyz", 200);
    assert!(
        daemon.watchdog_pings(Duration::from_secs(2)) > 0,
        "pings resume"
    );
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("a token again");

    std::fs::write(&hang, "").unwrap();
    daemon.wait_status(&token, "/readyz", 503);
    daemon.signal(libc::SIGTERM);
    let status = daemon.wait_exit();
    assert!(status.success(), "{status}\n{}", log_tail(&token));
}
