//! A real `access-token-agent serve` process on a real Unix socket, started
//! the way systemd starts it: with `NOTIFY_SOCKET`, so a test knows the agent
//! is ready exactly when it says READY=1.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::process::{agent_binary, AgentProcess, OutputExt};
use crate::TestToken;

// Their first home was here; tests still reach them through this module.
pub use crate::http::{body_of, raw_exchange, status_of};
pub use crate::limits::{
    open_fds, open_stream_sockets, proc_limit, raise_open_files_limit, threads,
    wait_open_fds_at_most, with_open_files_soft_limit,
};
pub use crate::process::{client_as, client_binary};
pub use crate::PATIENCE;

/// Config text for a served agent: its socket and audit file inside the
/// token's directory, then `extra` (issuers, grants, token settings).
pub fn serve_config(token: &TestToken, extra: &str) -> String {
    format!(
        "[server]\nsocket = {:?}\n\n[audit]\nfile = {:?}\n\n{extra}",
        token.path().join("agent.sock").display().to_string(),
        token.path().join("audit.jsonl").display().to_string(),
    )
}

/// `[[issuer]]` `name` and a `[[grant]]` of every one of its apps to this
/// process's uid.
pub fn issuer_granted_to_me(issuer: &str) -> String {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    format!(
        "[[issuer]]\nname = {issuer:?}\n\n[[grant]]\nuid = {me}\nissuer = {issuer:?}\napps = [\"*\"]\n"
    )
}

/// A token holding a generated `key_type` key (`rsa2048`, `p256`, …) for
/// issuer `ttd`, and a serve config granting this process's uid every `ttd`
/// app, followed by `extra`.
pub fn ttd_token(key_type: &str, extra: &str) -> TestToken {
    let token = TestToken::with_ttd_key(key_type);
    let ttd = issuer_granted_to_me("ttd");
    token.write_config(&serve_config(&token, &format!("{ttd}\n{extra}")));
    token
}

/// The active `ttd` certificate as `keys export-cert --format FORMAT`
/// writes it (`pem`, `der` or `keyvault`).
pub fn exported_cert(token: &TestToken, format: &str) -> Vec<u8> {
    let out = token.agent(&["keys", "export-cert", "--issuer", "ttd", "--format", format]);
    out.success().stdout
}

/// `[server]` settings that put the per-uid rates out of the way, for tests
/// of what a flood meets behind them (the share, the caps, the audit).
pub const UNPACED: &str = "cache_misses_per_uid = { per_second = 1000000, burst = 1000000 }\nrefusals_per_uid = { per_second = 1000000, burst = 1000000 }";

/// Adds `settings` (lines such as `max_connections = 10`) to the `[server]`
/// section of the token's config.
pub fn add_server_settings(token: &TestToken, settings: &str) {
    let config = std::fs::read_to_string(token.config_path()).expect("read agent.toml");
    assert!(config.contains("[server]\n"), "a serve config: {config}");
    let config = config.replacen("[server]\n", &format!("[server]\n{settings}\n"), 1);
    std::fs::write(token.config_path(), config).expect("write agent.toml");
}

/// A running `serve` process that has said READY=1.
pub struct Daemon {
    pub process: AgentProcess,
    pub socket: PathBuf,
    notify: UnixDatagram,
    /// Every notification the agent has sent so far (READY=1, STATUS=…, WATCHDOG=1).
    pub notifications: Vec<String>,
    /// How many of `notifications` earlier waits have matched or passed.
    seen: usize,
}

impl Daemon {
    /// Starts `serve` with the token's current config and waits for READY=1.
    pub fn start(token: &TestToken) -> Daemon {
        let daemon = Daemon::spawn(token, |command| command);
        daemon.ready(token)
    }

    /// Starts `serve` after `adjust` has had its say on the command (extra
    /// environment, a wrapper); does not wait.
    pub fn spawn(token: &TestToken, adjust: impl FnOnce(Command) -> Command) -> Daemon {
        Daemon::spawn_from(token, &agent_binary(), adjust)
    }

