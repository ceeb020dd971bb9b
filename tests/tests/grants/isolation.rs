//! Isolation under load: a user without grants hammers the socket while a
//! granted user is served at the same time. The refused user gets no token,
//! every issued token is one audit line, and every refusal is accounted for:
//! a line of its own, or counted on the line that sums up identical ones.

use std::collections::BTreeMap;

use integration_tests::daemon::{
    add_server_settings, audit_lines, body_of, log_tail, open_socket_to_others, ttd_token, Daemon,
    UNPACED,
};
use integration_tests::users::{request_loop, tally, NOBODY};

const REFUSED_REQUESTS: usize = 3000;
const GRANTED_REQUESTS: usize = 2000;

#[test]
fn thousands_of_refusals_beside_granted_requests_give_no_token_and_are_all_audited() {
    let token = ttd_token("p256", "");
    // The refusals are answered at once (`limits::rates` paces them).
    add_server_settings(&token, UNPACED);
    open_socket_to_others(&token);
    let mut daemon = Daemon::start(&token);
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };

    // Asking for the granted issuer and app, for nothing, for another issuer,
    // and with a malformed query: all refused for nobody.
    let refused = request_loop(
        NOBODY,
        &daemon.socket,
        8,
        REFUSED_REQUESTS,
        &[
            "/v1/token?issuer=ttd&app=a",
            "/v1/token?issuer=ttd",
            "/v1/token",
            "/v1/token?issuer=other&app=b",
            "/v1/token?issuer=ttd&app=a&scope=x",
        ],
    )
    .spawn()
    .expect("start request-loop as nobody");
    let granted = request_loop(
        me,
        &daemon.socket,
        8,
        GRANTED_REQUESTS,
        &["/v1/token?issuer=ttd&app=a", "/v1/token?issuer=ttd&app=b"],
    )
    .spawn()
    .expect("start request-loop");
    let refused = tally(refused.wait_with_output().unwrap());
    let granted = tally(granted.wait_with_output().unwrap());
    eprintln!("nobody: {refused}\ngranted: {granted}");

    assert_eq!(refused["tokens"], 0, "a token for nobody: {refused}");
    assert_eq!(refused["errors"], serde_json::json!([]), "{refused}");
    assert_eq!(refused["closed"], 0, "{refused}");
    let statuses = refused["statuses"].as_object().unwrap();
    let answered: u64 = statuses.values().map(|n| n.as_u64().unwrap()).sum();
    assert_eq!(answered, REFUSED_REQUESTS as u64, "{refused}");
    for status in statuses.keys() {
        assert!(
            status.starts_with('4'),
            "nobody got {status}: {refused}\n{}",
            log_tail(&token)
        );
    }
    assert_eq!(
        granted["statuses"],
        serde_json::json!({ "200": GRANTED_REQUESTS }),
        "{granted}"
    );
    assert_eq!(granted["tokens"], GRANTED_REQUESTS, "{granted}");

    // The metrics agree with the audit log.
    let metrics = daemon.get("/metrics", &[]);
    let sum = |prefix: &str| -> f64 {
        body_of(&metrics)
            .lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(
        sum("access_token_agent_tokens_issued_total"),
        GRANTED_REQUESTS as f64
    );
    assert_eq!(
        sum("access_token_agent_tokens_refused_total"),
        REFUSED_REQUESTS as f64,
        "{metrics}"
    );

    // Every decision in the audit log, counted by uid and outcome; stopping
    // the agent writes the counts of identical refusals still being summed.
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(0));
    let audit = audit_lines(&token);
    let mut counts: BTreeMap<(u64, String), usize> = BTreeMap::new();
    for line in &audit {
        let uid = line["uid"].as_u64().expect("a uid in every audit line");
        let outcome = line["outcome"].as_str().expect("an outcome").to_owned();
        *counts.entry((uid, outcome)).or_default() +=
            line["repeated"].as_u64().unwrap_or(1) as usize;
        assert!(
            !line.to_string().contains("eyJ"),
            "a token in the audit log: {line}"
        );
    }
    let expected = BTreeMap::from([
        ((u64::from(me), "issued".to_owned()), GRANTED_REQUESTS),
        ((u64::from(NOBODY), "refused".to_owned()), REFUSED_REQUESTS),
    ]);
    assert_eq!(counts, expected);
    let switches = audit
        .windows(2)
        .filter(|pair| pair[0]["uid"] != pair[1]["uid"])
        .count();
    eprintln!("the audit log switches between the two users {switches} times");
    assert!(switches >= 2, "the two loads did not interleave");
}
