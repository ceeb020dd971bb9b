//! `keys delete`: a certificate off the token, with its key unless the key
//! has other certificates, after a confirmation on the terminal.

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
    /// The kid (certificate thumbprint, 40 hex digits) to remove; its key
    /// goes with it unless other certificates of the key stay.
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
        let pairs = keys::list(&session, None)?;
        let what = match pairs.iter().find(|pair| pair.kid() == kid) {
            Some(pair) => describe_pair(
                pair,
                pairs.iter().filter(|o| pair.shares_key_with(o)).count(),
            ),
            None => format!("the objects with kid {kid}"),
        };
        confirm(&format!(
            "Delete {what} from token {:?}? This cannot be undone.",
            hsm.label()
        ))?;
    }
    let deleted = enrol::delete(&session, &id)?;
    eprintln!("deleted {} object(s) with kid {kid}", deleted.objects);
    if !deleted.key_kept_for.is_empty() {
        eprintln!(
            "its key stays on the token for its other certificate(s): {}",
            deleted.key_kept_for.join(", ")
        );
    }
    Ok(())
}

/// The pair, and whether its key goes too: not while `others` of its
/// certificates stay.
fn describe_pair(pair: &KeyPair, others: usize) -> String {
    let mut text = format!("kid {} of issuer {:?}", pair.kid(), pair.issuer);
    if let Some((_, cert)) = &pair.certificate {
        text.push_str(&format!(
            " ({}, {}, valid to {})",
            cert.key.name(),
            cert.subject,
            rfc3339(cert.not_after)
        ));
    }
    if others > 0 {
        text.push_str(&format!(
            "; only this certificate: its key stays for its {others} other certificate(s)"
        ));
    } else if pair.private_key.is_some() {
        text.push_str(" and its private key");
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
