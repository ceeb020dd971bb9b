//! Warnings ahead of expiry: `keys list`, `/readyz` (still ready) and
//! `/metrics` say so once the active certificate is within
//! `[certificate] expiry_warning_days` (30 by default) of its notAfter,
//! and stop once a newer certificate is active.

use integration_tests::daemon::{
    body_of, issuer_granted_to_me, serve_config, status_of, ttd_token, Daemon,
};
use integration_tests::token::row;
use integration_tests::{unix_now, OutputExt, TestToken};

use crate::{kid_of, reload};

/// `access_token_agent_certificate_expiring` of `ttd`'s `kid`.
fn expiring(daemon: &Daemon, kid: &str) -> f64 {
    daemon.metric(&format!(
        "access_token_agent_certificate_expiring{{issuer=\"ttd\",kid=\"{kid}\"}}"
    ))
}

/// `keys list` and its stderr's warnings.
fn list_warnings(token: &TestToken) -> String {
    token.agent(&["keys", "list"]).success().stderr_text()
}

#[test]
fn keys_list_warns_within_the_window_and_says_what_takes_over() {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let short = kid_of(token.agent(&["keys", "generate", "--issuer", "ttd", "--days", "10"]));
    let warned = list_warnings(&token);
    assert!(
        warned.contains(&format!(
            "warning: the active certificate of issuer \"ttd\" (kid {short}) expires at"
        )),
        "{warned}"
    );
    assert!(warned.contains("keys renew --issuer ttd"), "{warned}");
    assert_eq!(row(&token.keys_json(), &short)["expiring"], true);

    token.write_config("[[issuer]]\nname = \"ttd\"\n[certificate]\nexpiry_warning_days = 5\n");
    assert_eq!(list_warnings(&token), "", "outside a 5-day window");
    assert_eq!(row(&token.keys_json(), &short)["expiring"], false);

    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let at = unix_now() + 3_600;
    let next = kid_of(token.agent(&[
        "keys",
        "generate",
        "--issuer",
        "ttd",
        "--not-before",
        &at.to_string(),
    ]));
    let warned = list_warnings(&token);
    assert!(
        warned.contains(&format!("kid {next} takes over by then")),
        "{warned}"
    );

    kid_of(token.agent(&[
        "keys", "renew", "--issuer", "ttd", "--kid", &short, "--days", "90",
    ]));
    assert_eq!(
        list_warnings(&token),
        "",
        "the renewed certificate is active"
    );
}

#[test]
fn a_bad_warning_window_is_refused_naming_the_key() {
    let token = TestToken::new();
    token.write_config("[certificate]\nexpiry_warning_days = 0\n");
    let out = token.agent(&["keys", "list"]).exit(78);
    assert!(
        out.stderr_text()
            .contains("`certificate.expiry_warning_days` = 0"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn readyz_stays_ready_and_metrics_flag_the_expiring_certificate() {
    let token = ttd_token("p256", "");
    let long = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    let mut daemon = Daemon::start(&token);
    let ready = daemon.get("/readyz", &[]);
    assert_eq!((status_of(&ready), body_of(&ready)), (200, "ready\n"));
    assert_eq!(expiring(&daemon, &long), 0.0);
    assert_eq!(
        daemon.metric("access_token_agent_certificate_expiry_warning_seconds"),
        30.0 * 86_400.0
    );

    // A shorter validity that takes over: the agent now signs with a
    // certificate that expires within the window.
    let short = kid_of(token.agent(&["keys", "renew", "--issuer", "ttd", "--days", "20"]));
    reload(&mut daemon, &token);
    let ready = daemon.get("/readyz", &[]);
    assert_eq!(status_of(&ready), 200, "still ready: {ready}");
    let body = body_of(&ready);
    assert!(
        body.starts_with("ready\nwarning: the active certificate of issuer \"ttd\""),
        "{body}"
    );
    assert!(
        body.contains(&format!("(kid {short}) expires at")),
        "{body}"
    );
    assert!(
        body.contains(" days; renew it (access-token-agent keys renew"),
        "{body}"
    );
    assert_eq!(expiring(&daemon, &short), 1.0);

    // A window of 10 days, by reload: no longer expiring.
    let ttd = issuer_granted_to_me("ttd");
    let window = "[certificate]\nexpiry_warning_days = 10\n";
    token.write_config(&serve_config(&token, &format!("{ttd}\n{window}")));
    reload(&mut daemon, &token);
    assert_eq!(body_of(&daemon.get("/readyz", &[])), "ready\n");
    assert_eq!(expiring(&daemon, &short), 0.0);
}
