//! An agent inside a user namespace whose maps are not the identity (as
//! under systemd's `PrivateUsers=`, rootless podman, or Kubernetes'
//! `hostUsers: false`) sees every peer whose ids are not mapped as the
//! overflow uid and gid, 65534. A grant of 65534 would match them all, so
//! the agent refuses one, at start and on reload.
//!
//! The namespace maps ids 0 to 65533 to themselves and nothing else: the
//! agent stays root, its token's files stay its own, and uid 100000 is
//! unmapped.

use std::io::Write;
use std::process::{Command, ExitStatus, Stdio};
use std::time::Instant;

use integration_tests::daemon::{client_as, log, open_directory_to_others, ttd_token, Daemon};
use integration_tests::process::run_by;
use integration_tests::{OutputExt, TestToken, PATIENCE};

/// `uid_map` and `gid_map` of the agent's namespace: 0 to 65533 as themselves.
const MAP: &str = "0 0 65534\n";
/// A uid that map leaves out.
const UNMAPPED: u32 = 100_000;

/// `command` (the agent) run by a shell in a new user namespace, which
/// waits for a line on its stdin before it execs the agent, so that the
/// maps can be written first (`unshare --map-users` needs newuidmap).
fn in_a_user_namespace(command: Command) -> Command {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--user", "--", "sh", "-c", r#"read _ && exec "$0" "$@""#])
        .stdin(Stdio::piped());
    run_by(unshare, &command)
}

/// Starts `serve` on `token` in a user namespace mapped by [`MAP`].
fn spawn_in_a_user_namespace(token: &TestToken) -> Daemon {
    let mut daemon = Daemon::spawn(token, in_a_user_namespace);
    let pid = daemon.pid();
    let namespace = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    integration_tests::poll_until("unshare to enter its namespace", || {
        namespace(&pid.to_string()) != namespace("self")
    });
    for map in ["uid_map", "gid_map"] {
        std::fs::write(format!("/proc/{pid}/{map}"), MAP).expect("write the namespace's map");
    }
    let mut go = daemon.process.0.stdin.take().expect("the shell's stdin");
    go.write_all(b"go\n").expect("let the shell exec the agent");
    daemon
}

/// Waits for a start that must fail; panics if the agent gets ready.
fn refused_start(token: &TestToken) -> ExitStatus {
    let mut daemon = spawn_in_a_user_namespace(token);
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if let Some(status) = daemon.process.try_wait().expect("wait for the agent") {
            return status;
        }
        let ready = daemon.notifications.iter().any(|n| n.contains("READY=1"));
        assert!(!ready, "the agent started:\n{}", log(token));
        daemon.receive();
    }
    panic!("the agent neither started nor exited:\n{}", log(token));
}

fn ask_as_unmapped(daemon: &Daemon) -> std::process::Output {
    client_as(
        UNMAPPED,
        0,
        &daemon.socket,
        &["token", "--issuer", "ttd", "--app", "a"],
    )
}

#[test]
fn a_grant_of_the_overflow_ids_is_refused_at_start_in_a_user_namespace() {
    for (grant, key) in [
        ("uid = 65534", "`grant[1].uid` = 65534"),
        ("user = \"nobody\"", "`grant[1].user` = \"nobody\""),
        ("gid = 65534", "`grant[1].gid` = 65534"),
        ("group = \"nogroup\"", "`grant[1].group` = \"nogroup\""),
    ] {
        let token = ttd_token(
            "p256",
            &format!("[[grant]]\n{grant}\nissuer = \"ttd\"\napps = [\"a\"]\n"),
        );
        let status = refused_start(&token);
        assert_eq!(status.code(), Some(78), "{grant}:\n{}", log(&token));
        let log = log(&token);
        assert!(log.contains(key), "{grant} named as {key}:\n{log}");
        assert!(log.contains("overflow"), "{log}");
    }
}

#[test]
fn in_a_user_namespace_unmapped_peers_are_one_uid_that_no_reload_can_grant() {
    let token = ttd_token("p256", "");
    open_directory_to_others(&token);
    let mut daemon = spawn_in_a_user_namespace(&token).ready(&token);
    // The premise: an unmapped uid reaches the agent as 65534.
    let refused = ask_as_unmapped(&daemon);
    assert_eq!(refused.code(), 3, "{}", refused.stderr_text());
    integration_tests::poll_until("the refusal's audit line", || {
        std::fs::read_to_string(token.path().join("audit.jsonl"))
            .unwrap_or_default()
            .contains("\"uid\":65534")
    });
    // A reload that would grant 65534 is refused whole; the old grants serve.
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let grant = "[[grant]]\nuid = 65534\nissuer = \"ttd\"\napps = [\"a\"]\n";
    std::fs::write(token.config_path(), format!("{config}\n{grant}")).unwrap();
    daemon.signal(libc::SIGHUP);
    daemon.wait_for(&token, "RELOADING=1");
    daemon.wait_for(&token, "READY=1");
    let still_refused = ask_as_unmapped(&daemon);
    assert_eq!(
        still_refused.code(),
        3,
        "an unmapped uid was granted as 65534:\n{}",
        log(&token)
    );
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("root is still served");
    let log = log(&token);
    assert!(
        log.contains("`grant[1].uid` = 65534"),
        "the reload names the grant:\n{log}"
    );
    assert!(
        log.contains("/proc/self/uid_map"),
        "the start says what the namespace means:\n{log}"
    );
}
