//! `keys list | export-cert | delete`: what is on the token, its
//! certificates in every form, and removing a pair entirely, incomplete
//! ones included.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use integration_tests::token::row;
use integration_tests::{
    cert_der, der_with_month_13, der_with_unreadable_key, jws_part, on_every_store,
    rsa_self_signed, sha1_thumbprint, ttd_pem, OutputExt, TestToken,
};

use super::{assert_token_empty, import_ttd};
use crate::generate;

on_every_store! {
    fn keyvault_export_is_base64_of_the_der_certificate() {
        let token = TestToken::new();
        import_ttd(&token);
        let export = |format: &str| {
            token
                .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", format])
                .success()
        };
        let pem = export("pem");
        let exported = token.write_file("exported.pem", &pem.stdout);
        let der = cert_der(&exported);
        assert_eq!(der, cert_der(&ttd_pem()));

        let keyvault = export("keyvault");
        assert_eq!(
            keyvault.stdout_text(),
            format!("{}\n", STANDARD.encode(&der))
        );
        assert_eq!(
            keyvault.stderr_text().trim(),
            "ttd-access-token-public-cert"
        );

        assert_eq!(export("der").stdout, der);
    }
}

on_every_store! {
    fn export_by_kid_and_of_an_unknown_issuer() {
        let token = TestToken::new();
        let altinn = import_ttd(&token);
        let generated = generate(&token, "ttd");
        let pem_of = |kid: &str| {
            let pem = token.export_cert("ttd", Some(kid), "pem");
            sha1_thumbprint(&token.write_file("by-kid.pem", pem))
        };
        assert_eq!(pem_of(&altinn), altinn);
        assert_eq!(pem_of(&generated.to_ascii_lowercase()), generated);
        let out = token
            .agent(&[
                "keys",
                "export-cert",
                "--issuer",
                "nobody",
                "--format",
                "pem",
            ])
            .exit(69);
        assert!(
            out.stderr_text().contains("\"nobody\""),
            "{}",
            out.stderr_text()
        );
    }
}

on_every_store! {
    fn delete_removes_every_object_of_the_kid_and_nothing_else() {
        let token = TestToken::new();
        let first = generate(&token, "ttd");
        let second = generate(&token, "ttd");
        token
            .agent(&["keys", "delete", "--kid", &first, "--yes"])
            .success();
        let rows = token.keys_json();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0]["kid"], second.as_str());
        let objects = token.list_objects();
        assert!(!objects.contains(&first.to_ascii_lowercase()), "{objects}");
        assert_eq!(objects.matches(" Object;").count(), 3, "{objects}");
        token
            .agent(&["keys", "delete", "--kid", &first, "--yes"])
            .exit(69);
    }
}

on_every_store! {
    fn delete_without_yes_and_without_a_terminal_is_refused() {
        let token = TestToken::new();
        let kid = import_ttd(&token);
        let out = token.agent(&["keys", "delete", "--kid", &kid]).exit(2);
        assert!(out.stderr_text().contains("--yes"), "{}", out.stderr_text());
        assert_eq!(token.keys_json().len(), 1);
    }
}

on_every_store! {
    fn a_key_without_certificate_is_listed_incomplete_never_used_and_deletable() {
        let token = TestToken::new();
        // A private key with the issuer's label and a kid but no certificate:
        // what an enrolment interrupted before its last step would leave.
        let files = rsa_self_signed(token.path(), "orphan", 2048, "/CN=ttd");
        let kid = sha1_thumbprint(&files.cert);
        token.write_object(&files.key, "privkey", &kid, "ttd");
        let rows = token.keys_json();
        let listed = row(&rows, &kid);
        assert_eq!(listed["complete"], false);
        assert_eq!(listed["certificate"], false);
        assert_eq!(listed["active"], false);
        let table = token.agent(&["keys", "list"]).success().stdout_text();
        assert!(table.contains("INCOMPLETE"), "{table}");

        let out = token.agent(&["mint", "--issuer", "ttd"]).exit(69);
        assert!(out.stderr_text().contains("no key for issuer \"ttd\""));

        token
            .agent(&["keys", "delete", "--kid", &kid, "--yes"])
            .success();
        assert_token_empty(&token);
    }
}

on_every_store! {
    fn a_certificate_object_with_a_malformed_date_is_listed_incomplete_and_never_used() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        let good = generate(&token, "ttd");
        // A key pair of the issuer whose certificate object is damaged.
        let files = rsa_self_signed(token.path(), "damaged", 2048, "/CN=ttd");
        let kid = sha1_thumbprint(&files.cert);
        let damaged = token.write_file("damaged.der", der_with_month_13(&files.cert));
        for (file, kind) in [(&files.key, "privkey"), (&damaged, "cert")] {
            token.write_object(file, kind, &kid, "ttd");
        }

        let rows = token.keys_json();
        let listed = row(&rows, &kid);
        assert_eq!(listed["complete"], false);
        assert_eq!(
            listed["certificate"], false,
            "the certificate is unreadable"
        );
        assert_eq!(listed["private_key"], true);
        assert_eq!(listed["active"], false);
        assert_eq!(row(&rows, &good)["active"], true);
        let table = token.agent(&["keys", "list"]).success().stdout_text();
        assert!(table.contains("INCOMPLETE"), "{table}");

        let minted = token.agent(&["mint", "--issuer", "ttd"]).success();
        let header = jws_part(minted.stdout_text().trim(), 0);
        assert_eq!(header["kid"], good.as_str());
    }
}

/// OpenSSL reports a failure as a queue of errors, file names and codes
/// included, and SoftHSM leaves its own (an engine it could not load) on
/// the same thread's queue: the listing says the first cause of this
/// certificate's failure, in one line.
#[test]
fn a_certificate_whose_key_cannot_be_read_is_listed_with_one_cause() {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let files = rsa_self_signed(token.path(), "broken", 2048, "/CN=ttd");
    let kid = sha1_thumbprint(&files.cert);
    let broken = token.write_file("broken.der", der_with_unreadable_key(&files.cert));
    token.write_object(&broken, "cert", &kid, "ttd");

    let rows = token.keys_json();
    let why = row(&rows, &kid)["not_usable"].as_str().unwrap().to_owned();
    assert!(why.contains("decode error"), "{why}");
    assert!(!why.contains('\n'), "{why}");
    for noise in ["error:", ".c:", "rdrand", "engine"] {
        assert!(!why.contains(noise), "{noise} in {why}");
    }
    let table = token.agent(&["keys", "list"]).success().stdout_text();
    assert!(!table.contains("error:"), "{table}");
}

on_every_store! {
    fn list_into_a_reader_that_went_away_is_not_a_crash() {
        // `keys list | head -0`: the reader closes the pipe before the table.
        let token = TestToken::new();
        generate(&token, "ttd");
        let mut child = token
            .command(&["keys", "list"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap().success();
        assert!(
            !out.stderr_text().contains("panicked"),
            "{}",
            out.stderr_text()
        );
    }
}
