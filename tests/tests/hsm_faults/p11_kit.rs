//! The HSM across a process boundary going away: the `p11-kit server` the
//! agent reaches the token through is killed, with every `p11-kit remote`
//! it forked, and started again.

use std::time::{Duration, Instant};

use integration_tests::daemon::{body_of, issuer_granted_to_me, serve_config, status_of, Daemon};
use integration_tests::on_every_store;
use integration_tests::p11kit::P11KitServer;
use integration_tests::{verify_jwt, OutputExt, TestToken};

/// A ttd key on a token served by a p11-kit server, and an agent serving it
/// through the server, without the cache, so that every request signs.
fn served_through_p11_kit() -> (TestToken, P11KitServer, Daemon, Vec<u8>) {
    let token = TestToken::with_ttd_key("rsa2048");
    let pem = token
        .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", "pem"])
        .success()
        .stdout;
    let server = P11KitServer::start(&token);
    let config = format!("{}\n[token]\ncache = false\n", issuer_granted_to_me("ttd"));
    server.write_config(&token, &serve_config(&token, &config));
    let daemon = Daemon::spawn(&token, |mut command| {
        P11KitServer::only_through(&token, &mut command);
        command
    })
    .ready(&token);
    (token, server, daemon, pem)
}

on_every_store! {
    fn a_killed_p11_kit_server_gives_503_at_once_and_tokens_again_when_it_is_back() {
        let (token, mut server, daemon, pem) = served_through_p11_kit();
        let issued = daemon.client().token(Some("ttd"), Some("a")).unwrap();
        verify_jwt(&issued.token, &pem, "ttd");
        let pid = daemon.pid();

        server.kill();
        let asked = Instant::now();
        let refused = daemon.get("/v1/token?issuer=ttd&app=a", &[]);
        let refused_after = asked.elapsed();
        assert_eq!(status_of(&refused), 503, "{refused}");
        assert!(
            refused_after < Duration::from_secs(2),
            "refused at once, not after {refused_after:?}"
        );
        assert!(body_of(&refused).contains("hsm-unavailable"), "{refused}");
        let ready = daemon.wait_status(&token, "/readyz", 503);
        assert!(
            body_of(&ready).contains("the HSM connection failed") || body_of(&ready).contains("CKR_"),
            "says why: {ready}"
        );

        server.restart();
        let back = Instant::now();
        daemon.wait_status(&token, "/readyz", 200);
        eprintln!(
            "p11-kit server killed: 503 after {refused_after:?}; back: /readyz 200 after {:?}",
            back.elapsed()
        );
        let issued = daemon
            .client()
            .token(Some("ttd"), Some("b"))
            .expect("served again");
        verify_jwt(&issued.token, &pem, "ttd");
        assert_eq!(daemon.pid(), pid, "the same agent, not restarted");
    }
}

/// The server stopped (SIGSTOP): the HSM hangs. Requests must get 503
/// within the signing deadline (`signing.timeout_seconds`, 10 s by default;
/// the request gives up after 20) and `/readyz` say that the HSM does not
/// answer, and service resume after SIGCONT.
#[test]
fn a_stopped_p11_kit_server_gives_503_within_the_signing_deadline() {
    let (token, server, daemon, pem) = served_through_p11_kit();
    daemon.client().token(Some("ttd"), Some("a")).unwrap();

    server.signal_group(libc::SIGSTOP);
    let refused = daemon.raw(
        &integration_tests::http::get("/v1/token?issuer=ttd&app=b", &["Connection: close"]),
        Duration::from_secs(20),
    );
    assert_eq!(status_of(&refused), 503, "{refused}");
    assert!(
        body_of(&refused).contains("signing.timeout_seconds"),
        "{refused}"
    );
    let ready = daemon.wait_status(&token, "/readyz", 503);
    assert!(body_of(&ready).contains("HSM has not answered"), "{ready}");

    server.signal_group(libc::SIGCONT);
    daemon.wait_status(&token, "/readyz", 200);
    let issued = daemon.client().token(Some("ttd"), Some("c")).unwrap();
    verify_jwt(&issued.token, &pem, "ttd");
}
