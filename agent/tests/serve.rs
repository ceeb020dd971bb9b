//! `serve` refuses to start, with the exit code systemd's
//! RestartPreventExitStatus= and an operator act on, before it listens.

use integration_tests::{write_private, OutputExt, TestToken};

fn serve_fails(token: &TestToken, code: i32) -> String {
    let out = token.agent(&["serve"]).exit(code);
    assert!(
        !token.path().join("agent.sock").exists(),
        "nothing listens after a failed start"
    );
    out.stderr_text()
}

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
