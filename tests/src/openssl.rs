//! Keys, certificates and PKCS#12 files made by the openssl CLI, outside
//! the project's code, and the shared test data in `tests/data`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::path_str;
use crate::process::OutputExt;

/// Runs the openssl CLI in `dir` and returns its output; panics on failure.
pub fn openssl(dir: &Path, args: &[&str]) -> Output {
    Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl")
        .success()
}

/// A private key and its self-signed certificate, both PEM files.
#[derive(Debug, Clone)]
pub struct KeyFiles {
    pub key: PathBuf,
    pub cert: PathBuf,
}

impl KeyFiles {
    /// Packs this key and certificate into `<name>.pfx` next to them, as
    /// [`pkcs12`] does, `<name>` being the key file's stem.
    pub fn pkcs12(&self, password: &str, kind: Pkcs12Kind) -> PathBuf {
        let dir = self.key.parent().expect("a file in a directory");
        let name = self
            .key
            .file_stem()
            .and_then(|n| n.to_str())
            .expect("a UTF-8 name");
        pkcs12(dir, name, &self.key, &self.cert, password, kind)
    }
}

/// An RSA key of `bits` bits and a self-signed certificate for `subject`
/// (e.g. `/CN=ttd`), valid from now for 30 days, made by openssl in `dir`
/// as `<name>.key` and `<name>.pem`.
pub fn rsa_self_signed(dir: &Path, name: &str, bits: u32, subject: &str) -> KeyFiles {
    let files = key_files(dir, name);
    let bits = format!("rsa:{bits}");
    self_signed(dir, &files, &["-newkey", &bits], subject);
    files
}

/// An EC P-256 key and a self-signed certificate, as [`rsa_self_signed`].
pub fn p256_self_signed(dir: &Path, name: &str, subject: &str) -> KeyFiles {
    let files = key_files(dir, name);
    let params = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"];
    self_signed(dir, &files, &params, subject);
    files
}

fn key_files(dir: &Path, name: &str) -> KeyFiles {
    KeyFiles {
        key: dir.join(format!("{name}.key")),
        cert: dir.join(format!("{name}.pem")),
    }
}

fn self_signed(dir: &Path, files: &KeyFiles, key_params: &[&str], subject: &str) {
    let mut args = vec!["req", "-x509", "-nodes", "-sha256", "-days", "30"];
    args.extend_from_slice(key_params);
    args.extend_from_slice(&["-subj", subject]);
    let (key, cert) = (path_str(&files.key), path_str(&files.cert));
    args.extend_from_slice(&["-keyout", &key, "-out", &cert]);
    openssl(dir, &args);
}

/// How a PKCS#12 file is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pkcs12Kind {
    /// Altinn's kind: pbeWithSHA1And3-KeyTripleDES-CBC for both bags, SHA-1 MAC.
    Legacy3Des,
    /// `openssl pkcs12 -export -legacy`: RC2-40 certificate bag (Windows exports).
    LegacyRc2,
    /// OpenSSL 3's default: PBES2 with AES-256-CBC, SHA-256 MAC.
    Modern,
}

/// Packs `key` and `cert` (PEM files) into `<name>.pfx` in `dir` with
/// `password` (empty allowed), protected as `kind` says.
pub fn pkcs12(
    dir: &Path,
    name: &str,
    key: &Path,
    cert: &Path,
    password: &str,
    kind: Pkcs12Kind,
) -> PathBuf {
    let out = dir.join(format!("{name}.pfx"));
    let password_file = dir.join(format!("{name}.pfx-password"));
    fs::write(&password_file, password).expect("write the PKCS#12 password");
    let passout = format!("file:{}", path_str(&password_file));
    let (key, cert, out_str) = (path_str(key), path_str(cert), path_str(&out));
    let mut args = vec!["pkcs12", "-export", "-inkey", &key, "-in", &cert];
    args.extend_from_slice(&["-out", &out_str, "-passout", &passout]);
    match kind {
        Pkcs12Kind::Legacy3Des => args.extend_from_slice(&[
            "-keypbe",
            "PBE-SHA1-3DES",
            "-certpbe",
            "PBE-SHA1-3DES",
            "-macalg",
            "sha1",
        ]),
        Pkcs12Kind::LegacyRc2 => args.push("-legacy"),
        Pkcs12Kind::Modern => args.extend_from_slice(&[
            "-keypbe",
            "AES-256-CBC",
            "-certpbe",
            "AES-256-CBC",
            "-macalg",
            "sha256",
        ]),
    }
    // An empty password file reads as "no password" to openssl, not "";
    // `pass:` gives the empty password Altinn's files use.
    if password.is_empty() {
        let at = args.iter().position(|a| *a == passout).expect("passout");
        args[at] = "pass:";
    }
    openssl(dir, &args);
    out
}

/// The certificate's SHA-1 thumbprint as openssl prints it, upper-case hex
/// without colons: the kid.
pub fn sha1_thumbprint(cert: &Path) -> String {
    let out = openssl(
        cert.parent().expect("a file in a directory"),
        &[
            "x509",
            "-in",
            &path_str(cert),
            "-noout",
            "-fingerprint",
            "-sha1",
        ],
    );
    let text = out.stdout_text();
    let (_, hex) = text
        .trim()
        .split_once('=')
        .unwrap_or_else(|| panic!("unexpected fingerprint output: {text}"));
    hex.replace(':', "").to_ascii_uppercase()
}

/// The DER form of a PEM certificate, converted by openssl.
pub fn cert_der(cert: &Path) -> Vec<u8> {
    let dir = cert.parent().expect("a file in a directory");
    openssl(dir, &["x509", "-in", &path_str(cert), "-outform", "der"]).stdout
}

