//! The files the agent makes: the audit file keeps its documented mode 0640
//! under systemd's `UMask=0077`, and the agent binds its socket only in a
//! directory nobody else can write (or a sticky one), so that nobody can
//! swap the socket file for a symlink while its mode and group are set.
//! The audit file is opened by the same rule for its directory, never
//! through a symlink, and only if it is a regular file: a FIFO would hold
//! the start and every SIGHUP.

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

/// Moves the audit file of the token's config to `path`.
fn audit_at(token: &TestToken, path: &Path) {
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let old = token.path().join("audit.jsonl").display().to_string();
    let config = config.replace(
        &format!("{old:?}"),
        &format!("{:?}", path.display().to_string()),
    );
    std::fs::write(token.config_path(), config).unwrap();
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

/// Starts the agent and expects it to refuse its audit file: exit 78 with
/// a message naming the key, the path and `expected`.
fn assert_audit_refused(token: &TestToken, path: &Path, expected: &str) {
    let mut refused = Daemon::spawn(token, |command| command);
    let status = refused.wait_exit();
    let log = log(token);
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains(&format!("`audit.file` = {}", path.display())),
        "{log}"
    );
    assert!(log.contains(expected), "{expected}: {log}");
}

#[test]
fn an_audit_fifo_is_refused_at_the_start_instead_of_holding_it() {
    let token = ttd_token("p256", "");
    let fifo = token.path().join("audit.jsonl");
    mkfifo(&fifo);
    assert_audit_refused(&token, &fifo, "not a regular file");
}

#[test]
fn an_audit_symlink_is_refused_and_its_target_left_alone() {
    let token = ttd_token("p256", "");
    let target = token.write_file("elsewhere", "");
    let link = token.path().join("audit.jsonl");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_audit_refused(&token, &link, "symbolic link");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "");
}

#[test]
fn an_audit_directory_others_can_write_is_refused() {
    let token = ttd_token("p256", "");
    let open = token.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let path = open.join("audit.jsonl");
    audit_at(&token, &path);
    assert_audit_refused(&token, &path, "can be written by other users");
    assert!(!path.exists(), "nothing was created");
}

#[test]
fn a_fifo_in_place_of_the_audit_file_does_not_hold_a_reload() {
    let token = ttd_token("p256", "");
    let mut daemon = Daemon::start(&token);
    let path = token.path().join("audit.jsonl");
    std::fs::rename(&path, token.path().join("audit.jsonl.1")).unwrap();
    mkfifo(&path);
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    assert!(
        log(&token).contains("not a regular file"),
        "{}",
        log(&token)
    );
    daemon.client().token(Some("ttd"), Some("a")).unwrap();
}
