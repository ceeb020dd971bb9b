//! The harness itself: each test token is private and usable by both the
//! agent and independent tools.

use integration_tests::{OutputExt, TestToken};

#[test]
fn two_tokens_do_not_see_each_other() {
    let first = TestToken::new();
    let second = TestToken::with_label("other");
    assert_ne!(first.path(), second.path());
    let slots = first
        .pkcs11_tool(&["--list-token-slots"])
        .success()
        .stdout_text();
    let labels: Vec<&str> = slots
        .lines()
        .filter_map(|line| line.trim().strip_prefix("token label"))
        .map(|rest| rest.trim_start_matches([' ', ':']))
        .collect();
    assert_eq!(labels, ["access-tokens"], "{slots}");
}

#[test]
fn an_empty_token_has_no_objects_and_nothing_to_mint_with() {
    let token = TestToken::new();
    assert_eq!(token.list_objects().trim(), "");
    let out = token
        .agent(&["mint", "--issuer", "ttd", "--now", "1767225600"])
        .exit(69);
    assert!(out.stderr_text().contains("no key for issuer \"ttd\""));
}
