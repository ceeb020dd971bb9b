//! `--not-before`: a key or certificate enrolled ahead of time takes over
//! at the instant chosen, in `mint --now` on either side of it and in a
//! serving agent at that second; an import, whose certificate brings its
//! own not-before, refuses the flag and says what to do.

use std::time::Duration;

use integration_tests::daemon::{log, ttd_token, Daemon};
use integration_tests::token::row;
use integration_tests::{
    p256_self_signed, unix_now, utc_date, verify_jwt, OutputExt, Pkcs12Kind, TestToken,
};

use crate::{assert_header_names, export, kid_of, mint, openssl_x509};

/// `keys generate` or `keys renew` for `ttd` with `--not-before AT`.
fn ahead(token: &TestToken, command: &str, at: &str) -> String {
    let out = token
        .agent(&["keys", command, "--issuer", "ttd", "--not-before", at])
        .success();
    let said = out.stderr_text();
    assert!(
        said.contains("it becomes the issuer's active key at"),
        "{said}"
    );
    out.stdout_text().trim().to_owned()
}

#[test]
fn a_key_generated_ahead_takes_over_at_its_not_before() {
    let token = TestToken::with_ttd_key("rsa2048");
    let old = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    let at = unix_now() + 3_600;
    let new = ahead(&token, "generate", &at.to_string());
    let rows = token.keys_json();
    assert_eq!(row(&rows, &old)["active"], true);
    assert_eq!(row(&rows, &new)["active"], false);

    let (before, after) = (mint(&token, Some(at - 1)), mint(&token, Some(at)));
    assert_header_names(&before, &old);
    assert_header_names(&after, &new);
    verify_jwt(
        &before,
        &std::fs::read(export(&token, &old)).unwrap(),
        "ttd",
    );
    verify_jwt(&after, &std::fs::read(export(&token, &new)).unwrap(), "ttd");
    let new_pem = export(&token, &new);
    let dates = openssl_x509(&token, &new_pem, "-dates");
    let openssl_time = |unix| utc_date(unix, "%b %e %H:%M:%S %Y GMT");
    assert!(
        dates.contains(&format!("notBefore={}", openssl_time(at))),
        "{dates}"
    );
    let until = openssl_time(at + 365 * 86_400);
    assert!(
        dates.contains(&format!("notAfter={until}")),
        "--days counts from it: {dates}"
    );
}

#[test]
fn a_renewal_ahead_written_as_rfc3339_takes_over_then() {
    let token = TestToken::with_ttd_key("p256");
    let old = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    // An hour away, written in RFC 3339 as the wall time two hours east.
    let at = unix_now() + 3_600;
    let text = utc_date(at + 2 * 3_600, "%Y-%m-%dT%H:%M:%S+02:00");
    let renewed = ahead(&token, "renew", &text);
    assert_header_names(&mint(&token, Some(at - 1)), &old);
    let after = mint(&token, Some(at));
    assert_header_names(&after, &renewed);
    verify_jwt(&after, &std::fs::read(export(&token, &old)).unwrap(), "ttd");
}

#[test]
fn a_serving_agent_switches_at_the_second_chosen() {
    let token = ttd_token("rsa2048", "");
    let old = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    let at = unix_now() + 6;
    let new = ahead(&token, "generate", &at.to_string());
    let daemon = Daemon::start(&token);
    let client = daemon.client();
    let mut switched = None;
    while switched.is_none() {
        let asked = unix_now();
        let issued = client.token(Some("ttd"), Some("a")).unwrap();
        if issued.kid == new {
            assert!(asked >= at - 1, "the new key signed before its not-before");
            switched = Some(unix_now());
        } else {
            assert_eq!(issued.kid, old);
            assert!(
                asked <= at + 3,
                "still the old key 3 s after the switch:\n{}",
                log(&token)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let switched = switched.unwrap();
    assert!(switched >= at, "{switched} < {at}");
}

#[test]
fn an_import_refuses_a_not_before_and_says_what_its_certificate_says() {
    let token = TestToken::new();
    let files = p256_self_signed(token.path(), "org", "/CN=ttd");
    let pfx = files.pkcs12("", Pkcs12Kind::Modern);
    let out = token
        .import_command("ttd", &pfx, None)
        .args(["--not-before", "2030-01-01T00:00:00Z"])
        .output()
        .unwrap()
        .exit(2);
    let said = out.stderr_text();
    assert!(said.contains("--not-before 2030-01-01T00:00:00Z"), "{said}");
    assert!(
        said.contains("takes over as soon as it is imported"),
        "{said}"
    );
    assert!(said.contains("[[issuer]] kid"), "{said}");
    assert_eq!(token.list_objects().trim(), "", "nothing was imported");
    let out = token
        .agent(&[
            "keys",
            "generate",
            "--issuer",
            "ttd",
            "--not-before",
            "soon",
        ])
        .exit(2);
    assert!(
        out.stderr_text().contains("RFC 3339"),
        "{}",
        out.stderr_text()
    );
    let kid = kid_of(token.generate("ttd", None));
    assert!(!kid.is_empty());
}
