//! `access-token`: get, inspect and verify Altinn access tokens from the
//! local access-token-agent.

use std::path::PathBuf;
use std::process::ExitCode;

use access_token_client::inspect::{self, VerifyError};
use access_token_client::{blocking, Client, Error};
use clap::{Parser, Subcommand};

const OK: u8 = 0;
const FAILURE: u8 = 1;
const USAGE: u8 = 2;
const NOT_GRANTED: u8 = 3;
const UNKNOWN_ISSUER: u8 = 4;
const UNREACHABLE: u8 = 5;
const UNAVAILABLE: u8 = 6;
const INVALID_TOKEN: u8 = 7;

const EXIT_CODES: &str = "\
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
struct Cli {
    /// The agent's socket [default: $ACCESS_TOKEN_AGENT_SOCKET, else /run/access-token-agent/agent.sock]
    #[arg(long, global = true, value_name = "PATH")]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
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

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let _ = error.print();
            return ExitCode::from(if error.use_stderr() { USAGE } else { OK });
        }
    };
    let code = match run(cli) {
        Ok(()) => OK,
        Err((code, message)) => {
            eprintln!("access-token: {message}");
            code
        }
    };
    ExitCode::from(code)
}

type Outcome = Result<(), (u8, String)>;

fn run(cli: Cli) -> Outcome {
    let client = || {
        let client = cli
            .socket
            .clone()
            .map(Client::new)
            .unwrap_or_else(Client::from_env);
        blocking::Client::wrap(client).map_err(agent_failure)
    };
    match &cli.command {
        Command::Token {
            issuer,
            app,
            header,
        } => {
            let token = client()?
                .token(issuer.as_deref(), app.as_deref())
                .map_err(agent_failure)?;
            match header {
                true => println!("PlatformAccessToken: {}", token.token),
                false => println!("{}", token.token),
            }
            Ok(())
        }
        Command::Status => status(&client()?),
        Command::Decode { token } => decode(token),
        Command::Verify { cert, now, token } => verify(cert, token, now.unwrap_or_else(unix_now)),
    }
}

fn status(client: &blocking::Client) -> Outcome {
    println!("agent: {}", client.socket().display());
    let not_ready = match client.ready() {
        Ok(()) => None,
        Err(Error::Unavailable { problem, .. }) => Some(problem.detail),
        Err(error) => return Err(agent_failure(error)),
    };
    match &not_ready {
        None => println!("ready: yes"),
        Some(reason) => println!("ready: no, {reason}"),
    }
    let grants = client.grants().map_err(agent_failure)?;
    println!("you: uid {} gid {}", grants.uid, grants.gid);
    if grants.grants.is_empty() {
        println!("granted: nothing (ask the operator for a [[grant]] entry)");
    }
    for grant in grants.grants {
        println!(
            "granted: issuer {} apps {}",
            grant.issuer,
            grant.apps.join(", ")
        );
    }
    match not_ready {
        None => Ok(()),
        Some(_) => Err((UNAVAILABLE, "the agent is not ready to sign".into())),
    }
}

fn decode(token: &str) -> Outcome {
    let decoded = inspect::decode(token).map_err(|e| (USAGE, e.to_string()))?;
    let pretty = |value| serde_json::to_string_pretty(value).unwrap_or_default();
    println!("header: {}", pretty(&decoded.header));
    println!("claims: {}", pretty(&decoded.claims));
    if let Some(exp) = decoded.claims["exp"].as_i64() {
        let left = exp - unix_now();
        match left > 0 {
            true => println!("time left: {left} s"),
            false => println!("time left: none, expired {} s ago", -left),
        }
    }
    Ok(())
}

fn verify(cert: &PathBuf, token: &str, now: i64) -> Outcome {
    let bytes =
        std::fs::read(cert).map_err(|e| (USAGE, format!("cannot read {}: {e}", cert.display())))?;
    let der = inspect::certificate_der(&bytes).map_err(|e| (USAGE, e.to_string()))?;
    match inspect::verify(&der, token, now) {
        Ok(decoded) => {
            let exp = decoded.claims["exp"].as_i64().unwrap_or_default();
            println!("valid: signature verifies, {} s left", exp - now);
            Ok(())
        }
        Err(error @ VerifyError::Certificate(_)) => Err((USAGE, error.to_string())),
        Err(error) => Err((INVALID_TOKEN, format!("invalid: {error}"))),
    }
}

fn agent_failure(error: Error) -> (u8, String) {
    let code = match &error {
        Error::NotGranted(_) => NOT_GRANTED,
        Error::UnknownIssuer(_) => UNKNOWN_ISSUER,
        Error::BadRequest(_) => USAGE,
        Error::Unreachable { .. } => UNREACHABLE,
        Error::Unavailable { .. } | Error::Timeout { .. } => UNAVAILABLE,
        Error::Other(_) | Error::Protocol(_) => FAILURE,
    };
    (code, error.to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
