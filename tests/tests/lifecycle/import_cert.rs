//! `keys import-cert`: the certificate a CA issued from the agent's request
//! joins the key it certifies and becomes active; certificates for other
//! keys, or outside their validity, are refused with nothing changed.

use integration_tests::token::row;
use integration_tests::{
    cert_der, openssl, rsa_self_signed, sha1_thumbprint, unix_now, verify_jwt, OutputExt,
    Pkcs12Kind, TestToken, TinyCa,
};

use crate::csr::request;
use crate::{assert_header_names, kid_of, mint};

/// A token with a generated `ttd` key, a request for it, and a tiny CA.
fn token_and_ca(key_type: &str) -> (TestToken, String, std::path::PathBuf, TinyCa) {
    let token = TestToken::with_ttd_key(key_type);
    let kid = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    let csr = request(&token, &[]);
    let ca = TinyCa::new(token.path());
    (token, kid, csr, ca)
}

fn import_cert(token: &TestToken, flag: &str, file: &std::path::Path) -> std::process::Output {
    token.agent(&["keys", "import-cert", flag, file.to_str().unwrap()])
}

/// `keys list --json` and every object, to compare before and after a refusal.
fn state(token: &TestToken) -> (String, String) {
    let list = token
        .agent(&["keys", "list", "--json"])
        .success()
        .stdout_text();
    (list, token.list_objects())
}

#[test]
fn a_ca_issued_certificate_becomes_active_and_its_tokens_validate() {
    for key_type in ["rsa2048", "p256"] {
        let (token, self_signed, csr, ca) = token_and_ca(key_type);
        let now = unix_now();
        let issued = ca.issue(&csr, "issued", now - 60, now + 30 * 86_400);
        let kid = sha1_thumbprint(&issued);

        let out = import_cert(&token, "--cert", &issued).success();
        assert_eq!(out.stdout_text().trim(), kid);
        assert!(
            out.stderr_text()
                .contains("it is now the issuer's active key"),
            "{}",
            out.stderr_text()
        );
        let rows = token.keys_json();
        assert_eq!(row(&rows, &kid)["active"], true, "{rows:?}");
        assert_eq!(row(&rows, &kid)["key_id"], self_signed.as_str());
        assert_eq!(
            row(&rows, &kid)["shares_key_with"],
            serde_json::json!([self_signed])
        );

        let minted = mint(&token, None);
        assert_header_names(&minted, &kid);
        verify_jwt(&minted, &std::fs::read(&issued).unwrap(), "ttd");
        let chain = openssl(
            token.path(),
            &["verify", "-CAfile", "ca.pem", issued.to_str().unwrap()],
        );
        assert!(
            chain.stdout_text().contains(": OK"),
            "{key_type}: the CA issued it"
        );
    }
}

#[test]
fn der_files_and_certificate_only_pkcs12_files_are_attached_too() {
    let (token, _, csr, ca) = token_and_ca("rsa2048");
    let now = unix_now();
    let first = ca.issue(&csr, "first", now - 60, now + 86_400);
    let der = token.write_file("first.der", cert_der(&first));
    assert_eq!(
        kid_of(import_cert(&token, "--cert", &der)),
        sha1_thumbprint(&first)
    );

    let second = ca.issue(&csr, "second", now - 30, now + 86_400);
    let pfx = token.path().join("second.pfx");
    openssl(
        token.path(),
        &[
            "pkcs12",
            "-export",
            "-nokeys",
            "-in",
            second.to_str().unwrap(),
            "-out",
            pfx.to_str().unwrap(),
            "-passout",
            "pass:",
        ],
    );
    assert_eq!(
        kid_of(import_cert(&token, "--pfx", &pfx)),
        sha1_thumbprint(&second)
    );
    assert_eq!(token.keys_json().len(), 3);

    let again = import_cert(&token, "--cert", &second).exit(1);
    assert!(
        again.stderr_text().contains("already on the token"),
        "{}",
        again.stderr_text()
    );
}

