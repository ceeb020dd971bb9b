//! `keys import`: a PKCS#12 file's key and certificate onto the token.

use std::path::PathBuf;

use zeroize::Zeroizing;

use super::{parse_issuer, read_input, report_enrolled};
use crate::cli::open_logged_in;
use crate::config::Config;
use crate::exit::{self, Failure};
use crate::hsm::enrol::{self, import::password_from_bytes, EnrolError};
use crate::hsm::Access;

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

pub(super) fn run(config: &Config, args: &ImportArgs) -> Result<(), Failure> {
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
