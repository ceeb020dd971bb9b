//! `keys import`: a PKCS#12 file's key and certificate onto the token.

use std::path::PathBuf;

use super::{naming_the_file, parse_issuer, read_input, read_password, report_enrolled};
use crate::cli::open_logged_in;
use crate::config::Config;
use crate::exit::Failure;
use crate::hsm::enrol;
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
    let password = read_password(args.password_file.as_deref())?;
    // A file that cannot be used is refused before the token is touched.
    let material =
        enrol::read_pkcs12(&pfx, &password).map_err(|e| naming_the_file(&args.pfx, e))?;
    let hsm = open_logged_in(config, Access::ReadWrite)?;
    let session = hsm.anchor();
    let cert = enrol::import(&session, &args.issuer, material)
        .map_err(|e| naming_the_file(&args.pfx, e))?;
    report_enrolled(config, &session, "imported", &args.issuer, &cert)
}
