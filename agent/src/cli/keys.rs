//! `access-token-agent keys …`: the operators' commands that enrol, list,
//! publish and delete keys, talking to the token directly with the user PIN.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use super::{open_logged_in, KeysCommand};
use crate::cert::Certificate;
use crate::clock::{rfc3339, unix_now};
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol::{
    self, import::password_from_bytes, CertificateRequest, EnrolError, KeyType,
};
use crate::hsm::keys::{self, KeyPair};
use crate::hsm::{Access, HsmError};

/// `keys import`
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The issuer (`iss`) the key signs for; stored as the objects' CKA_LABEL.
    /// Letters, digits, '-', '.' and '_', as in requests.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// The PKCS#12 file (.pfx/.p12) with the private key and its certificate.
    #[arg(long, value_name = "FILE")]
    pub pfx: PathBuf,
    /// File holding the PKCS#12 password; without it the empty password
    /// (Altinn's files) is used. A trailing newline is ignored.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// `keys generate`
#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// The issuer (`iss`) the key signs for; stored as the objects' CKA_LABEL.
    /// Letters, digits, '-', '.' and '_', as in requests.
    #[arg(long, value_parser = parse_issuer)]
    pub issuer: String,
    /// The key to generate inside the HSM.
    #[arg(long, value_enum, default_value = "rsa2048")]
    pub key_type: KeyType,
    /// The certificate's subject, e.g. "CN=ttd, O=Digdir, C=NO" [default: CN=<issuer>]
    #[arg(long)]
    pub subject: Option<String>,
    /// Days the self-signed certificate is valid, from now.
    #[arg(long, default_value_t = enrol::generate::DEFAULT_DAYS)]
    pub days: u32,
}

/// `keys list`
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `keys export-cert`
#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// The issuer whose certificate to export.
    #[arg(long)]
    pub issuer: String,
    /// The certificate to export [default: the issuer's active one].
    #[arg(long, value_parser = parse_kid)]
    pub kid: Option<Kid>,
    /// pem, der (raw bytes), or keyvault: base64 of the DER, the value of the
    /// Key Vault secret `{issuer}-access-token-public-cert` (its name goes to stderr).
    #[arg(long, value_enum)]
    pub format: ExportFormat,
}

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

/// The forms a certificate is exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Pem,
    Der,
    Keyvault,
}

/// A kid given on the command line: the 20-byte SHA-1 thumbprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kid(pub [u8; 20]);

/// An issuer to enrol for: a name apps can ask for, or the key could never
/// be used (bad usage, exit 2, before the token is touched).
fn parse_issuer(text: &str) -> Result<String, String> {
    crate::policy::check_name(text)
        .map(|()| text.to_owned())
        .map_err(|why| format!("the issuer {text:?} {why}; use the org code, e.g. ttd"))
}

fn parse_kid(text: &str) -> Result<Kid, String> {
    let digits = text.trim();
    let invalid = || format!("{text:?} is not a kid: give the 40 hex digits `keys list` shows");
    if digits.len() != 40 || !digits.is_ascii() {
        return Err(invalid());
    }
    let mut id = [0u8; 20];
    for (byte, pair) in id.iter_mut().zip(digits.as_bytes().chunks(2)) {
        let pair = std::str::from_utf8(pair).map_err(|_| invalid())?;
        *byte = u8::from_str_radix(pair, 16).map_err(|_| invalid())?;
    }
    Ok(Kid(id))
}

impl From<EnrolError> for Failure {
    fn from(error: EnrolError) -> Failure {
        Failure::new(error.exit_code(), error.to_string())
    }
}

/// Runs one `keys` command.
pub fn run(config: &Config, command: KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Import(args) => import(config, &args),
        KeysCommand::Generate(args) => generate(config, &args),
        KeysCommand::List(args) => list(config, &args),
        KeysCommand::ExportCert(args) => export_cert(config, &args),
        KeysCommand::Delete(args) => delete(config, &args),
    }
}

fn import(config: &Config, args: &ImportArgs) -> Result<(), Failure> {
    let pfx = read_input(&args.pfx, "PKCS#12 file")?;
    let password = match &args.password_file {
        Some(path) => password_from_bytes(&read_input(path, "password file")?)
            .map_err(|e| Failure::new(exit::DATA, format!("{}: {e}", path.display())))?,
        None => Zeroizing::new(String::new()),
    };
    // A file that cannot be used is refused before the token is touched.
    let material = enrol::read_pkcs12(&pfx, &password).map_err(|e| import_failure(args, e))?;
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let cert =
        enrol::import(&session, &args.issuer, material).map_err(|e| import_failure(args, e))?;
    report_enrolled(config, &session, "imported", &args.issuer, &cert)
}

