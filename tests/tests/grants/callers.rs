//! Grants judged by the kernel's word on the caller: another uid, a group,
//! an executable, and a single grant that lets the caller leave the
//! parameters out.

use integration_tests::daemon::{
    audit_lines, client_as, client_binary, open_socket_to_others, serve_config, ttd_token, Daemon,
};
use integration_tests::users::NOBODY;
use integration_tests::{OutputExt, TestToken};

use integration_tests::jwt::claims;

#[test]
fn another_uid_is_refused_and_audited_while_the_granted_uid_is_served() {
    let token = ttd_token("rsa2048", "");
    open_socket_to_others(&token);
    let daemon = Daemon::start(&token);

    let refused = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    );
    assert_eq!(refused.code(), 3, "not granted\n{}", refused.stderr_text());
    assert!(refused.stdout.is_empty(), "no token for a refused caller");
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("the granted uid is served");

    let audit = audit_lines(&token);
    let refusal = audit
        .iter()
        .find(|line| line.to_string().contains("65534"))
        .unwrap_or_else(|| panic!("an audit line for uid 65534 in {audit:?}"));
    assert!(refusal.to_string().contains("refused"), "{refusal}");
    let issued_lines = audit
        .iter()
        .filter(|line| line.to_string().contains("issued"))
        .count();
    assert_eq!(issued_lines, 1, "{audit:?}");
    for line in &audit {
        assert!(
            !line.to_string().contains("eyJ"),
            "a token in the audit log: {line}"
        );
    }
}

#[test]
fn a_group_grant_serves_members_of_the_group() {
    let token = ttd_token(
        "rsa2048",
        "[[grant]]\ngroup = \"nogroup\"\nissuer = \"ttd\"\napps = [\"group-app\"]\n",
    );
    open_socket_to_others(&token);
    let daemon = Daemon::start(&token);

    let served = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "group-app"],
    );
    let served = served.success();
    assert_eq!(
        claims(served.stdout_text().trim())["urn:altinn:app"],
        "group-app"
    );
    let other_app = client_as(
        NOBODY,
        NOBODY,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "other"],
    );
    assert_eq!(other_app.code(), 3, "{}", other_app.stderr_text());
}

#[test]
fn an_exe_grant_serves_that_program_only() {
    let token = TestToken::with_ttd_key("rsa2048");
    let client = client_binary();
    let me = unsafe { (libc::getuid(), libc::getgid()) };
    token.write_config(&serve_config(
        &token,
        &format!(
            "[[issuer]]\nname = \"ttd\"\n\n[[grant]]\nuid = {}\nexe = {:?}\nissuer = \"ttd\"\napps = [\"*\"]\n",
            me.0,
            client.display().to_string()
        ),
    ));
    let daemon = Daemon::start(&token);
    client_as(
        me.0,
        me.1,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    )
    .success();
    // The same uid through another program (this test binary) is refused.
    let error = daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect_err("refused");
    assert!(
        matches!(error, access_token_client::Error::NotGranted(_)),
        "{error}"
    );
}

#[test]
fn a_single_grant_lets_the_caller_omit_issuer_and_app() {
    let token = TestToken::with_ttd_key("rsa2048");
    let me = unsafe { libc::getuid() };
    token.write_config(&serve_config(
        &token,
        &format!("[[issuer]]\nname = \"ttd\"\n\n[[grant]]\nuid = {me}\nissuer = \"ttd\"\napps = [\"only-app\"]\n"),
    ));
    let daemon = Daemon::start(&token);
    let issued = daemon
        .client()
        .token(None, None)
        .expect("the one granted token");
    assert_eq!(issued.issuer, "ttd");
    assert_eq!(claims(&issued.token)["urn:altinn:app"], "only-app");
}
