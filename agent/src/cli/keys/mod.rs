//! `access-token-agent keys …`: the operators' commands that enrol, list,
//! publish and delete keys, talking to the token directly with the user PIN.
//! One file per subcommand; this one holds what they share.

mod csr;
mod delete;
mod expiry;
mod export;
mod generate;
mod import;
mod import_cert;
mod list;
mod renew;

use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use super::KeysCommand;
use crate::cert::Certificate;
use crate::clock::{parse_instant, rfc3339, unix_now};
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol::import::password_from_bytes;
use crate::hsm::enrol::EnrolError;
use crate::hsm::key_pairs::{self as keys, KeyPair};
use crate::hsm::HsmError;

pub use csr::CsrArgs;
pub use delete::DeleteArgs;
pub use export::ExportArgs;
pub use generate::GenerateArgs;
pub use import::ImportArgs;
pub use import_cert::ImportCertArgs;
pub use list::ListArgs;
pub use renew::RenewArgs;

/// A kid given on the command line: the 20-byte SHA-1 thumbprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kid(pub [u8; 20]);

/// An issuer to enrol for: a name apps can ask for, or the key could never
/// be used (bad usage, exit 2, before the token is touched).
fn parse_issuer(text: &str) -> Result<String, String> {
    crate::token::name::check_name(text)
        .map(|()| text.to_owned())
        .map_err(|why| format!("the issuer {text:?} {why}; use the org code, e.g. ttd"))
}

/// `--not-before`: an instant a certificate is to take over at.
fn parse_not_before(text: &str) -> Result<i64, String> {
    let at = parse_instant(text.trim())?;
    if !(0..=crate::token::MAX_UNIX_SECONDS).contains(&at) {
        return Err(format!("{text:?} lies outside 1970 to 9999"));
    }
    Ok(at)
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
        KeysCommand::Import(args) => import::run(config, &args),
        KeysCommand::Generate(args) => generate::run(config, &args),
        KeysCommand::List(args) => list::run(config, &args),
        KeysCommand::ExportCert(args) => export::run(config, &args),
        KeysCommand::Delete(args) => delete::run(config, &args),
        KeysCommand::Renew(args) => renew::run(config, &args),
        KeysCommand::Csr(args) => csr::run(config, &args),
        KeysCommand::ImportCert(args) => import_cert::run(config, &args),
    }
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
    let active_at = |now| {
        keys::select_active(&pairs, issuer, pinned_kid(config, issuer), now)
            .is_some_and(|pair| pair.id == cert.thumbprint)
    };
    let now = unix_now();
    let role = if active_at(now) {
        "it is now the issuer's active key".to_owned()
    } else if cert.not_before > now && active_at(cert.not_before) {
        format!(
            "it becomes the issuer's active key at {}",
            rfc3339(cert.not_before)
        )
    } else {
        "it is not the issuer's active key (see `access-token-agent keys list`)".to_owned()
    };
    eprintln!(
        "{what} for issuer {issuer:?}: kid {}, {}, {}, valid {} to {}; {role}",
        cert.kid(),
        cert.key.name(),
        cert.subject,
        rfc3339(cert.not_before),
        rfc3339(cert.not_after),
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

/// The issuer's pair with the kid `--kid` gives, else its active one.
fn chosen_pair<'p>(
    config: &Config,
    issuer: &str,
    kid: Option<Kid>,
    pairs: &'p [KeyPair],
) -> Result<&'p KeyPair, Failure> {
    let pinned = pinned_kid(config, issuer);
    match kid {
        Some(Kid(id)) => pairs
            .iter()
            .find(|pair| pair.issuer == issuer && pair.id == id)
            .ok_or_else(|| {
                HsmError::KeyNotFound {
                    issuer: issuer.to_owned(),
                    kid: format!(" with kid {}", crate::token::upper_hex(&id)),
                    why: String::new(),
                }
                .into()
            }),
        None => keys::select_active(pairs, issuer, pinned, unix_now()).ok_or_else(|| Failure::new(
            exit::UNAVAILABLE,
            format!(
                "issuer {issuer:?} has no active key (none is complete with a certificate valid now{}); `access-token-agent keys list` shows its keys, and --kid picks one of them",
                pinned.map(|kid| format!(", or the pinned kid {kid} is not on the token or its certificate is not valid now")).unwrap_or_default()
            ),
        )),
    }
}

/// The PKCS#12 password from `path`, else the empty password (Altinn's files).
fn read_password(path: Option<&Path>) -> Result<Zeroizing<String>, Failure> {
    match path {
        Some(path) => password_from_bytes(&read_input(path, "password file")?)
            .map_err(|e| Failure::new(exit::DATA, format!("{}: {e}", path.display()))),
        None => Ok(Zeroizing::new(String::new())),
    }
}

/// An enrolment failure; a problem with the input file names the file.
fn naming_the_file(path: &Path, error: EnrolError) -> Failure {
    let failure = Failure::from(error);
    match failure.code {
        exit::DATA => Failure::new(
            exit::DATA,
            format!("cannot import {}: {}", path.display(), failure.message),
        ),
        _ => failure,
    }
}

fn pinned_kid<'c>(config: &'c Config, issuer: &str) -> Option<&'c str> {
    config.issuer(issuer).and_then(|i| i.kid.as_deref())
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