#[test]
fn a_certificate_for_another_key_is_refused_and_nothing_changes() {
    let (token, _, _, _) = token_and_ca("rsa2048");
    let before = state(&token);
    let other = rsa_self_signed(token.path(), "other", 2048, "/CN=ttd");
    let out = import_cert(&token, "--cert", &other.cert).exit(65);
    let message = out.stderr_text();
    assert!(
        message.contains("no key on the token has the public key"),
        "{message}"
    );
    assert!(message.contains("keys csr"), "{message}");
    assert_eq!(state(&token), before);

    // Its key beside it in a PKCS#12 file: import-cert never imports keys.
    let pfx = other.pkcs12("", Pkcs12Kind::Modern);
    let out = import_cert(&token, "--pfx", &pfx).exit(65);
    assert!(
        out.stderr_text().contains("keys import --pfx"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(state(&token), before);
}

#[test]
fn a_certificate_outside_its_validity_is_refused_and_nothing_changes() {
    let (token, _, csr, ca) = token_and_ca("p256");
    let before = state(&token);
    let now = unix_now();
    let later = ca.issue(&csr, "later", now + 3_600, now + 86_400);
    let out = import_cert(&token, "--cert", &later).exit(65);
    assert!(
        out.stderr_text().contains("not valid yet"),
        "{}",
        out.stderr_text()
    );
    let expired = ca.issue(&csr, "expired", now - 86_400, now - 60);
    let out = import_cert(&token, "--cert", &expired).exit(65);
    assert!(
        out.stderr_text().contains("expired at"),
        "{}",
        out.stderr_text()
    );
    let garbage = token.write_file("garbage.pem", "-----BEGIN CERTIFICATE-----\nnot base64\n");
    let out = import_cert(&token, "--cert", &garbage).exit(65);
    assert!(
        out.stderr_text().contains("garbage.pem"),
        "{}",
        out.stderr_text()
    );
    assert_eq!(state(&token), before);
}

#[test]
fn a_pkcs12_file_with_the_tokens_own_key_gives_only_its_certificate() {
    // An organisation that imported its key keeps the PKCS#12 file and
    // later gets a new certificate for the same key in one.
    let token = TestToken::new();
    let files = rsa_self_signed(token.path(), "org", 2048, "/CN=ttd");
    let first = files.pkcs12("", Pkcs12Kind::Modern);
    let old = kid_of(token.import("ttd", &first, None));
    openssl(
        token.path(),
        &[
            "req", "-new", "-key", "org.key", "-subj", "/CN=ttd", "-out", "org.csr",
        ],
    );
    let ca = TinyCa::new(token.path());
    let now = unix_now();
    let issued = ca.issue(
        &token.path().join("org.csr"),
        "org-issued",
        now - 30,
        now + 86_400,
    );
    let pfx = integration_tests::pkcs12(
        token.path(),
        "org-issued",
        &files.key,
        &issued,
        "",
        Pkcs12Kind::Modern,
    );
    let objects = token.list_objects().matches(" Object;").count();

    let out = import_cert(&token, "--pfx", &pfx).success();
    assert!(
        out.stderr_text().contains("was not read into the token"),
        "{}",
        out.stderr_text()
    );
    let kid = out.stdout_text().trim().to_owned();
    assert_eq!(kid, sha1_thumbprint(&issued));
    // Only the certificate: the import wrote the key's public key object
    // already, and no second private key.
    assert_eq!(
        token.list_objects().matches(" Object;").count(),
        objects + 1
    );
    assert_eq!(
        token.list_objects().matches("Private Key Object").count(),
        1
    );
    assert_eq!(row(&token.keys_json(), &kid)["key_id"], old.as_str());
}

#[test]
fn a_certificate_written_without_logging_in_never_signs_though_it_holds_the_key() {
    // Anyone who can open a session may write public objects; a certificate
    // for the HSM key from some CA, written that way, must not take over.
    let (token, self_signed, csr, ca) = token_and_ca("rsa2048");
    let now = unix_now();
    let forged = ca.issue(&csr, "forged", now - 10, now + 86_400);
    let der = token.write_file("forged.der", cert_der(&forged));
    let kid = sha1_thumbprint(&forged);
    token
        .pkcs11_tool(&[
            "--write-object",
            der.to_str().unwrap(),
            "--type",
            "cert",
            "--id",
            &kid,
            "--label",
            "ttd",
        ])
        .success();
    let rows = token.keys_json();
    assert_eq!(row(&rows, &kid)["complete"], false, "{rows:?}");
    assert_eq!(row(&rows, &self_signed)["active"], true);
    assert_header_names(&mint(&token, None), &self_signed);
}
