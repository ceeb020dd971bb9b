//! `keys import`: PKCS#12 files that cannot be used are refused with the
//! reason and leave nothing behind; an imported key is sensitive, not
//! extractable and sign-only.

use std::path::Path;

use integration_tests::token::row;
use integration_tests::{
    cert_der, der_with_month_13, on_every_store, openssl, pkcs12, rsa_self_signed, sha1_thumbprint,
    ttd_pem, ttd_pfx, write_private, OutputExt, Pkcs12Kind, TestToken,
};

use super::{assert_token_empty, import_ttd, line_of, object_block};

#[test]
fn rsa_1024_is_refused_and_nothing_remains() {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "weak", 1024, "/CN=ttd");
    let pfx = files.pkcs12("", Pkcs12Kind::Modern);
    let out = token.import("ttd", &pfx, None).exit(65);
    let message = out.stderr_text();
    assert!(message.contains("1024 bits"), "{message}");
    assert!(message.contains("at least 2048"), "{message}");
    assert_token_empty(&token);
}

#[test]
fn wrong_password_is_refused_with_the_reason_and_nothing_remains() {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "org", 2048, "/CN=ttd");
    let pfx = files.pkcs12("right", Pkcs12Kind::Modern);
    let wrong = token.path().join("wrong-password");
    write_private(&wrong, "wrong\n");
    let out = token.import("ttd", &pfx, Some(&wrong)).exit(65);
    let message = out.stderr_text();
    assert!(message.contains("wrong password"), "{message}");
    assert!(message.contains("--password-file"), "{message}");
    assert_token_empty(&token);
}

#[test]
fn a_nul_byte_in_the_password_file_is_refused() {
    let token = TestToken::new();
    let password = token.path().join("password");
    write_private(&password, "sec\0ret\n");
    let out = token.import("ttd", &ttd_pfx(), Some(&password)).exit(65);
    let message = out.stderr_text();
    assert!(message.contains("NUL byte"), "{message}");
    assert!(message.contains(password.to_str().unwrap()), "{message}");
    assert_token_empty(&token);
}

#[test]
fn certificate_of_another_key_is_refused_and_nothing_remains() {
    let token = TestToken::new();
    // Two keys with same-length certificates (fixed serial, same-length
    // subjects), so that one certificate can replace the other in place.
    let make = |name: &str| {
        let key = format!("{name}.key");
        let cert = format!("{name}.pem");
        let subject = format!("/CN={name}");
        openssl(
            token.path(),
            &[
                "req",
                "-x509",
                "-nodes",
                "-newkey",
                "rsa:2048",
                "-days",
                "30",
                "-set_serial",
                "1",
                "-subj",
                &subject,
                "-keyout",
                &key,
                "-out",
                &cert,
            ],
        );
        cert_der(&token.path().join(cert))
    };
    let (a, b) = (make("a"), make("b"));
    assert_eq!(a.len(), b.len());
    openssl(
        token.path(),
        &[
            "pkcs12", "-export", "-inkey", "a.key", "-in", "a.pem", "-keypbe", "NONE", "-certpbe",
            "NONE", "-nomac", "-passout", "pass:", "-out", "a.pfx",
        ],
    );
    let original = std::fs::read(token.path().join("a.pfx")).unwrap();
    let at = original
        .windows(a.len())
        .position(|window| window == a.as_slice())
        .expect("the certificate inside the PKCS#12 file");
    let mut swapped = original.clone();
    swapped[at..at + b.len()].copy_from_slice(&b);
    let pfx = token.write_file("swapped.pfx", swapped);

    let out = token.import("ttd", &pfx, None).exit(65);
    assert!(
        out.stderr_text()
            .contains("no certificate for its private key"),
        "{}",
        out.stderr_text()
    );
    assert_token_empty(&token);
}

#[test]
fn garbage_file_is_refused_with_the_conversion_hint() {
    let token = TestToken::new();
    let pem = ttd_pem();
    let out = token.import("ttd", &pem, None).exit(65);
    let message = out.stderr_text();
    assert!(message.contains("not a PKCS#12"), "{message}");
    assert!(message.contains("openssl pkcs12 -export"), "{message}");
    let missing = token
        .import("ttd", Path::new("/nonexistent.pfx"), None)
        .exit(65);
    assert!(missing.stderr_text().contains("/nonexistent.pfx"));
    assert_token_empty(&token);
}

