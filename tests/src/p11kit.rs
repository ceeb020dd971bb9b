//! [`P11KitServer`]: a [`TestToken`] served by a real `p11-kit server`
//! over a Unix socket, and the agent configured to reach it through p11-kit's
//! client module, the way it reaches a network HSM through a vendor's
//! client library.
//!
//! The server forks a `p11-kit remote` for every client connection, and a
//! killed server leaves those running: the server is started as the leader
//! of a process group of its own, and every signal goes to the whole group.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use crate::{TestToken, PATIENCE};

/// p11-kit's client module (Debian package `p11-kit-modules`).
pub const CLIENT_MODULE: &str = "/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so";

/// `p11-kit server -f` serving one token, killed with its process group
/// when dropped.
pub struct P11KitServer {
    child: Option<Child>,
    /// The server's listening socket, in the token's directory.
    pub socket: PathBuf,
    command: Vec<String>,
    environment: Vec<(String, String)>,
    log: PathBuf,
}

impl P11KitServer {
    /// Serves `token` (its module, in the server's process) on
    /// `p11-kit.sock` in the token's directory, and waits for the socket.
    pub fn start(token: &TestToken) -> P11KitServer {
        let socket = token.path().join("p11-kit.sock");
        let (path, uri) = (
            crate::path_str(&socket),
            format!("pkcs11:token={}", token.label()),
        );
        let module = token.module();
        let command = ["server", "-f", "--provider", &module, "-n", &path, &uri];
        let mut server = P11KitServer {
            child: None,
            socket,
            command: command.map(str::to_owned).to_vec(),
            environment: token.module_environment(),
            log: token.path().join("p11-kit-server.log"),
        };
        server.restart();
        server
    }

    /// Starts the server again on the same socket.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let _ = std::fs::remove_file(&self.socket);
        let log = std::fs::File::create(&self.log).expect("create the server's log");
        let child = std::os::unix::process::CommandExt::process_group(
            Command::new("p11-kit")
                .args(&self.command)
                .envs(self.environment.iter().cloned())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log),
            0,
        )
        .spawn()
        .expect("run p11-kit server (apt-get install p11-kit p11-kit-modules)");
        self.child = Some(child);
        let deadline = Instant::now() + PATIENCE;
        while !self.socket.exists() {
            assert!(
                Instant::now() < deadline,
                "p11-kit server made no socket: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// `P11_KIT_SERVER_ADDRESS` for this server.
    pub fn address(&self) -> String {
        format!("unix:path={}", crate::path_str(&self.socket))
    }

    /// `[hsm]` for an agent that reaches `token` through this server: the
    /// client module, the address through `[hsm] environment`.
    pub fn hsm_section(&self, token: &TestToken) -> String {
        format!(
            "[hsm]\nmodule = {CLIENT_MODULE:?}\ntoken_label = {:?}\npin_file = {:?}\nenvironment = {{ P11_KIT_SERVER_ADDRESS = {:?} }}\n",
            token.label(),
            crate::path_str(&token.pin_file()),
            self.address(),
        )
    }

    /// Writes `token`'s `agent.toml` with [`P11KitServer::hsm_section`] and
    /// `extra` after it.
    pub fn write_config(&self, token: &TestToken, extra: &str) {
        let config = format!("{}\n{extra}", self.hsm_section(token));
        std::fs::write(token.config_path(), config).expect("write agent.toml");
    }

    /// Takes the token's own module variables (`SOFTHSM2_CONF`,
    /// `KRYOPTIC_CONF`) out of `command`'s environment, so that nothing it
    /// runs reaches the token except through this server.
    pub fn only_through<'c>(token: &TestToken, command: &'c mut Command) -> &'c mut Command {
        for (name, _) in token.module_environment() {
            command.env_remove(name);
        }
        command
    }

    /// Sends `signal` to the server and every `p11-kit remote` it forked.
    pub fn signal_group(&self, signal: libc::c_int) {
        let child = self.child.as_ref().expect("the server runs");
        // SAFETY: killpg(2) on the group our own child leads.
        let rc = unsafe { libc::killpg(child.id() as libc::pid_t, signal) };
        assert_eq!(rc, 0, "killpg({}, {signal})", child.id());
    }

    /// Kills the server's process group, as a crash of the HSM's host
    /// would, and reaps the server.
    pub fn kill(&mut self) {
        self.signal_group(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            child.wait().expect("reap p11-kit server");
        }
    }
}

impl Drop for P11KitServer {
    fn drop(&mut self) {
        if self.child.is_some() {
            // SIGCONT first, in case a test stopped the group.
            self.signal_group(libc::SIGCONT);
            self.kill();
        }
    }
}
