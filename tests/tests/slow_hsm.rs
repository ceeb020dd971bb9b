//! The slow module in front of a real SoftHSM token, driven by the agent's
//! own commands: it forwards everything, its delays are sleeps, its
//! session limit holds, and its hang lasts exactly as long as its file.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration_tests::daemon::{ttd_token, Daemon};
use integration_tests::slow_hsm::{route_through_slow_hsm, SlowHsm};
use integration_tests::{verify_jwt, AgentProcess, OutputExt, TestToken};

/// A token with a P-256 key for `ttd`, its config routed through the slow module.
fn slow_token() -> TestToken {
    let token = ttd_token("p256", "");
    route_through_slow_hsm(&token);
    token
}

fn mint_command(token: &TestToken, slow: &SlowHsm) -> Command {
    slow.apply(token.command(&["mint", "--issuer", "ttd", "--app", "a"]))
}

fn ttd_pem(token: &TestToken) -> Vec<u8> {
    token
        .agent(&["keys", "export-cert", "--issuer", "ttd", "--format", "pem"])
        .success()
        .stdout
}

#[test]
fn keys_and_tokens_pass_through_unchanged() {
    let token = slow_token();
    let listed = SlowHsm::new()
        .apply(token.command(&["keys", "list", "--json"]))
        .output()
        .unwrap()
        .success();
    assert!(
        listed.stdout_text().contains("\"ttd\""),
        "{}",
        listed.stdout_text()
    );
    let minted = mint_command(&token, &SlowHsm::new())
        .output()
        .unwrap()
        .success();
    verify_jwt(minted.stdout_text().trim(), &ttd_pem(&token), "ttd");
}

#[test]
fn a_signature_waits_the_delay_without_using_cpu() {
    let token = slow_token();
    let delay = Duration::from_secs(1);
    let mut command = mint_command(&token, &SlowHsm::new().sign_delay(delay));
    let started = Instant::now();
    let child = command.stdout(Stdio::null()).spawn().unwrap();
    let (status, cpu) = wait_with_cpu_time(child);
    let wall = started.elapsed();
    assert!(status.success(), "mint failed");
    assert!(
        wall >= delay,
        "the signature waited {wall:?}, less than {delay:?}"
    );
    assert!(
        cpu < delay / 2,
        "mint used {cpu:?} of CPU while waiting {delay:?}: the wait must be a sleep"
    );
}

#[test]
fn a_session_limit_is_reported_and_enforced() {
    let token = slow_token();
    // One session, the agent's anchor: no room for a signing session.
    let out = SlowHsm::new()
        .max_sessions(1)
        .apply(token.command(&["serve"]))
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "serve cannot sign without a session"
    );
    assert!(
        out.stderr_text().contains("CKR_SESSION_COUNT"),
        "{}",
        out.stderr_text()
    );
    // Two: the anchor and one signing session, as the token reports.
    let slow = SlowHsm::new().max_sessions(2);
    let daemon = Daemon::spawn(&token, |command| slow.apply(command)).ready(&token);
    let status = daemon.notifications.join("\n");
    assert!(status.contains("1 thread(s)"), "{status}");
    daemon
        .client()
        .token(Some("ttd"), Some("a"))
        .expect("a token within the limit");
}

#[test]
fn a_signature_blocks_while_the_hang_file_exists() {
    let token = slow_token();
    let hang = token.write_file("hang", "");
    let slow = SlowHsm::new().hang_while(&hang, "C_Sign");
    let mut mint = AgentProcess(
        mint_command(&token, &slow)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // A second on purpose, far longer than a signature that did not hang
    // would take: the command must still be waiting at its end.
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        mint.try_wait().unwrap().is_none(),
        "mint finished although its signature hangs"
    );
    std::fs::remove_file(&hang).unwrap();
    assert!(mint.wait().unwrap().success(), "mint failed after the hang");
    let mut minted = String::new();
    mint.stdout
        .take()
        .unwrap()
        .read_to_string(&mut minted)
        .unwrap();
    verify_jwt(minted.trim(), &ttd_pem(&token), "ttd");
}

/// Waits for `child` and returns its status and the CPU time it used.
fn wait_with_cpu_time(child: std::process::Child) -> (std::process::ExitStatus, Duration) {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: wait4 on our own child, with valid pointers; the Child is
    // forgotten so that nothing waits for it twice.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let pid = child.id() as i32;
    std::mem::forget(child);
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    (
        std::process::ExitStatus::from_raw(status),
        time(usage.ru_utime) + time(usage.ru_stime),
    )
}
