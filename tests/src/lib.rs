//! What every integration test stands on: a private SoftHSM token, a config
//! pointing at it, the real `access-token-agent` binary, and the openssl CLI
//! for keys and certificates made outside the project's code.
//!
//! Tests run in parallel threads, so nothing here is process-global: each
//! [`TestToken`] owns a temporary directory holding its own `softhsm2.conf`,
//! token directory, PIN file and `agent.toml`, and every child process gets
//! `SOFTHSM2_CONF` pointing at that directory's conf. The temporary directory
//! (and with it the token) disappears when the [`TestToken`] is dropped.
//!
//! ```no_run
//! use integration_tests::{OutputExt, TestToken};
//!
//! let token = TestToken::new();
//! token.write_config("[[issuer]]\nname = \"ttd\"\n");
//! let out = token.agent(&["keys", "list", "--json"]).success();
//! assert_eq!(out.stdout_text().trim(), "[]");
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::ops::{Deref, DerefMut};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use tempfile::TempDir;

pub mod daemon;
pub mod http;

/// The SoftHSM2 PKCS#11 module (Debian package `softhsm2`).
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The label every [`TestToken`] is initialised with unless told otherwise.
pub const LABEL: &str = "access-tokens";
/// The user PIN of every [`TestToken`].
pub const PIN: &str = "7391";
/// The security officer PIN of every [`TestToken`].
pub const SO_PIN: &str = "846215";

/// A freshly initialised SoftHSM token in its own temporary directory,
/// with a PIN file (mode 0600) and an `agent.toml` that points at it.
pub struct TestToken {
    dir: TempDir,
    label: String,
}

impl TestToken {
    /// A new token labelled [`LABEL`], and a config with only `[hsm]`.
    pub fn new() -> TestToken {
        TestToken::with_label(LABEL)
    }