/// `cert`'s DER with the month of its notBefore (the validity's first
/// UTCTime, `YYMMDDHHMMSSZ`) set to 13: a date OpenSSL's DER parser accepts
/// but that is no point in time. The signature no longer matches; nothing
/// checks it before the dates are read.
pub fn der_with_month_13(cert: &Path) -> Vec<u8> {
    let mut der = cert_der(cert);
    let at = der
        .windows(2)
        .position(|tag_and_length| tag_and_length == [0x17, 0x0d])
        .expect("a UTCTime in the certificate")
        + 2;
    der[at + 2..at + 4].copy_from_slice(b"13");
    der
}

/// The DER of the RSA certificate `cert` with its public key made
/// unreadable (the RSAPublicKey's SEQUENCE tag turned into a SET): the
/// certificate still parses, and pkcs11-tool writes it, but its key
/// cannot be read, which leaves several errors on OpenSSL's queue.
pub fn der_with_unreadable_key(cert: &Path) -> Vec<u8> {
    let mut der = cert_der(cert);
    // BIT STRING (0x03, long length, no unused bits), then SEQUENCE (0x30).
    let at = der
        .windows(6)
        .position(|w| w[0] == 0x03 && w[1] == 0x82 && w[4] == 0x00 && w[5] == 0x30)
        .expect("an RSA SubjectPublicKeyInfo in the certificate")
        + 5;
    der[at] = 0x31;
    der
}

/// An RS256 signature of `input` with the PEM key `key`, made by openssl.
pub fn openssl_sign_sha256(key: &Path, input: &[u8]) -> Vec<u8> {
    let dir = key.parent().expect("a file in a directory");
    let input_file = tempfile::NamedTempFile::new_in(dir).expect("a temporary file");
    fs::write(input_file.path(), input).expect("write the signing input");
    openssl(
        dir,
        &[
            "dgst",
            "-sha256",
            "-sign",
            &path_str(key),
            &path_str(input_file.path()),
        ],
    )
    .stdout
}

/// The `openssl ca` configuration [`write_ca_files`] writes: any subject
/// with a common name, kept whole (with `-preserveDN`), validity to the
/// second with `-startdate`/`-enddate` (`req -x509 -days` counts days).
const CA_CONFIG: &str = "\
[ ca ]
default_ca = tiny
[ tiny ]
database = index.txt
new_certs_dir = .
serial = serial.txt
default_md = sha256
policy = any
unique_subject = no
x509_extensions = signing
[ any ]
commonName = supplied
[ signing ]
basicConstraints = CA:FALSE
keyUsage = digitalSignature
";

/// Writes `ca.cnf` and the database `openssl ca -config ca.cnf` keeps into `dir`.
pub fn write_ca_files(dir: &Path) {
    fs::write(dir.join("ca.cnf"), CA_CONFIG).expect("write ca.cnf");
    fs::write(dir.join("index.txt"), "").expect("write index.txt");
    fs::write(dir.join("serial.txt"), "01\n").expect("write serial.txt");
}

/// Unix seconds as an ASN.1 UTCTime, `YYMMDDHHMMSSZ`, as `date` writes it.
pub fn utc_time(unix: i64) -> String {
    utc_date(unix, "%y%m%d%H%M%SZ")
}

/// Unix seconds in UTC as `date -u +FORMAT` writes them: a clock outside
/// the code under test.
pub fn utc_date(unix: i64, format: &str) -> String {
    let out = Command::new("date")
        .args(["-u", "-d", &format!("@{unix}"), &format!("+{format}")])
        .output()
        .expect("run date")
        .success();
    out.stdout_text().trim().to_owned()
}

/// A certificate authority made by openssl in a directory: an RSA key and
/// a self-signed certificate (`ca.key`, `ca.pem`), issuing certificates
/// for requests with `openssl ca`.
pub struct TinyCa {
    dir: PathBuf,
}

impl TinyCa {
    pub fn new(dir: &Path) -> TinyCa {
        write_ca_files(dir);
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-nodes",
                "-sha256",
                "-days",
                "2",
                "-newkey",
                "rsa:2048",
                "-subj",
                "/CN=Tiny Test CA",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
            ],
        );
        TinyCa {
            dir: dir.to_path_buf(),
        }
    }

    /// Certifies the PEM request `csr`, valid from `not_before` to
    /// `not_after` (Unix seconds), as `<name>.pem`; returns its path.
    pub fn issue(&self, csr: &Path, name: &str, not_before: i64, not_after: i64) -> PathBuf {
        let out = self.dir.join(format!("{name}.pem"));
        openssl(
            &self.dir,
            &[
                "ca",
                "-batch",
                "-notext",
                "-preserveDN",
                "-config",
                "ca.cnf",
                "-keyfile",
                "ca.key",
                "-cert",
                "ca.pem",
                "-in",
                &path_str(csr),
                "-out",
                &path_str(&out),
                "-startdate",
                &utc_time(not_before),
                "-enddate",
                &utc_time(not_after),
            ],
        );
        out
    }
}

/// The shared test data directory (`tests/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

/// The shared Altinn test certificate and key (`tests/data/ttd-org.pfx`,
/// empty password, legacy 3DES) and its certificate (`ttd-org.pem`).
pub fn ttd_pfx() -> PathBuf {
    data_dir().join("ttd-org.pfx")
}

/// The certificate inside [`ttd_pfx`].
pub fn ttd_pem() -> PathBuf {
    data_dir().join("ttd-org.pem")
}