    /// [`Daemon::spawn`] with another build of the agent.
    pub fn spawn_from(
        token: &TestToken,
        binary: &Path,
        adjust: impl FnOnce(Command) -> Command,
    ) -> Daemon {
        let notify_path = token.path().join(format!("notify-{}", unique()));
        let notify = UnixDatagram::bind(&notify_path).expect("bind the notify socket");
        notify
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("set a read timeout");
        let mut command = token.command_of(binary, &["serve"]);
        command.env("NOTIFY_SOCKET", &notify_path);
        let child = adjust(command)
            .stdout(Stdio::null())
            .stderr(token.open_agent_log())
            .spawn()
            .expect("start access-token-agent serve");
        Daemon {
            process: AgentProcess(child),
            socket: token.path().join("agent.sock"),
            notify,
            notifications: Vec::new(),
            seen: 0,
        }
    }

    /// Waits for READY=1; panics with the agent's log if it exits or stalls.
    pub fn ready(mut self, token: &TestToken) -> Daemon {
        self.wait_for(token, "READY=1");
        self
    }

    /// Waits until a notification containing `line` arrives after the one
    /// the previous wait matched (so READY=1 after RELOADING=1 is the reload's,
    /// not the start's).
    pub fn wait_for(&mut self, token: &TestToken, line: &str) {
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Some(at) = self.notifications[self.seen..]
                .iter()
                .position(|n| n.lines().any(|l| l == line))
            {
                self.seen += at + 1;
                return;
            }
            if let Ok(Some(status)) = self.process.try_wait() {
                panic!("the agent exited ({status}) before {line}:\n{}", log(token));
            }
            self.receive();
        }
        panic!("no {line} within {PATIENCE:?}:\n{}", log(token));
    }

    /// Adds the next notification to `notifications`, waiting up to 200 ms.
    pub fn receive(&mut self) {
        let mut buffer = [0u8; 4096];
        if let Ok(n) = self.notify.recv(&mut buffer) {
            self.notifications
                .push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
    }

    /// Counts the WATCHDOG=1 notifications that arrive within `window`.
    pub fn watchdog_pings(&mut self, window: Duration) -> usize {
        let start = self.notifications.len();
        let deadline = Instant::now() + window;
        while Instant::now() < deadline {
            self.receive();
        }
        self.notifications[start..]
            .iter()
            .filter(|n| n.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    }

    /// Waits until the watchdog pings have stopped: a `window` (longer than
    /// the ping interval) passes without one. Returns how many came
    /// meanwhile, sent before they stopped.
    pub fn wait_watchdog_quiet(&mut self, window: Duration) -> usize {
        let mut drained = 0;
        crate::poll_until("a pause in the watchdog pings", || {
            let pings = self.watchdog_pings(window);
            drained += pings;
            pings == 0
        });
        drained
    }

    /// The agent's pid.
    pub fn pid(&self) -> i32 {
        self.process.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to the agent.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the agent to exit and returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(PATIENCE)
            .unwrap_or_else(|| panic!("the agent did not exit within {PATIENCE:?}"))
    }

    /// Waits up to `patience` for the agent to exit; `None` if it still runs.
    pub fn wait_exit_within(&mut self, patience: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            if let Some(status) = self.process.try_wait().expect("wait for the agent") {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// A blocking client for this agent's socket, without retries, so that
    /// a test sees each answer as it is.
    pub fn client(&self) -> access_token_client::blocking::Client {
        let client =
            access_token_client::Client::new(&self.socket).with_retry(access_token_client::Retry {
                attempts: 1,
                ..Default::default()
            });
        access_token_client::blocking::Client::wrap(client).expect("a client runtime")
    }

    /// A new connection to the agent, once the agent has accepted it (it
    /// holds one more stream socket than before); for tests that hold
    /// connections or send a request bit by bit. Another client connecting
    /// meanwhile would be counted too: use it while nothing else connects.
    pub fn connect_accepted(&self) -> std::os::unix::net::UnixStream {
        let before = open_stream_sockets(self.pid());
        let stream =
            std::os::unix::net::UnixStream::connect(&self.socket).expect("connect to the agent");
        crate::poll_until("the agent to accept the connection", || {
            open_stream_sockets(self.pid()) > before
        });
        stream
    }

    /// Sends `request` as raw bytes on a new connection and returns what the
    /// agent answers before it closes the connection or `timeout` passes.
    pub fn raw(&self, request: &[u8], timeout: Duration) -> String {
        raw_exchange(&self.socket, request, timeout)
    }

    /// `GET path` with `headers` on a new connection; the whole answer as text.
    pub fn get(&self, path: &str, headers: &[&str]) -> String {
        let headers = [&["Connection: close"], headers].concat();
        self.raw(&crate::http::get(path, &headers), Duration::from_secs(10))
    }

    /// Polls `GET path` until it answers `status`, for up to [`PATIENCE`];
    /// returns that answer, or panics with the end of the agent's log.
    pub fn wait_status(&self, token: &TestToken, path: &str, status: u16) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let answer = self.get(path, &[]);
            if status_of(&answer) == status {
                return answer;
            }
            assert!(
                Instant::now() < deadline,
                "{path} never {status}, last {answer}\n{}",
                log_tail(token)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of an unlabelled metric on `/metrics`.
    pub fn metric(&self, name: &str) -> f64 {
        let metrics = self.get("/metrics", &[]);
        body_of(&metrics)
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    }

    /// The value of the counter `name` on `/metrics`, labels included in
    /// `name` (`…_total{reason="signing"}`); 0 before its first count, when
    /// a labelled counter is not listed yet.
    pub fn count(&self, name: &str) -> f64 {
        let metrics = self.get("/metrics", &[]);
        body_of(&metrics)
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0.0)
    }
}

/// The agent's stderr so far, for failure messages.
pub fn log(token: &TestToken) -> String {
    std::fs::read_to_string(token.agent_log()).unwrap_or_default()
}

/// The last few kilobytes of the agent's stderr, for failure messages of
/// tests whose agent logs thousands of lines.
pub fn log_tail(token: &TestToken) -> String {
    let log = log(token);
    let mut start = log.len().saturating_sub(4000);
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_owned()
}

/// The audit lines written so far, parsed.
pub fn audit_lines(token: &TestToken) -> Vec<serde_json::Value> {
    settled_text(&token.path().join("audit.jsonl"))
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("audit line {line:?}: {e}"))
        })
        .collect()
}