    /// A new token with its own label.
    pub fn with_label(label: &str) -> TestToken {
        let dir = tempfile::Builder::new()
            .prefix("access-token-agent-test-")
            .tempdir()
            .expect("create a temporary directory");
        let token = TestToken {
            dir,
            label: label.to_owned(),
        };
        fs::create_dir(token.path().join("tokens")).expect("create the token directory");
        fs::write(
            token.softhsm_conf(),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                token.path().join("tokens").display()
            ),
        )
        .expect("write softhsm2.conf");
        token.init_token();
        write_private(&token.pin_file(), &format!("{PIN}\n"));
        token.write_config("");
        token
    }

    fn init_token(&self) {
        let out = self
            .with_softhsm_env(&mut Command::new("softhsm2-util"))
            .args(["--init-token", "--free", "--label", &self.label])
            .args(["--so-pin", SO_PIN, "--pin", PIN])
            .output()
            .expect("run softhsm2-util (apt-get install softhsm2)");
        assert!(
            out.status.success(),
            "softhsm2-util --init-token failed: {}",
            out.stderr_text()
        );
    }

    /// The temporary directory: put test files here.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The token's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// This token's `softhsm2.conf`, the value of `SOFTHSM2_CONF`.
    pub fn softhsm_conf(&self) -> PathBuf {
        self.path().join("softhsm2.conf")
    }

    /// The user PIN file (mode 0600).
    pub fn pin_file(&self) -> PathBuf {
        self.path().join("pin")
    }

    /// The config file [`TestToken::agent`] passes with `--config`.
    pub fn config_path(&self) -> PathBuf {
        self.path().join("agent.toml")
    }

    /// Writes `agent.toml`: `[hsm]` with this token's module, label and PIN
    /// file, then `extra` verbatim (more sections, e.g. `[[issuer]]`).
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let path = self.config_path();
        fs::write(&path, format!("{}\n{extra}", self.hsm_section())).expect("write agent.toml");
        path
    }

    /// The `[hsm]` section [`TestToken::write_config`] writes, for tests
    /// that need to change it.
    pub fn hsm_section(&self) -> String {
        format!(
            "[hsm]\nmodule = {:?}\ntoken_label = {:?}\npin_file = {:?}\n",
            MODULE,
            self.label,
            self.pin_file().display().to_string(),
        )
    }

    /// Writes a file into the temporary directory and returns its path.
    pub fn write_file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path().join(name);
        fs::write(&path, contents).expect("write a test file");
        path
    }

    /// Sets `SOFTHSM2_CONF` (and nothing else) so `command` sees only this token.
    pub fn with_softhsm_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.env("SOFTHSM2_CONF", self.softhsm_conf())
    }

    /// The agent binary with `--config agent.toml` and `args`, stdin null,
    /// output captured; adjust it before running it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(agent_binary());
        self.with_softhsm_env(&mut command)
            .env_remove("ACCESS_TOKEN_AGENT_CONFIG")
            .env_remove("CREDENTIALS_DIRECTORY")
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .current_dir(self.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs the agent with `args` to completion.
    pub fn agent(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run access-token-agent")
    }

    /// Starts the agent with `args` (e.g. `serve`) in the background: stdin
    /// null, stdout piped, stderr appended to [`TestToken::agent_log`]. The
    /// process is killed when the returned value is dropped.
    pub fn spawn_agent(&self, args: &[&str]) -> AgentProcess {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log())
            .expect("open the agent log");
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start access-token-agent");
        AgentProcess(child)
    }

    /// Where [`TestToken::spawn_agent`] writes the agent's stderr.
    pub fn agent_log(&self) -> PathBuf {
        self.path().join("agent.log")
    }

    /// `pkcs11-tool` against this token's module, with `args`.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.with_softhsm_env(&mut Command::new("pkcs11-tool"))
            .args(["--module", MODULE, "--token-label", &self.label])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pkcs11-tool (apt-get install opensc)")
    }

    /// What `pkcs11-tool --login --list-objects` prints: every object on the
    /// token as seen by the logged-in user, private keys included.
    pub fn list_objects(&self) -> String {
        self.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"])
            .success()
            .stdout_text()
    }

    /// `keys import --issuer ISSUER --pfx PFX`, with `--password-file FILE`
    /// when given, ready to adjust before it runs.
    pub fn import_command(
        &self,
        issuer: &str,
        pfx: &Path,
        password_file: Option<&Path>,
    ) -> Command {
        let pfx = path_str(pfx);
        let mut command = self.command(&["keys", "import", "--issuer", issuer, "--pfx", &pfx]);
        if let Some(file) = password_file {
            command.arg("--password-file").arg(file);
        }
        command
    }

    /// Runs [`TestToken::import_command`] to completion; the exit code is
    /// the caller's to check (`.success()`, `.exit(65)`).
    pub fn import(&self, issuer: &str, pfx: &Path, password_file: Option<&Path>) -> Output {
        self.import_command(issuer, pfx, password_file)
            .output()
            .expect("run access-token-agent")
    }

    /// `keys generate --issuer ISSUER`, with `--key-type KEY_TYPE` when
    /// given, run to completion; the exit code is the caller's to check.
    pub fn generate(&self, issuer: &str, key_type: Option<&str>) -> Output {
        let mut args = vec!["keys", "generate", "--issuer", issuer];
        if let Some(key_type) = key_type {
            args.extend_from_slice(&["--key-type", key_type]);
        }
        self.agent(&args)
    }

    /// A new token holding a generated `key_type` key (`rsa2048`, `p256`,
    /// …) for issuer `ttd`, with a config naming that issuer.
    pub fn with_ttd_key(key_type: &str) -> TestToken {
        let token = TestToken::new();
        token.write_config("[[issuer]]\nname = \"ttd\"\n");
        token.generate("ttd", Some(key_type)).success();
        token
    }

    /// Writes `file` onto the token with `pkcs11-tool --write-object`, as
    /// object type `kind` (`privkey`, `cert`, …) with CKA_ID `id` (hex)
    /// and CKA_LABEL `label`: objects made outside the agent. Panics
    /// unless pkcs11-tool succeeds.
    pub fn write_object(&self, file: &Path, kind: &str, id: &str, label: &str) {
        let file = path_str(file);
        self.pkcs11_tool(&[
            "--login",
            "--pin",
            PIN,
            "--write-object",
            &file,
            "--type",
            kind,
            "--id",
            id,
            "--label",
            label,
        ])
        .success();
    }

    /// `keys list --json`, parsed: one value per key pair.
    pub fn keys_json(&self) -> Vec<serde_json::Value> {
        let out = self.agent(&["keys", "list", "--json"]).success();
        serde_json::from_slice(&out.stdout).expect("keys list --json prints a JSON array")
    }

    /// The CKA_ID (lower-case hex, as pkcs11-tool prints it) of every object
    /// [`TestToken::list_objects`] shows, one entry per object.
    pub fn object_ids(&self) -> Vec<String> {
        self.list_objects()
            .lines()
            .filter_map(|line| line.trim().strip_prefix("ID:"))
            .map(|id| id.trim().to_owned())
            .collect()
    }

    /// The files in which SoftHSM's file backend keeps this token's objects
    /// (`<token dir>/<uuid>/<uuid>.object`), its own `token.object` excluded.
    pub fn object_files(&self) -> Vec<PathBuf> {
        self.store_files()
            .into_iter()
            .filter(|path| {
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                name.ends_with(".object") && name != "token.object"
            })
            .collect()
    }

    /// SoftHSM's file holding the token itself (label, flags, wrapped PINs
    /// and token key): `<token dir>/<uuid>/token.object`.
    pub fn token_file(&self) -> PathBuf {
        self.store_files()
            .into_iter()
            .find(|path| path.file_name().is_some_and(|n| n == "token.object"))
            .expect("SoftHSM's token.object")
    }

    fn store_files(&self) -> Vec<PathBuf> {
        let tokens = fs::read_dir(self.path().join("tokens")).expect("read the token directory");
        tokens
            .flatten()
            .flat_map(|dir| fs::read_dir(dir.path()).into_iter().flatten().flatten())
            .map(|entry| entry.path())
            .collect()
    }
}

