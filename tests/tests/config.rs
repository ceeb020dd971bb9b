//! Configurations, PINs and tokens that cannot work: each refused with its
//! own exit code and a message naming what is wrong.

use std::os::unix::fs::PermissionsExt;

use integration_tests::daemon::{add_server_settings, log, ttd_token, Daemon};
use integration_tests::{OutputExt, TestToken};

/// Runs `keys list` and returns stderr after checking the exit code.
fn refused(token: &TestToken, code: i32) -> String {
    token.agent(&["keys", "list"]).exit(code).stderr_text()
}

#[test]
fn unknown_key_is_named() {
    let token = TestToken::new();
    token.write_config("[token]\nlifetime = 300\n");
    let message = refused(&token, 78);
    assert!(message.contains("unknown field `lifetime`"), "{message}");
    assert!(message.contains("agent.toml"), "{message}");
}

#[test]
fn zero_lifetime_is_named() {
    let token = TestToken::new();
    token.write_config("[token]\nlifetime_seconds = 0\n");
    let message = refused(&token, 78);
    assert!(
        message.contains("`token.lifetime_seconds` = 0"),
        "{message}"
    );
}

#[test]
fn missing_pin_file_is_named() {
    let token = TestToken::new();
    std::fs::remove_file(token.pin_file()).unwrap();
    let message = refused(&token, 78);
    assert!(message.contains("`hsm.pin_file`"), "{message}");
    assert!(
        message.contains(token.pin_file().to_str().unwrap()),
        "{message}"
    );
}

#[test]
fn pin_file_readable_by_others_is_refused() {
    let token = TestToken::new();
    std::fs::set_permissions(token.pin_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    let message = refused(&token, 78);
    assert!(message.contains("0644"), "{message}");
    assert!(message.contains("chmod 600"), "{message}");
}

#[test]
fn wrong_pin_exits_77_after_one_attempt() {
    let token = TestToken::new();
    std::fs::write(token.pin_file(), "0000\n").unwrap();
    let message = refused(&token, 77);
    assert!(message.contains("refused the PIN"), "{message}");
    assert!(message.contains("CKR_PIN_INCORRECT"), "{message}");
    // The right PIN still works: the failed attempt did not lock the token.
    std::fs::write(token.pin_file(), format!("{}\n", integration_tests::PIN)).unwrap();
    token.agent(&["keys", "list"]).success();
}

#[test]
fn missing_token_label_exits_69_naming_it() {
    let token = TestToken::new();
    let section = token.hsm_section().replace(
        "token_label = \"access-tokens\"",
        "token_label = \"no-such-token\"",
    );
    std::fs::write(token.config_path(), section).unwrap();
    let message = refused(&token, 69);
    assert!(message.contains("\"no-such-token\""), "{message}");
    assert!(
        message.contains("\"access-tokens\""),
        "tokens seen: {message}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let token = TestToken::new();
    std::fs::remove_file(token.config_path()).unwrap();
    let message = refused(&token, 78);
    assert!(message.contains("agent.toml"), "{message}");
    assert!(message.contains("--config"), "{message}");
}

#[test]
fn lifetime_beyond_a_day_is_named() {
    // i64::MAX once passed validation and overflowed `iat + lifetime` in mint.
    let token = TestToken::new();
    token.write_config("[token]\nlifetime_seconds = 9223372036854775807\n");
    let message = refused(&token, 78);
    assert!(message.contains("`token.lifetime_seconds`"), "{message}");
    assert!(message.contains("86400"), "{message}");
}

#[test]
fn serve_refuses_an_unknown_socket_group_as_a_config_error() {
    let token = ttd_token("rsa2048", "");
    add_server_settings(&token, "socket_group = \"no-such-group-xq\"");
    let mut daemon = Daemon::spawn(&token, |command| command);
    // 78 tells systemd not to restart (RestartPreventExitStatus); 1 would.
    assert_eq!(daemon.wait_exit().code(), Some(78), "{}", log(&token));
    let message = log(&token);
    assert!(
        message.contains("`server.socket_group` = \"no-such-group-xq\""),
        "{message}"
    );
    assert!(!daemon.socket.exists());
}
