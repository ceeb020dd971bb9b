//! `keys renew`: a new certificate for the same key. Tokens verify against
//! the old and the new certificate alike, which is what makes a renewal
//! seamless for validators that cache either; the old one stays until it
//! is deleted, and the key goes with its last certificate.

use integration_tests::daemon::{ttd_token, Daemon};
use integration_tests::token::row;
use integration_tests::{
    on_every_store, p256_self_signed, verify_jwt, OutputExt, Pkcs12Kind, TestToken,
};

use crate::{assert_header_names, export, kid_of, mint, object_count, openssl_x509, reload};

on_every_store! {
    fn a_renewed_certificate_is_judged_with_its_key_and_signs_without_the_first() {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        let old = kid_of(token.agent(&["keys", "generate", "--issuer", "ttd"]));
        let new = kid_of(token.agent(&["keys", "renew", "--issuer", "ttd"]));
        let rows = token.keys_json();
        let renewed = row(&rows, &new);
        assert_eq!(renewed["key_id"], old.as_str(), "{rows:?}");
        assert_eq!(renewed["usable"], true, "{rows:?}");
        assert_eq!(renewed["active"], true, "{rows:?}");

        token
            .agent(&["keys", "delete", "--kid", &old, "--yes"])
            .success();
        let rows = token.keys_json();
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0]["usable"], true, "{rows:?}");
        assert_header_names(&mint(&token, None), &new);
    }
}

#[test]
fn a_renewed_certificate_holds_the_same_key_and_tokens_verify_against_both() {
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let subject = "CN=ttd signing, O=Digdir, C=NO";
    let old = kid_of(token.agent(&["keys", "generate", "--issuer", "ttd", "--subject", subject]));
    let old_pem = export(&token, &old);

    let out = token
        .agent(&["keys", "renew", "--issuer", "ttd", "--days", "30"])
        .success();
    let new = out.stdout_text().trim().to_owned();
    assert_ne!(new, old);
    let summary = out.stderr_text();
    assert!(
        summary.contains(&format!("renewed the key of kid {old}")),
        "{summary}"
    );
    assert!(
        summary.contains("it is now the issuer's active key"),
        "{summary}"
    );
    let new_pem = export(&token, &new);

    // openssl: the same key and subject, self-signed with that key.
    assert_eq!(
        openssl_x509(&token, &new_pem, "-pubkey"),
        openssl_x509(&token, &old_pem, "-pubkey")
    );
    for field in ["-subject", "-issuer"] {
        assert_eq!(
            openssl_x509(&token, &new_pem, field),
            openssl_x509(&token, &old_pem, field),
            "{field}"
        );
    }
    let new_path = new_pem.to_str().unwrap();
    let verified = integration_tests::openssl(
        token.path(),
        &[
            "verify",
            "-partial_chain",
            "-check_ss_sig",
            "-CAfile",
            new_path,
            new_path,
        ],
    );
    assert!(
        verified.stdout_text().contains(": OK"),
        "{}",
        verified.stdout_text()
    );

    let rows = token.keys_json();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (old_row, new_row) = (row(&rows, &old), row(&rows, &new));
    assert_eq!(old_row["key_id"], old.as_str());
    assert_eq!(new_row["key_id"], old.as_str(), "the key keeps its id");
    assert_eq!(new_row["shares_key_with"], serde_json::json!([old]));
    assert_eq!(old_row["shares_key_with"], serde_json::json!([new]));
    assert_eq!(
        (old_row["active"].clone(), new_row["active"].clone()),
        (false.into(), true.into())
    );
    assert_eq!(new_row["complete"], true);
    let table = token.agent(&["keys", "list"]).success().stdout_text();
    let key_column = &old[..8];
    assert_eq!(
        table.matches(&format!("  {key_column}  ")).count(),
        2,
        "{table}"
    );

    // One private key, one public key, two certificates.
    assert_eq!(object_count(&token), 4);

    let minted = mint(&token, None);
    assert_header_names(&minted, &new);
    for pem in [&old_pem, &new_pem] {
        let claims = verify_jwt(&minted, &std::fs::read(pem).unwrap(), "ttd");
        assert_eq!(claims["urn:altinn:app"], "my-app");
    }
}

