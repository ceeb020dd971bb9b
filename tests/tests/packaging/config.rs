//! Configurations, PINs and tokens that cannot work: each refused with its
//! own exit code and a message naming what is wrong; `serve` refuses before
//! it listens, with the exit code systemd's RestartPreventExitStatus= and an
//! operator act on.

use std::os::unix::fs::PermissionsExt;

use integration_tests::daemon::{add_server_settings, log, ttd_token, Daemon};
use integration_tests::{write_private, OutputExt, TestToken};

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

/// Runs `serve`, checks its exit code and that nothing listens; its stderr.
fn serve_fails(token: &TestToken, code: i32) -> String {
    let out = token.agent(&["serve"]).exit(code);
    assert!(
        !token.path().join("agent.sock").exists(),
        "nothing listens after a failed start"
    );
    out.stderr_text()
}

/// A serve config: the socket in the token's directory, then `extra`.
fn with_socket(token: &TestToken, extra: &str) {
    let socket = token.path().join("agent.sock");
    token.write_config(&format!(
        "[server]\nsocket = {:?}\n{extra}",
        socket.to_str().unwrap()
    ));
}

#[test]
fn without_an_issuer_the_config_is_refused_with_78() {
    let token = TestToken::new();
    with_socket(&token, "");
    let stderr = serve_fails(&token, 78);
    assert!(stderr.contains("[[issuer]]"), "{stderr}");
}

#[test]
fn a_wrong_pin_is_tried_once_and_exits_77() {
    let token = TestToken::new();
    with_socket(&token, "[[issuer]]\nname = \"ttd\"\n");
    std::fs::remove_file(token.pin_file()).unwrap();
    write_private(&token.pin_file(), "000000");
    let stderr = serve_fails(&token, 77);
    assert!(stderr.contains("CKR_PIN_INCORRECT"), "{stderr}");
    assert!(stderr.contains("no retry"), "{stderr}");
}

#[test]
fn an_issuer_without_a_key_exits_69_and_says_how_to_enrol() {
    let token = TestToken::new();
    with_socket(&token, "[[issuer]]\nname = \"ttd\"\n");
    let stderr = serve_fails(&token, 69);
    assert!(stderr.contains("\"ttd\""), "{stderr}");
    assert!(stderr.contains("keys generate"), "{stderr}");
}

#[test]
fn a_missing_token_exits_69() {
    let token = TestToken::new();
    let config = format!(
        "{}\n[server]\nsocket = {:?}\n[[issuer]]\nname = \"ttd\"\n",
        token.hsm_section().replace(token.label(), "elsewhere"),
        token.path().join("agent.sock").to_str().unwrap()
    );
    std::fs::write(token.config_path(), config).unwrap();
    let stderr = serve_fails(&token, 69);
    assert!(stderr.contains("\"elsewhere\""), "{stderr}");
}

/// `[hsm] environment` reaches the module: with `SOFTHSM2_CONF` gone from
/// the agent's own environment, SoftHSM finds the token only through it.
#[test]
fn hsm_environment_is_set_before_the_module_loads() {
    let token = TestToken::new();
    let without_conf = |token: &TestToken, args: &[&str]| {
        let mut command = token.command(args);
        command.env_remove("SOFTHSM2_CONF");
        command.output().expect("run access-token-agent")
    };
    let message = without_conf(&token, &["keys", "list"])
        .exit(69)
        .stderr_text();
    assert!(message.contains("no token labelled"), "{message}");

    let conf = token.softhsm_conf().display().to_string();
    let environment = format!("environment = {{ SOFTHSM2_CONF = {conf:?} }}\n");
    let config = format!("{}{environment}", token.hsm_section());
    std::fs::write(token.config_path(), config).unwrap();
    let kid = without_conf(&token, &["keys", "generate", "--issuer", "ttd"]).success();
    let listed = token.keys_json();
    assert_eq!(listed[0]["kid"], kid.stdout_text().trim());
}

#[test]
fn environment_names_that_cannot_work_are_refused_with_the_reason() {
    let token = TestToken::new();
    for (entry, why) in [
        (r#""" = "x""#, "an empty name"),
        (r#""A=B" = "x""#, "cannot contain '='"),
        (r#""A\u0000B" = "x""#, "NUL byte"),
        (r#"LD_LIBRARY_PATH = "/opt/hsm""#, "unit's Environment="),
    ] {
        let config = format!("{}environment = {{ {entry} }}\n", token.hsm_section());
        std::fs::write(token.config_path(), config).unwrap();
        let message = refused(&token, 78);
        assert!(message.contains("`hsm.environment`"), "{entry}: {message}");
        assert!(message.contains(why), "{entry}: {message}");
    }
}
