//! What `keys list` says of objects that are not the agent's, and that
//! `mint` never signs with them.

use integration_tests::daemon::exported_cert;
use integration_tests::on_every_store;
use integration_tests::{
    der_with_month_13, p256_self_signed, rsa_self_signed, sha1_thumbprint, verify_jwt, OutputExt,
    TestToken,
};

use super::{der_file, minted_kid, public_key_file, why_not, written_by_another_tool};
use crate::generate;

on_every_store! {
    fn objects_planted_without_login_never_sign_and_are_listed_with_the_reason() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        let kid = generate(&token, "ttd");
        let other = rsa_self_signed(token.path(), "other", 2048, "/CN=ttd");
        let other_kid = sha1_thumbprint(&other.cert);

        // A valid certificate of another key, under its own thumbprint.
        token.plant_object(
            &der_file(&token, &other.cert, "other.der"),
            "cert",
            &other_kid,
            "ttd",
        );
        // Another key's public key, under an ID of its own.
        let public = public_key_file(&token, &other.key, "other.pub.der");
        token.plant_object(&public, "pubkey", "0badbeef", "ttd");
        // A certificate that does not parse (its notBefore is month 13).
        let broken = rsa_self_signed(token.path(), "broken", 2048, "/CN=ttd");
        let broken_kid = sha1_thumbprint(&broken.cert);
        let damaged = token.write_file("broken.der", der_with_month_13(&broken.cert));
        token.plant_object(&damaged, "cert", &broken_kid, "ttd");

        assert!(why_not(&token, &other_kid).contains("no private key"));
        assert!(why_not(&token, "0BADBEEF").contains("no certificate"));
        let unparsable = why_not(&token, &broken_kid);
        assert!(unparsable.contains("does not parse"), "{unparsable}");
        assert!(unparsable.contains("not a valid time"), "{unparsable}");
        let ours = token.key_row(&kid);
        assert_eq!(
            (ours["usable"].clone(), ours["active"].clone()),
            (true.into(), true.into())
        );

        let table = token.agent(&["keys", "list"]).success().stdout_text();
        assert!(
            table.contains("ttd 0BADBEEF: not usable: no certificate"),
            "{table}"
        );

        let (signed_by, jwt) = minted_kid(&token, "ttd");
        assert_eq!(signed_by, kid);
        verify_jwt(&jwt, &exported_cert(&token, "pem"), "ttd");
    }
}

on_every_store! {
    fn a_copy_of_a_certificate_beside_the_key_is_an_error_for_its_issuer_only() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n\n[[issuer]]\nname = \"digdir\"\n");
        let kid = generate(&token, "ttd");
        generate(&token, "digdir");
        let der = token.write_file("ttd.der", exported_cert(&token, "der"));
        token.plant_object(&der, "cert", &kid, "ttd");

        let why = why_not(&token, &kid);
        assert!(
            why.contains("2 certificate objects carry this label and kid"),
            "{why}"
        );
        let out = token.agent(&["mint", "--issuer", "ttd"]).exit(69);
        let message = out.stderr_text();
        assert!(message.contains("2 certificate objects"), "{message}");
        assert!(message.contains("pkcs11-tool --list-objects"), "{message}");
        minted_kid(&token, "digdir");

        // Either copy removed (they are the same bytes), the key signs again.
        token.delete_object("cert", &kid);
        assert_eq!(minted_kid(&token, "ttd").0, kid);
    }
}

