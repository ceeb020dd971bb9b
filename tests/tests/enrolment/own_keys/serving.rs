//! A serving agent: planted objects stop only their issuer, and it serves
//! again once they are gone, without a restart.

use integration_tests::daemon::{
    body_of, exported_cert, issuer_granted_to_me, serve_config, status_of, Daemon,
};
use integration_tests::on_every_store;
use integration_tests::{rsa_self_signed, sha1_thumbprint, verify_jwt, TestToken};

use super::der_file;
use crate::generate;

/// What `GET /v1/token?issuer=ISSUER&app=a` answers: status and body.
fn ask(daemon: &Daemon, issuer: &str) -> (u16, String) {
    let answer = daemon.get(&format!("/v1/token?issuer={issuer}&app=a"), &[]);
    (status_of(&answer), body_of(&answer).to_owned())
}

on_every_store! {
    fn certificates_planted_without_login_stop_only_their_issuer_until_removed() {
        let token = TestToken::new();
        let kid = generate(&token, "ttd");
        generate(&token, "digdir");
        let issuers = format!(
            "{}\n{}",
            issuer_granted_to_me("ttd"),
            issuer_granted_to_me("digdir")
        );
        token.write_config(&serve_config(&token, &issuers));
        let ttd_der = token.write_file("ttd.der", exported_cert(&token, "der"));
        let ttd_pem = exported_cert(&token, "pem");

        // Two valid certificates of another key under ttd's label, one with
        // the real key's kid and one with its own: before, the agent would not
        // start at all, for any issuer.
        let other = rsa_self_signed(token.path(), "other", 2048, "/CN=ttd");
        let other_der = der_file(&token, &other.cert, "other.der");
        token.plant_object(&other_der, "cert", &kid, "ttd");
        token.plant_object(&other_der, "cert", &sha1_thumbprint(&other.cert), "ttd");

        let daemon = Daemon::start(&token);
        let (status, body) = ask(&daemon, "digdir");
        assert_eq!(status, 200, "{body}");
        let (status, body) = ask(&daemon, "ttd");
        assert_eq!(status, 503, "{body}");
        assert!(
            body.contains("2 certificate objects carry this label and kid"),
            "{body}"
        );
        let ready = daemon.get("/readyz", &[]);
        assert_eq!(status_of(&ready), 503, "{ready}");
        assert!(body_of(&ready).contains("issuer \\\"ttd\\\""), "{ready}");
        assert!(body_of(&ready).contains("2 certificate objects"), "{ready}");

        // Every certificate of the kid removed, the key's own written back
        // and ttd serves again.
        for _ in 0..2 {
            token.delete_object("cert", &kid);
        }
        token.plant_object(&ttd_der, "cert", &kid, "ttd");
        daemon.wait_status(&token, "/readyz", 200);
        let (status, body) = ask(&daemon, "ttd");
        assert_eq!(status, 200, "{body}");
        let issued: serde_json::Value = serde_json::from_str(&body).expect("JSON");
        assert_eq!(issued["kid"], kid.as_str());
        verify_jwt(issued["token"].as_str().expect("a token"), &ttd_pem, "ttd");
    }
}
