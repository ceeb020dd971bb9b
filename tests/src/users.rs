//! Other users on the machine, as clients of an agent: `nobody`'s uid, and
//! the `request-loop` client run as any uid, so that the agent sees that
//! user's credentials on its socket.

use std::ffi::OsStr;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::process::{agent_binary, OutputExt};

/// `nobody`: a uid (and gid) that no grant names unless a test adds one.
pub const NOBODY: u32 = 65534;

/// `request-loop` (tests/src/bin) as `uid`:`uid`, sending `requests` GETs
/// over `connections` kept-alive connections, cycling through `targets`;
/// its output goes to a pipe, for [`tally`].
pub fn request_loop(
    uid: u32,
    socket: &Path,
    connections: usize,
    requests: usize,
    targets: &[impl AsRef<OsStr>],
) -> Command {
    let binary = agent_binary().with_file_name("request-loop");
    let mut command = Command::new(binary);
    command
        .arg(socket)
        .arg(connections.to_string())
        .arg(requests.to_string())
        .args(targets)
        .uid(uid)
        .gid(uid)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// The JSON line a successful `request-loop` printed: how many answers of
/// each status (`statuses`), how many carried a token (`tokens`), how many
/// found their connection closed without an answer (`closed`), and what went
/// wrong on the way (`errors`).
pub fn tally(output: Output) -> serde_json::Value {
    let output = output.success();
    serde_json::from_str(output.stdout_text().trim()).expect("request-loop prints JSON")
}
