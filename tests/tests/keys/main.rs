//! `keys import | generate | list | export-cert | delete` against a real
//! SoftHSM token, with pkcs11-tool and openssl as independent witnesses.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::path::Path;

use integration_tests::{
    cert_der, jws_part, openssl, pkcs12, rsa_self_signed, sha1_thumbprint, ttd_pem, ttd_pfx,
    write_private, OutputExt, Pkcs12Kind, TestToken,
};
use serde_json::Value;

fn import_ttd(token: &TestToken) -> String {
    let out = token.import("ttd", &ttd_pfx(), None).success();
    out.stdout_text().trim().to_owned()
}

fn generate(token: &TestToken, issuer: &str) -> String {
    let out = token.generate(issuer, None).success();
    out.stdout_text().trim().to_owned()
}

fn row<'a>(rows: &'a [Value], kid: &str) -> &'a Value {
    rows.iter()
        .find(|row| row["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not listed: {rows:?}"))
}

/// The block pkcs11-tool prints for the object of `class` ("Private Key",
/// "Certificate", …) with CKA_ID `kid`.
fn object_block(objects: &str, class: &str, kid: &str) -> Option<String> {
    let id_line = format!("ID:         {}", kid.to_ascii_lowercase());
    objects
        .split(" Object;")
        .zip(objects.split(" Object;").skip(1))
        .find(|(before, block)| before.ends_with(class) && block.contains(&id_line))
        .map(|(_, block)| block.to_owned())
}

fn line_of<'a>(block: &'a str, field: &str) -> &'a str {
    block
        .lines()
        .find_map(|line| line.trim().strip_prefix(field))
        .map(|rest| rest.trim_start_matches(':').trim())
        .unwrap_or_else(|| panic!("no {field} in {block}"))
}

/// Refusals leave the token exactly as empty as it was.
fn assert_token_empty(token: &TestToken) {
    assert!(token.keys_json().is_empty());
    assert_eq!(token.list_objects().trim(), "", "objects left on the token");
}

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

#[test]
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

#[test]
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

#[test]
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

#[test]
fn export_by_kid_and_of_an_unknown_issuer() {
    let token = TestToken::new();
    let altinn = import_ttd(&token);
    let generated = generate(&token, "ttd");
    let pem_of = |kid: &str| {
        let out = token
            .agent(&[
                "keys",
                "export-cert",
                "--issuer",
                "ttd",
                "--kid",
                kid,
                "--format",
                "pem",
            ])
            .success();
        sha1_thumbprint(&token.write_file("by-kid.pem", &out.stdout))
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

#[test]
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

#[test]
fn delete_without_yes_and_without_a_terminal_is_refused() {
    let token = TestToken::new();
    let kid = import_ttd(&token);
    let out = token.agent(&["keys", "delete", "--kid", &kid]).exit(2);
    assert!(out.stderr_text().contains("--yes"), "{}", out.stderr_text());
    assert_eq!(token.keys_json().len(), 1);
}

#[test]
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

/// `cert`'s DER with the month of its notBefore (the validity's first
/// UTCTime, `YYMMDDHHMMSSZ`) set to 13: a date OpenSSL's DER parser accepts
/// but that is no point in time. The signature no longer matches; nothing
/// checks it before the dates are read.
fn der_with_month_13(cert: &Path) -> Vec<u8> {
    let mut der = cert_der(cert);
    let at = der
        .windows(2)
        .position(|tag_and_length| tag_and_length == [0x17, 0x0d])
        .expect("a UTCTime in the certificate")
        + 2;
    der[at + 2..at + 4].copy_from_slice(b"13");
    der
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
