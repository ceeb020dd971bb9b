//! The rule for issuer and app names: what a request may ask for, what an
//! `[[issuer]]` or `keys --issuer` may be called, and so what ends up in a
//! token's claims and on the token's objects as CKA_LABEL.

/// Longest issuer or app name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 100;

/// Checks an issuer or app name; the error completes "`key` …".
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} bytes"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_')))
    {
        Some(c) => Err(format!(
            "contains {c:?}; names use only letters a-z and A-Z, digits, '-', '.' and '_'"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_limited_to_a_safe_alphabet() {
        assert!(check_name("studio.designer").is_ok());
        assert!(check_name("my-app_2").is_ok());
        assert!(check_name("a\u{7f}").unwrap_err().contains("'\\u{7f}'"));
        assert!(check_name("a\tb").unwrap_err().contains("'\\t'"));
        assert!(check_name("æ").is_err());
        assert!(check_name(&"x".repeat(MAX_NAME_LEN + 1))
            .unwrap_err()
            .contains("longer"));
    }
}
