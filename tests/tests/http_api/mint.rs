//! `mint` after `keys import` / `keys generate`: the tokens are byte-identical
//! to an independent computation (the documented format, openssl for the
//! thumbprint and the signature) and verify with `jsonwebtoken`.

use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::on_every_store;
use integration_tests::{
    jws_part, openssl, openssl_sign_sha256, p256_self_signed, rsa_self_signed, sha1_thumbprint,
    ttd_pem, ttd_pfx, unix_now, verify_jwt, write_private, OutputExt, Pkcs12Kind, TestToken,
};

/// The test vector of altinn-access-token.md: issuer ttd, app my-app,
/// instant 1767225600, default settings, Altinn's ttd test certificate.
const ALTINN_VECTOR: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IkM1NzI2NzI4QzM4Q0ZFNkMxNjk4ODQ1NDIwNkI5OUNBMjlBRTAyNUUiLCJ4NXQiOiJ4WEpuS01PTV9td1dtSVJVSUd1WnlpbXVBbDQiLCJ0eXAiOiJKV1QifQ.eyJ1cm46YWx0aW5uOmFwcCI6Im15LWFwcCIsIm5iZiI6MTc2NzIyNTU5NSwiZXhwIjoxNzY3MjI1OTAwLCJpYXQiOjE3NjcyMjU2MDAsImlzcyI6InR0ZCIsImF1ZCI6InBsYXRmb3JtLmFsdGlubi5ubyJ9.xXpIPDRonhbnUU5sU3PwoHu9ldyTsacH6gVxN9RsHiJrFhKw6k8mjRK9JfzCyyO3UK4FjbBPdDBQuy0AttTJaRpFWQavWN_-eC-un7H9X_g6xYhO8uWlMBGhD-3UR1qA9X57i7_XBnmlHwI5DK18Pkv0Mldpw6vw_rLrXuQbNw9226zvy7A16fg4daMZ6iUyTkM6sDpLHcwlA0L30yb_i8AtQON5zlUTDl5uPUKF0b7nO3OBiH0e1Qv7HgugTwJSEbaDf6-UHMlQ8uTy58CTQ5QyRVe6fUBteIaDfAQxAm5Y3T1ZtvtBZnxOXusBrGGOjp1SnKPaNKBRX4AXZA11oA";

fn mint(token: &TestToken, issuer: &str, app: &str, now: Option<i64>) -> String {
    let now = now.map(|n| n.to_string());
    let mut args = vec!["mint", "--issuer", issuer, "--app", app];
    if let Some(now) = &now {
        args.extend(["--now", now]);
    }
    let out = token.agent(&args).success();
    let minted = out.stdout_text();
    assert!(minted.ends_with('\n'), "one line: {minted:?}");
    minted.trim_end().to_owned()
}

