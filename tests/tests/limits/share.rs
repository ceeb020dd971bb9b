//! One uid asking for a new app name on every request (it is granted
//! `apps = ["*"]`) cannot take every place to sign from the others: its
//! requests past the pool's places wait in the front, and a freed place
//! goes to a waiting uid below its share (`server.max_signing_per_uid`)
//! first.

use integration_tests::daemon::Daemon;
use integration_tests::daemon::{
    add_server_settings, log_tail, open_directory_to_others, ttd_token, UNPACED,
};
use integration_tests::poll_until;
use integration_tests::users::{request_loop, tally, NOBODY};

fn targets(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| format!("/v1/token?issuer=ttd&app={prefix}-{n}"))
        .collect()
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

    let flood = request_loop(NOBODY, &daemon.socket, 128, 3000, &targets("flood", 3000))
        .spawn()
        .expect("start request-loop as nobody");
    // The flood holds every place to sign before the others come.
    poll_until("the flood to wait for places to sign", || {
        daemon.count("access_token_agent_requests_paced_total{reason=\"signing\"}") > 0.0
    });
    let served = request_loop(me, &daemon.socket, 4, 200, &targets("mine", 200))
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
