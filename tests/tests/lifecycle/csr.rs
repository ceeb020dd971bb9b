//! `keys csr`: a PKCS#10 request that the HSM key signs, for a CA to
//! certify; openssl verifies it and finds the HSM key's public key in it.

use integration_tests::{openssl, OutputExt, TestToken};

use crate::{export, kid_of, openssl_x509};

/// `keys csr` with `extra` arguments, written to `request.pem`; checked
/// with `openssl req -verify`.
pub fn request(token: &TestToken, extra: &[&str]) -> std::path::PathBuf {
    let mut args = vec!["keys", "csr", "--issuer", "ttd"];
    args.extend_from_slice(extra);
    let out = token.agent(&args).success();
    assert!(
        out.stdout_text()
            .starts_with("-----BEGIN CERTIFICATE REQUEST-----\n"),
        "{}",
        out.stdout_text()
    );
    let csr = token.write_file("request.pem", &out.stdout);
    let verified = openssl(
        token.path(),
        &["req", "-in", "request.pem", "-noout", "-verify"],
    );
    let said = verified.stdout_text() + &verified.stderr_text();
    assert!(said.contains("verify OK"), "{said}");
    csr
}

/// What `openssl req -noout OPTION` prints for the request.
fn openssl_req(token: &TestToken, option: &str) -> String {
    openssl(
        token.path(),
        &["req", "-in", "request.pem", "-noout", option],
    )
    .stdout_text()
}

#[test]
fn a_request_is_signed_by_the_hsm_key_and_carries_its_public_key() {
    for key_type in ["rsa2048", "p256"] {
        let token = TestToken::new();
        let kid = kid_of(token.agent(&[
            "keys",
            "generate",
            "--issuer",
            "ttd",
            "--key-type",
            key_type,
            "--subject",
            "CN=ttd, O=Digdir, C=NO",
        ]));
        let cert = export(&token, &kid);
        let before = token.list_objects();
        request(&token, &[]);
        assert_eq!(
            openssl_req(&token, "-pubkey"),
            openssl_x509(&token, &cert, "-pubkey"),
            "{key_type}"
        );
        assert_eq!(
            openssl_req(&token, "-subject"),
            openssl_x509(&token, &cert, "-subject"),
            "the certificate's subject, by default"
        );
        assert_eq!(token.list_objects(), before, "a request changes nothing");
    }
}

#[test]
fn a_request_asks_for_the_subject_given_and_names_bad_ones() {
    let token = TestToken::new();
    let kid = kid_of(token.generate("ttd", None));
    request(
        &token,
        &[
            "--kid",
            &kid,
            "--subject",
            "CN=ttd, O=Digdir, OU=Altinn, C=NO",
        ],
    );
    assert_eq!(
        openssl_req(&token, "-subject").trim(),
        "subject=CN = ttd, O = Digdir, OU = Altinn, C = NO"
    );
    let out = token
        .agent(&[
            "keys",
            "csr",
            "--issuer",
            "ttd",
            "--subject",
            "CN=ttd, E=x@y",
        ])
        .exit(65);
    assert!(
        out.stderr_text().contains("unknown field \"E\""),
        "{}",
        out.stderr_text()
    );
    assert!(out.stdout.is_empty());
    token.agent(&["keys", "csr", "--issuer", "digdir"]).exit(69);
}
