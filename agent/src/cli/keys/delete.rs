//! `keys delete`: a key pair off the token, after a confirmation on the
//! terminal.

use std::io::{BufRead, IsTerminal};

use super::{parse_kid, Kid};
use crate::cli::open_logged_in;
use crate::clock::rfc3339;
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol;
use crate::hsm::key_pairs::{self as keys, KeyPair};
use crate::hsm::Access;

/// `keys delete`
#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// The kid (certificate thumbprint, 40 hex digits) whose objects to remove.
    #[arg(long, value_parser = parse_kid)]
    pub kid: Kid,
    /// Delete without asking.
    #[arg(long)]
    pub yes: bool,
}

pub(super) fn run(config: &Config, args: &DeleteArgs) -> Result<(), Failure> {
    let Kid(id) = args.kid;
    let kid = crate::token::upper_hex(&id);
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    if !args.yes {
        let pair = keys::find_by_kid(&session, &kid)?;
        let what = match &pair {
            Some(pair) => describe_pair(pair),
            None => format!("the objects with kid {kid}"),
        };
        confirm(&format!(
            "Delete {what} from token {:?}? This cannot be undone.",
            hsm.label()
        ))?;
    }
    let removed = enrol::delete(&session, &id)?;
    eprintln!("deleted {removed} object(s) with kid {kid}");
    Ok(())
}

fn describe_pair(pair: &KeyPair) -> String {
    let mut text = format!("kid {} of issuer {:?}", pair.kid(), pair.issuer);
    if let Some((_, cert)) = &pair.certificate {
        text.push_str(&format!(
            " ({}, {}, valid to {})",
            cert.key.name(),
            cert.subject,
            rfc3339(cert.not_after)
        ));
    }
    text
}

/// Asks on the terminal; refuses outright when stdin is not one, so that a
/// script never deletes a key by accident.
fn confirm(question: &str) -> Result<(), Failure> {
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            exit::USAGE,
            "refusing to delete without confirmation: stdin is not a terminal; pass --yes to delete without asking",
        ));
    }
    eprint!("{question} [y/N] ");
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .map_err(|e| Failure::new(exit::FAILURE, format!("cannot read the answer: {e}")))?;
    match answer.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => Err(Failure::new(exit::FAILURE, "not deleted")),
    }
}
