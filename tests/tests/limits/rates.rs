//! Past its burst, a uid's cache misses and refusals are spaced at its rate
//! (`server.cache_misses_per_uid`, `server.refusals_per_uid`): its requests
//! wait their turn and are then answered as before, and another uid keeps
//! its own burst.

use std::process::Output;
use std::time::{Duration, Instant};

use integration_tests::daemon::{add_server_settings, open_directory_to_others, ttd_token, Daemon};
use integration_tests::users::{request_loop, tally, NOBODY};

/// `requests_paced_total` for `reason`; 0 before the first.
fn paced(daemon: &Daemon, reason: &str) -> f64 {
    daemon.count(&format!(
        "access_token_agent_requests_paced_total{{reason=\"{reason}\"}}"
    ))
}

/// Runs `request-loop` as `uid` on one connection; its tally and how long it took.
fn ask(daemon: &Daemon, uid: u32, targets: &[String]) -> (serde_json::Value, Duration) {
    let started = Instant::now();
    let output: Output = request_loop(uid, &daemon.socket, 1, targets.len(), targets)
        .output()
        .expect("run request-loop");
    (tally(output), started.elapsed())
}

fn apps(prefix: &str, count: usize) -> Vec<String> {
    (0..count)
        .map(|n| format!("/v1/token?issuer=ttd&app={prefix}-{n}"))
        .collect()
}

fn agent_for_nobody(grant: &str, settings: &str) -> (integration_tests::TestToken, Daemon) {
    let token = ttd_token("p256", grant);
    add_server_settings(&token, &format!("socket_group = \"nogroup\"\n{settings}"));
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);
    (token, daemon)
}

// A burst of one: the uid's next turn is a whole interval ahead when its
// last request is answered, so a request of its own right after waits and a
// request sharing its turn would too.

#[test]
fn new_app_names_past_the_rate_wait_their_turn_and_are_served() {
    let grant = format!("[[grant]]\nuid = {NOBODY}\nissuer = \"ttd\"\napps = [\"*\"]\n");
    let (_token, daemon) = agent_for_nobody(
        &grant,
        "cache_misses_per_uid = { per_second = 1, burst = 1 }",
    );
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };

    // Four new names: one at once, then one a second.
    let (flood, took) = ask(&daemon, NOBODY, &apps("flood", 4));
    assert_eq!(
        flood["statuses"],
        serde_json::json!({ "200": 4 }),
        "{flood}"
    );
    assert!(
        took >= Duration::from_millis(2900),
        "spaced at 1/s: {took:?}"
    );
    assert_eq!(paced(&daemon, "cache-miss"), 3.0);

    // Another uid has a turn of its own.
    let (mine, _) = ask(&daemon, me, &apps("mine", 1));
    assert_eq!(mine["statuses"], serde_json::json!({ "200": 1 }), "{mine}");
    assert_eq!(paced(&daemon, "cache-miss"), 3.0, "mine did not wait");

    // Cached tokens never wait; a new name of nobody's still does.
    let (again, _) = ask(&daemon, NOBODY, &apps("flood", 4));
    assert_eq!(
        again["statuses"],
        serde_json::json!({ "200": 4 }),
        "{again}"
    );
    assert_eq!(paced(&daemon, "cache-miss"), 3.0, "cache hits did not wait");
    let (late, _) = ask(&daemon, NOBODY, &apps("late", 1));
    assert_eq!(late["statuses"], serde_json::json!({ "200": 1 }), "{late}");
    assert_eq!(paced(&daemon, "cache-miss"), 4.0);
}

#[test]
fn refusals_past_the_rate_are_answered_in_turn() {
    let (_token, daemon) = agent_for_nobody("", "refusals_per_uid = { per_second = 1, burst = 1 }");
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    let not_granted = vec!["/v1/token?issuer=ttd&app=a".to_owned(); 3];

    let (refused, took) = ask(&daemon, NOBODY, &not_granted);
    assert_eq!(
        refused["statuses"],
        serde_json::json!({ "403": 3 }),
        "{refused}"
    );
    assert!(
        took >= Duration::from_millis(1900),
        "spaced at 1/s: {took:?}"
    );

    // Root's refusal has its own turn. (Asked before root reads /metrics:
    // that read counts against root's rate too, as `other-route`.)
    let (mine, _) = ask(&daemon, me, &["/v1/token?issuer=nope&app=a".to_owned()]);
    assert_eq!(mine["statuses"], serde_json::json!({ "403": 1 }), "{mine}");
    assert_eq!(
        paced(&daemon, "refusal"),
        2.0,
        "nobody's two past the burst, and root's refusal did not wait"
    );
    // Nobody's burst may have come back while root read /metrics in turn;
    // of two more back to back, the second waits.
    let (late, _) = ask(&daemon, NOBODY, &not_granted[..2]);
    assert_eq!(late["statuses"], serde_json::json!({ "403": 2 }), "{late}");
    assert!(paced(&daemon, "refusal") >= 3.0);
}
