//! [`TestToken`]: a freshly initialised token (SoftHSM's, or Kryoptic's:
//! [`Store`]) in a temporary directory of its own, and the agent's commands
//! run against it.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use tempfile::TempDir;

use crate::path_str;
use crate::process::{agent_binary, AgentProcess, OutputExt};
use crate::store::Store;
/// The label every [`TestToken`] is initialised with unless told otherwise.
pub const LABEL: &str = "access-tokens";
/// The user PIN of every [`TestToken`].
pub const PIN: &str = "7391";
/// The security officer PIN of every [`TestToken`].
pub const SO_PIN: &str = "846215";

/// A freshly initialised token in its own temporary directory, with a PIN
/// file (mode 0600) and an `agent.toml` that points at it.
pub struct TestToken {
    dir: TempDir,
    label: String,
    store: Store,
}

impl TestToken {
    /// A new token labelled [`LABEL`] on this thread's [`Store::current`],
    /// and a config with only `[hsm]`.
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
            store: Store::current(),
        };
        token.store.initialise(token.path(), label);
        write_private(&token.pin_file(), &format!("{PIN}\n"));
        token.write_config("");
        token
    }

    /// The implementation holding this token.
    pub fn store(&self) -> Store {
        self.store
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
        self.softhsm_only("softhsm2.conf");
        self.path().join("softhsm2.conf")
    }

    /// Kryoptic's SQLite database holding this token, the value of
    /// `KRYOPTIC_CONF`.
    pub fn kryoptic_database(&self) -> PathBuf {
        assert_eq!(self.store, Store::Kryoptic, "a Kryoptic token");
        self.path().join("token.sql")
    }

    fn softhsm_only(&self, what: &str) {
        assert_eq!(self.store, Store::SoftHsm, "{what} is SoftHSM's");
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
            self.module(),
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

    /// The PKCS#11 module that holds this token.
    pub fn module(&self) -> String {
        self.store.module()
    }

    /// What this token's module needs in its environment to find it (and
    /// nothing else): `SOFTHSM2_CONF` or `KRYOPTIC_CONF`.
    pub fn module_environment(&self) -> Vec<(String, String)> {
        vec![self.store.environment(self.path())]
    }

    /// Sets [`TestToken::module_environment`] so `command` sees only this token.
    pub fn with_module_env<'c>(&self, command: &'c mut Command) -> &'c mut Command {
        command.envs(self.module_environment())
    }

    /// The agent binary with `--config agent.toml` and `args`, stdin null,
    /// output captured; adjust it before running it.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_of(&agent_binary(), args)
    }

    /// [`TestToken::command`] with another build of the agent (an earlier
    /// commit's, for a before/after benchmark).
    pub fn command_of(&self, binary: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(binary);
        self.with_module_env(&mut command)
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
        let child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(self.open_agent_log())
            .spawn()
            .expect("start access-token-agent");
        AgentProcess(child)
    }

    /// Where agents started on this token write their stderr, one after
    /// another: [`TestToken::spawn_agent`], [`crate::daemon::Daemon`].
    pub fn agent_log(&self) -> PathBuf {
        self.path().join("agent.log")
    }

    /// [`TestToken::agent_log`] opened for appending, for a child's stderr.
    pub fn open_agent_log(&self) -> fs::File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.agent_log())
            .expect("open the agent log")
    }

    /// `pkcs11-tool` against this token's module, with `args`.
    pub fn pkcs11_tool(&self, args: &[&str]) -> Output {
        self.with_module_env(&mut Command::new("pkcs11-tool"))
            .args(["--module", &self.module(), "--token-label", &self.label])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run pkcs11-tool (apt-get install opensc)")
    }

    /// What `pkcs11-tool --login --list-objects` prints: every object on the
    /// token as seen by the logged-in user, private keys included. The
    /// objects it has no name for (Kryoptic's mechanism and profile objects,
    /// `Object 7, type 7`) are left out: they are the token's, not stored.
    pub fn list_objects(&self) -> String {
        let out = self.pkcs11_tool(&["--login", "--pin", PIN, "--list-objects"]);
        let text = out.success().stdout_text();
        let nameless = |line: &str| line.starts_with("Object ") && line.contains(", type ");
        let lines: Vec<&str> = text.lines().filter(|line| !nameless(line)).collect();
        lines.join("\n")
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
    /// and CKA_LABEL `label`: objects made outside the agent, by a user
    /// who logged in. Panics unless pkcs11-tool succeeds.
    pub fn write_object(&self, file: &Path, kind: &str, id: &str, label: &str) {
        self.write_object_in(&["--login", "--pin", PIN], file, kind, id, label);
    }

    /// Writes `file` onto the token as [`TestToken::write_object`] does, but
    /// through a session that has not logged in: what anyone who can open
    /// a SoftHSM token can plant (public objects only). Kryoptic refuses
    /// every object to such a session (CKR_USER_NOT_LOGGED_IN), so there the
    /// same public objects are written by a logged-in session, as another
    /// tool with the PIN could: the agent's rules must hold either way.
    /// Panics unless it succeeds.
    pub fn plant_object(&self, file: &Path, kind: &str, id: &str, label: &str) {
        let login: &[&str] = match self.store {
            Store::SoftHsm => &[],
            Store::Kryoptic => &["--login", "--pin", PIN],
        };
        self.write_object_in(login, file, kind, id, label);
    }

    /// Deletes the first object of type `kind` with CKA_ID `id` that
    /// `pkcs11-tool --login --delete-object` finds. Panics unless it succeeds.
    pub fn delete_object(&self, kind: &str, id: &str) {
        let object = ["--delete-object", "--type", kind, "--id", id];
        self.pkcs11_tool(&[&["--login", "--pin", PIN][..], &object].concat())
            .success();
    }

    fn write_object_in(&self, login: &[&str], file: &Path, kind: &str, id: &str, label: &str) {
        let file = path_str(file);
        let object = [
            "--write-object",
            &file,
            "--type",
            kind,
            "--id",
            id,
            "--label",
            label,
        ];
        self.pkcs11_tool(&[login, &object].concat()).success();
    }

    /// `keys export-cert` of `issuer`'s certificate `kid` (default: the
    /// active one) in `format` (`pem`, `der`, `keyvault`); panics unless
    /// it succeeds.
    pub fn export_cert(&self, issuer: &str, kid: Option<&str>, format: &str) -> Vec<u8> {
        let mut args = vec![
            "keys",
            "export-cert",
            "--issuer",
            issuer,
            "--format",
            format,
        ];
        if let Some(kid) = kid {
            args.extend(["--kid", kid]);
        }
        self.agent(&args).success().stdout
    }

    /// `keys list --json`, parsed: one value per key pair.
    pub fn keys_json(&self) -> Vec<serde_json::Value> {
        let out = self.agent(&["keys", "list", "--json"]).success();
        serde_json::from_slice(&out.stdout).expect("keys list --json prints a JSON array")
    }

    /// The row of `kid` in `keys list --json`; panics if it is not listed.
    pub fn key_row(&self, kid: &str) -> serde_json::Value {
        row(&self.keys_json(), kid).clone()
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
        self.softhsm_only("object_files");
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
        self.softhsm_only("token_file");
        self.store_files()
            .into_iter()
            .find(|path| path.file_name().is_some_and(|n| n == "token.object"))
            .expect("SoftHSM's token.object")
    }

    /// Moves SoftHSM's token directory aside (`tokens` → `tokens.away`):
    /// to a running agent the HSM has gone away, token and keys with it.
    pub fn move_away(&self) {
        self.softhsm_only("move_away");
        fs::rename(self.path().join("tokens"), self.path().join("tokens.away"))
            .expect("move the token directory away");
    }

    /// Puts back what [`TestToken::move_away`] moved: the HSM is back.
    pub fn bring_back(&self) {
        self.softhsm_only("bring_back");
        fs::rename(self.path().join("tokens.away"), self.path().join("tokens"))
            .expect("bring the token directory back");
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

/// The row of `kid` among `rows` ([`TestToken::keys_json`]); panics if it
/// is not listed.
pub fn row<'a>(rows: &'a [serde_json::Value], kid: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|row| row["kid"] == kid)
        .unwrap_or_else(|| panic!("kid {kid} not listed: {rows:?}"))
}
