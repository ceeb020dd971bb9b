//! One uid asking for a new app name on every request (it is granted
//! `apps = ["*"]`) cannot fill the signing queue for the others: each uid
//! has a share of it, and its requests past that share wait their turn.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use integration_tests::daemon::Daemon;
use integration_tests::daemon::{
    add_server_settings, log_tail, open_directory_to_others, ttd_token, UNPACED,
};
use integration_tests::OutputExt;

const NOBODY: u32 = 65534;

/// `request-loop` as `uid` over `connections`, one request per target.
pub fn request_loop(
    uid: u32,
    socket: &std::path::Path,
    connections: usize,
    targets: &[String],
) -> Command {
    let binary = integration_tests::agent_binary().with_file_name("request-loop");
    let mut command = Command::new(binary);
    command
        .arg(socket)
        .arg(connections.to_string())
        .arg(targets.len().to_string())
        .args(targets)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

fn targets(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| format!("/v1/token?issuer=ttd&app={prefix}-{n}"))
        .collect()
}

pub fn tally(output: std::process::Output) -> serde_json::Value {
    serde_json::from_str(output.success().stdout_text().trim()).expect("request-loop prints JSON")
}

#[test]
fn new_app_names_from_one_uid_leave_the_signing_queue_to_the_others() {
    // RSA signs slowly enough for 128 connections to fill a 64-job queue.
    let token = ttd_token(
        "rsa2048",
        &format!("[[grant]]\nuid = {NOBODY}\nissuer = \"ttd\"\napps = [\"*\"]\n\n[signing]\nqueue_size = 64\n"),
    );
    // The share alone (see `rates` for the pacing of new names).
    add_server_settings(&token, &format!("socket_group = \"nogroup\"\n{UNPACED}"));
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };

    let flood = request_loop(NOBODY, &daemon.socket, 128, &targets("flood", 3000))
        .spawn()
        .expect("start request-loop as nobody");
    std::thread::sleep(Duration::from_millis(300));
    let served = request_loop(me, &daemon.socket, 4, &targets("mine", 200))
        .output()
        .expect("run request-loop");
    let flood = tally(flood.wait_with_output().unwrap());
    let served = tally(served);
    eprintln!("flood: {flood}\nwell-behaved: {served}");

    assert_eq!(
        served["statuses"],
        serde_json::json!({ "200": 200 }),
        "every fresh signature of the well-behaved uid is served\n{}",
        log_tail(&token)
    );
    // The flood waits its turn instead of being refused.
    assert_eq!(
        flood["statuses"],
        serde_json::json!({ "200": 3000 }),
        "{flood}"
    );
}
