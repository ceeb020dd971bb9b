//! `keys export-cert`: an issuer's certificate as PEM, DER or the Key
//! Vault secret value.

use super::{parse_kid, pinned_kid, write_stdout, Kid};
use crate::cert::Certificate;
use crate::cli::open_logged_in;
use crate::clock::unix_now;
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::key_pairs::{self as keys, KeyPair};
use crate::hsm::{Access, HsmError};

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

/// The forms a certificate is exported in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    Pem,
    Der,
    Keyvault,
}

pub(super) fn run(config: &Config, args: &ExportArgs) -> Result<(), Failure> {
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
                why: String::new(),
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
