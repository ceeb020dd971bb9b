//! Enrolments that fail half-way for real, and a token whose storage is
//! damaged or holds a certificate object no enrolment would write.
//!
//! To fail an enrolment after its private key is on the token, the agent
//! runs with a file size limit (RLIMIT_FSIZE, SIGXFSZ ignored) of 4 KiB:
//! SoftHSM stores each object in a file of its own, a private key fits and a
//! certificate made large on purpose does not, so C_CreateObject fails for
//! the certificate, as it would on a full disk. The same limit lets an
//! enrolment with an ordinary certificate through, which shows that the
//! failing one had written its key before the certificate was refused.

use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use integration_tests::{openssl, pkcs12, rsa_self_signed, OutputExt, Pkcs12Kind, TestToken};

/// Larger than any private key object, smaller than the certificates below.
const FILE_SIZE_LIMIT: libc::rlim_t = 4096;

/// Runs `command` with [`FILE_SIZE_LIMIT`] on the files it writes.
fn with_file_size_limit(mut command: Command) -> Output {
    // SAFETY: setrlimit and signal are async-signal-safe, as pre_exec requires.
    unsafe {
        command.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: FILE_SIZE_LIMIT,
                rlim_max: FILE_SIZE_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Writes past the limit then fail with EFBIG instead of killing.
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            Ok(())
        });
    }
    command.output().expect("run access-token-agent")
}

fn import(token: &TestToken, pfx: &std::path::Path) -> Command {
    token.import_command("ttd", pfx, None)
}

/// A self-signed RSA 2048 certificate whose 200 DNS names make it about
/// 9 KiB, packed with its key into `<name>.pfx`.
fn large_certificate_pfx(token: &TestToken, name: &str) -> std::path::PathBuf {
    let names: Vec<String> = (0..200)
        .map(|i| format!("DNS:host{i:03}.a-rather-long-domain-name.example"))
        .collect();
    let san = format!("subjectAltName={}", names.join(","));
    let (key, cert) = (format!("{name}.key"), format!("{name}.pem"));
    openssl(
        token.path(),
        &[
            "req", "-x509", "-nodes", "-sha256", "-days", "30", "-newkey", "rsa:2048", "-subj",
            "/CN=ttd", "-addext", &san, "-keyout", &key, "-out", &cert,
        ],
    );
    let (key, cert) = (token.path().join(key), token.path().join(cert));
    pkcs12(token.path(), name, &key, &cert, "", Pkcs12Kind::Modern)
}

/// The IDs of the objects on the token, sorted.
fn ids(token: &TestToken) -> Vec<String> {
    let mut ids = token.object_ids();
    ids.sort();
    ids
}

fn assert_refused_at_the_certificate(out: Output) {
    let message = out.exit(1).stderr_text();
    assert!(
        message.contains("C_CreateObject (certificate) failed"),
        "the certificate step failed: {message}"
    );
}

#[test]
fn import_whose_certificate_cannot_be_stored_leaves_nothing() {
    let token = TestToken::new();
    let small = rsa_self_signed(token.path(), "small", 2048, "/CN=ttd");
    let small_pfx = small.pkcs12("", Pkcs12Kind::Modern);
    with_file_size_limit(import(&token, &small_pfx)).success();
    let kept = ids(&token);
    assert_eq!(
        kept.len(),
        3,
        "private key, public key and certificate of the ordinary import"
    );

    let large = large_certificate_pfx(&token, "large");
    assert_refused_at_the_certificate(with_file_size_limit(import(&token, &large)));

    assert_eq!(ids(&token), kept, "{}", token.list_objects());
    let rows = token.keys_json();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["complete"], true);
    // Without the limit the same file imports: the failure was the storage.
    import(&token, &large).output().unwrap().success();
}

#[test]
fn generate_whose_certificate_cannot_be_stored_leaves_nothing() {
    let token = TestToken::new();
    let generate = |key_type: &str, subject: &str| {
        token.command(&[
            "keys",
            "generate",
            "--issuer",
            "ttd",
            "--key-type",
            key_type,
            "--subject",
            subject,
        ])
    };
    with_file_size_limit(generate("rsa2048", "CN=ttd")).success();
    let kept = ids(&token);
    assert_eq!(kept.len(), 3, "both keys and the certificate");

    // Subject and issuer each hold the 3000-character name: ~9 KiB stored.
    let long_subject = format!("CN={}", "x".repeat(3000));
    for key_type in ["rsa2048", "p256"] {
        assert_refused_at_the_certificate(with_file_size_limit(generate(key_type, &long_subject)));
        assert_eq!(ids(&token), kept, "{}", token.list_objects());
        assert_eq!(token.keys_json().len(), 1);
    }
}

#[test]
fn a_damaged_object_does_not_hide_the_others() {
    let token = TestToken::new();
    let kid = token
        .generate("ttd", None)
        .success()
        .stdout_text()
        .trim()
        .to_owned();
    // An object file cut inside its first attribute, as a crash during a
    // write on a full disk leaves it. SoftHSM still finds the object but
    // answers CKR_ATTRIBUTE_VALUE_INVALID for every attribute of it.
    let existing = token.object_files().remove(0);
    let damaged = existing.with_file_name("0badc0de-0000-0000-0000-000000000000.object");
    std::fs::write(&damaged, &std::fs::read(&existing).unwrap()[..8]).unwrap();

    let out = token.agent(&["keys", "list", "--json"]).success();
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0]["kid"], kid.as_str());
    assert_eq!(rows[0]["complete"], true);
    let warning = out.stderr_text();
    assert!(
        warning.contains("cannot be read") && warning.contains("CKR_ATTRIBUTE_VALUE_INVALID"),
        "the damaged object is reported: {warning}"
    );
    token.agent(&["mint", "--issuer", "ttd"]).success();
    token
        .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", "pem"])
        .success();
}
