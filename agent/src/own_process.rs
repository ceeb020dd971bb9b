//! Unit tests that set environment variables run alone, in a process of
//! their own: the environment is process-wide, and the other tests (and the C
//! libraries they call) read it from other threads.
//!
//! The test calls [`run`] with the variables to set; the same test,
//! started again in the child, sees [`is_child`] and does the work there.

use std::ffi::OsStr;
use std::process::Command;

/// Set in the child, which runs only the one test named by it.
const CHILD: &str = "ACCESS_TOKEN_AGENT_TEST_ALONE";

/// Whether this process is the child [`run`] started.
pub fn is_child() -> bool {
    std::env::var_os(CHILD).is_some()
}

/// Runs the calling test again, alone in a new process of this test binary
/// with `env` set, and fails with the child's output unless the test ran
/// there and passed.
pub fn run(env: &[(&str, &OsStr)]) {
    // The test harness names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().expect("a test's thread");
    let output = Command::new(std::env::current_exe().expect("the test binary"))
        .args([test, "--exact", "--test-threads=1", "--nocapture"])
        .env(CHILD, test)
        .envs(env.iter().copied())
        .output()
        .expect("start the test binary again");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "{test} in a process of its own:\n{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
