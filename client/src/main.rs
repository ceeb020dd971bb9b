//! `access-token`: get, inspect and verify Altinn access tokens from the
//! local access-token-agent.

use std::path::PathBuf;
use std::process::ExitCode;

use access_token_client::cli::{
    Cli, Command, FAILURE, INVALID_TOKEN, NOT_GRANTED, OK, UNAVAILABLE, UNKNOWN_ISSUER,
    UNREACHABLE, USAGE,
};
use access_token_client::inspect::{self, VerifyError};
use access_token_client::{blocking, Client, Error};
use clap::Parser;

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
        let mut client = cli
            .socket
            .clone()
            .map(Client::new)
            .unwrap_or_else(Client::from_env);
        if let Some(path) = &cli.kubernetes_token_file {
            client = client.with_kubernetes_token_file(Some(path.clone()));
        }
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
    match client.kubernetes_token_file() {
        Some(path) if path.exists() => println!("service-account token: {}", path.display()),
        Some(path) => println!("service-account token: none ({} absent)", path.display()),
        None => println!("service-account token: none"),
    }
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
        Error::Other(_) | Error::Protocol(_) | Error::KubernetesToken { .. } => FAILURE,
    };
    (code, error.to_string())
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