on_every_store! {
    fn importing_the_same_certificate_twice_is_refused() {
        let token = TestToken::new();
        let kid = import_ttd(&token);
        let out = token.import("other", &ttd_pfx(), None).exit(1);
        assert!(
            out.stderr_text().contains("already on the token"),
            "{}",
            out.stderr_text()
        );
        assert!(out
            .stderr_text()
            .contains(&format!("keys delete --kid {kid}")));
        let rows = token.keys_json();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["issuer"], "ttd");
    }
}

on_every_store! {
    fn imported_key_is_sensitive_not_extractable_and_sign_only() {
        let token = TestToken::new();
        let kid = import_ttd(&token);
        assert_eq!(kid, sha1_thumbprint(&ttd_pem()));

        let objects = token.list_objects();
        let key = object_block(&objects, "Private Key", &kid).expect("the private key object");
        assert_eq!(line_of(&key, "Usage"), "sign");
        assert_eq!(line_of(&key, "Access"), "sensitive");
        assert_eq!(line_of(&key, "label"), "ttd");
        let cert = object_block(&objects, "Certificate", &kid).expect("the certificate object");
        assert_eq!(line_of(&cert, "label"), "ttd");
        assert!(line_of(&cert, "subject").ends_with("CN=ttd"), "{cert}");

        let listed = token.keys_json();
        let listed = row(&listed, &kid);
        assert_eq!(listed["issuer"], "ttd");
        assert_eq!(listed["key_type"], "rsa2048");
        assert_eq!(listed["not_before"], "2020-05-25T12:21:37Z");
        assert_eq!(listed["not_after"], "2030-05-24T12:21:37Z");
        assert_eq!(listed["complete"], true);
        assert_eq!(listed["private_key"], true);
        assert_eq!(listed["sensitive"], true);
        assert_eq!(listed["extractable"], false);
        // Its bytes existed outside the token once, and the token knows it.
        assert_eq!(listed["always_sensitive"], false);
        assert_eq!(listed["never_extractable"], false);
    }
}

#[test]
fn a_pkcs12_file_whose_certificate_has_a_malformed_date_is_refused() {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "org", 2048, "/CN=ttd");
    token.write_file("bad.der", der_with_month_13(&files.cert));
    openssl(
        token.path(),
        &[
            "x509", "-inform", "der", "-in", "bad.der", "-out", "bad.pem",
        ],
    );
    let pfx = pkcs12(
        token.path(),
        "bad",
        &files.key,
        &token.path().join("bad.pem"),
        "",
        Pkcs12Kind::Modern,
    );
    let out = token.import("ttd", &pfx, None).exit(65);
    let message = out.stderr_text();
    assert!(message.contains("notBefore"), "{message}");
    assert!(message.contains("not a valid time"), "{message}");
    assert_token_empty(&token);
}

#[test]
fn rc2_file_without_the_legacy_provider_gets_the_conversion_command() {
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "windows", 2048, "/CN=ttd");
    let pfx = files.pkcs12("", Pkcs12Kind::LegacyRc2);
    // An OpenSSL whose provider directory holds no legacy provider.
    let out = token
        .import_command("ttd", &pfx, None)
        .env("OPENSSL_MODULES", token.path())
        .output()
        .unwrap()
        .exit(65);
    let message = out.stderr_text();
    assert!(message.contains("RC2-40"), "the scheme is named: {message}");
    assert!(
        message.contains(
            "openssl pkcs12 -in old.pfx -nodes -legacy | openssl pkcs12 -export -out new.pfx"
        ),
        "{message}"
    );
    assert_token_empty(&token);
}

#[test]
fn a_file_that_cannot_be_used_is_refused_before_logging_in() {
    // With a wrong PIN a login would fail with 77: 65 shows the file was
    // judged first, and no login attempt was spent on it.
    let token = TestToken::new();
    std::fs::write(token.pin_file(), "0000\n").unwrap();
    let garbage = token.write_file("garbage.pfx", b"not a PKCS#12 file");
    let out = token.import("ttd", &garbage, None).exit(65);
    assert!(
        out.stderr_text().contains("garbage.pfx"),
        "{}",
        out.stderr_text()
    );
}