/// The text of `path` (empty if it does not exist) once it has stopped
/// growing: the agent appends audit lines in batches, a moment after the
/// answers they record.
pub fn settled_text(path: &Path) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = read();
    loop {
        std::thread::sleep(Duration::from_millis(30));
        let now = read();
        if now == text || Instant::now() > deadline {
            return now;
        }
        text = now;
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Lets another user reach the socket: the token's directory becomes
/// traversable (0711), as /run/access-token-agent is in production.
pub fn open_directory_to_others(token: &TestToken) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(token.path(), std::fs::Permissions::from_mode(0o711))
        .expect("chmod the token directory");
}

/// Lets other users connect, as in production: the socket in group
/// `nogroup` (`socket_group`, which every user here can be made to pass)
/// and its directory traversable.
pub fn open_socket_to_others(token: &TestToken) {
    add_server_settings(token, "socket_group = \"nogroup\"");
    open_directory_to_others(token);
}

/// Wraps `command` so that it starts the way systemd socket activation
/// starts a service: `listener` as fd 3, `LISTEN_FDS=1` and `LISTEN_PID` set
/// to the service's own pid (a shell sets it, then execs the agent in place).
pub fn pass_listener(
    command: std::process::Command,
    listener: &std::os::unix::net::UnixListener,
) -> std::process::Command {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let mut shell = std::process::Command::new("/bin/sh");
    shell
        .arg("-c")
        .arg(r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#);
    let mut wrapped = crate::process::run_by(shell, &command);
    let fd = listener.as_raw_fd();
    // SAFETY: dup2 is async-signal-safe; it runs in the child between fork and exec.
    unsafe {
        wrapped.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC, so clear it explicitly.
            let ok = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, 3) == 3
            };
            match ok {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    wrapped.stdin(std::process::Stdio::null());
    wrapped
}
