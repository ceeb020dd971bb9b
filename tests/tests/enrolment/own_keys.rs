//! Only the agent's own keys sign: objects with an issuer's label that
//! another tool wrote, or that anyone planted through a session without
//! logging in (pkcs11-tool without `--login`), are listed as not usable
//! with the reason and never sign; two objects of one class under one
//! label and kid stop that issuer and no other. One module per surface:
//! `keys list` and `mint`, and a serving agent.

mod listing;
mod serving;

use std::path::{Path, PathBuf};

use integration_tests::{cert_der, openssl, sha1_thumbprint, KeyFiles, OutputExt, TestToken, PIN};

/// The reason `keys list --json` gives for `kid` not being usable.
fn why_not(token: &TestToken, kid: &str) -> String {
    let row = token.key_row(kid);
    assert_eq!(row["usable"], false, "{row:#}");
    assert_eq!(row["active"], false, "{row:#}");
    row["not_usable"].as_str().expect("a reason").to_owned()
}

/// The certificate of `cert` (PEM) as a DER file beside it.
fn der_file(token: &TestToken, cert: &Path, name: &str) -> PathBuf {
    token.write_file(name, cert_der(cert))
}

/// The public key of `key` (PEM) as a DER SubjectPublicKeyInfo file.
fn public_key_file(token: &TestToken, key: &Path, name: &str) -> PathBuf {
    let key = key.to_str().expect("UTF-8 path");
    let out = openssl(
        token.path(),
        &["pkey", "-in", key, "-pubout", "-outform", "der"],
    );
    token.write_file(name, out.stdout)
}

/// The kid of the token `mint --issuer ISSUER` signs, and the token.
fn minted_kid(token: &TestToken, issuer: &str) -> (String, String) {
    let out = token.agent(&["mint", "--issuer", issuer]).success();
    let jwt = out.stdout_text().trim().to_owned();
    let kid = integration_tests::jws_part(&jwt, 0)["kid"]
        .as_str()
        .expect("a kid")
        .to_owned();
    (kid, jwt)
}

/// Writes `files`' private key (allowed to sign, and with pkcs11-tool's
/// `flags`, such as `--extractable`) and its certificate under `label`,
/// logged in, as another tool would; returns the kid.
fn written_by_another_tool(
    token: &TestToken,
    files: &KeyFiles,
    label: &str,
    flags: &[&str],
) -> String {
    let kid = sha1_thumbprint(&files.cert);
    let key = files.key.to_str().expect("UTF-8 path");
    // Kryoptic's default for a written key is not to sign: say it.
    let write = ["--write-object", key, "--type", "privkey", "--usage-sign"];
    let named = ["--id", &kid, "--label", label];
    token
        .pkcs11_tool(&[&["--login", "--pin", PIN][..], &write, &named, flags].concat())
        .success();
    let der = der_file(token, &files.cert, &format!("{kid}.der"));
    token.write_object(&der, "cert", &kid, label);
    kid
}
