//! What an `exe` grant trusts: not a traced process (its tracer can make
//! it run any code), and not another file that a private mount namespace
//! put over the granted path.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use integration_tests::daemon::{client_binary, serve_config, Daemon};
use integration_tests::{OutputExt, TestToken};

/// An agent granting this uid every `ttd` app when it runs `program`.
fn agent_granting(program: &Path) -> (TestToken, Daemon) {
    let token = TestToken::with_ttd_key("p256");
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    token.write_config(&serve_config(
        &token,
        &format!(
            "[[issuer]]\nname = \"ttd\"\n\n[[grant]]\nuid = {me}\nexe = {:?}\nissuer = \"ttd\"\napps = [\"*\"]\n",
            program.display().to_string()
        ),
    ));
    let daemon = Daemon::start(&token);
    (token, daemon)
}

/// `PROGRAM --socket S token --issuer ttd --app a`, started by `wrapper`
/// (e.g. `["strace", "-f", "-o", "/dev/null"]`).
fn ask(daemon: &Daemon, wrapper: &[&str], program: &Path) -> Output {
    let (first, rest) = match wrapper.split_first() {
        Some((first, rest)) => (PathBuf::from(first), rest.to_vec()),
        None => (program.to_path_buf(), Vec::new()),
    };
    let mut command = Command::new(first);
    command.args(rest);
    if !wrapper.is_empty() {
        command.arg(program);
    }
    command
        .arg("--socket")
        .arg(&daemon.socket)
        .args(["token", "--issuer", "ttd", "--app", "a"])
        .stdin(Stdio::null())
        .output()
        .expect("run the client")
}

#[test]
fn a_traced_process_does_not_count_as_its_program() {
    let client = client_binary();
    let (_token, daemon) = agent_granting(&client);
    ask(&daemon, &[], &client).success();
    let traced = ask(&daemon, &["strace", "-f", "-o", "/dev/null"], &client);
    assert_eq!(
        traced.code(),
        3,
        "a traced client is not granted\n{}",
        traced.stderr_text()
    );
}

#[test]
fn another_file_mounted_over_the_granted_path_does_not_count() {
    let dir = tempfile::tempdir().unwrap();
    let granted = std::fs::canonicalize(dir.path()).unwrap().join("granted");
    let impostor = granted.with_file_name("impostor");
    std::fs::copy(client_binary(), &granted).unwrap();
    std::fs::copy(client_binary(), &impostor).unwrap();
    let (_token, daemon) = agent_granting(&granted);
    ask(&daemon, &[], &granted).success();
    // In a mount namespace of its own, the impostor is at the granted path.
    let script = format!(
        "mount --bind {} {} && exec \"$0\" \"$@\"",
        impostor.display(),
        granted.display()
    );
    let mounted = ask(
        &daemon,
        &["unshare", "--mount", "sh", "-c", &script],
        &granted,
    );
    assert_eq!(
        mounted.code(),
        3,
        "the impostor is not granted\n{}",
        mounted.stderr_text()
    );
}
