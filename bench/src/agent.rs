//! A real agent for the benchmark: a SoftHSM token in a temporary directory
//! with one RSA and one P-256 key, and `serve` processes started on it.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// SoftHSM's PKCS#11 module.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
const LABEL: &str = "bench";
const PIN: &str = "1234";

/// The issuer signed with RSA-2048 (RS256) and the one with P-256 (ES256).
pub const RSA_ISSUER: &str = "ttd";
pub const EC_ISSUER: &str = "ttd-es";

/// A token directory with keys for both issuers.
pub struct Fixture {
    pub dir: tempfile::TempDir,
}

impl Fixture {
    /// Creates the token and generates both keys inside it.
    pub fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let fixture = Fixture { dir };
        std::fs::create_dir(fixture.path("tokens")).expect("the token directory");
        let conf = format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            fixture.path("tokens").display()
        );
        std::fs::write(fixture.softhsm_conf(), conf).expect("softhsm2.conf");
        run(Command::new("softhsm2-util")
            .env("SOFTHSM2_CONF", fixture.softhsm_conf())
            .args([
                "--init-token",
                "--free",
                "--label",
                LABEL,
                "--so-pin",
                "5678",
                "--pin",
                PIN,
            ]));
        std::fs::write(fixture.pin_file(), PIN).expect("the PIN file");
        std::fs::set_permissions(fixture.pin_file(), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
        fixture.write_config(true);
        for (issuer, key_type) in [(RSA_ISSUER, "rsa2048"), (EC_ISSUER, "p256")] {
            run(fixture.agent().args([
                "keys",
                "generate",
                "--issuer",
                issuer,
                "--key-type",
                key_type,
            ]));
        }
        fixture
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.path("softhsm2.conf")
    }

    pub fn pin_file(&self) -> PathBuf {
        self.path("pin")
    }

    pub fn socket(&self) -> PathBuf {
        self.path("agent.sock")
    }

    pub fn label(&self) -> &'static str {
        LABEL
    }

    /// Writes the agent's config, with the token cache on or off.
    pub fn write_config(&self, cache: bool) {
        self.write_config_with(&format!("cache = {cache}"));
    }

    /// Writes the agent's config with `token_settings` as its `[token]` section.
    pub fn write_config_with(&self, token_settings: &str) {
        let uid = unsafe { libc::getuid() };
        let config = format!(
            "[hsm]\nmodule = {MODULE:?}\ntoken_label = {LABEL:?}\npin_file = {:?}\n\n\
             [token]\n{token_settings}\n\n[server]\nsocket = {:?}\n\n\
             [[issuer]]\nname = {RSA_ISSUER:?}\n\n[[issuer]]\nname = {EC_ISSUER:?}\n\n\
             [[grant]]\nuid = {uid}\nissuer = {RSA_ISSUER:?}\napps = [\"*\"]\n\n\
             [[grant]]\nuid = {uid}\nissuer = {EC_ISSUER:?}\napps = [\"*\"]\n",
            self.pin_file().display().to_string(),
            self.socket().display().to_string(),
        );
        std::fs::write(self.path("agent.toml"), config).expect("agent.toml");
    }

    /// Lets one uid hold every connection: the load generator is one uid
    /// standing for many clients. Only for this build's steps: older builds
    /// (`make bench BEFORE=`) do not know the key.
    pub fn allow_one_uid_every_connection(&self) {
        let path = self.path("agent.toml");
        let config = std::fs::read_to_string(&path).expect("agent.toml");
        let config = config.replacen(
            "[server]\n",
            "[server]\nmax_connections_per_uid = 1024\n",
            1,
        );
        std::fs::write(path, config).expect("agent.toml");
    }

    fn agent(&self) -> Command {
        self.agent_from(&agent_binary())
    }

    fn agent_from(&self, binary: &Path) -> Command {
        let mut command = Command::new(binary);
        command
            .env("SOFTHSM2_CONF", self.softhsm_conf())
            .arg("--config")
            .arg(self.path("agent.toml"))
            .stdin(Stdio::null());
        command
    }

    /// Starts `serve` and waits for READY=1; returns it with the time from
    /// exec to READY.
    pub fn serve(&self) -> (Agent, Duration) {
        self.serve_from(&agent_binary())
    }

    /// Like [`Fixture::serve`], with another build of the agent.
    pub fn serve_from(&self, binary: &Path) -> (Agent, Duration) {
        let notify_path = self.path("notify");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).expect("the notify socket");
        notify
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("a timeout");
        let log = std::fs::File::create(self.path("agent.log")).expect("the agent log");
        let started = Instant::now();
        let child = self
            .agent_from(binary)
            .arg("serve")
            .env("NOTIFY_SOCKET", &notify_path)
            .env("ACCESS_TOKEN_AGENT_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the agent");
        let mut buffer = [0u8; 1024];
        loop {
            let n = notify.recv(&mut buffer).unwrap_or_else(|e| {
                panic!(
                    "no READY=1 from the agent ({e}); see {}",
                    self.path("agent.log").display()
                )
            });
            if String::from_utf8_lossy(&buffer[..n])
                .lines()
                .any(|l| l == "READY=1")
            {
                break;
            }
        }
        (Agent(child), started.elapsed())
    }
}

/// A running agent, stopped with SIGTERM when dropped.
pub struct Agent(pub Child);

impl Agent {
    /// Open descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.0.id())).map_or(0, |dir| dir.count())
    }

    /// CPU time the agent has used, user and system, all threads.
    pub fn cpu_time(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.0.id())).unwrap_or_default();
        // Fields 14 and 15 (utime, stime), counted after the command name,
        // which may contain spaces but ends at the last ')'.
        let ticks: u64 = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().skip(11).take(2))
            .into_iter()
            .flatten()
            .filter_map(|field| field.parse::<u64>().ok())
            .sum();
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary next to this benchmark's binary (same profile).
pub fn agent_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("this binary's path");
    let binary = exe.with_file_name("access-token-agent");
    assert!(
        binary.is_file(),
        "{} is missing: run `make bench`",
        binary.display()
    );
    binary
}

fn run(command: &mut Command) {
    let output = command.output().expect("run a setup command");
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Reads the PIN as the agent does.
pub fn pin(path: &Path) -> secrecy::SecretString {
    access_token_agent::hsm::pin::read_pin_file(path).expect("the PIN file")
}

/// CPU time this process (the load generator) has used, user and system.
pub fn own_cpu_time() -> Duration {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}
