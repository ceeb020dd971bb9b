//! A client repeating a refused request cannot flood the audit log: the
//! first five refusals of a kind are written at once, the identical ones
//! after them are counted and written as one line with the count when the
//! 10 s window ends; every issued token keeps its own line.

use std::time::{Duration, Instant};

use integration_tests::daemon::{
    add_server_settings, audit_lines, log, open_directory_to_others, ttd_token, Daemon, UNPACED,
};
use integration_tests::users::{request_loop, tally, NOBODY};

const REFUSED: u64 = 5000;
const ISSUED: usize = 500;

fn refused_lines_of_nobody(token: &integration_tests::TestToken) -> Vec<serde_json::Value> {
    audit_lines(token)
        .into_iter()
        .filter(|line| line["uid"] == NOBODY)
        .collect()
}

#[test]
fn identical_refusals_are_counted_and_every_token_keeps_its_line() {
    let token = ttd_token("p256", "");
    // The flood is answered at once here (see `rates` for its pacing): the
    // audit has to keep up with all of it.
    add_server_settings(&token, &format!("socket_group = \"nogroup\"\n{UNPACED}"));
    open_directory_to_others(&token);
    let daemon = Daemon::start(&token);
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };

    let target = "/v1/token?issuer=ttd&app=a".to_owned();
    let flood = request_loop(NOBODY, &daemon.socket, 8, REFUSED as usize, &[target])
        .spawn()
        .expect("start request-loop as nobody");
    let mine: Vec<String> = (0..ISSUED)
        .map(|n| format!("/v1/token?issuer=ttd&app=mine-{}", n % 50))
        .collect();
    let served = tally(
        request_loop(me, &daemon.socket, 2, mine.len(), &mine)
            .output()
            .unwrap(),
    );
    let flood = tally(flood.wait_with_output().unwrap());
    assert_eq!(
        flood["statuses"],
        serde_json::json!({ "403": REFUSED }),
        "{flood}"
    );
    assert_eq!(
        served["statuses"],
        serde_json::json!({ "200": ISSUED }),
        "{served}"
    );

    let issued = audit_lines(&token)
        .into_iter()
        .filter(|line| line["uid"] == me && line["outcome"] == "issued")
        .count();
    assert_eq!(issued, ISSUED, "one line per issued token");
    let written = refused_lines_of_nobody(&token).len();
    assert!(
        written <= 5,
        "{written} lines for {REFUSED} identical refusals"
    );
    let logged = log(&token)
        .lines()
        .filter(|line| line.contains("\"uid\":65534"))
        .count();
    assert!(
        logged <= 5,
        "{logged} log lines for {REFUSED} identical refusals"
    );

    // At the interval's end the count arrives: every refusal is accounted for.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lines = refused_lines_of_nobody(&token);
        let accounted: u64 = lines
            .iter()
            .map(|line| line["repeated"].as_u64().unwrap_or(1))
            .sum();
        if accounted == REFUSED {
            let summary = lines.iter().find(|l| l["repeated"].is_u64()).unwrap();
            assert_eq!(summary["outcome"], "refused", "{summary}");
            assert_eq!(summary["reason"], "not-granted", "{summary}");
            assert_eq!(summary["app"], "a", "{summary}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{accounted} of {REFUSED} refusals accounted for: {lines:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