#[test]
fn a_pinned_kid_keeps_its_certificate_after_a_renewal() {
    let token = TestToken::new();
    let old = kid_of(token.generate("ttd", None));
    token.write_config(&format!("[[issuer]]\nname = \"ttd\"\nkid = \"{old}\"\n"));
    let new = kid_of(token.agent(&["keys", "renew", "--issuer", "ttd"]));
    let out = token.agent(&["keys", "renew", "--issuer", "ttd"]).success();
    assert!(
        out.stderr_text()
            .contains("it is not the issuer's active key"),
        "{}",
        out.stderr_text()
    );
    let minted = mint(&token, None);
    assert_header_names(&minted, &old);
    verify_jwt(
        &minted,
        &std::fs::read(export(&token, &new)).unwrap(),
        "ttd",
    );
}

#[test]
fn an_imported_key_outlives_its_own_certificate_and_goes_with_its_last() {
    // A P-256 key from a PKCS#12 file: a private EC key that does not tell
    // its public point, and the private public key object the import wrote.
    let token = TestToken::new();
    token.write_config("[[issuer]]\nname = \"ttd\"\n");
    let files = p256_self_signed(token.path(), "org", "/CN=ttd");
    let pfx = files.pkcs12("", Pkcs12Kind::Modern);
    let first = kid_of(token.import("ttd", &pfx, None));
    assert_eq!(object_count(&token), 3);
    let first_pem = export(&token, &first);
    // openssl's certificate starts the second it was made; a renewal in that
    // second would start a second later to be the newer one.
    std::thread::sleep(std::time::Duration::from_millis(1_100));

    let renewed = kid_of(token.agent(&["keys", "renew", "--issuer", "ttd", "--kid", &first]));
    assert_eq!(object_count(&token), 4, "only the certificate");
    let renewed_pem = export(&token, &renewed);

    let out = token
        .agent(&["keys", "delete", "--kid", &first, "--yes"])
        .success();
    assert!(
        out.stderr_text().contains(&format!(
            "its key stays on the token for its other certificate(s): {renewed}"
        )),
        "{}",
        out.stderr_text()
    );
    let rows = token.keys_json();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["kid"], renewed.as_str());
    assert_eq!(rows[0]["complete"], true);
    assert_eq!(rows[0]["active"], true);
    let minted = mint(&token, None);
    assert_header_names(&minted, &renewed);
    for pem in [&first_pem, &renewed_pem] {
        verify_jwt(&minted, &std::fs::read(pem).unwrap(), "ttd");
    }

    // The first kid now names only the key its other certificate uses.
    let refused = token
        .agent(&["keys", "delete", "--kid", &first, "--yes"])
        .exit(1);
    assert!(
        refused.stderr_text().contains(&renewed),
        "{}",
        refused.stderr_text()
    );
    assert_eq!(object_count(&token), 3);

    token
        .agent(&["keys", "delete", "--kid", &renewed, "--yes"])
        .success();
    assert!(token.keys_json().is_empty());
    assert_eq!(
        token.list_objects().trim(),
        "",
        "the key went with its last certificate"
    );
}

#[test]
fn renewing_what_is_not_there_is_refused_and_changes_nothing() {
    let token = TestToken::new();
    let out = token.agent(&["keys", "renew", "--issuer", "ttd"]).exit(69);
    assert!(
        out.stderr_text().contains("no active key"),
        "{}",
        out.stderr_text()
    );
    let kid = kid_of(token.generate("ttd", None));
    let before = token.list_objects();
    let unknown = "C5726728C38CFE6C16988454206B99CA29AE025E";
    token
        .agent(&["keys", "renew", "--issuer", "ttd", "--kid", unknown])
        .exit(69);
    let out = token
        .agent(&[
            "keys", "renew", "--issuer", "ttd", "--kid", &kid, "--days", "0",
        ])
        .exit(65);
    assert!(
        out.stderr_text().contains("--days 0"),
        "{}",
        out.stderr_text()
    );
    token
        .agent(&["keys", "renew", "--issuer", "digdir", "--kid", &kid])
        .exit(69);
    assert_eq!(token.list_objects(), before);
}

#[test]
fn a_serving_agent_takes_up_the_renewed_certificate_on_reload() {
    let token = ttd_token("rsa2048", "");
    let old = token.keys_json()[0]["kid"].as_str().unwrap().to_owned();
    let mut daemon = Daemon::start(&token);
    let before = daemon.client().token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(before.kid, old);

    let new = kid_of(token.agent(&["keys", "renew", "--issuer", "ttd"]));
    reload(&mut daemon, &token);
    let after = daemon.client().token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(after.kid, new);
    assert_header_names(&after.token, &new);
    // Whichever certificate a validator has cached, both tokens verify.
    for pem in [export(&token, &old), export(&token, &new)] {
        for issued in [&before, &after] {
            verify_jwt(&issued.token, &std::fs::read(&pem).unwrap(), "ttd");
        }
    }
}
