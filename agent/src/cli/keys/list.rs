//! `keys list`: the certificates and keys on the token, as a table or JSON;
//! certificates that share a key show the same key id.

use serde::Serialize;

use super::{expiry, pinned_kid, write_stdout};
use crate::cli::open_logged_in;
use crate::clock::{rfc3339, unix_now};
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::key_pairs::{self as keys, KeyPair};
use crate::hsm::Access;

/// How much of the key id the table shows: enough to tell a token's keys
/// apart; `--json` has all of it.
const KEY_ID_DIGITS: usize = 8;

/// `keys list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of `keys list`.
#[derive(Debug, Serialize)]
struct Row {
    issuer: String,
    kid: String,
    /// CKA_ID of the key objects: the kid the key was enrolled with.
    key_id: String,
    /// The kids of the other certificates of the same key.
    shares_key_with: Vec<String>,
    /// `rsa2048`, `p256`; `None` without a certificate.
    key_type: Option<String>,
    subject: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    /// The key the issuer signs with now.
    active: bool,
    /// The certificate expires within `[certificate] expiry_warning_days`.
    expiring: bool,
    /// Certificate and private key are both there.
    complete: bool,
    /// The pair passes every rule the agent signs by.
    usable: bool,
    /// Why it does not, when it does not.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_usable: Option<String>,
    /// Objects of the pair that play no part in judging it, and why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    ignored: Vec<String>,
    certificate: bool,
    private_key: bool,
    public_key: bool,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    always_sensitive: Option<bool>,
    never_extractable: Option<bool>,
    /// CKA_LOCAL: generated on the token (false: imported).
    generated_on_token: Option<bool>,
}

impl Row {
    fn new(pair: &KeyPair, pairs: &[KeyPair], active: bool, expiring: bool) -> Row {
        let cert = pair.certificate.as_ref().map(|(_, cert)| cert);
        let key = pair.private_key.as_ref();
        Row {
            issuer: pair.issuer.clone(),
            kid: pair.kid(),
            key_id: crate::token::upper_hex(&pair.key_id),
            shares_key_with: pairs
                .iter()
                .filter(|other| pair.shares_key_with(other))
                .map(KeyPair::kid)
                .collect(),
            key_type: cert.map(|c| c.key.name()),
            subject: cert.map(|c| c.subject.clone()),
            not_before: cert.map(|c| rfc3339(c.not_before)),
            not_after: cert.map(|c| rfc3339(c.not_after)),
            active,
            expiring,
            complete: pair.is_complete(),
            usable: pair.is_usable(),
            not_usable: (!pair.is_usable()).then(|| pair.why_not_usable()),
            ignored: pair.ignored.clone(),
            certificate: cert.is_some(),
            private_key: key.is_some(),
            public_key: pair.public_key.is_some(),
            sensitive: key.and_then(|k| k.sensitive),
            extractable: key.and_then(|k| k.extractable),
            always_sensitive: key.and_then(|k| k.always_sensitive),
            never_extractable: key.and_then(|k| k.never_extractable),
            generated_on_token: key.and_then(|k| k.local),
        }
    }

    /// `usable`, `INCOMPLETE` (a member missing) or `NOT USABLE`.
    fn state(&self) -> &'static str {
        match (self.usable, self.complete) {
            (true, _) => "usable",
            (false, false) if self.certificate != self.private_key => "INCOMPLETE",
            (false, _) => "NOT USABLE",
        }
    }

    /// The private key's protection in words, for the table.
    fn protection(&self) -> String {
        if !self.private_key {
            return "missing".into();
        }
        let sensitive = if self.sensitive == Some(true) {
            "sensitive"
        } else {
            "NOT SENSITIVE"
        };
        let extractable = match (self.extractable, self.never_extractable) {
            (Some(true), _) => "EXTRACTABLE",
            (_, Some(true)) => "never extractable",
            _ => "not extractable",
        };
        format!("{sensitive}, {extractable}")
    }

    /// The row's cells, in [`HEADER`]'s order; `-` for what is unknown.
    fn cells(&self) -> [String; 9] {
        let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
        [
            self.issuer.clone(),
            self.kid.clone(),
            self.key_id.chars().take(KEY_ID_DIGITS).collect(),
            or_dash(&self.key_type),
            or_dash(&self.not_before),
            or_dash(&self.not_after),
            if self.active { "yes" } else { "no" }.into(),
            self.state().into(),
            self.protection(),
        ]
    }
}

pub(super) fn run(config: &Config, args: &ListArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadOnly)?;
    let mut pairs = keys::list(&hsm.anchor(), None)?;
    // A key's certificates together, oldest first.
    pairs.sort_by_cached_key(|pair| {
        let not_before = pair.certificate.as_ref().map(|(_, cert)| cert.not_before);
        (
            pair.issuer.clone(),
            pair.key_id.clone(),
            not_before,
            pair.id.clone(),
        )
    });
    let now = unix_now();
    let window = config.certificate.expiry_warning_seconds();
    let rows: Vec<Row> = pairs
        .iter()
        .map(|pair| {
            let active =
                keys::select_active(&pairs, &pair.issuer, pinned_kid(config, &pair.issuer), now)
                    .is_some_and(|chosen| chosen.id == pair.id);
            let expiring = (pair.certificate.as_ref())
                .is_some_and(|(_, cert)| cert.expires_within(now, window));
            Row::new(pair, &pairs, active, expiring)
        })
        .collect();
    if args.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| Failure::new(exit::FAILURE, format!("cannot write JSON: {e}")))?;
        write_stdout(format!("{json}\n").as_bytes())?;
    } else {
        print_table(&rows)?;
    }
    for warning in expiry::warnings(config, &pairs, now) {
        eprintln!("warning: {warning}");
    }
    Ok(())
}

/// The columns of the table `keys list` prints.
const HEADER: [&str; 9] = [
    "ISSUER",
    "KID",
    "KEY",
    "TYPE",
    "NOT BEFORE",
    "NOT AFTER",
    "ACTIVE",
    "STATE",
    "PRIVATE KEY",
];

fn print_table(rows: &[Row]) -> Result<(), Failure> {
    if rows.is_empty() {
        eprintln!("no keys on the token; enrol one with `access-token-agent keys import` or `keys generate`");
        return Ok(());
    }
    let cells: Vec<[String; 9]> = rows.iter().map(Row::cells).collect();
    let mut table = aligned(&cells);
    for row in rows {
        let notes = row
            .not_usable
            .iter()
            .map(|why| format!("not usable: {why}"));
        for note in notes.chain(row.ignored.iter().cloned()) {
            table.push_str(&format!("{} {}: {note}\n", row.issuer, row.kid));
        }
    }
    write_stdout(table.as_bytes())
}

/// [`HEADER`] and `cells` in columns as wide as their widest cell, two
/// spaces apart, one line each.
fn aligned(cells: &[[String; 9]]) -> String {
    let mut widths = HEADER.map(str::len);
    for row in cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:width$}"))
            .collect();
        padded.join("  ").trim_end().to_owned()
    };
    let mut table = line(&HEADER.map(String::from)) + "\n";
    for row in cells {
        table.push_str(&line(row));
        table.push('\n');
    }
    table
}
