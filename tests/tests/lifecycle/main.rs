//! A key's life cycle as Altinn Platform sees it, against a real SoftHSM
//! token: renewed certificates for the same key, requests for a CA and the
//! certificates it issues, switching at a chosen instant, and warnings
//! ahead of expiry. Tokens are checked with `jsonwebtoken` against the
//! exported certificates, and certificates with the openssl CLI.
//!
//! | module | what it asserts |
//! |---|---|
//! | [`renew`] | `keys renew`: a new certificate for the same key; tokens verify against the old and the new alike; the key goes with its last certificate |
//! | [`csr`] | `keys csr`: a PKCS#10 request the HSM key signs, which openssl verifies |
//! | [`import_cert`] | `keys import-cert`: the CA's certificate joins its key and becomes active; certificates for other keys, or outside their validity, are refused with nothing changed |
//! | [`not_before`] | `--not-before`: a key or certificate enrolled ahead of time takes over at the chosen instant, in `mint --now` and in a serving agent |
//! | [`expiry_warning`] | `keys list`, `/readyz` and `/metrics` warn once the active certificate is within `expiry_warning_days` of its notAfter |
//! | [`expiry`] | a certificate that expires while the agent runs stops signing for its issuer, says so on `/readyz` and in its 503s, and signing resumes once a valid key is there |

mod csr;
mod expiry;
mod expiry_warning;
mod import_cert;
mod not_before;
mod renew;

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use integration_tests::{jws_part, openssl, sha1_thumbprint, OutputExt, TestToken};

/// The first line of a successful command's stdout: a kid.
fn kid_of(out: std::process::Output) -> String {
    out.success().stdout_text().trim().to_owned()
}

/// `keys export-cert --kid KID --format pem`, written to `<kid>.pem`.
fn export(token: &TestToken, kid: &str) -> PathBuf {
    let pem = token.export_cert("ttd", Some(kid), "pem");
    let path = token.write_file(&format!("{kid}.pem"), pem);
    assert_eq!(
        sha1_thumbprint(&path),
        kid,
        "the export is that certificate"
    );
    path
}

/// `mint --issuer ttd`, at `now` when given.
fn mint(token: &TestToken, now: Option<i64>) -> String {
    let now = now.map(|now| now.to_string());
    let mut args = vec!["mint", "--issuer", "ttd", "--app", "my-app"];
    if let Some(now) = &now {
        args.extend(["--now", now]);
    }
    token.agent(&args).success().stdout_text().trim().to_owned()
}

/// The token's header names `kid`'s certificate: kid, and x5t as base64url
/// of the SHA-1 thumbprint openssl computes.
fn assert_header_names(token: &str, kid: &str) {
    let header = jws_part(token, 0);
    assert_eq!(header["kid"], kid, "{header}");
    let thumbprint: Vec<u8> = (0..40)
        .step_by(2)
        .map(|i| u8::from_str_radix(&kid[i..i + 2], 16).unwrap())
        .collect();
    assert_eq!(
        header["x5t"],
        URL_SAFE_NO_PAD.encode(thumbprint),
        "{header}"
    );
}

/// What openssl prints for `cert` with `-noout` and `option`, e.g.
/// `-pubkey`, `-subject`.
fn openssl_x509(token: &TestToken, cert: &std::path::Path, option: &str) -> String {
    let cert = cert.to_str().unwrap();
    openssl(token.path(), &["x509", "-in", cert, "-noout", option]).stdout_text()
}

/// The number of objects pkcs11-tool sees on the token.
fn object_count(token: &TestToken) -> usize {
    token.list_objects().matches(" Object;").count()
}

/// SIGHUP, and back to READY=1: the agent has chosen its keys again.
fn reload(daemon: &mut integration_tests::daemon::Daemon, token: &TestToken) {
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(token, "RELOADING=1");
    daemon.wait_for(token, "READY=1");
}