impl Default for TestToken {
    fn default() -> Self {
        TestToken::new()
    }
}

/// A running agent that is killed (and reaped) when dropped, so a failing
/// test leaves no process behind. Derefs to the [`Child`].
pub struct AgentProcess(pub Child);

impl Deref for AgentProcess {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl DerefMut for AgentProcess {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// `target/<profile>/access-token-agent`, found next to the test executable
/// (which lives in `target/<profile>/deps/`).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("the test executable lives in target/<profile>/deps");
    let binary = profile_dir.join("access-token-agent");
    assert!(
        binary.is_file(),
        "{} does not exist: build the binaries first with `cargo build --workspace --bins` (make test does this)",
        binary.display()
    );
    binary
}

/// Reading a finished process's output in tests.
pub trait OutputExt {
    /// stdout as text (lossy UTF-8).
    fn stdout_text(&self) -> String;
    /// stderr as text (lossy UTF-8).
    fn stderr_text(&self) -> String;
    /// The exit code; panics if the process died from a signal.
    fn code(&self) -> i32;
    /// Panics with the command's stderr unless it exited with 0.
    fn success(self) -> Self;
    /// Panics unless the process exited with `code`.
    fn exit(self, code: i32) -> Self;
}

impl OutputExt for Output {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    fn code(&self) -> i32 {
        self.status
            .code()
            .unwrap_or_else(|| panic!("killed by a signal: {:?}", self.status))
    }

    fn success(self) -> Self {
        self.exit(0)
    }

    fn exit(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "expected exit code {code}\nstdout: {}\nstderr: {}",
            self.stdout_text(),
            self.stderr_text()
        );
        self
    }
}

/// Writes `contents` to a new file with mode 0600 (PINs, passwords).
pub fn write_private(path: &Path, contents: &str) {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    file.write_all(contents.as_bytes())
        .expect("write a private file");
}

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

/// The shared test data directory (`tests/data`).
pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("test paths are UTF-8").to_owned()
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

/// Decodes one base64url part of a JWS into JSON.
pub fn jws_part(token: &str, index: usize) -> serde_json::Value {
    use base64::Engine;
    let part = token.split('.').nth(index).expect("a compact JWS part");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .expect("base64url");
    serde_json::from_slice(&bytes).expect("JSON")
}

/// Verifies `token` with the `jsonwebtoken` crate against the public key of
/// the PEM certificate `cert_pem`, as a relying party would: the algorithm
/// from the key type, `exp` checked, audience `platform.altinn.no`, issuer
/// `issuer`. Returns the claims.
pub fn verify_jwt(token: &str, cert_pem: &[u8], issuer: &str) -> serde_json::Value {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation};
    let header = jsonwebtoken::decode_header(token).expect("a JWS header");
    let key = match header.alg {
        Algorithm::RS256 => DecodingKey::from_rsa_pem(cert_pem),
        Algorithm::ES256 => DecodingKey::from_ec_pem(cert_pem),
        other => panic!("unexpected alg {other:?}"),
    }
    .expect("a public key from the certificate");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&["platform.altinn.no"]);
    validation.set_issuer(&[issuer]);
    validation.leeway = 10;
    jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("the token does not verify: {e}"))
        .claims
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs() as i64
}
