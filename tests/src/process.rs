//! The workspace's built binaries, the agent as a child that cannot outlive
//! its test, and a finished command's output read in tests.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::process::{Child, Output};

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

/// `target/<profile>/access-token-agent`, found beside the running
/// executable: a test's (in `target/<profile>/deps/`) or a benchmark's (in
/// `target/<profile>/`).
pub fn agent_binary() -> PathBuf {
    built_binary("access-token-agent")
}

/// `target/<profile>/access-token`, the client command, beside the agent.
pub fn client_binary() -> PathBuf {
    built_binary("access-token")
}

/// `target/<profile>`, the directory of the running test or benchmark (or
/// of its `deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the running executable's path");
    let dir = exe.parent().expect("an executable lives in a directory");
    match dir.file_name() {
        Some(deps) if deps == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

fn built_binary(name: &str) -> PathBuf {
    let binary = profile_dir().join(name);
    assert!(
        binary.is_file(),
        "{} does not exist: build the binaries first with `cargo build --workspace --bins` (make test and make bench do this)",
        binary.display()
    );
    binary
}

/// Runs the `access-token` command as `uid`:`gid` against `socket`.
pub fn client_as(uid: u32, gid: u32, socket: &Path, args: &[&str]) -> Output {
    use std::os::unix::process::CommandExt;
    std::process::Command::new(client_binary())
        .arg("--socket")
        .arg(socket)
        .args(args)
        .uid(uid)
        .gid(gid)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run access-token as another user")
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

/// `command` run by `launcher` (a shell, `unshare`, …), which gets its
/// program and arguments last, and its environment and directory.
pub fn run_by(
    mut launcher: std::process::Command,
    command: &std::process::Command,
) -> std::process::Command {
    launcher.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => launcher.env(name, value),
            None => launcher.env_remove(name),
        };
    }
    if let Some(dir) = command.get_current_dir() {
        launcher.current_dir(dir);
    }
    launcher
}