fn export_pem(token: &TestToken, issuer: &str) -> Vec<u8> {
    token
        .agent(&["keys", "export-cert", "--issuer", issuer, "--format", "pem"])
        .success()
        .stdout
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// The RS256 token the documented format prescribes, signed by openssl.
fn expected_rs256(key: &Path, kid: &str, issuer: &str, app: &str, now: i64) -> String {
    let x5t = URL_SAFE_NO_PAD.encode(hex_decode(kid));
    let header = format!(r#"{{"alg":"RS256","kid":"{kid}","x5t":"{x5t}","typ":"JWT"}}"#);
    let app_claim = if app.is_empty() {
        String::new()
    } else {
        format!(r#""urn:altinn:app":"{app}","#)
    };
    let payload = format!(
        r#"{{{app_claim}"nbf":{},"exp":{},"iat":{now},"iss":"{issuer}","aud":"platform.altinn.no"}}"#,
        now - 5,
        now + 300
    );
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(payload)
    );
    let signature = openssl_sign_sha256(key, input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

on_every_store! {
    fn altinn_pfx_reproduces_the_shared_test_vector() {
        let token = TestToken::new();
        let pfx = token.path().join("accesstokencredentials.pfx");
        std::fs::copy(ttd_pfx(), &pfx).unwrap();
        let kid = token.import("ttd", &pfx, None).success().stdout_text();
        assert_eq!(kid.trim(), sha1_thumbprint(&ttd_pem()));
        assert_eq!(
            mint(&token, "ttd", "my-app", Some(1_767_225_600)),
            ALTINN_VECTOR
        );
    }
}

/// A fresh RSA key and certificate from openssl, packed as `kind`, imported
/// and minted with: the token equals the independent computation and
/// verifies against the exported certificate.
fn openssl_key_round_trip(kind: Pkcs12Kind, password: &str, app: &str) {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "digdir", 2048, "/CN=digdir");
    let pfx = files.pkcs12(password, kind);
    let password_file = token.path().join("pfx-password");
    write_private(&password_file, &format!("{password}\n"));
    token.import("digdir", &pfx, Some(&password_file)).success();
    let now = unix_now();
    let minted = mint(&token, "digdir", app, Some(now));
    let kid = sha1_thumbprint(&files.cert);
    assert_eq!(minted, expected_rs256(&files.key, &kid, "digdir", app, now));
    let claims = verify_jwt(&minted, &export_pem(&token, "digdir"), "digdir");
    assert_eq!(claims["iat"], now);
}

on_every_store! {
    fn legacy_3des_pkcs12_key_mints_the_expected_token() {
        openssl_key_round_trip(Pkcs12Kind::Legacy3Des, "legacy pass", "my-app");
    }
}

#[test]
fn legacy_rc2_pkcs12_key_mints_the_expected_token() {
    openssl_key_round_trip(Pkcs12Kind::LegacyRc2, "windows-export", "app/æøå+<&>");
}

on_every_store! {
    fn modern_aes_pkcs12_key_mints_the_expected_token_without_app() {
        openssl_key_round_trip(Pkcs12Kind::Modern, "s3cret", "");
    }
}

/// `keys generate` of `key_type`, then a token verified against the
/// exported certificate, whose own signature openssl checks.
fn generated_key_round_trip(key_type: &str, alg: &str) {
    let token = TestToken::new();
    let kid = token
        .generate("ttd", Some(key_type))
        .success()
        .stdout_text();
    let pem = export_pem(&token, "ttd");
    let cert = token.write_file("generated.pem", &pem);
    // The self-signed certificate's signature, made through the HSM, is valid.
    let verified = openssl(
        token.path(),
        &["verify", "-CAfile", "generated.pem", "generated.pem"],
    );
    assert_eq!(verified.stdout_text().trim(), "generated.pem: OK");
    assert_eq!(kid.trim(), sha1_thumbprint(&cert));

    let minted = mint(&token, "ttd", "my-app", None);
    let header = jws_part(&minted, 0);
    assert_eq!(header["alg"], alg);
    assert_eq!(header["kid"], kid.trim());
    assert_eq!(
        header["x5t"],
        URL_SAFE_NO_PAD.encode(hex_decode(kid.trim()))
    );
    let claims = verify_jwt(&minted, &pem, "ttd");
    assert_eq!(claims["urn:altinn:app"], "my-app");
}

on_every_store! {
    fn generated_rsa_key_signs_tokens_that_verify() {
        generated_key_round_trip("rsa2048", "RS256");
    }
}

#[test]
fn generated_rsa3072_key_signs_tokens_that_verify() {
    generated_key_round_trip("rsa3072", "RS256");
}

on_every_store! {
    fn generated_p256_key_signs_es256_tokens_that_verify() {
        generated_key_round_trip("p256", "ES256");
    }
}

on_every_store! {
    fn imported_p256_key_signs_es256_tokens_that_verify() {
        let token = TestToken::new();
        let files = p256_self_signed(token.path(), "ec", "/CN=ttd");
        let pfx = files.pkcs12("", Pkcs12Kind::Modern);
        token.import("ttd", &pfx, None).success();
        let minted = mint(&token, "ttd", "my-app", None);
        let header = jws_part(&minted, 0);
        assert_eq!(header["alg"], "ES256");
        assert_eq!(header["kid"], sha1_thumbprint(&files.cert));
        let signature = minted.rsplit('.').next().unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(signature).unwrap().len(), 64);
        verify_jwt(&minted, &std::fs::read(&files.cert).unwrap(), "ttd");
    }
}

on_every_store! {
    fn newest_valid_key_is_active_unless_a_kid_is_pinned() {
        let token = TestToken::new();
        token.import("ttd", &ttd_pfx(), None).success();
        let generated = token.generate("ttd", None).success().stdout_text();
        // The generated certificate's not-before (now) is later than 2020's.
        let minted = mint(&token, "ttd", "", None);
        assert_eq!(jws_part(&minted, 0)["kid"], generated.trim());

        let altinn_kid = sha1_thumbprint(&ttd_pem());
        token.write_config(&format!(
            "[[issuer]]\nname = \"ttd\"\nkid = \"{}\"\n",
            altinn_kid.to_ascii_lowercase()
        ));
        let minted = mint(&token, "ttd", "", None);
        assert_eq!(jws_part(&minted, 0)["kid"], altinn_kid);
    }
}

#[test]
fn now_beyond_year_9999_is_a_usage_error() {
    // Such an instant once overflowed `iat + lifetime`: a panic in debug
    // builds, a wrapped exp in release.
    let token = TestToken::new();
    token.import("ttd", &ttd_pfx(), None).success();
    let kid = sha1_thumbprint(&ttd_pem());
    token.write_config(&format!("[[issuer]]\nname = \"ttd\"\nkid = \"{kid}\"\n"));
    let out = token
        .agent(&["mint", "--issuer", "ttd", "--now", "9223372036854775000"])
        .exit(2);
    assert!(out.stderr_text().contains("--now"), "{}", out.stderr_text());
    // The last accepted instant lies outside the certificate's validity, so
    // even the pinned key is refused there (69), without overflowing.
    token
        .agent(&["mint", "--issuer", "ttd", "--now", "253402300799"])
        .exit(69);
}
