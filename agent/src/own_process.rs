//! Unit tests that set environment variables run alone, in a process of
//! their own: the environment is process-wide, and the other tests (and the C
//! libraries they call) read it from other threads.
//!
//! The test calls [`run`] with its own name and the variables to set; the
//! same test, started again in the child, sees [`is_child`] and does the
//! work there.

use std::ffi::OsStr;
use std::process::Command;

/// Set in the child to the name of the one test it runs.
const CHILD: &str = "ACCESS_TOKEN_AGENT_TEST_ALONE";

/// The test's full name, as the test harness filters by: `module_path!()`
/// without the crate, then `::test`.
pub fn name(module_path: &str, test: &str) -> String {
    let module = module_path.split_once("::").map_or("", |(_, rest)| rest);
    format!("{module}::{test}")
}

/// Whether this process is the child [`run`] started for `test`.
pub fn is_child(test: &str) -> bool {
    std::env::var_os(CHILD).is_some_and(|name| name == test)
}

/// Runs `test` alone in a new process of this test binary with `env` set,
/// and fails with the child's output unless the test ran there and passed.
pub fn run(test: &str, env: &[(&str, &OsStr)]) {
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
