//! The `access-token` command line: its arguments and exit codes, in the
//! library so that man pages and shell completions are generated from the
//! same definition the command parses.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

pub const OK: u8 = 0;
pub const FAILURE: u8 = 1;
pub const USAGE: u8 = 2;
pub const NOT_GRANTED: u8 = 3;
pub const UNKNOWN_ISSUER: u8 = 4;
pub const UNREACHABLE: u8 = 5;
pub const UNAVAILABLE: u8 = 6;
pub const INVALID_TOKEN: u8 = 7;

pub const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  any other failure
  2  bad usage, or a request the agent calls malformed
  3  not granted: this user/process may not have that issuer or app
  4  unknown issuer: the agent does not sign for it
  5  agent unreachable: not running, or wrong socket path or permissions
  6  agent unavailable: HSM down, not ready, overloaded or not answering
     (after retries); for status: the agent is not ready
  7  verify: the token does not pass

Requests are retried for about 3 s while the agent restarts or answers 503.";

#[derive(Debug, Parser)]
#[command(name = "access-token", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// The agent's socket [default: $ACCESS_TOKEN_AGENT_SOCKET, else /run/access-token-agent/agent.sock]
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The pod's projected service-account token, sent to the agent with
    /// `token` and `status` (read, never printed) [default:
    /// /var/run/secrets/access-token-agent/token when it exists]
    #[arg(long, global = true, value_name = "PATH")]
    pub kubernetes_token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print a token for ISSUER and APP (both optional when you are granted exactly one).
    Token {
        #[arg(long)]
        issuer: Option<String>,
        #[arg(long)]
        app: Option<String>,
        /// Print `PlatformAccessToken: <token>`, ready for `curl -H @-`.
        #[arg(long)]
        header: bool,
    },
    /// Show whether the agent is ready and which issuers and apps it serves to you.
    Status,
    /// Show a token's header, claims and time left (no checks).
    Decode { token: String },
    /// Check a token as Altinn Platform does, against a certificate file
    /// (PEM, DER, or the Key Vault base64 value).
    Verify {
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
        /// Check as of this instant (Unix seconds) instead of now.
        #[arg(long, value_name = "UNIX_SECONDS")]
        now: Option<i64>,
        token: String,
    },
}
