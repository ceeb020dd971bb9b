//! A real agent for the benchmark, on the workspace's test fixture: a
//! SoftHSM token in a temporary directory with one RSA and one P-256 key,
//! and `serve` processes started on it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::daemon::{
    body_of, issuer_granted_to_me, open_fds, threads, Daemon, UNPACED,
};
use integration_tests::http::{get, raw_exchange};
use integration_tests::slow_hsm::{route_through_slow_hsm, SlowHsm};
use integration_tests::{OutputExt, TestToken};

pub use integration_tests::{agent_binary, MODULE};

/// The issuer signed with RSA-2048 (RS256) and the one with P-256 (ES256).
pub const RSA_ISSUER: &str = "ttd";
pub const EC_ISSUER: &str = "ttd-es";

/// A token with keys for both issuers.
pub struct Fixture {
    token: TestToken,
}

impl Fixture {
    /// Creates the token and generates both keys inside it.
    pub fn new() -> Fixture {
        let fixture = Fixture {
            token: TestToken::new(),
        };
        fixture.write_config(true);
        for (issuer, key_type) in [(RSA_ISSUER, "rsa2048"), (EC_ISSUER, "p256")] {
            fixture.token.generate(issuer, Some(key_type)).success();
        }
        fixture
    }

    pub fn softhsm_conf(&self) -> PathBuf {
        self.token.softhsm_conf()
    }

    pub fn pin_file(&self) -> PathBuf {
        self.token.pin_file()
    }

    /// The token and config this fixture runs on.
    pub fn token(&self) -> &TestToken {
        &self.token
    }

    pub fn socket(&self) -> PathBuf {
        self.token.path().join("agent.sock")
    }

    pub fn label(&self) -> &str {
        self.token.label()
    }

    /// Writes the agent's config, with the token cache on or off.
    pub fn write_config(&self, cache: bool) {
        self.write_config_with(&format!("cache = {cache}"));
    }

    /// Writes the agent's config with `token_settings` as its `[token]`
    /// section. No audit file: writing one would be part of what is measured.
    pub fn write_config_with(&self, token_settings: &str) {
        self.write_config_sections(token_settings, "");
    }

    /// [`Fixture::write_config_with`], followed by `sections` (such as
    /// `[signing]`).
    pub fn write_config_sections(&self, token_settings: &str, sections: &str) {
        self.token.write_config(&format!(
            "[token]\n{token_settings}\n\n[server]\nsocket = {:?}\n\n{sections}\n{}\n{}",
            self.socket().display().to_string(),
            issuer_granted_to_me(RSA_ISSUER),
            issuer_granted_to_me(EC_ISSUER),
        ));
    }

    /// Lets one uid hold every connection: the load generator is one uid
    /// standing for many clients. Only for this build's steps: older builds
    /// (`make bench BEFORE=`) do not know the key.
    pub fn allow_one_uid_every_connection(&self) {
        self.set_server("max_connections_per_uid = 1024\n");
    }

    /// Puts every per-uid limit out of the way (connections, the share of
    /// the signing queue, the rates of misses and refusals): the slow-HSM
    /// steps measure the pool, and their one uid stands for a host's apps.
    pub fn allow_one_uid_everything(&self) {
        self.set_server(&format!(
            "max_connections_per_uid = 1024\nmax_signing_per_uid = 100000\n{UNPACED}\n"
        ));
    }

    /// Adds `settings` (lines of TOML) to the written config's `[server]`.
    pub fn set_server(&self, settings: &str) {
        let path = self.token.config_path();
        let config = std::fs::read_to_string(&path).expect("agent.toml");
        let config = config.replacen("[server]\n", &format!("[server]\n{settings}"), 1);
        std::fs::write(path, config).expect("agent.toml");
    }

    /// Writes the config as [`Fixture::write_config_sections`] does, with
    /// the slow module in front of the token, and starts the agent with what
    /// `slow` asks of the module.
    pub fn serve_slow(&self, token_settings: &str, sections: &str, slow: &SlowHsm) -> Agent {
        self.write_config_sections(token_settings, sections);
        self.allow_one_uid_everything();
        route_through_slow_hsm(&self.token);
        let daemon = Daemon::spawn(&self.token, |mut command| {
            command.env("ACCESS_TOKEN_AGENT_LOG", "warn");
            slow.apply(command)
        })
        .ready(&self.token);
        Agent(daemon)
    }

    /// A file in the token's directory (for the slow module's hang).
    pub fn path(&self, name: &str) -> PathBuf {
        self.token.path().join(name)
    }

    /// Starts `serve` and waits for READY=1; returns it with the time from
    /// exec to READY.
    pub fn serve(&self) -> (Agent, Duration) {
        self.serve_from(&agent_binary())
    }

    /// Like [`Fixture::serve`], logging at `log` (`warn`, or `info`, the
    /// agent's default, with a line per token), after `wrap` has had its say
    /// on the command (run under valgrind, say); returns once it said
    /// READY=1.
    pub fn serve_wrapped(&self, log: &str, wrap: impl FnOnce(Command) -> Command) -> Agent {
        let daemon = Daemon::spawn(&self.token, |mut command| {
            command.env("ACCESS_TOKEN_AGENT_LOG", log);
            wrap(command)
        })
        .ready(&self.token);
        Agent(daemon)
    }

    /// Like [`Fixture::serve`], with another build of the agent.
    pub fn serve_from(&self, binary: &Path) -> (Agent, Duration) {
        let started = Instant::now();
        let daemon = Daemon::spawn_from(&self.token, binary, |mut command| {
            command.env("ACCESS_TOKEN_AGENT_LOG", "warn");
            command
        })
        .ready(&self.token);
        (Agent(daemon), started.elapsed())
    }
}

/// A running agent, stopped with SIGTERM when dropped.
pub struct Agent(Daemon);

impl Agent {
    pub fn pid(&self) -> i32 {
        self.0.pid()
    }

    /// Open descriptors.
    pub fn open_fds(&self) -> usize {
        open_fds(self.pid())
    }

    /// Threads running.
    pub fn threads(&self) -> usize {
        threads(self.pid())
    }

    /// CPU time the agent has used, user and system, all threads.
    pub fn cpu_time(&self) -> Duration {
        cpu_time_of(self.pid())
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // A clean stop, so the next agent finds the socket and token as a
        // restarted service would; killed (by the fixture) if it hangs.
        self.0.signal(libc::SIGTERM);
        self.0.wait_exit_within(Duration::from_secs(10));
    }
}

/// CPU time process `pid` has used, user and system, all threads.
pub fn cpu_time_of(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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

/// The value of the unlabelled metric `name` on the agent at `socket`.
pub fn metric(socket: &Path, name: &str) -> Option<f64> {
    let request = get("/metrics", &["Connection: close"]);
    let answer = raw_exchange(socket, &request, Duration::from_secs(5));
    body_of(&answer)
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}
