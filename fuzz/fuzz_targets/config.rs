//! `Config::parse` on arbitrary text: it never panics, and whatever it
//! accepts keeps the promises the rest of the agent relies on.

#![no_main]

use access_token_agent::config::Config;
use access_token_agent::token::MAX_LIFETIME_SECONDS;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The agent reads the file with read_to_string: only UTF-8 reaches parse.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => check_accepted(&config),
        Err(message) => assert!(!message.trim().is_empty(), "a refusal without a message"),
    }
});

fn check_accepted(config: &Config) {
    let token = &config.token;
    assert!((1..=MAX_LIFETIME_SECONDS).contains(&token.lifetime_seconds));
    assert!(token.valid_from_adjustment_seconds >= -MAX_LIFETIME_SECONDS);
    assert!(token.valid_from_adjustment_seconds < token.lifetime_seconds);
    assert!(!token.audience.is_empty());
    assert!(!config.hsm.token_label.trim().is_empty());
    assert!(config.hsm.pin_file.is_some() != config.hsm.pin_credential.is_some());
    for (index, issuer) in config.issuers.iter().enumerate() {
        assert!(!issuer.name.is_empty());
        assert!(config.issuers[..index]
            .iter()
            .all(|other| other.name != issuer.name));
        if let Some(kid) = &issuer.kid {
            assert_eq!(kid.len(), 40);
            assert!(kid
                .chars()
                .all(|c| c.is_ascii_digit() || ('A'..='F').contains(&c)));
        }
    }
}
