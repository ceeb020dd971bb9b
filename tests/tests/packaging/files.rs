//! The files the agent makes: the audit file keeps its documented mode 0640
//! under systemd's `UMask=0077`, and the agent binds its socket only in a
//! directory nobody else can write (or a sticky one), so that nobody can
//! swap the socket file for a symlink while its mode and group are set.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;

use integration_tests::daemon::{log, ttd_token, Daemon};
use integration_tests::TestToken;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Starts `serve` with umask 0077, as the unit's `UMask=0077` does.
fn spawn_with_umask_0077(token: &TestToken) -> Daemon {
    Daemon::spawn(token, |mut command| {
        // SAFETY: umask is async-signal-safe; it runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::umask(0o077);
                Ok(())
            });
        }
        command
    })
}

/// Moves the socket of the token's config into `dir`.
fn socket_in(token: &TestToken, dir: &Path) -> std::path::PathBuf {
    let socket = dir.join("agent.sock");
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let old = token.path().join("agent.sock").display().to_string();
    let config = config.replace(
        &format!("{old:?}"),
        &format!("{:?}", socket.display().to_string()),
    );
    std::fs::write(token.config_path(), config).unwrap();
    socket
}

#[test]
fn under_umask_0077_the_audit_file_is_0640_and_the_socket_0660() {
    let token = ttd_token("p256", "");
    let daemon = spawn_with_umask_0077(&token).ready(&token);
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
    assert_eq!(mode(&token.path().join("audit.jsonl")), 0o640);
    assert_eq!(mode(&daemon.socket), 0o660);
}

#[test]
fn a_socket_directory_others_can_write_is_refused_and_a_sticky_one_serves() {
    let token = ttd_token("p256", "");
    let open = token.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = socket_in(&token, &open);
    let mut refused = Daemon::spawn(&token, |command| command);
    let status = refused.wait_exit();
    assert_eq!(status.code(), Some(1), "{}", log(&token));
    assert!(
        log(&token).contains("can be written by other users"),
        "{}",
        log(&token)
    );
    assert!(!socket.exists(), "nothing was bound");

    // Sticky, as /tmp is: only the owner may rename or remove its files.
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut daemon = Daemon::spawn(&token, |command| command).ready(&token);
    daemon.socket = socket;
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
}
