//! The client library, the `access-token` command and the examples in
//! client/examples, against a real agent on a real socket with SoftHSM
//! behind it: one module each; and [`kubernetes`], the pod's
//! service-account token they send, as an agent stand-in receives it.

mod command;
mod examples;
mod kubernetes;
mod library;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use access_token_client::{blocking, Client, Retry};
use integration_tests::daemon::{audit_lines, client_binary, exported_cert, ttd_token};
use integration_tests::{OutputExt, TestToken};

/// No retries: each answer as the agent gives it.
const ONCE: Retry = Retry {
    attempts: 1,
    first_delay: Duration::from_millis(50),
    max_delay: Duration::from_secs(2),
};

fn blocking_client(client: Client) -> blocking::Client {
    blocking::Client::wrap(client).expect("a client runtime")
}

/// The exported certificate as a PEM file in the token's directory.
fn cert_pem_file(token: &TestToken) -> PathBuf {
    token.write_file("ttd.pem", exported_cert(token, "pem"))
}

/// Issued tokens according to the agent's audit file.
fn issued_count(token: &TestToken) -> usize {
    audit_lines(token)
        .iter()
        .filter(|line| line["outcome"] == "issued")
        .count()
}

/// `ttd_token` plus a grant for `other`, an issuer the agent does not have.
fn token_granting_an_unknown_issuer(key_type: &str, extra: &str) -> TestToken {
    // SAFETY: getuid cannot fail.
    let me = unsafe { libc::getuid() };
    ttd_token(
        key_type,
        &format!("[[grant]]\nuid = {me}\nissuer = \"other\"\napps = [\"*\"]\n\n{extra}"),
    )
}

/// The `access-token` command with `ACCESS_TOKEN_AGENT_SOCKET` = `socket`.
fn access_token(socket: &Path, args: &[&str]) -> Output {
    toward_agent(Command::new(client_binary()).args(args), socket)
        .output()
        .expect("run access-token")
}

/// The one line a command printed, without its newline; panics on more.
fn single_line(out: &Output) -> String {
    let text = out.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one line: {text:?}");
    assert!(text.ends_with('\n'));
    lines[0].to_owned()
}

/// `command` with the agent's socket in its environment and no proxy
/// settings (curl would send the request for Platform through one).
fn toward_agent<'c>(command: &'c mut Command, socket: &Path) -> &'c mut Command {
    for proxy in ["http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"] {
        command.env_remove(proxy);
    }
    command
        .env(access_token_client::SOCKET_ENV, socket)
        .stdin(Stdio::null())
}
