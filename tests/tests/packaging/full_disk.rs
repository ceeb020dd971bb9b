//! The audit file's file system fills up: any local user can do that to a
//! shared one, and the agent, not being root, gets no reserve. The lines
//! that cannot be written wait in memory and are written, whole and in
//! order, once there is room again; the failures are counted on
//! `/metrics`. The agent runs with its audit directory on a small tmpfs
//! of its own (a private mount namespace), which the test fills.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use integration_tests::daemon::{body_of, log_tail, settled_text, status_of, ttd_token, Daemon};
use integration_tests::process::run_by;
use integration_tests::{TestToken, PATIENCE};

const WRITE_ERRORS: &str = "access_token_agent_audit_write_errors_total";

/// The directory the agent's audit file is in, as the agent sees it.
const LOGS: &str = "logs";

/// A served agent whose `[audit] file` is on a 1 MiB tmpfs mounted, in a
/// mount namespace of the agent's own, over the token's `logs` directory.
fn agent_on_a_small_tmpfs(token: &TestToken, extra: &str) -> Daemon {
    let logs = token.path().join(LOGS);
    std::fs::create_dir(&logs).unwrap();
    let config = std::fs::read_to_string(token.config_path()).unwrap();
    let old = format!(
        "{:?}",
        token.path().join("audit.jsonl").display().to_string()
    );
    let new = format!("{:?}", logs.join("audit.jsonl").display().to_string());
    let config = config
        .replace(&old, &new)
        .replace("[audit]\n", &format!("[audit]\n{extra}"));
    std::fs::write(token.config_path(), config).unwrap();
    Daemon::spawn(token, |command| on_own_tmpfs(command, &logs)).ready(token)
}

/// `command`, run by `unshare --mount` after a 1 MiB tmpfs (mode 0700) is
/// mounted over `dir`; the shell execs it, so it keeps the shell's pid.
fn on_own_tmpfs(command: Command, dir: &Path) -> Command {
    let mut unshare = Command::new("unshare");
    unshare
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=1m,mode=0700 tmpfs "$0" && exec "$@""#)
        .arg(dir);
    run_by(unshare, &command)
}

/// A path in the agent's tmpfs, reached through its mount namespace.
fn in_agent_tmpfs(daemon: &Daemon, token: &TestToken, name: &str) -> PathBuf {
    let logs = token.path().join(LOGS);
    let inside = logs.strip_prefix("/").unwrap();
    Path::new(&format!("/proc/{}/root", daemon.pid()))
        .join(inside)
        .join(name)
}

/// Fills the tmpfs with one file, to the last byte it takes.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    for chunk in [64 * 1024, 4096, 1] {
        let bytes = vec![0u8; chunk];
        while file.write_all(&bytes).is_ok() {}
    }
}

/// Takes tokens for new apps until the agent counts a failed write of the
/// audit file; returns how many it took.
fn tokens_until_a_write_fails(daemon: &Daemon, token: &TestToken) -> usize {
    let deadline = Instant::now() + PATIENCE;
    let mut taken = 0;
    while daemon.metric(WRITE_ERRORS) == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no write error counted:\n{}",
            log_tail(token)
        );
        daemon
            .client()
            .token(Some("ttd"), Some(&format!("app-{taken}")))
            .unwrap();
        taken += 1;
    }
    taken
}

/// Waits until the audit file holds `issued` lines of issued tokens, each a
/// whole JSON line.
fn wait_for_issued_lines(path: &Path, issued: usize, token: &TestToken) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let text = settled_text(path);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("half a line {l:?}: {e}")))
            .collect();
        let found = lines.iter().filter(|l| l["outcome"] == "issued").count();
        if found == issued && text.ends_with('\n') {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{found} of {issued} issued lines:\n{}",
            log_tail(token)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn lines_that_meet_a_full_disk_are_counted_kept_and_written_whole_once_there_is_room() {
    let token = ttd_token("p256", "");
    let daemon = agent_on_a_small_tmpfs(&token, "");
    let filler = in_agent_tmpfs(&daemon, &token, "filler");
    fill(&filler);
    let mut issued = tokens_until_a_write_fails(&daemon, &token);
    for n in 0..20 {
        let app = format!("after-{n}");
        daemon.client().token(Some("ttd"), Some(&app)).unwrap();
        issued += 1;
    }
    std::fs::remove_file(&filler).unwrap();
    let audit = in_agent_tmpfs(&daemon, &token, "audit.jsonl");
    wait_for_issued_lines(&audit, issued, &token);
    assert!(daemon.metric(WRITE_ERRORS) >= 1.0);
}

/// `GET /v1/token` for `app`: the status and the problem type, if any.
fn ask(daemon: &Daemon, app: &str) -> (u16, String) {
    let answer = daemon.get(&format!("/v1/token?issuer=ttd&app={app}"), &[]);
    let body: serde_json::Value =
        serde_json::from_str(body_of(&answer)).unwrap_or(serde_json::Value::Null);
    let kind = body["type"].as_str().unwrap_or_default().to_owned();
    (status_of(&answer), kind)
}

#[test]
fn with_audit_required_no_token_goes_out_while_its_line_cannot_be_written() {
    let token = ttd_token("p256", "");
    let daemon = agent_on_a_small_tmpfs(&token, "required = true\n");
    let filler = in_agent_tmpfs(&daemon, &token, "filler");
    fill(&filler);
    let deadline = Instant::now() + PATIENCE;
    let mut issued = 0;
    let refused = loop {
        assert!(Instant::now() < deadline, "{}", log_tail(&token));
        match ask(&daemon, &format!("app-{issued}")) {
            (200, _) => issued += 1,
            refused => break refused,
        }
    };
    assert_eq!(
        refused,
        (
            503,
            "urn:access-token-agent:problem:audit-unavailable".into()
        )
    );
    let ready = daemon.wait_status(&token, "/readyz", 503);
    assert!(ready.contains("audit file"), "{ready}");

    std::fs::remove_file(&filler).unwrap();
    daemon.wait_status(&token, "/readyz", 200);
    assert_eq!(ask(&daemon, "after").0, 200);
    let audit = in_agent_tmpfs(&daemon, &token, "audit.jsonl");
    wait_for_issued_lines(&audit, issued + 1, &token);
}
