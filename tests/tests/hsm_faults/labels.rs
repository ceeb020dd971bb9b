//! Two tokens with the configured label: the agent logs in to neither.
//! Another token (a second SoftHSM token, a p11-kit proxy in front of the
//! same HSM) that sorts first in the slot list would otherwise get the PIN,
//! and with it the retry counter of a token the operator never meant.

use std::process::Command;

use integration_tests::daemon::{log, ttd_token, Daemon};
use integration_tests::{OutputExt, TestToken, LABEL};

/// Serial number of every initialised token in the token's SoftHSM store.
fn serials(token: &TestToken) -> Vec<String> {
    let out = Command::new("softhsm2-util")
        .arg("--show-slots")
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .output()
        .expect("run softhsm2-util");
    out.stdout_text()
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Serial number:"))
        .map(|serial| serial.trim().to_owned())
        .filter(|serial| !serial.is_empty())
        .collect()
}

/// A second token labelled like the first in the same store, with a PIN of
/// its own: the one the agent's PIN must never be tried on.
fn add_namesake(token: &TestToken) {
    Command::new("softhsm2-util")
        .args(["--init-token", "--free", "--label", LABEL])
        .args(["--so-pin", "11112222", "--pin", "0000"])
        .env("SOFTHSM2_CONF", token.softhsm_conf())
        .output()
        .expect("run softhsm2-util")
        .success();
}

fn assert_names_both(message: &str, serials: &[String]) {
    assert_eq!(serials.len(), 2, "{serials:?}");
    assert!(message.contains(&format!("{LABEL:?}")), "{message}");
    assert!(message.contains("unique label"), "{message}");
    for serial in serials {
        assert!(message.contains(serial.as_str()), "{serial}: {message}");
    }
    assert!(message.contains("slot "), "{message}");
}

#[test]
fn keys_commands_refuse_a_label_two_tokens_carry() {
    let token = ttd_token("p256", "");
    add_namesake(&token);
    let out = token.agent(&["keys", "list"]).exit(78);
    assert_names_both(&out.stderr_text(), &serials(&token));
}

#[test]
fn serve_refuses_a_label_two_tokens_carry() {
    let token = ttd_token("p256", "");
    add_namesake(&token);
    let mut daemon = Daemon::spawn(&token, |command| command);
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(78), "{}", log(&token));
    assert_names_both(&log(&token), &serials(&token));
}
