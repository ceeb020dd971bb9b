//! Process hardening as anyone on the machine can check it from outside:
//! /proc of the running agent, and the mode of the socket it bound.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use integration_tests::daemon::{
    open_directory_to_others, proc_limit, ttd_token, with_open_files_soft_limit, Daemon,
};
use integration_tests::users::NOBODY;
use integration_tests::{OutputExt, TestToken, PIN};

// The agent runs as NOBODY here, so that a process of the same user can
// try to look inside it.

/// A user that is neither the agent's nor in its group.
const STRANGER: u32 = 12345;

/// Runs `cat path` as `uid` and returns its output.
fn cat_as(uid: u32, path: &str) -> std::process::Output {
    Command::new("cat")
        .arg(path)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .output()
        .expect("run cat as another user")
}

/// Starts `serve` as nobody, with the soft open-files limit systemd gives
/// services by default.
fn start_as_nobody(token: &TestToken) -> Daemon {
    let daemon = Daemon::spawn(token, |mut command| {
        // After the notify socket exists: the agent must be able to send to it.
        let chown = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(token.path())
            .output()
            .expect("run chown");
        assert!(chown.status.success(), "{}", chown.stderr_text());
        command.uid(NOBODY).gid(NOBODY);
        with_open_files_soft_limit(command, 1024)
    });
    daemon.ready(token)
}

#[test]
fn the_running_agent_is_sealed_from_its_own_user_and_from_others() {
    let token = ttd_token("p256", "");
    open_directory_to_others(&token);
    let daemon = start_as_nobody(&token);
    let pid = daemon.pid();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains(&format!("\nUid:\t{NOBODY}\t")),
        "runs as nobody: {status}"
    );

    // No core dumps, and descriptors for a full house of connections.
    assert_eq!(
        proc_limit(pid, "Max core file size"),
        ("0".into(), "0".into())
    );
    let (soft, hard) = proc_limit(pid, "Max open files");
    assert_eq!(soft, hard, "started with a soft limit of 1024");

    // Not dumpable: a process of the agent's own user cannot read its
    // environment, while it can read that of another process of that user.
    let mut neighbour = Command::new("sleep")
        .arg("30")
        .uid(NOBODY)
        .gid(NOBODY)
        .spawn()
        .expect("start sleep as nobody");
    let control = cat_as(NOBODY, &format!("/proc/{}/environ", neighbour.id()));
    let _ = neighbour.kill();
    let _ = neighbour.wait();
    assert!(control.status.success(), "{}", control.stderr_text());
    let sealed = cat_as(NOBODY, &format!("/proc/{pid}/environ"));
    assert!(!sealed.status.success(), "environ readable by its own user");
    assert!(
        sealed.stderr_text().contains("Permission denied"),
        "{}",
        sealed.stderr_text()
    );

    // The PIN is read from its file, never passed in argv or the environment.
    for part in ["environ", "cmdline"] {
        let bytes = std::fs::read(format!("/proc/{pid}/{part}")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.is_empty(), "/proc/{pid}/{part} is readable by root");
        assert!(!text.contains(PIN), "the PIN in /proc/{pid}/{part}: {text}");
    }

    // The socket it bound with the default mode: its user and group only.
    let mode = std::fs::metadata(&daemon.socket)
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o660, "{mode:o}");
    let stranger = Command::new(integration_tests::daemon::client_binary())
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .uid(STRANGER)
        .gid(STRANGER)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(stranger.code(), 5, "unreachable to another user");
    assert!(
        stranger.stderr_text().contains("ermission denied"),
        "{}",
        stranger.stderr_text()
    );
    let owner = Command::new(integration_tests::daemon::client_binary())
        .arg("--socket")
        .arg(&daemon.socket)
        .arg("status")
        .uid(NOBODY)
        .gid(NOBODY)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(owner.code(), 0, "{}", owner.stderr_text());
}
