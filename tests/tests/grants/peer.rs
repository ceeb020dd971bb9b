//! Peer identity after pid reuse: a client connects from a child, the child
//! exits, and its pid goes to another user's process before the agent
//! accepts. That process's groups and executable must not become the
//! client's, whichever way the agent pins the peer: SO_PEERPIDFD (this
//! kernel), or `pidfd_open` as on kernels without it (ENOPROTOOPT), or
//! none when SO_PEERPIDFD fails otherwise (ESRCH: a reaped peer before
//! Linux 6.16). Debug builds pretend the errno named in
//! `ACCESS_TOKEN_AGENT_TEST_SO_PEERPIDFD`.
//!
//! Peer identity after a change of ids: a process connects as uid 65534
//! and then, before the agent accepts, becomes root in group 4242. /proc
//! then describes a process that is no longer what SO_PEERCRED says, and
//! lends nothing on either path.

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use integration_tests::daemon::{
    add_server_settings, audit_lines, client_binary, log_tail, open_directory_to_others, ttd_token,
    Daemon,
};
use integration_tests::http::parse_replies;
use integration_tests::users::NOBODY;
use integration_tests::{OutputExt, TestToken};

use integration_tests::pids::{connect_from_a_child_that_exits, ChangedIdentity, Recycled};

/// The user whose process gets the reused pid.
const OTHER: u32 = 12345;
/// A supplementary group only the other user's process has.
const GROUP: u32 = 4242;

struct Setup {
    token: TestToken,
    daemon: Daemon,
    /// A copy of `sleep` that an `exe` grant names together with uid 65534.
    program: PathBuf,
    _program_dir: tempfile::TempDir,
}