/// An import failure; a problem with the file names the file.
fn import_failure(args: &ImportArgs, error: EnrolError) -> Failure {
    let failure = Failure::from(error);
    match failure.code {
        exit::DATA => Failure::new(
            exit::DATA,
            format!("cannot import {}: {}", args.pfx.display(), failure.message),
        ),
        _ => failure,
    }
}

fn generate(config: &Config, args: &GenerateArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let request = CertificateRequest {
        subject: args.subject.clone(),
        days: args.days,
        now: unix_now(),
    };
    let cert = enrol::generate(&session, &args.issuer, args.key_type, &request)?;
    report_enrolled(config, &session, "generated", &args.issuer, &cert)
}

/// The kid on stdout (for scripts), what was enrolled on stderr.
fn report_enrolled(
    config: &Config,
    session: &cryptoki::session::Session,
    what: &str,
    issuer: &str,
    cert: &Certificate,
) -> Result<(), Failure> {
    let pairs = keys::list(session, Some(issuer))?;
    let active = keys::select_active(&pairs, issuer, pinned_kid(config, issuer), unix_now())
        .is_some_and(|pair| pair.id == cert.thumbprint);
    eprintln!(
        "{what} for issuer {issuer:?}: kid {}, {}, {}, valid {} to {}; {}",
        cert.kid(),
        cert.key.name(),
        cert.subject,
        rfc3339(cert.not_before),
        rfc3339(cert.not_after),
        if active {
            "it is now the issuer's active key"
        } else {
            "it is not the issuer's active key (see `access-token-agent keys list`)"
        }
    );
    write_stdout(format!("{}\n", cert.kid()).as_bytes())
}

