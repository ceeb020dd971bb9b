//! Under the library's signing back in process: the token goes away and
//! comes back, is deleted and re-created, or comes back with a PIN the
//! agent does not have. Tokens flow again without a restart, and a refused
//! PIN is tried exactly once.

use std::time::Duration;

use access_token_agent::issue::{IssueError, TokenSource};
use integration_tests::signer::{exported_pem, move_token_away, serial, token_with_key, Running};
use integration_tests::{
    rsa_self_signed, sha1_thumbprint, verify_jwt, write_private, OutputExt, Pkcs12Kind, TestToken,
    PATIENCE, PIN, SO_PIN,
};

#[test]
fn a_token_moved_away_and_back_serves_again_without_a_restart() {
    let _serial = serial();
    let token = token_with_key("rsa2048", "");
    let running = Running::start(&token).unwrap();
    let pem = exported_pem(&token, "ttd");
    running.issue("ttd", "cached").unwrap();

    let restore = move_token_away(&token);
    // Nothing signs meanwhile: the supervisor's probe notices on its own.
    let reason = running.wait_readiness(false).unwrap();
    assert!(reason.contains("CKR_GENERAL_ERROR"), "{reason}");
    match running.issue("ttd", "cached") {
        Err(IssueError::Unavailable(why)) => assert!(why.contains("reconnecting"), "{why}"),
        other => panic!("a lost HSM fails fast, even for a cached token: {other:?}"),
    }
    // Reconnection attempts fail while the token is away, and say so.
    let reason = wait_for_reason(&running, "attempt(s) failed");
    assert!(reason.contains("no token labelled"), "{reason}");

    restore();
    assert_eq!(running.wait_readiness(true), None);
    let issued = running.issue("ttd", "after").unwrap();
    verify_jwt(&issued.token, pem.as_bytes(), "ttd");
    assert!(
        running.metric("access_token_agent_hsm_errors_total{ckr=\"CKR_GENERAL_ERROR\"}") >= 1.0
    );
}

#[test]
fn a_deleted_and_recreated_token_is_found_again_by_its_label() {
    let _serial = serial();
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let files = rsa_self_signed(token.path(), "ttd", 2048, "/CN=ttd");
    let pfx = files.pkcs12("", Pkcs12Kind::Modern);
    let import = || {
        token.import("ttd", &pfx, None).success();
    };
    import();
    token.write_config("[[issuer]]\nname = \"ttd\"\n[token]\ncache = false\n");
    let running = Running::start(&token).unwrap();
    running.issue("ttd", "a").unwrap();

    delete_token(&token);
    // Without the cache the next request signs, fails, and reports the fault.
    assert!(matches!(
        running.issue("ttd", "a"),
        Err(IssueError::Unavailable(_))
    ));
    let reason = running.wait_readiness(false).unwrap();
    assert!(reason.contains("CKR_OBJECT_HANDLE_INVALID"), "{reason}");

    init_token(&token, PIN);
    import();
    assert_eq!(running.wait_readiness(true), None);
    let issued = running.issue("ttd", "b").unwrap();
    assert_eq!(&*issued.kid, sha1_thumbprint(&files.cert));
    let pem = std::fs::read(&files.cert).unwrap();
    verify_jwt(&issued.token, &pem, "ttd");
}

#[test]
fn a_pin_refused_on_login_again_is_not_retried_until_a_reload() {
    let _serial = serial();
    let token = token_with_key("rsa2048", "");
    let running = Running::start(&token).unwrap();
    running.issue("ttd", "a").unwrap();

    // The token comes back with a user PIN the agent's PIN file does not hold.
    delete_token(&token);
    let changed_pin = "5550123";
    init_token(&token, changed_pin);

    let reason = wait_for_reason(&running, "CKR_PIN_INCORRECT");
    assert!(reason.contains("reload"), "says how to recover: {reason}");
    // Backoff would have retried several times by now; a refused PIN is not.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(
        running.metric("access_token_agent_hsm_errors_total{ckr=\"CKR_PIN_INCORRECT\"}"),
        1.0
    );
    assert!(matches!(
        running.issue("ttd", "a"),
        Err(IssueError::Unavailable(why)) if why.contains("PIN")
    ));

    // The operator fixes the PIN file, enrols a key, and reloads: one new
    // login, and tokens flow again.
    std::fs::remove_file(token.pin_file()).unwrap();
    write_private(&token.pin_file(), changed_pin);
    token.generate("ttd", None).success();
    running.reload(&token).unwrap();
    assert_eq!(running.signer.readiness(), Ok(()));
    let issued = running.issue("ttd", "b").unwrap();
    verify_jwt(&issued.token, exported_pem(&token, "ttd").as_bytes(), "ttd");
}

/// Polls readiness until its reason mentions `needle`.
fn wait_for_reason(running: &Running, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Err(reason) = running.signer.readiness() {
            if reason.contains(needle) {
                return reason;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "readiness never mentioned {needle}: {:?}",
            running.signer.readiness()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn softhsm_util(token: &TestToken, args: &[&str]) {
    let out = token
        .with_module_env(&mut std::process::Command::new("softhsm2-util"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "softhsm2-util {args:?}: {}",
        out.stderr_text()
    );
}

fn delete_token(token: &TestToken) {
    softhsm_util(token, &["--delete-token", "--token", token.label()]);
}

fn init_token(token: &TestToken, pin: &str) {
    softhsm_util(
        token,
        &[
            "--init-token",
            "--free",
            "--label",
            token.label(),
            "--so-pin",
            SO_PIN,
            "--pin",
            pin,
        ],
    );
}