on_every_store! {
    fn a_public_key_planted_beside_an_imported_key_makes_it_ambiguous() {
        let token = TestToken::new();
        let kid = token
            .import("ttd", &integration_tests::ttd_pfx(), None)
            .success()
            .stdout_text()
            .trim()
            .to_owned();
        let listed = token.key_row(&kid);
        assert_eq!(listed["usable"], true, "{listed:#}");
        assert_eq!(listed["generated_on_token"], false, "{listed:#}");
        // The key's own public half, written again by someone without the PIN.
        let pem = integration_tests::ttd_pem();
        let public = token.path().join("ttd.pub.der");
        integration_tests::openssl(
            token.path(),
            &[
                "x509",
                "-in",
                pem.to_str().unwrap(),
                "-noout",
                "-pubkey",
                "-out",
                "ttd.pub.pem",
            ],
        );
        integration_tests::openssl(
            token.path(),
            &[
                "pkey",
                "-pubin",
                "-in",
                "ttd.pub.pem",
                "-outform",
                "der",
                "-out",
                "ttd.pub.der",
            ],
        );
        token.plant_object(&public, "pubkey", &kid, "ttd");
        let why = why_not(&token, &kid);
        assert!(why.contains("2 public key objects"), "{why}");
    }
}

on_every_store! {
    fn a_key_another_tool_wrote_signs_only_when_it_cannot_leave_the_token() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        // Written with the PIN by pkcs11-tool, as an import by another tool:
        // sensitive and not extractable, so usable, though never "never
        // extractable" (its bytes were outside the token once).
        let files = rsa_self_signed(token.path(), "tool", 2048, "/CN=ttd");
        let kid = written_by_another_tool(&token, &files, "ttd", &[]);
        let listed = token.key_row(&kid);
        assert_eq!(listed["usable"], true, "{listed:#}");
        assert_eq!(listed["never_extractable"], false, "{listed:#}");
        let (signed_by, jwt) = minted_kid(&token, "ttd");
        assert_eq!(signed_by, kid);
        verify_jwt(&jwt, &std::fs::read(&files.cert).unwrap(), "ttd");

        // The same written extractable: listed with the reason, never used.
        let loose = rsa_self_signed(token.path(), "loose", 2048, "/CN=loose");
        let loose_kid = written_by_another_tool(&token, &loose, "loose", &["--extractable"]);
        assert!(why_not(&token, &loose_kid).contains("is extractable (CKA_EXTRACTABLE)"));
        let out = token.agent(&["mint", "--issuer", "loose"]).exit(69);
        assert!(
            out.stderr_text().contains("is extractable"),
            "{}",
            out.stderr_text()
        );
    }
}

on_every_store! {
    fn a_public_key_anyone_could_write_proves_nothing() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        // An EC key written by another tool with no public key object beside
        // it: its private key object shows no point, so nothing on the token
        // proves that the certificate holds it.
        let files = p256_self_signed(token.path(), "ec", "/CN=ttd");
        let kid = written_by_another_tool(&token, &files, "ttd", &[]);
        assert!(why_not(&token, &kid).contains("nothing on the token shows the key's public half"));

        // Its public key planted without the PIN changes nothing, and says so.
        let public = public_key_file(&token, &files.key, "ec.pub.der");
        token.plant_object(&public, "pubkey", &kid, "ttd");
        assert!(why_not(&token, &kid).contains("nothing on the token shows the key's public half"));
        let listed = token.key_row(&kid);
        let ignored = listed["ignored"][0].as_str().expect("a note");
        assert!(ignored.contains("written without logging in"), "{ignored}");
        token.agent(&["mint", "--issuer", "ttd"]).exit(69);
    }
}

/// What makes the planting above a SoftHSM matter: Kryoptic gives a
/// session that has not logged in no object to write at all.
#[test]
fn kryoptic_refuses_every_object_written_without_login() {
    integration_tests::Store::Kryoptic.run(|| {
        let token = TestToken::new();
        let files = rsa_self_signed(token.path(), "planted", 2048, "/CN=ttd");
        let der = der_file(&token, &files.cert, "planted.der");
        let der = der.to_str().unwrap();
        let write = [
            "--write-object",
            der,
            "--type",
            "cert",
            "--id",
            "01",
            "--label",
            "ttd",
        ];
        let out = token.pkcs11_tool(&write);
        assert!(!out.status.success(), "planted on Kryoptic");
        assert!(
            out.stderr_text().contains("CKR_USER_NOT_LOGGED_IN"),
            "{}",
            out.stderr_text()
        );
        assert!(token.keys_json().is_empty());
    });
}