/// Reads a whole input file into memory that is zeroized when dropped.
fn read_input(path: &Path, what: &str) -> Result<Zeroizing<Vec<u8>>, Failure> {
    std::fs::read(path).map(Zeroizing::new).map_err(|e| {
        Failure::new(
            exit::DATA,
            format!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

fn pinned_kid<'c>(config: &'c Config, issuer: &str) -> Option<&'c str> {
    config.issuer(issuer).and_then(|i| i.kid.as_deref())
}

/// One row of `keys list`.
#[derive(Debug, Serialize)]
struct Row {
    issuer: String,
    kid: String,
    /// `rsa2048`, `p256`; `None` without a certificate.
    key_type: Option<String>,
    subject: Option<String>,
    not_before: Option<String>,
    not_after: Option<String>,
    /// The key the issuer signs with now.
    active: bool,
    /// Certificate and private key are both there.
    complete: bool,
    certificate: bool,
    private_key: bool,
    public_key: bool,
    sensitive: Option<bool>,
    extractable: Option<bool>,
    always_sensitive: Option<bool>,
    never_extractable: Option<bool>,
}

impl Row {
    fn new(pair: &KeyPair, active: bool) -> Row {
        let cert = pair.certificate.as_ref().map(|(_, cert)| cert);
        let key = pair.private_key.as_ref();
        Row {
            issuer: pair.issuer.clone(),
            kid: pair.kid(),
            key_type: cert.map(|c| c.key.name()),
            subject: cert.map(|c| c.subject.clone()),
            not_before: cert.map(|c| rfc3339(c.not_before)),
            not_after: cert.map(|c| rfc3339(c.not_after)),
            active,
            complete: pair.is_complete(),
            certificate: cert.is_some(),
            private_key: key.is_some(),
            public_key: pair.public_key.is_some(),
            sensitive: key.map(|k| k.sensitive),
            extractable: key.map(|k| k.extractable),
            always_sensitive: key.map(|k| k.always_sensitive),
            never_extractable: key.map(|k| k.never_extractable),
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
}

fn list(config: &Config, args: &ListArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadOnly)?;
    let pairs = keys::list(&hsm.anchor(), None)?;
    let now = unix_now();
    let rows: Vec<Row> = pairs
        .iter()
        .map(|pair| {
            let active =
                keys::select_active(&pairs, &pair.issuer, pinned_kid(config, &pair.issuer), now)
                    .is_some_and(|chosen| chosen.id == pair.id);
            Row::new(pair, active)
        })
        .collect();
    if args.json {
        let json = serde_json::to_string_pretty(&rows)
            .map_err(|e| Failure::new(exit::FAILURE, format!("cannot write JSON: {e}")))?;
        write_stdout(format!("{json}\n").as_bytes())
    } else {
        print_table(&rows)
    }
}

fn print_table(rows: &[Row]) -> Result<(), Failure> {
    if rows.is_empty() {
        eprintln!("no keys on the token; enrol one with `access-token-agent keys import` or `keys generate`");
        return Ok(());
    }
    let header = [
        "ISSUER",
        "KID",
        "TYPE",
        "NOT BEFORE",
        "NOT AFTER",
        "ACTIVE",
        "STATE",
        "PRIVATE KEY",
    ];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|row| {
            let or_dash = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
            [
                row.issuer.clone(),
                row.kid.clone(),
                or_dash(&row.key_type),
                or_dash(&row.not_before),
                or_dash(&row.not_after),
                if row.active { "yes" } else { "no" }.into(),
                if row.complete {
                    "complete"
                } else {
                    "INCOMPLETE"
                }
                .into(),
                row.protection(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &cells {
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
    let mut table = line(&header.map(String::from)) + "\n";
    for row in &cells {
        table.push_str(&line(row));
        table.push('\n');
    }
    write_stdout(table.as_bytes())
}

fn export_cert(config: &Config, args: &ExportArgs) -> Result<(), Failure> {
    let hsm = open_logged_in(config, Access::ReadOnly)?;
    let pairs = keys::list(&hsm.anchor(), Some(&args.issuer))?;
    let cert = chosen_certificate(config, args, &pairs)?;
    match args.format {
        ExportFormat::Pem => write_stdout(cert.pem().as_bytes()),
        ExportFormat::Der => write_stdout(&cert.der),
        ExportFormat::Keyvault => {
            eprintln!("{}-access-token-public-cert", args.issuer);
            write_stdout(format!("{}\n", cert.keyvault_value()).as_bytes())
        }
    }
}

/// Writes the command's result to stdout. A reader that has gone away
/// (`keys list | head -1`) is not an error of the command.
fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Failure::new(
            exit::FAILURE,
            format!("cannot write to stdout: {e}"),
        )),
        _ => Ok(()),
    }
}

/// The certificate `--kid` names, else the issuer's active one.
fn chosen_certificate<'p>(
    config: &Config,
    args: &ExportArgs,
    pairs: &'p [KeyPair],
) -> Result<&'p Certificate, Failure> {
    let pair = match args.kid {
        Some(Kid(id)) => pairs.iter().find(|pair| pair.id == id).ok_or_else(|| {
            HsmError::KeyNotFound {
                issuer: args.issuer.clone(),
                kid: format!(" with kid {}", crate::token::upper_hex(&id)),
            }
        })?,
        None => keys::select_active(pairs, &args.issuer, pinned_kid(config, &args.issuer), unix_now())
            .ok_or_else(|| Failure::new(
                exit::UNAVAILABLE,
                format!(
                    "issuer {:?} has no active key (none is complete with a certificate valid now{}); `access-token-agent keys list` shows its keys, and --kid exports one of them",
                    args.issuer,
                    pinned_kid(config, &args.issuer).map(|kid| format!(", or the pinned kid {kid} is not on the token or its certificate is not valid now")).unwrap_or_default()
                ),
            ))?,
    };
    pair.certificate.as_ref().map(|(_, cert)| cert).ok_or_else(|| {
        Failure::new(
            exit::UNAVAILABLE,
            format!(
                "kid {} has no certificate on the token (an interrupted enrolment); remove it with `access-token-agent keys delete --kid {}`",
                pair.kid(),
                pair.kid()
            ),
        )
    })
}

fn delete(config: &Config, args: &DeleteArgs) -> Result<(), Failure> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kids_parse_in_either_case() {
        let upper = parse_kid("C5726728C38CFE6C16988454206B99CA29AE025E").unwrap();
        let lower = parse_kid("c5726728c38cfe6c16988454206b99ca29ae025e").unwrap();
        assert_eq!(upper, lower);
        assert_eq!(upper.0[0], 0xC5);
        assert_eq!(upper.0[19], 0x5E);
    }

    #[test]
    fn malformed_kids_are_refused() {
        for text in [
            "",
            "C572",
            "Z5726728C38CFE6C16988454206B99CA29AE025E",
            "ø5726728C38CFE6C16988454206B99CA29AE025",
        ] {
            assert!(parse_kid(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn issuers_to_enrol_follow_the_request_name_rule() {
        assert_eq!(parse_issuer("ttd").unwrap(), "ttd");
        assert_eq!(parse_issuer("digdir.test-1_a").unwrap(), "digdir.test-1_a");
        assert!(parse_issuer("").unwrap_err().contains("is empty"));
        assert!(parse_issuer("t d").unwrap_err().contains("contains ' '"));
        assert!(parse_issuer("ttd\n").unwrap_err().contains("'\\n'"));
    }
}
