//! `keys generate`: a key made inside the token, never extractable, with a
//! certificate carrying its thumbprint; usage errors in the arguments.

use integration_tests::token::row;
use integration_tests::{on_every_store, openssl, sha1_thumbprint, ttd_pfx, OutputExt, TestToken};

use super::{assert_token_empty, line_of, object_block};

on_every_store! {
    fn generated_key_is_never_extractable_and_carries_its_thumbprint() {
        let token = TestToken::new();
        let out = token
            .agent(&[
                "keys",
                "generate",
                "--issuer",
                "ttd",
                "--subject",
                "CN=ttd signing, O=Digdir, C=NO",
                "--days",
                "30",
            ])
            .success();
        let kid = out.stdout_text().trim().to_owned();
        let summary = out.stderr_text();
        assert!(
            summary.contains(&format!(
                "kid {kid}, rsa2048, CN=ttd signing, O=Digdir, C=NO"
            )),
            "{summary}"
        );

        let objects = token.list_objects();
        let key = object_block(&objects, "Private Key", &kid).expect("the private key object");
        assert_eq!(line_of(&key, "Usage"), "sign");
        assert_eq!(
            line_of(&key, "Access"),
            "sensitive, always sensitive, never extractable, local"
        );
        assert!(
            object_block(&objects, "Public Key", &kid).is_some(),
            "{objects}"
        );
        assert!(
            object_block(&objects, "Certificate", &kid).is_some(),
            "{objects}"
        );
        // Only the final CKA_ID is left: three objects, all carrying the kid.
        assert_eq!(objects.matches(" Object;").count(), 3, "{objects}");

        let pem = token
            .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", "pem"])
            .success()
            .stdout;
        let cert = token.write_file("cert.pem", &pem);
        assert_eq!(sha1_thumbprint(&cert), kid);
        let text = openssl(
            token.path(),
            &[
                "x509",
                "-in",
                "cert.pem",
                "-noout",
                "-subject",
                "-issuer",
                "-startdate",
                "-enddate",
            ],
        )
        .stdout_text();
        assert!(
            text.contains("subject=CN = ttd signing, O = Digdir, C = NO"),
            "{text}"
        );
        assert!(
            text.contains("issuer=CN = ttd signing, O = Digdir, C = NO"),
            "{text}"
        );

        let listed = token.keys_json();
        let listed = row(&listed, &kid);
        assert_eq!(listed["never_extractable"], true);
        assert_eq!(listed["always_sensitive"], true);
        assert_eq!(listed["extractable"], false);
        assert_eq!(listed["public_key"], true);
        assert_eq!(listed["active"], true);
        // Valid for the 30 days asked for, and not a day more.
        assert!(!expires_within(&token, "cert.pem", 29 * 86_400));
        assert!(expires_within(&token, "cert.pem", 31 * 86_400));
    }
}

/// `openssl x509 -checkend`: whether the certificate expires within `seconds`.
fn expires_within(token: &TestToken, cert: &str, seconds: u64) -> bool {
    let out = std::process::Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-in",
            cert,
            "-checkend",
            &seconds.to_string(),
        ])
        .current_dir(token.path())
        .output()
        .expect("run openssl");
    match out.code() {
        0 => false,
        1 => true,
        other => panic!(
            "openssl x509 -checkend exited {other}: {}",
            out.stderr_text()
        ),
    }
}

#[test]
fn bad_kid_and_key_type_are_usage_errors() {
    let token = TestToken::new();
    let out = token
        .agent(&["keys", "delete", "--kid", "C572", "--yes"])
        .exit(2);
    assert!(
        out.stderr_text().contains("40 hex digits"),
        "{}",
        out.stderr_text()
    );
    let out = token.generate("ttd", Some("rsa1024")).exit(2);
    assert!(
        out.stderr_text().contains("rsa2048"),
        "{}",
        out.stderr_text()
    );
    let out = token
        .agent(&["keys", "generate", "--issuer", "ttd", "--subject", "ttd"])
        .exit(65);
    assert!(
        out.stderr_text().contains("--subject"),
        "{}",
        out.stderr_text()
    );
    assert_token_empty(&token);
}

#[test]
fn an_issuer_that_requests_cannot_name_is_a_usage_error() {
    let token = TestToken::new();
    let pfx = ttd_pfx();
    for args in [
        &["keys", "generate", "--issuer", "t d"][..],
        &[
            "keys",
            "import",
            "--issuer",
            "ttd/x",
            "--pfx",
            pfx.to_str().unwrap(),
        ],
    ] {
        let out = token.agent(args).exit(2);
        let message = out.stderr_text();
        assert!(message.contains("--issuer"), "{message}");
        assert!(message.contains("contains"), "{message}");
        assert!(message.contains("'-', '.' and '_'"), "{message}");
    }
    assert_token_empty(&token);
}