/// An agent granting group 4242 app `by-group`, uid 65534 running
/// `program` app `by-exe`, and uid 65534 running `access-token` app
/// `by-client`; with SO_PEERPIDFD failing as `pretend` says.
fn agent(pretend: Option<&str>) -> Setup {
    let program_dir = tempfile::tempdir().unwrap();
    let program = std::fs::canonicalize(program_dir.path())
        .unwrap()
        .join("granted-app");
    std::fs::copy("/bin/sleep", &program).unwrap();
    set_mode(program_dir.path(), 0o755);
    let grants = format!(
        "[[grant]]\ngid = {GROUP}\nissuer = \"ttd\"\napps = [\"by-group\"]\n\n\
         [[grant]]\nuid = {NOBODY}\nexe = {:?}\nissuer = \"ttd\"\napps = [\"by-exe\"]\n\n\
         [[grant]]\nuid = {NOBODY}\nexe = {:?}\nissuer = \"ttd\"\napps = [\"by-client\"]\n",
        program.display().to_string(),
        client_binary().display().to_string(),
    );
    let token = ttd_token("p256", &grants);
    add_server_settings(&token, "socket_group = \"nogroup\"");
    open_directory_to_others(&token);
    let daemon = Daemon::spawn(&token, |mut command| {
        if let Some(errno) = pretend {
            command.env("ACCESS_TOKEN_AGENT_TEST_SO_PEERPIDFD", errno);
        }
        command
    })
    .ready(&token);
    Setup {
        token,
        daemon,
        program,
        _program_dir: program_dir,
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Asks for `by-group` and `by-exe` on a connection made by a uid 65534
/// child whose pid, once it exited, went to the other user's `program`
/// with group 4242, all before the agent accepted. Returns the statuses.
fn ask_through_a_reused_pid(setup: &Setup) -> Vec<u16> {
    let daemon = &setup.daemon;
    daemon.signal(libc::SIGSTOP);
    let (mut stream, recycled) = (0..5)
        .find_map(|_| {
            let (stream, pid) = connect_from_a_child_that_exits(&daemon.socket, NOBODY, NOBODY);
            let identity = (OTHER, OTHER, &[GROUP][..]);
            Some((
                stream,
                Recycled::start(pid, identity, &setup.program, &["30"])?,
            ))
        })
        .expect("a free pid to reuse within 5 tries");
    let status = std::fs::read_to_string(format!("/proc/{}/status", recycled.pid)).unwrap();
    assert!(status.contains(&format!("\nGroups:\t{GROUP}")), "{status}");
    let requests = concat!(
        "GET /v1/token?issuer=ttd&app=by-group HTTP/1.1\r\nHost: agent\r\n\r\n",
        "GET /v1/token?issuer=ttd&app=by-exe HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n",
    );
    stream.write_all(requests.as_bytes()).unwrap();
    daemon.signal(libc::SIGCONT);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answers = Vec::new();
    let _ = stream.read_to_end(&mut answers);
    let replies = parse_replies(&answers, false).unwrap();
    replies.iter().map(|reply| reply.status).collect()
}

fn assert_nothing_lent(setup: &Setup) {
    let statuses = ask_through_a_reused_pid(setup);
    assert_eq!(
        statuses,
        [403, 403],
        "a reused pid lent its groups or exe\n{}",
        log_tail(&setup.token)
    );
    let program = setup.program.display().to_string();
    for line in audit_lines(&setup.token) {
        if line["uid"] == NOBODY {
            assert_ne!(line["exe"], program.as_str(), "{line}");
        }
    }
}

/// `access-token token --app APP` as uid 65534 with supplementary `groups`.
fn client_as_nobody_in(setup: &Setup, groups: &'static [u32], app: &str) -> Output {
    let mut command = Command::new(client_binary());
    command
        .arg("--socket")
        .arg(&setup.daemon.socket)
        .args(["token", "--issuer", "ttd", "--app", app])
        .stdin(Stdio::null());
    // SAFETY: async-signal-safe calls between fork and exec.
    unsafe {
        command.pre_exec(move || {
            let ok = libc::setgroups(groups.len(), groups.as_ptr()) == 0
                && libc::setgid(NOBODY) == 0
                && libc::setuid(NOBODY) == 0;
            match ok {
                true => Ok(()),
                false => Err(std::io::Error::last_os_error()),
            }
        });
    }
    command.output().expect("run access-token as nobody")
}

#[test]
fn a_reused_pid_lends_nothing_with_so_peerpidfd() {
    assert_nothing_lent(&agent(None));
}

#[test]
fn a_reused_pid_of_another_user_lends_nothing_without_so_peerpidfd() {
    let setup = agent(Some("ENOPROTOOPT"));
    assert_nothing_lent(&setup);
    // The process that connected is still read: its own groups and exe count.
    client_as_nobody_in(&setup, &[GROUP], "by-group").success();
    client_as_nobody_in(&setup, &[], "by-client").success();
    let refused = client_as_nobody_in(&setup, &[], "by-group");
    assert_eq!(refused.code(), 3, "{}", refused.stderr_text());
}

#[test]
fn a_reused_pid_lends_nothing_when_so_peerpidfd_finds_no_process() {
    let setup = agent(Some("ESRCH"));
    assert_nothing_lent(&setup);
    // Without a pidfd nothing is read, even for a live peer; uid grants need none.
    let refused = client_as_nobody_in(&setup, &[GROUP], "by-group");
    assert_eq!(refused.code(), 3, "{}", refused.stderr_text());
    let served = setup.daemon.client().token(Some("ttd"), Some("by-uid"));
    served.expect("a uid grant needs no pidfd");
}

/// Asks for `by-group` on a connection that a root child made with
/// effective ids 65534:65534 and then, before the agent accepted, restored
/// its effective uid 0 and took group 4242. Returns the status and the
/// audit line of the request.
fn ask_after_a_change_of_ids(setup: &Setup) -> (u16, serde_json::Value) {
    let daemon = &setup.daemon;
    daemon.signal(libc::SIGSTOP);
    let mut changed = ChangedIdentity::connect(&daemon.socket, (NOBODY, NOBODY), &[GROUP]);
    let status = std::fs::read_to_string(format!("/proc/{}/status", changed.pid)).unwrap();
    assert!(status.contains("\nUid:\t0\t0\t"), "{status}");
    assert!(status.contains(&format!("\nGroups:\t{GROUP}")), "{status}");
    let request = "GET /v1/token?issuer=ttd&app=by-group HTTP/1.1\r\nHost: agent\r\nConnection: close\r\n\r\n";
    changed.stream.write_all(request.as_bytes()).unwrap();
    daemon.signal(libc::SIGCONT);
    changed
        .stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    let _ = changed.stream.read_to_end(&mut answer);
    let replies = parse_replies(&answer, false).unwrap();
    let line = audit_lines(&setup.token)
        .into_iter()
        .find(|line| line["pid"] == changed.pid)
        .expect("an audit line for the request");
    (replies[0].status, line)
}

fn assert_a_change_of_ids_lends_nothing(setup: &Setup) {
    let (status, line) = ask_after_a_change_of_ids(setup);
    assert_eq!(
        status,
        403,
        "the changed process lent its groups\n{line}\n{}",
        log_tail(&setup.token)
    );
    assert_eq!(line["uid"], NOBODY, "{line}");
    assert!(
        line["exe"].is_null(),
        "the changed process lent its exe: {line}"
    );
}

#[test]
fn a_peer_that_changed_its_ids_after_connecting_lends_nothing_with_so_peerpidfd() {
    let setup = agent(None);
    assert_a_change_of_ids_lends_nothing(&setup);
    // A process that is what it connected as still lends its groups.
    client_as_nobody_in(&setup, &[GROUP], "by-group").success();
}

#[test]
fn a_peer_that_changed_its_ids_after_connecting_lends_nothing_without_so_peerpidfd() {
    assert_a_change_of_ids_lends_nothing(&agent(Some("ENOPROTOOPT")));
}
